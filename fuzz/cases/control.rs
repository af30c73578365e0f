//! Control-socket requests from arbitrary bytes: every line is parsed
//! (`control::parse_request`, pure) and answered by a live engine, first one
//! line at a time (`handle_line`, typed replies checked as JSON), then as one stream through
//! `serve_connection` over a socket pair. Nothing may panic, every reply is
//! one JSON object line with a boolean `ok`, one reply per non-blank request
//! line, and a line that parses as a built-in request is never answered
//! "malformed"..
//!
//! Shared by the fuzz target `control` and the replay test
//! crates/engine/tests/fuzz_corpus_control.rs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use palisade_engine::control::{self, Request};
use palisade_engine::{Engine, EngineOptions};
use serde_json::Value;

const RULES: &str = r#"version = 1
[[port]]
name = "lan1"
vlan = 10
[[interface]]
name = "lan"
vlan = 10
[[interface]]
name = "wan"
port = "lan1"
[[acl]]
name = "in"
default = "permit"
  [[acl.rule]]
  id = "no-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23
[[bind]]
acl = "in"
port = "lan1"
"#;

/// The engine every input talks to (booted once per process in a temporary directory).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("rules.toml");
        std::fs::write(&config, RULES).expect("config");
        let opts = EngineOptions {
            durable: false,
            ..EngineOptions::default()
        };
        Engine::open(&config, &dir.join("state"), opts).expect("engine").0
    })
}

fn check_reply(reply: &Value, line: &str) {
    assert!(
        reply.get("ok").and_then(Value::as_bool).is_some(),
        "{line:?} -> {reply}"
    );
}

/// Runs one input through every check against [`engine`]; panics on a disagreement.
pub fn run(data: &[u8]) {
    if data.len() > 1 << 16 {
        return;
    }
    let engine = engine();
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() > 16 {
        return;
    }
    for line in &lines {
        let parsed = control::parse_request(line);
        let mutating = matches!(parsed, Ok(Request::Reload { .. } | Request::Rollback { .. }));
        if mutating {
            continue; // answered below through the socket
        }
        let reply = control::handle_line(engine, line, None).to_value();
        check_reply(&reply, line);
        if parsed.is_ok() {
            let err = reply.get("error").and_then(Value::as_str).unwrap_or("");
            assert!(!err.starts_with("malformed request"), "{line:?} -> {reply}");
        }
    }
    // The same bytes as one connection's stream.
    let (mut client, server) = UnixStream::pair().expect("socket pair");
    client.write_all(data).expect("write");
    client.shutdown(std::net::Shutdown::Write).expect("shutdown");
    control::serve_connection(engine, server, None);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client, &mut out);
    let mut replies = 0;
    for reply in BufReader::new(&out[..]).lines() {
        let reply = reply.expect("reply line");
        let v: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", String::from_utf8_lossy(&out)));
        check_reply(&v, &reply);
        replies += 1;
    }
    // Lines as the server splits them: on b'\n', blank ones skipped.
    let want = data
        .split(|&b| b == b'\n')
        .filter(|l| !String::from_utf8_lossy(l).trim().is_empty())
        .count();
    assert_eq!(replies, want, "{text:?}");
}
