//! The three incidents behind Palisade, replayed against the real binary.
//! Each test is named after what it prevents.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

const WEB: &str = "tcp 10.0.10.5:40000 -> 198.51.100.7:443";
const SMB: &str = "tcp 10.0.10.5:40000 -> 198.51.100.7:445";
const TELNET: &str = "tcp 10.0.10.5:40000 -> 198.51.100.7:23";
const WAN_SYN: &str = "tcp 198.51.100.7:40000 -> 10.0.10.5:8080 flags syn";
const RESCUE: &str = "tcp 192.0.2.3:50000 -> 10.0.10.1:22";

/// Every Port, VLAN and Routed ACL of EDGE is enforced by the running daemon.
fn assert_edge_enforced(d: &Daemon) {
    assert_eq!(d.probe("lan1", WEB, None), "permit");
    assert_eq!(
        d.probe("lan1", "udp 10.0.10.5:40000 -> 198.51.100.7:9999", None),
        "deny",
        "Port ACL"
    );
    assert_eq!(
        d.probe("lan1", SMB, None),
        "deny",
        "Port ACL permits 445? no: default deny"
    );
    assert_eq!(d.probe("lan1", TELNET, Some("lan:wan")), "deny", "Routed ACL out");
    assert_eq!(d.probe("wan0", WAN_SYN, Some("wan:lan")), "deny", "Routed ACL in");
    assert_eq!(d.probe("lan1", RESCUE, None), "permit", "rescue");
}

/// Incident 1: one Routed ACL silently dropped out of a running switch.
#[test]
fn an_update_whose_routed_binding_names_a_missing_acl_is_refused_whole() {
    let mut d = Daemon::new("incident1");
    d.write("rules.toml", EDGE);
    d.start();
    let before = d.status();
    assert_eq!(before["state"], "active");
    assert_eq!(before["digest"], sha256_hex(EDGE.as_bytes()));
    let kinds: Vec<String> = before["acls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["kind"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        kinds.contains(&"port".into()) && kinds.contains(&"vlan".into()) && kinds.contains(&"routed".into())
    );
    assert_edge_enforced(&d);

    // The update: the wan-in ACL is renamed away but its routed binding still names it,
    // and a new web rule is added that would change traffic if anything were applied.
    let update = edge_b().replace("name = \"wan-in\"", "name = \"wan-in-v2\"");
    let upd = d.write("update.toml", &update);
    let out = d.cli(&["reload", upd.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("stage validate"), "{msg}");
    let line = update.lines().position(|l| l == "acl = \"wan-in\"").unwrap() + 1;
    assert!(
        msg.contains(&format!("update.toml:{line}:")),
        "names file:line:col of the binding: {msg}"
    );

    let after = d.status();
    assert_eq!(enforced(&after), enforced(&before), "status unchanged");
    assert_eq!(after["last_reload"]["ok"], false);
    assert_eq!(after["last_reload"]["stage"], "validate");
    assert_edge_enforced(&d);
}

/// Incident 2: an update the engine could not run stopped it and blocked the channel for the fix.
#[test]
fn an_update_requiring_a_newer_engine_is_refused_and_rescue_traffic_still_passes() {
    let mut d = Daemon::new("incident2");
    d.write("rules.toml", EDGE);
    d.start();
    let before = d.status();
    let update = edge_b().replace("version = 1\n", "version = 1\nrequires = \">=99.0\"\n");
    let upd = d.write("update.toml", &update);
    let out = d.cli(&["reload", upd.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["stage"], "validate");
    assert!(
        reply["errors"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:2:", upd.display())),
        "{reply}"
    );
    assert_eq!(enforced(&d.status()), enforced(&before));
    assert_eq!(
        d.probe("lan1", RESCUE, None),
        "permit",
        "rescue traffic still passes"
    );
    assert_eq!(
        d.probe("wan0", RESCUE, Some("wan:lan")),
        "permit",
        "from the WAN side too"
    );
    // The fix can still be pushed through the same channel.
    let fix = d.write("fix.toml", &edge_b());
    let out = d.cli(&["reload", fix.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(d.probe("lan1", WEB, None), "deny");
}

/// Incident 3: a fault elsewhere reset firewalls to unprotected.
#[test]
fn boot_with_the_config_missing_empty_or_corrupt_runs_on_last_known_good() {
    let mut d = Daemon::new("incident3");
    d.write("rules.toml", EDGE);
    d.start();
    let good = d.status();
    d.stop();
    for (what, content) in [
        ("missing", None),
        ("empty", Some("")),
        ("corrupt", Some("version = 1\n[[acl]\nname=\n")),
    ] {
        match content {
            Some(c) => {
                d.write("rules.toml", c);
            }
            None => std::fs::remove_file(d.config()).unwrap(),
        }
        d.start();
        let st = d.status();
        assert_eq!(st["state"], "last-known-good", "{what}");
        assert_eq!(st["digest"], good["digest"], "{what}");
        assert_eq!(st["last_reload"]["ok"], false, "{what}: status says why");
        assert!(
            d.log().contains("LAST-KNOWN-GOOD"),
            "{what}: said loudly in the log"
        );
        let human = text(&d.cli(&["status"]));
        assert!(human.contains("LAST-KNOWN-GOOD"), "{what}: {human}");
        assert_edge_enforced(&d);
        d.stop();
    }
    // With neither a config nor a last-known-good: deny everything, socket open.
    std::fs::remove_dir_all(d.state()).unwrap();
    std::fs::remove_file(d.config()).unwrap();
    d.start();
    let st = d.status();
    assert_eq!(st["state"], "no-rules");
    assert_eq!(d.probe("lan1", RESCUE, None), "deny");
    let fix = d.write("fix.toml", EDGE);
    assert_eq!(code(&d.cli(&["reload", fix.to_str().unwrap()])), 0);
    assert_edge_enforced(&d);
}

/// Commit-confirmed: a reload that cuts the operator off reverts by itself.
#[test]
fn an_unconfirmed_reload_reverts_by_itself() {
    let mut d = Daemon::new("incident4");
    d.write("rules.toml", EDGE);
    d.start();
    let before = d.status();
    let upd = d.write("update.toml", &edge_b());
    let out = d.cli(&["reload", upd.to_str().unwrap(), "--confirm-within", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = d.status();
    assert_eq!(st["state"], "pending-confirm");
    assert!(st["confirm_deadline"].is_string());
    assert_eq!(d.probe("lan1", WEB, None), "deny", "the update is active at once");
    let t0 = Instant::now();
    loop {
        let st = d.status();
        if st["state"] == "active" {
            assert_eq!(st["digest"], before["digest"], "old digest");
            assert!(st["generation"].as_u64() > before["generation"].as_u64().map(|g| g + 1));
            assert_eq!(st["last_reload"]["stage"], "confirm");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never reverted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.probe("lan1", WEB, None), "permit");
    // Confirmed in time it stays.
    let out = d.cli(&["reload", upd.to_str().unwrap(), "--confirm-within", "2"]);
    assert_eq!(code(&out), 0);
    let out = d.cli(&["confirm"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.status()["state"], "active");
    assert_eq!(d.probe("lan1", WEB, None), "deny");
    assert_eq!(code(&d.cli(&["confirm"])), 1, "nothing left to confirm");
    let _ = json!(null);
}
