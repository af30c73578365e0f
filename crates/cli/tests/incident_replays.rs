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

/// Incident 3: a fault elsewhere reset firewalls to unprotected. A restart
/// runs what ran, whatever became of the config; asked to boot the config
/// (`--boot-from-config`) and it is broken, or the newest kept generation is
/// unreadable: the last-known-good runs, said loudly.
#[test]
fn boot_with_the_config_missing_empty_or_corrupt_runs_what_ran() {
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
        assert_eq!(st["state"], "active", "{what}");
        assert_eq!(
            (&st["generation"], &st["digest"]),
            (&good["generation"], &good["digest"]),
            "{what}"
        );
        assert_eq!(
            st["config"]["differs"], true,
            "{what}: status says the config differs"
        );
        assert_edge_enforced(&d);
        d.stop();
        // Asked to boot from the broken config: last-known-good, loudly.
        d.start_with(&["--boot-from-config"], None);
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

/// "What status reports is what the wire sees": QinQ frames that the data
/// path drops (their outer VLAN is carried by neither side, and no L3
/// interface joins them) are counted by the engine too: in its frames, at
/// stage vlan-filter. Before, the data path counted +N denied and the engine +0.
#[test]
fn qinq_frames_the_data_path_drops_are_counted_by_the_engine() {
    use palisade_dataplane::{EngineFilter, Forward, Frame, FrameFilter, ShadowSlot};
    use palisade_engine::{Engine, EngineOptions};

    let dir = temp_dir("qinq");
    std::fs::write(dir.join("rules.toml"), EDGE).unwrap();
    let (engine, _) = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap();
    // Bridged lan1 (access VLAN 10) and wan0 (a routed port).
    let mut filter = EngineFilter::new(
        engine.handle(),
        vec!["lan1".into(), "wan0".into()],
        0,
        std::sync::Arc::new(ShadowSlot::default()),
    );
    let frame = |outer: u16| {
        let vid = |v| etherparse::VlanId::try_new(v).unwrap();
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .double_vlan(vid(outer), vid(10))
            .ipv4([10, 0, 10, 5], [198, 51, 100, 7], 64)
            .udp(40000, 53)
            .write(&mut out, b"q")
            .unwrap();
        out
    };
    let bufs: Vec<Vec<u8>> = (0..1000).map(|i| frame(100 + (i % 3) as u16)).collect();
    assert!(
        bufs.iter().all(|b| palisade_packet::parse(b).vlan_count == 2),
        "QinQ frames"
    );
    let frames: Vec<Frame<'_>> = bufs.iter().map(|b| Frame::new(b)).collect();
    let mut out = vec![Forward::AsReceived; frames.len()];
    let mut data_path_denied = 0;
    for (frames, out) in frames.chunks(64).zip(out.chunks_mut(64)) {
        filter.decide(0, frames, out);
        data_path_denied += out.iter().filter(|f| !f.is_sent()).count() as u64;
    }
    assert_eq!(data_path_denied, 1000, "the data path drops them all");
    let st = engine.status();
    assert_eq!(st.frames.evaluated, 1000, "the engine counts every frame decided");
    assert_eq!(st.frames.denied, data_path_denied);
    let at = |stage: &str| st.stages.iter().find(|s| s.stage == stage).unwrap().denied;
    assert_eq!(at("vlan-filter"), 1000, "{:?}", st.stages);
    drop((filter, engine));
    let _ = std::fs::remove_dir_all(&dir);
}
