//! Live: `palisade run --log --log-pcap --metrics` on a bridge under a flood
//! of frames that a `log = true` deny rule decides, logrotate's SIGUSR1, and
//! one control event per control action.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{fixture, rule_hits, Net, H1, H2, PALISADE};

/// The fields of a frame record and of a control event, in DESIGN.md's order.
const FRAME_FIELDS: [&str; 15] = [
    "time",
    "generation",
    "digest",
    "port",
    "stage",
    "acl",
    "rule",
    "verdict",
    "family",
    "proto",
    "src",
    "dst",
    "src_port",
    "dst_port",
    "len",
];
const EVENT_FIELDS: [&str; 6] = ["time", "event", "outcome", "uid", "generation", "digest"];

/// Every line of a JSON-lines log, parsed, with the line itself.
fn log_lines(path: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}"));
            (l.to_string(), v)
        })
        .collect()
}

/// Asserts a record has exactly `fields`, written in that order.
fn assert_fields(line: &str, v: &serde_json::Value, fields: &[&str]) {
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
    assert_eq!(obj.len(), fields.len(), "{line}");
    let at: Vec<usize> = fields
        .iter()
        .map(|f| {
            line.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("no {f}: {line}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "fields out of order: {line}");
}

fn frames_of(lines: &[(String, serde_json::Value)]) -> Vec<&(String, serde_json::Value)> {
    lines.iter().filter(|(_, v)| v.get("stage").is_some()).collect()
}

fn events_of(lines: &[(String, serde_json::Value)]) -> Vec<&(String, serde_json::Value)> {
    lines.iter().filter(|(_, v)| v.get("event").is_some()).collect()
}

/// The frames of a pcapng file: (captured bytes, original length, comment).
fn pcap_frames(path: &Path) -> Vec<(Vec<u8>, u32, String)> {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let bytes = std::fs::read(path).unwrap_or_default();
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut r = PcapNgReader::new(&bytes[..]).expect("pcapng header");
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(p) = b.expect("whole pcapng blocks") {
            let comment = p.options.iter().find_map(|o| match o {
                EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                _ => None,
            });
            out.push((p.data.to_vec(), p.original_len, comment.unwrap_or_default()));
        }
    }
    out
}

/// Polls `palisade status --json` until `done` holds (or panics after `timeout`).
fn wait_status(
    net: &Net,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = net.status();
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_figure(st: &serde_json::Value, key: &str) -> u64 {
    st["observe"]["log"][key].as_u64().unwrap_or(0)
}

/// `GET /metrics` from inside the firewall's namespace (where the endpoint listens on loopback).
fn scrape(net: &Net, addr: &str) -> String {
    let p = net.probe(&net.fw, &["http-get", addr, "/metrics"]);
    let (out, _) = p.wait(Duration::from_secs(20));
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.to_string()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in the scrape:\n{text}"))
        .parse()
        .unwrap()
}

fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}): install Debian's prometheus package (.ci/run does)")
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
        "promtool check metrics: {said}"
    );
}

fn signal(net: &Net, sig: i32) {
    let pid = net.daemon.as_ref().expect("daemon").child.id() as i32;
    // SAFETY: kill(2) with a pid of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {sig}");
}

pub fn logs_metrics_and_control_events_live() {
    let mut net = Net::new("observe");
    let dir = net.lab.dir.clone();
    let (log, pcap, rules) = (
        dir.join("log.json"),
        dir.join("log.pcapng"),
        dir.join("rules.toml"),
    );
    std::fs::copy(fixture("logged.toml"), &rules).unwrap();
    let (log_s, pcap_s) = (log.display().to_string(), pcap.display().to_string());
    net.start(
        &rules,
        &[
            "--bridge",
            "pa,pb",
            "--log",
            &log_s,
            "--log-pcap",
            &pcap_s,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let st = net.status();
    let addr = st["observe"]["metrics"]["address"]
        .as_str()
        .expect("metrics address")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let generation = st["generation"].as_u64().unwrap();
    let digest = st["digest"].as_str().unwrap().to_string();

    // 3,000 frames at 2,000 a second onto the logged deny rule.
    let sink = net.probe(&net.h2, &["udp-sink", H2, "7009"]);
    let started = Instant::now();
    let sender = net.probe(&net.h1, &["udp-send", H2, "7009", "3000", "500"]);
    let (out, _) = sender.wait(Duration::from_secs(60));
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.contains("sent 3000"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.finish().trim().is_empty(), "a denied frame was delivered");

    let st = wait_status(
        &net,
        Duration::from_secs(20),
        "every frame counted and logged or suppressed",
        |st| {
            rule_hits(st, "from-h1", "no-udp-9") == 3000
                && log_figure(st, "records") + log_figure(st, "suppressed") == 3000
                && log_figure(st, "pcap_frames") == log_figure(st, "records")
        },
    );
    let records = log_figure(&st, "records");
    let bound = 20 + (10.0 * seconds).floor() as u64;
    assert!(
        (1..=bound).contains(&records),
        "{records} records, at most {bound} in {seconds:.2} s"
    );
    assert_eq!(log_figure(&st, "dropped_queue_full"), 0);

    let lines = log_lines(&log);
    let frames = frames_of(&lines);
    assert_eq!(frames.len() as u64, records);
    for (line, r) in &frames {
        assert_fields(line, r, &FRAME_FIELDS);
        assert_eq!(r["generation"].as_u64(), Some(generation), "{line}");
        assert_eq!(r["digest"].as_str(), Some(digest.as_str()), "{line}");
        let want = serde_json::json!({"port": "pa", "stage": "pacl", "acl": "from-h1", "rule": "no-udp-9",
            "verdict": "deny", "family": "ipv4", "proto": "udp", "src": H1, "dst": H2, "dst_port": 7009, "len": 74});
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&r[k], v, "{k} in {line}");
        }
        assert!(r["src_port"].as_u64().is_some_and(|p| p > 0), "{line}");
        assert!(
            r["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
            "{line}"
        );
    }
    // The same frames in the pcapng: the UDP datagrams' sequence numbers in order, each with its reason.
    let pframes = pcap_frames(&pcap);
    assert_eq!(pframes.len() as u64, records);
    let mut seqs = Vec::new();
    for (data, len, comment) in &pframes {
        assert_eq!((*len, data.len()), (74, 74));
        assert_eq!(&data[36..38], &7009u16.to_be_bytes(), "UDP destination port");
        seqs.push(u32::from_be_bytes([data[42], data[43], data[44], data[45]]));
        assert!(
            comment.contains("acl \"from-h1\"")
                && comment.contains("rule \"no-udp-9\"")
                && comment.contains(&format!("generation {generation}")),
            "{comment}"
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(
        seqs[..20],
        (0..20).collect::<Vec<u32>>()[..],
        "the burst is the first 20 frames"
    );

    // Metrics: every frame counted, the rest of the records suppressed; promtool agrees.
    let text = scrape(&net, &addr);
    let rule = "{acl=\"from-h1\",rule=\"no-udp-9\"}";
    assert_eq!(metric(&text, &format!("palisade_rule_packets_total{rule}")), 3000);
    assert_eq!(
        metric(&text, &format!("palisade_rule_bytes_total{rule}")),
        3000 * 74
    );
    assert_eq!(
        metric(&text, &format!("palisade_log_suppressed_total{rule}")),
        3000 - records
    );
    assert_eq!(
        metric(&text, "palisade_log_records_total{output=\"pcap\"}"),
        records
    );
    assert_eq!(
        metric(&text, "palisade_interface_rx_frames_total{interface=\"pa\"}"),
        3000
    );
    assert_eq!(
        metric(&text, "palisade_interface_denied_frames_total{interface=\"pa\"}"),
        3000
    );
    promtool(&text);

    // logrotate: rename, SIGUSR1; the next records go to a new file.
    std::fs::rename(&log, dir.join("log.json.1")).unwrap();
    std::fs::rename(&pcap, dir.join("log.pcapng.1")).unwrap();
    signal(&net, libc::SIGUSR1);
    wait_status(&net, Duration::from_secs(10), "SIGUSR1 reopened", |st| {
        log_figure(st, "reopens") == 1
    });
    std::thread::sleep(Duration::from_millis(2200)); // the bucket refills (20 at 10 a second)
    let sender = net.probe(&net.h1, &["udp-send", H2, "7009", "5", "1000"]);
    sender.wait(Duration::from_secs(20));
    wait_status(&net, Duration::from_secs(10), "the new frames logged", |st| {
        log_figure(st, "records") == records + 5 && log_figure(st, "pcap_frames") == records + 5
    });
    assert_eq!(
        frames_of(&log_lines(&dir.join("log.json.1"))).len() as u64,
        records
    );
    assert_eq!(frames_of(&log_lines(&log)).len(), 5);
    assert_eq!(
        pcap_frames(&pcap).len(),
        5,
        "a new pcapng file with its own header"
    );
    let out = net.palisade(&["log-reopen"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_status(&net, Duration::from_secs(10), "log-reopen", |st| {
        log_figure(st, "reopens") == 2
    });

    // One control event per action: SIGHUP reload (by root), refused reload, reload with a
    // confirm window, confirm, rollback.
    std::fs::write(&rules, std::fs::read_to_string(&rules).unwrap() + "# edited\n").unwrap();
    signal(&net, libc::SIGHUP);
    wait_status(&net, Duration::from_secs(10), "SIGHUP reload", |st| {
        st["generation"].as_u64() > Some(generation)
    });
    let out = net.palisade(&["reload", fixture("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "refused");
    let out = net.palisade(&[
        "reload",
        fixture("logged.toml").to_str().unwrap(),
        "--confirm-within",
        "60",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(net.palisade(&["confirm"]).status.success());
    assert!(net.palisade(&["rollback"]).status.success());
    let final_st = wait_status(
        &net,
        Duration::from_secs(10),
        "five control events logged",
        |st| log_figure(st, "events") == 5,
    );
    let lines = log_lines(&log);
    let events = events_of(&lines);
    let got: Vec<(String, String)> = events
        .iter()
        .map(|(_, e)| {
            (
                e["event"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("reload", "ok"),
        ("reload", "refused"),
        ("reload", "ok"),
        ("confirm", "ok"),
        ("rollback", "ok"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    for (line, e) in &events {
        assert_fields(line, e, &EVENT_FIELDS);
    }
    // The SIGHUP's sender and every control client (SO_PEERCRED) are root here.
    for (line, e) in &events {
        assert_eq!(e["uid"].as_u64(), Some(0), "{line}");
    }
    let last = &events[4].1;
    assert_eq!(last["generation"], final_st["generation"]);
    assert_eq!(last["digest"], final_st["digest"]);
    assert_eq!(
        events[1].1["generation"], events[0].1["generation"],
        "a refused reload changes nothing"
    );
    let text = scrape(&net, &addr);
    assert_eq!(metric(&text, "palisade_reloads_total{outcome=\"ok\"}"), 2);
    assert_eq!(metric(&text, "palisade_reloads_total{outcome=\"refused\"}"), 1);
    assert_eq!(
        metric(
            &text,
            "palisade_control_events_total{event=\"confirm\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "palisade_control_events_total{event=\"rollback\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(
        metric(&text, &format!("palisade_rule_packets_total{rule}")),
        3005,
        "monotonic across reloads"
    );
    promtool(&text);

    // The text status: log and metrics figures, and each event line with its time.
    let out = Command::new(PALISADE)
        .args(["status", "--control"])
        .arg(&net.sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "log        json {log_s}, pcapng {pcap_s}: {} records",
            records + 5
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("metrics    http://{addr}/metrics:")),
        "{text}"
    );
    let event_lines: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains(" reload ") || l.contains(" confirm ") || l.contains(" rollback "))
        .collect();
    assert!(event_lines.len() >= 5, "{text}");
    assert!(
        event_lines
            .iter()
            .all(|l| l.starts_with("20") && l.as_bytes().get(10) == Some(&b'T')),
        "every event line starts with its time: {text}"
    );
    assert!(
        text.contains("reload refused at stage validate (uid 0)"),
        "{text}"
    );
}
