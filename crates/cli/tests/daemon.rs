//! The daemon's control socket and the client commands, over the real binary.

mod daemon_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

#[test]
fn the_socket_is_private_and_bad_requests_get_an_error_reply_and_the_daemon_carries_on() {
    let mut d = Daemon::new("socket");
    d.write("rules.toml", EDGE);
    d.start();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let stream = UnixStream::connect(d.socket()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    for bad in [
        "not json",
        "{\"cmd\":\"explode\"}",
        "{\"cmd\":\"reload\",\"confirm_within\":-1}",
        "[1,2]",
        "{}",
    ] {
        writeln!(w, "{bad}").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(reply["ok"], false, "{bad}: {reply}");
        assert!(reply["error"].is_string(), "{bad}: {reply}");
    }
    // Same connection still works.
    writeln!(w, "{}", json!({"cmd": "status"})).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");

    // An oversized request is refused and the connection closed; the daemon lives on.
    let mut big = UnixStream::connect(d.socket()).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(palisade_engine::control::MAX_REQUEST / chunk.len() + 2) {
        if big.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_line(&mut reply);
    assert!(reply.contains("longer than"), "{reply}");
    assert_eq!(d.status()["state"], "active");
}

#[test]
fn status_json_has_the_contract_fields() {
    let mut d = Daemon::new("status");
    d.write("rules.toml", EDGE);
    d.start();
    let st = d.status();
    for field in [
        "generation",
        "digest",
        "source",
        "state",
        "confirm_deadline",
        "acls",
        "last_reload",
    ] {
        assert!(st.get(field).is_some(), "missing {field}: {st}");
    }
    assert_eq!(st["digest"], sha256_hex(EDGE.as_bytes()));
    assert_eq!(st["source"], d.config().display().to_string());
    let acl = st["acls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "wan-out")
        .unwrap();
    assert_eq!(acl["rules"], 1);
    assert_eq!(acl["bindings"][0]["kind"], "routed");
    assert_eq!(acl["bindings"][0]["target"], "wan");
    assert_eq!(acl["bindings"][0]["direction"], "out");
    assert!(acl["counters"]["rules"][0]["hits"].is_u64());
    assert_eq!(st["last_reload"]["ok"], true);
    let human = text(&d.cli(&["status"]));
    assert!(human.contains("bound to routed wan out"), "{human}");
}

#[test]
fn sighup_reloads_the_config_and_a_bad_config_changes_nothing() {
    let mut d = Daemon::new("sighup");
    d.write("rules.toml", EDGE);
    d.start();
    let g0 = d.status()["generation"].as_u64().unwrap();
    d.write("rules.toml", &edge_b());
    d.signal("HUP");
    let t0 = Instant::now();
    while d.status()["generation"].as_u64().unwrap() == g0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = d.status();
    assert_eq!(st["digest"], sha256_hex(edge_b().as_bytes()));
    d.write(
        "rules.toml",
        "version = 1\n[[bind]]\nacl = \"nope\"\nport = \"nope\"\n",
    );
    d.signal("HUP");
    let t0 = Instant::now();
    while d.status()["last_reload"]["ok"] == true {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "second SIGHUP not handled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = d.status();
    assert_eq!(enforced(&after), enforced(&st));
    assert_eq!(after["last_reload"]["stage"], "validate");
}

#[test]
fn reload_confirm_and_rollback_exit_codes() {
    let mut d = Daemon::new("clients");
    d.write("rules.toml", EDGE);
    d.start();
    let a = d.status();
    let b = d.write("b.toml", &edge_b());
    let out = d.cli(&["reload", b.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("active"), "{}", text(&out));
    let gb = d.status()["generation"].as_u64().unwrap();

    // Refused: stage and every error with file:line:col, exit 1.
    let bad = d.write("bad.toml", "version = 1\n[[acl]]\nname = \"x\"\n  [[acl.rule]]\n  action = \"permit\"\n  dst_port = \"443-80\"\n");
    let out = d.cli(&["reload", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).contains(&format!("{}:6:", bad.display())),
        "{}",
        text(&out)
    );
    assert_eq!(code(&d.cli(&["reload", "/nonexistent/rules.toml"])), 1);

    // Rollback to the previous rules, then to a kept generation by number.
    let out = d.cli(&["rollback"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(d.status()["digest"], a["digest"]);
    let out = d.cli(&["rollback", "--to", &gb.to_string()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(d.status()["digest"], sha256_hex(edge_b().as_bytes()));
    assert_eq!(code(&d.cli(&["rollback", "--to", "424242"])), 1);
    assert_eq!(code(&d.cli(&["confirm"])), 1);

    // No daemon: exit 2.
    d.stop();
    assert!(!d.socket().exists(), "SIGTERM removes the socket");
    assert_eq!(code(&d.cli(&["status"])), 2);
}
