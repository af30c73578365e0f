//! `palisade explain`: one packet through every stage, text and JSON.

use std::path::Path;
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn office() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../rules/office.toml")
        .display()
        .to_string()
}

fn json(args: &[&str]) -> serde_json::Value {
    let rules = office();
    let mut all = vec!["explain", rules.as_str(), "--json"];
    all.extend_from_slice(args);
    let out = palisade(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_names_the_deciding_stage_acl_and_rule() {
    let v = json(&[
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "tcp 10.0.10.5:40000 -> 198.51.100.7:22",
    ]);
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["stage"], "racl-in");
    assert_eq!(v["acl"], "lan-in");
    assert_eq!(v["rule"], "no-ssh-out");
    assert_eq!(v["vlan"], 10);
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["rescue", "pacl", "vacl-in", "racl-in", "racl-out", "vacl-out"]
    );
    assert_eq!(v["stages"][1]["verdict"], "permit");
    assert_eq!(v["stages"][1]["rule"], "lan-v4");
    assert_eq!(v["stages"][4]["note"], "not reached");
}

#[test]
fn json_rescue_has_null_acl() {
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "tcp 192.0.2.3:5000 -> 10.0.10.5:22",
    ]);
    assert_eq!(v["verdict"], "permit");
    assert_eq!(v["stage"], "rescue");
    assert!(v["acl"].is_null());
    assert_eq!(v["rule"], "noc-ssh");
}

#[test]
fn vlan_option_tags_the_packet() {
    let v = json(&[
        "--port",
        "lan1",
        "--vlan",
        "20",
        "tcp 192.168.20.7:40001 -> 10.0.10.5:22",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["stage"].as_str()),
        (Some("deny"), Some("vacl-in"))
    );
    assert_eq!(v["rule"], "guest-no-lan");
    let v = json(&[
        "--port",
        "lan1",
        "--vlan",
        "30",
        "tcp 192.168.20.7:40001 -> 10.0.10.5:22",
    ]);
    assert_eq!(
        (v["stage"].as_str(), v["acl"].is_null()),
        (Some("vlan-filter"), true)
    );
}

#[test]
fn ipv6_icmp_and_flags() {
    let v = json(&[
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "udp [2001:db8:10::5]:5353 -> [2001:db8:ffff::7]:53",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("dns-elsewhere"))
    );
    let v = json(&[
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "icmp 10.0.10.5 -> 198.51.100.7 type 8 code 0",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("permit"), Some("ping"))
    );
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "tcp 198.51.100.7:443 -> 10.0.10.5:40000 flags syn,ack state established",
    ]);
    assert_eq!(v["verdict"], "permit");
    assert_eq!(v["stages"][3]["rule"], "replies");
    // The same SYN-ACK with no flow behind it (the state explain assumes): invalid, denied.
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "tcp 198.51.100.7:443 -> 10.0.10.5:40000 flags syn,ack",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["state"].as_str()),
        (Some("deny"), Some("invalid"))
    );
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "tcp 198.51.100.7:443 -> 10.0.10.5:40000",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("default"))
    );
}

#[test]
fn text_shows_every_stage_and_the_rule_location() {
    let out = palisade(&[
        "explain",
        &office(),
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "tcp 10.0.10.5:40000 -> 198.51.100.7:443",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "untagged: takes the port's access VLAN 10",
        "route:   lan -> wan",
        "pacl         port lan1",
        "vacl-in      VLAN 10                no ACL bound: passes",
        "racl-in      interface lan in       permit acl \"lan-in\" rule web (#2) at ",
        "racl-out     interface wan out      no ACL bound: passes",
        "vacl-out     wan (routed port)      does not apply",
        "verdict: permit (stage racl-in, acl \"lan-in\", rule web)",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    // The rule location points at the [[acl.rule]] of "web".
    let text = std::fs::read_to_string(office()).unwrap();
    let at = s
        .split("rule web (#2) at ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let line: usize = at.rsplit(':').nth(1).unwrap().parse().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[line - 1].trim(), "[[acl.rule]]");
    assert_eq!(lines[line].trim(), "id = \"web\"");
}

#[test]
fn bad_input_exits_2() {
    for args in [
        vec!["--port", "lan1", "tcp 10.0.10.5 => 1.1.1.1"],
        vec!["--port", "lan1", "tcp 10.0.10.5:99999 -> 1.1.1.1:1"],
        vec!["--port", "nope", "tcp 10.0.10.5:1 -> 1.1.1.1:1"],
        vec![
            "--port",
            "lan1",
            "--route",
            "lan:nowhere",
            "tcp 10.0.10.5:1 -> 1.1.1.1:1",
        ],
        vec!["--port", "lan1", "--vlan", "5000", "tcp 10.0.10.5:1 -> 1.1.1.1:1"],
    ] {
        let rules = office();
        let mut all = vec!["explain", rules.as_str()];
        all.extend_from_slice(&args);
        let out = palisade(&all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn explains_every_packet_an_expect_can_describe_arp_ethertype_and_malformed() {
    // ARP: permitted by lan1-in's rule "arp" (as the [[expect]] of office.toml says).
    let v = json(&["--port", "lan1", "arp 10.0.10.5 -> 10.0.10.1"]);
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("permit"), Some("arp")),
        "{v}"
    );
    assert_eq!(v["packet"], "arp");
    // Another ethertype (LLDP): the Port ACL's default.
    let v = json(&["--port", "lan1", "ethertype 0x88cc"]);
    assert_eq!(
        (v["verdict"].as_str(), v["stage"].as_str()),
        (Some("deny"), Some("pacl")),
        "{v}"
    );
    assert_eq!(v["packet"], "ethertype 0x88cc");
    let named = json(&["--port", "lan1", "ethertype lldp"]);
    assert_eq!(named["packet"], v["packet"]);
    // A malformed frame gets defaults.malformed at stage malformed.
    let v = json(&["--port", "lan1", "tcp 10.0.10.5 -> 198.51.100.7:443 malformed"]);
    assert_eq!(
        (v["verdict"].as_str(), v["stage"].as_str()),
        (Some("deny"), Some("malformed")),
        "{v}"
    );
    let v = json(&["--port", "lan1", "malformed"]);
    assert_eq!(v["stage"], "malformed", "{v}");
    // Mistakes are usage errors that say what is expected.
    let rules = office();
    for bad in [
        "arp 2001:db8::1 -> 2001:db8::2",
        "ethertype 0x10000",
        "ethertype 0x0800",
        "arp 10.0.0.1 ->",
    ] {
        let out = palisade(&["explain", &rules, "--port", "lan1", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad), "{bad}");
    }
}

#[test]
fn every_example_in_explains_help_runs() {
    let help = String::from_utf8(palisade(&["explain", "--help"]).stdout).unwrap();
    let examples: Vec<&str> = help.split('\'').skip(1).step_by(2).collect();
    assert!(examples.len() >= 6, "{help}");
    let rules = office();
    for ex in examples {
        let out = palisade(&["explain", &rules, "--port", "lan1", ex]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "help example '{ex}' does not run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A gateway that keeps state for what the LAN opens and lets only its replies back.
const STATEFUL: &str = r#"version = 1
[[port]]
name = "lan1"
[[port]]
name = "wan0"
[[acl]]
name = "lan-in"
  [[acl.rule]]
  id = "out"
  action = "permit"
  keep_state = true
[[acl]]
name = "wan-in"
  [[acl.rule]]
  id = "replies"
  action = "permit"
  state = ["established", "related"]
[[bind]]
acl = "lan-in"
port = "lan1"
[[bind]]
acl = "wan-in"
port = "wan0"
"#;

#[test]
fn state_is_assumed_or_given_and_a_keep_state_rule_opens_a_flow() {
    let dir = std::env::temp_dir().join(format!("palisade-explain-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("stateful.toml");
    std::fs::write(&rules, STATEFUL).unwrap();
    let rules = rules.display().to_string();
    let run = |port: &str, packet: &str| -> serde_json::Value {
        let out = palisade(&["explain", &rules, "--json", "--port", port, packet]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let syn = run("lan1", "tcp 10.0.10.5:40000 -> 198.51.100.7:443");
    assert_eq!(
        (syn["state"].as_str(), syn["state_assumed"].as_bool()),
        (Some("new"), Some(true))
    );
    assert_eq!(
        (syn["verdict"].as_str(), syn["opens_flow"].as_bool()),
        (Some("permit"), Some(true))
    );
    // An unsolicited ACK from the WAN is invalid (assumed) and denied; the same as a reply passes.
    let ack = run("wan0", "tcp 198.51.100.7:443 -> 10.0.10.5:40000 flags ack");
    assert_eq!(
        (ack["state"].as_str(), ack["verdict"].as_str()),
        (Some("invalid"), Some("deny"))
    );
    let reply = run(
        "wan0",
        "tcp 198.51.100.7:443 -> 10.0.10.5:40000 flags ack state established",
    );
    assert_eq!(reply["state_assumed"], false);
    assert_eq!(
        (reply["verdict"].as_str(), reply["rule"].as_str()),
        (Some("permit"), Some("replies"))
    );
    assert_eq!(reply["opens_flow"], false);
    let unreachable = run(
        "wan0",
        "icmp 198.51.100.1 -> 10.0.10.5 type 3 code 3 state related",
    );
    assert_eq!(unreachable["verdict"], "permit");
    // The text form says what it assumed.
    let out = palisade(&[
        "explain",
        &rules,
        "--port",
        "wan0",
        "udp 198.51.100.7:443 -> 10.0.10.5:40000",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state:   new (assumed: no flow entry"), "{text}");
    // A state the packet cannot be in is a usage error.
    let out = palisade(&[
        "explain",
        &rules,
        "--port",
        "wan0",
        "tcp 1.1.1.1:1 -> 2.2.2.2:2 flags ack state new",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("such a packet can only be established or invalid"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routed_acls_do_not_apply_to_non_ip() {
    // ARP routed wan -> lan: office.toml's wan-in (default deny) is a Routed
    // ACL, for IP only, so it neither sees nor denies ARP.
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "arp 198.51.100.1 -> 10.0.10.1",
    ]);
    assert_eq!(v["verdict"], "permit", "{v}");
    let stages = v["stages"].as_array().unwrap();
    for racl in ["racl-in", "racl-out"] {
        let s = stages.iter().find(|s| s["stage"] == racl).unwrap();
        assert_eq!(s["note"], "does not apply (Routed ACLs are for IP)", "{s}");
        assert!(s["verdict"].is_null(), "{s}");
    }
    // The same route for IP: wan-in decides.
    let v = json(&[
        "--port",
        "wan0",
        "--route",
        "wan:lan",
        "udp 198.51.100.1:1000 -> 10.0.10.1:9",
    ]);
    assert_eq!(
        (v["verdict"].as_str(), v["stage"].as_str()),
        (Some("deny"), Some("racl-in")),
        "{v}"
    );
}
