//! The Prometheus exposition: the documented names and labels, counters that
//! survive reloads, the control events by outcome, `promtool check metrics`,
//! and the HTTP endpoint.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_engine::{Engine, ReloadOptions, ReloadSource};
use palisade_observe::http::MetricsServer;
use palisade_observe::logger::ManualClock;
use palisade_observe::metrics::render;
use palisade_observe::{LogConfig, Logger, Target};

/// The value of the sample `series` (name and labels, exactly as rendered).
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn reload(engine: &Engine, text: &str) -> Result<palisade_engine::ReloadOk, palisade_engine::ReloadError> {
    let src = ReloadSource::Bytes {
        name: "push.toml".into(),
        bytes: text.as_bytes().to_vec(),
    };
    engine.reload(src, &ReloadOptions::default())
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!("promtool cannot run ({e}): install Debian's `prometheus` package (.ci/run does)")
    });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n---\n{text}"
    );
}

#[test]
fn exposition_names_every_rule_counts_bytes_and_passes_promtool() {
    let dir = TempDir::new("metrics");
    let engine = engine(&dir, &rules(10, 20));
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let config = LogConfig {
        json: Some(Target::File(dir.join("log.json"))),
        ..LogConfig::default()
    };
    let logger = Logger::start_with_clock(config, clock).unwrap();
    engine.set_event_sink(Some(logger.event_sink()));
    let mut log = logger.worker();
    let mut h = engine.handle();
    let keys: Vec<_> = (0..30).map(telnet).chain((0..5).map(ssh)).collect();
    let frames: Vec<_> = (0..35).map(|i| frame(i, 100 + i as usize)).collect();
    run_batch(&mut h, &mut log, "wan0", &keys, &frames);
    assert!(logger.flush(FLUSH));

    let text = render(&engine, Some(&logger), &[]);
    let gen = engine.current().number();
    let digest = engine.current().digest().unwrap();
    assert_eq!(
        value(
            &text,
            &format!("palisade_generation_info{{generation=\"{gen}\",digest=\"{digest}\"}}")
        ),
        1
    );
    assert_eq!(value(&text, "palisade_generation_state{state=\"active\"}"), 1);
    let rule = |r: &str| format!("{{acl=\"wan-in\",rule=\"{r}\"}}");
    assert_eq!(
        value(
            &text,
            &format!("palisade_rule_packets_total{}", rule("no-telnet"))
        ),
        30
    );
    assert_eq!(
        value(&text, &format!("palisade_rule_packets_total{}", rule("ssh"))),
        5
    );
    assert_eq!(
        value(&text, &format!("palisade_rule_packets_total{}", rule("default"))),
        0
    );
    let telnet_bytes: u64 = (0..30).map(|i| 100 + i).sum();
    assert_eq!(
        value(&text, &format!("palisade_rule_bytes_total{}", rule("no-telnet"))),
        telnet_bytes
    );
    assert_eq!(value(&text, "palisade_frames_total{verdict=\"deny\"}"), 30);
    assert_eq!(
        value(
            &text,
            "palisade_stage_frames_total{stage=\"pacl\",verdict=\"permit\"}"
        ),
        5
    );
    assert_eq!(
        value(
            &text,
            "palisade_binding_frames_total{acl=\"wan-in\",kind=\"port\",target=\"wan0\",direction=\"\",verdict=\"deny\"}"
        ),
        30
    );
    assert_eq!(value(&text, "palisade_log_records_total{output=\"json\"}"), 20);
    assert_eq!(
        value(
            &text,
            &format!("palisade_log_suppressed_total{}", rule("no-telnet"))
        ),
        10
    );
    assert_eq!(
        value(
            &text,
            "palisade_log_dropped_total{output=\"json\",reason=\"queue-full\"}"
        ),
        0
    );
    promtool(&text);

    // A refused reload, a reload that keeps the rules' ids, then more traffic.
    reload(&engine, "version = 1\n[[bind]]\nacl = \"x\"\nport = \"p\"\n").unwrap_err();
    reload(
        &engine,
        &rules(10, 20).replace("dst_port = 22", "dst_port = [22, 2222]"),
    )
    .unwrap();
    run_batch(&mut h, &mut log, "wan0", &keys, &frames);
    assert!(logger.flush(FLUSH));
    let text = render(&engine, Some(&logger), &[]);
    assert_eq!(
        value(
            &text,
            &format!("palisade_rule_packets_total{}", rule("no-telnet"))
        ),
        60,
        "monotonic"
    );
    assert_eq!(
        value(&text, &format!("palisade_rule_bytes_total{}", rule("no-telnet"))),
        2 * telnet_bytes
    );
    assert_eq!(
        value(&text, &format!("palisade_rule_packets_total{}", rule("ssh"))),
        10
    );
    assert_eq!(value(&text, "palisade_reloads_total{outcome=\"ok\"}"), 1);
    assert_eq!(value(&text, "palisade_reloads_total{outcome=\"refused\"}"), 1);
    assert_eq!(value(&text, "palisade_reloads_total{outcome=\"reverted\"}"), 0);
    assert_eq!(
        value(
            &text,
            "palisade_control_events_total{event=\"reload\",outcome=\"refused\"}"
        ),
        1
    );
    assert_eq!(
        value(
            &text,
            "palisade_control_events_total{event=\"confirm\",outcome=\"ok\"}"
        ),
        0
    );
    // Records: 20 + 0 (the bucket is still empty 0 s later) frames, plus the two control events.
    assert_eq!(value(&text, "palisade_log_records_total{output=\"json\"}"), 22);
    assert_eq!(
        value(
            &text,
            &format!("palisade_log_suppressed_total{}", rule("no-telnet"))
        ),
        40
    );
    promtool(&text);
}

#[test]
fn an_engine_without_rules_or_logger_still_renders_valid_metrics() {
    let dir = TempDir::new("metrics-empty");
    let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
    let text = render(&engine, None, &[]);
    assert_eq!(
        value(&text, "palisade_generation_info{generation=\"0\",digest=\"\"}"),
        1
    );
    assert_eq!(value(&text, "palisade_generation_state{state=\"no-rules\"}"), 1);
    promtool(&text);
}

/// LAN opens flows (keep_state), the WAN gets only replies back.
const STATEFUL: &str = r#"version = 1
[flows]
max = 1024
[[port]]
name = "lan1"
[[port]]
name = "wan0"
[[acl]]
name = "lan-in"
  [[acl.rule]]
  id = "open"
  action = "permit"
  proto = "udp"
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
fn the_flow_table_is_in_the_exposition() {
    use palisade_engine::policy::{Decision, Verdict};
    let dir = TempDir::new("metrics-flows");
    let engine = engine(&dir, &rules(10, 20));
    // A stateless generation: the flow families are there, at zero.
    let text = render(&engine, None, &[]);
    assert_eq!(value(&text, "palisade_flows_active"), 0);
    assert_eq!(value(&text, "palisade_flows_max"), 0);
    promtool(&text);

    reload(&engine, STATEFUL).unwrap();
    let udp = |sport: u16| {
        palisade_packet::FlowKey::new()
            .with_ipv4([198, 18, 10, 5], [198, 19, 0, 7])
            .with_proto(17)
            .with_ports(sport, 53)
    };
    let reply = |sport: u16| {
        palisade_packet::FlowKey::new()
            .with_ipv4([198, 19, 0, 7], [198, 18, 10, 5])
            .with_proto(17)
            .with_ports(53, sport)
    };
    let mut h = engine.handle();
    let mut run = |port: &str, keys: &[palisade_packet::FlowKey]| {
        let mut out = vec![Decision::default(); keys.len()];
        let mut b = h.batch();
        let ctx = b.context(port, None).unwrap();
        b.classify(keys, &ctx, &mut out);
        out.iter().map(|d| d.verdict).collect::<Vec<_>>()
    };
    assert_eq!(
        run("lan1", &[udp(1000), udp(1001), udp(1002)]),
        [Verdict::Permit; 3]
    );
    assert_eq!(
        run("wan0", &[reply(1000), reply(2000)]),
        [Verdict::Permit, Verdict::Deny]
    );
    // A TCP ACK from the WAN with no flow: invalid, denied, counted.
    let ack = palisade_packet::FlowKey::new()
        .with_ipv4([198, 19, 0, 7], [198, 18, 10, 5])
        .with_proto(6)
        .with_ports(443, 40000)
        .with_tcp_flags(0x010);
    assert_eq!(run("wan0", &[ack]), [Verdict::Deny]);
    let text = render(&engine, None, &[]);
    assert_eq!(value(&text, "palisade_flows_active"), 3);
    assert_eq!(value(&text, "palisade_flows_max"), 1024);
    assert_eq!(value(&text, "palisade_flows_created_total"), 3);
    assert_eq!(value(&text, "palisade_flows_refused_total"), 0);
    assert_eq!(value(&text, "palisade_flows_cut_total"), 0);
    assert_eq!(value(&text, "palisade_flow_invalid_frames_total"), 1);
    promtool(&text);

    // A reload whose rules no longer open UDP flows cuts each at its next frame.
    reload(&engine, &STATEFUL.replace("proto = \"udp\"", "proto = \"tcp\"")).unwrap();
    assert_eq!(run("wan0", &[reply(1000), reply(1001)]), [Verdict::Deny; 2]);
    let text = render(&engine, None, &[]);
    assert_eq!(value(&text, "palisade_flows_cut_total"), 2);
    assert_eq!(value(&text, "palisade_flows_active"), 1);
    assert_eq!(value(&text, "palisade_flows_created_total"), 3, "monotonic");
    promtool(&text);
}

fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_endpoint_serves_get_metrics_and_nothing_else() {
    let dir = TempDir::new("http");
    let engine = Arc::new(engine(&dir, &rules(10, 20)));
    let e = Arc::clone(&engine);
    let server = MetricsServer::start("127.0.0.1:0", Arc::new(move || render(&e, None, &[]))).unwrap();
    let reply = http(
        server.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{reply}"
    );
    assert!(reply.contains("palisade_rule_packets_total{acl=\"wan-in\",rule=\"no-telnet\"} 0\n"));
    let reply = http(
        server.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    let reply = http(
        server.local_addr(),
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert_eq!(
        server.stats().scrapes.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A port already taken is an error naming the address.
    let taken = server.local_addr().to_string();
    let err = MetricsServer::start(&taken, Arc::new(String::new)).unwrap_err();
    assert!(err.contains(&taken) && err.contains("cannot listen"), "{err}");
}
