//! `palisade classify` over the demo capture and the office rule set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
        .display()
        .to_string()
}

/// The README's main command, row by row.
const OFFICE_LAN_WAN: &str = "\
frame,verdict,stage,acl,rule
1,permit,racl-in,lan-in,web
2,deny,racl-in,lan-in,no-ssh-out
3,permit,racl-in,lan-in,dns-gw
4,permit,racl-in,lan-in,ping
5,permit,racl-in,lan-in,web
6,permit,racl-in,lan-in,web
7,deny,vacl-in,guest-vlan,guest-no-lan
8,deny,vacl-in,guest-vlan,guest-no-lan
9,permit,racl-in,lan-in,web
10,deny,racl-in,lan-in,default
11,deny,malformed,,
12,deny,malformed,,
13,permit,pacl,lan1-in,arp
";

#[test]
fn readme_command_csv() {
    let out = palisade(&[
        "classify",
        &repo("rules/office.toml"),
        &repo("rules/demo/office.pcap"),
        "--port",
        "lan1",
        "--route",
        "lan:wan",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), OFFICE_LAN_WAN);
    assert!(String::from_utf8_lossy(&out.stderr).contains("13 frames: 7 permit, 6 deny"));
}

#[test]
fn bridged_frames_skip_routed_acls() {
    let out = palisade(&[
        "classify",
        &repo("rules/office.toml"),
        &repo("rules/demo/office.pcap"),
        "--port",
        "lan1",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = s.lines().collect();
    // Not routed: the Port ACL is the last stage with an ACL for LAN frames, the VLAN ACL for guests.
    assert_eq!(rows[1], "1,permit,pacl,lan1-in,lan-v4");
    assert_eq!(rows[6], "6,permit,vacl-in,guest-vlan,default");
    assert_eq!(rows[9], "9,permit,pacl,lan1-in,lan-v6");
    assert_eq!(rows[13], "13,permit,pacl,lan1-in,arp");
    assert!(!s.contains("racl"));
}

#[test]
fn json_lines_have_the_same_keys() {
    let out = palisade(&[
        "classify",
        &repo("rules/office.toml"),
        &repo("rules/demo/office.pcap"),
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = s.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 13);
    assert_eq!(rows[1]["frame"], 2);
    assert_eq!(rows[1]["verdict"], "deny");
    assert_eq!(rows[1]["stage"], "racl-in");
    assert_eq!(rows[1]["acl"], "lan-in");
    assert_eq!(rows[1]["rule"], "no-ssh-out");
    assert!(rows[10]["acl"].is_null() && rows[10]["rule"].is_null());
    assert_eq!(rows[10]["stage"], "malformed");
}

#[test]
fn rescue_and_vlan_filter_from_the_wan() {
    // On the routed WAN port no frame is tagged-accepted: the guest frames are dropped by VLAN membership.
    let out = palisade(&[
        "classify",
        &repo("rules/office.toml"),
        &repo("rules/demo/office.pcap"),
        "--port",
        "wan0",
        "--route",
        "wan:lan",
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = s.lines().collect();
    assert_eq!(rows[6], "6,deny,vlan-filter,,");
    assert_eq!(rows[1], "1,deny,racl-in,wan-in,spoofed-private");
}

#[test]
fn usage_and_io_errors() {
    let rules = repo("rules/office.toml");
    let pcap = repo("rules/demo/office.pcap");
    let out = palisade(&["classify", &rules, &pcap, "--port", "lan9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such port in the rule set (ports: lan1, wan0)"));
    let out = palisade(&["classify", &rules, &pcap, "--port", "lan1", "--route", "lan-wan"]);
    assert_eq!(out.status.code(), Some(2));
    let out = palisade(&["classify", &rules, &pcap, "--port", "lan1", "--route", "lan:mars"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no interface \"mars\""));
    let out = palisade(&["classify", &rules, "/nonexistent.pcap", "--port", "lan1"]);
    assert_eq!(out.status.code(), Some(2));
    let bad: PathBuf = std::env::temp_dir().join(format!("palisade-classify-{}.toml", std::process::id()));
    std::fs::write(&bad, "version = 3\n").unwrap();
    let out = palisade(&["classify", bad.to_str().unwrap(), &pcap, "--port", "lan1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:11: unknown rule-language version 3"));
}
