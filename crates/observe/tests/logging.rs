//! The logger end to end with an injected clock: rate limits, record fields,
//! the pcapng twin of the JSON log, a writer that cannot keep up, reopening.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_engine::policy::Verdict;
use palisade_observe::logger::ManualClock;
use palisade_observe::{LogConfig, Logger, Target};

const FIELDS: [&str; 15] = [
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

fn config(dir: &TempDir) -> LogConfig {
    LogConfig {
        json: Some(Target::File(dir.join("log.json"))),
        pcap: Some(dir.join("log.pcapng")),
        ..LogConfig::default()
    }
}

#[test]
fn records_within_the_rate_have_every_field_and_the_rest_are_counted() {
    let dir = TempDir::new("rate");
    let engine = engine(&dir, &rules(10, 20));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let logger = Logger::start_with_clock(config(&dir), Arc::clone(&clock) as _).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();

    // 3 seconds of telnet at 1,000 frames a second, in batches of 10 ms; ssh beside it (not logged).
    let mut sent = 0u16;
    for _ in 0..300 {
        let keys: Vec<_> = (0..10).map(|i| telnet(sent + i)).chain([ssh(sent)]).collect();
        let frames: Vec<_> = (0..10)
            .map(|i| frame(sent + i, 74))
            .chain([frame(60000, 66)])
            .collect();
        let out = run_batch(&mut h, &mut log, "wan0", &keys, &frames);
        // Logging never changes a verdict.
        assert!(out[..10].iter().all(|d| d.verdict == Verdict::Deny));
        assert_eq!(out[10].verdict, Verdict::Permit);
        sent += 10;
        clock.advance(Duration::from_millis(10));
    }
    assert!(logger.flush(FLUSH));

    // burst, then one every 100 ms: 20 + 29 (the last batch is at 2.99 s).
    let records = lines(&dir.join("log.json"));
    assert_eq!(records.len(), 49);
    for line in std::fs::read_to_string(dir.join("log.json")).unwrap().lines() {
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|f| {
                line.find(&format!("\"{f}\":"))
                    .unwrap_or_else(|| panic!("{f} missing: {line}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "fields in DESIGN's order: {line}"
        );
    }
    let stats = logger.stats();
    assert_eq!((stats.json_frames, stats.pcap_frames), (49, 49));
    assert_eq!(stats.suppressed_total(), 3000 - 49);
    assert_eq!(
        stats.suppressed,
        [
            ("wan-in".to_string(), "no-telnet".to_string(), 3000 - 49),
            ("wan-in".to_string(), "default".to_string(), 0)
        ]
    );
    assert_eq!(
        (stats.queue_full, stats.json_errors, stats.pcap_errors),
        (0, 0, 0)
    );

    let status = engine.status();
    let rule = &status.acls[0].counters.rules[0];
    assert_eq!(
        (rule.hits, rule.bytes),
        (3000, 3000 * 74),
        "every frame counted, logged or not"
    );

    let digest = engine.current().digest().unwrap().to_string();
    for (n, r) in records.iter().enumerate() {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = FIELDS.to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want, "exactly the documented fields");
        assert_eq!(r["generation"], engine.current().number());
        assert_eq!(r["digest"], digest.as_str());
        assert_eq!(r["port"], "wan0");
        assert_eq!(r["stage"], "pacl");
        assert_eq!(r["acl"], "wan-in");
        assert_eq!(r["rule"], "no-telnet");
        assert_eq!(r["verdict"], "deny");
        assert_eq!(r["family"], "ipv4");
        assert_eq!(r["proto"], "tcp");
        assert_eq!(r["src"], "198.18.0.1");
        assert_eq!(r["dst"], "198.18.0.2");
        assert_eq!(r["dst_port"], 23);
        assert_eq!(r["len"], 74);
        let t = r["time"].as_str().unwrap();
        assert!(t.starts_with("2023-11-14T22:13:") && t.ends_with('Z'), "{t}");
        // The first 20 records are the burst (frames 0..20), then one a 100 ms (frame 100, 200, ...).
        let want = if n < 20 { n } else { (n - 19) * 100 };
        assert_eq!(r["src_port"], 40000 + want, "record {n}");
    }

    // The pcapng holds the same frames, each with its reason.
    let frames = pcap_frames(&dir.join("log.pcapng"));
    assert_eq!(frames.len(), records.len());
    for ((iface, len, data, comment), r) in frames.iter().zip(&records) {
        assert_eq!(iface, "wan0");
        assert_eq!(*len, 74);
        let port = r["src_port"].as_u64().unwrap() as u16;
        assert_eq!(
            data[..2],
            (port - 40000).to_be_bytes(),
            "the same frame as the JSON record"
        );
        let generation = engine.current().number();
        assert!(
            comment.contains("acl \"wan-in\"")
                && comment.contains("rule \"no-telnet\"")
                && comment.contains(&format!("generation {generation}")),
            "{comment}"
        );
    }
}

#[test]
fn defaults_are_logged_under_rule_default_and_frames_are_cut_at_snaplen() {
    let dir = TempDir::new("default");
    let engine = engine(&dir, &rules(10, 20));
    let clock = Arc::new(ManualClock::new(5_000_000_000));
    let config = LogConfig {
        snaplen: 100,
        ..config(&dir)
    };
    let logger = Logger::start_with_clock(config, clock).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();
    // udp hits no rule: the (logged) default denies it. An IPv6 frame too; a non-IP frame
    // (ARP) reaches the default as well.
    let udp = telnet(0).with_proto(17).with_ports(5353, 5353);
    let v6 = palisade_packet::FlowKey::new()
        .with_ipv6(0x2001_0db8 << 96 | 1, 0x2001_0db8 << 96 | 2)
        .with_proto(58)
        .with_icmp(128, 0);
    let mut arp = palisade_packet::FlowKey::new();
    arp.ethertype = 0x0806;
    arp.present.0 |= palisade_packet::Present::ETHERTYPE;
    run_batch(
        &mut h,
        &mut log,
        "wan0",
        &[udp, v6, arp],
        &[frame(1, 1500), frame(2, 90), frame(3, 60)],
    );
    assert!(logger.flush(FLUSH));
    let r = lines(&dir.join("log.json"));
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(
        (r[0]["rule"].as_str(), r[0]["proto"].as_str()),
        (Some("default"), Some("udp"))
    );
    assert_eq!(
        (r[0]["src_port"].as_u64(), r[0]["len"].as_u64()),
        (Some(5353), Some(1500))
    );
    assert_eq!(r[1]["family"], "ipv6");
    assert_eq!(r[1]["src"], "2001:db8::1");
    assert_eq!(r[1]["proto"], "icmpv6");
    assert!(r[1]["src_port"].is_null() && r[1]["dst_port"].is_null());
    assert!(r[2]["family"].is_null() && r[2]["src"].is_null() && r[2]["proto"].is_null());
    let frames = pcap_frames(&dir.join("log.pcapng"));
    assert_eq!(frames[0].1, 1500, "original length kept");
    assert_eq!(frames[0].2.len(), 100, "captured bytes cut at snaplen");
    assert_eq!(frames[1].2.len(), 90);
}

#[test]
fn a_rule_kept_by_a_reload_keeps_its_bucket_and_a_new_generation_is_named() {
    let dir = TempDir::new("reload");
    let engine = engine(&dir, &rules(1, 3));
    let clock = Arc::new(ManualClock::new(5_000_000_000));
    let logger = Logger::start_with_clock(config(&dir), Arc::clone(&clock) as _).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();
    let keys: Vec<_> = (0..5).map(telnet).collect();
    let frames: Vec<_> = (0..5).map(|i| frame(i, 60)).collect();
    run_batch(&mut h, &mut log, "wan0", &keys, &frames);
    let first = engine.current().number();
    // Same rule id, new generation (a comment changes the digest): the bucket is still empty.
    let text = rules(1, 3) + "# changed\n";
    engine
        .reload(
            palisade_engine::ReloadSource::Bytes {
                name: "r2.toml".into(),
                bytes: text.into_bytes(),
            },
            &Default::default(),
        )
        .unwrap();
    run_batch(&mut h, &mut log, "wan0", &keys, &frames);
    clock.advance(Duration::from_secs(1));
    run_batch(&mut h, &mut log, "wan0", &keys, &frames);
    assert!(logger.flush(FLUSH));
    let r = lines(&dir.join("log.json"));
    let gens: Vec<u64> = r.iter().map(|r| r["generation"].as_u64().unwrap()).collect();
    assert_eq!(
        gens,
        [first, first, first, first + 1],
        "3 (burst), 0, then 1 a second later"
    );
    assert_eq!(logger.stats().suppressed_total(), 15 - 4);
}

#[test]
fn a_blocked_writer_never_blocks_the_data_path_and_drops_are_counted() {
    let dir = TempDir::new("blocked");
    let fifo = dir.join("log.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that never reads: the writer fills the pipe (64 KiB) and then blocks in write().
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let engine = engine(&dir, &rules(1_000_000, 1_000_000));
    let config = LogConfig {
        json: Some(Target::File(fifo.clone())),
        queue: 64,
        ..LogConfig::default()
    };
    let logger = Logger::start(config).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();
    // The data path on its own thread: if logging blocked it, it would never finish.
    let keys: Vec<_> = (0..64).map(telnet).collect();
    let frames: Vec<_> = (0..64).map(|i| frame(i, 64)).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut denied = 0u64;
        for _ in 0..2_000 {
            let out = run_batch(&mut h, &mut log, "wan0", &keys, &frames);
            denied += out.iter().filter(|d| d.verdict == Verdict::Deny).count() as u64;
        }
        done_tx.send(denied).unwrap();
    });
    let denied = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the data path finished while the writer was blocked");
    worker.join().unwrap();
    assert_eq!(denied, 128_000, "every frame decided");
    let stats = logger.stats();
    assert_eq!(
        stats.queued + stats.queue_full,
        128_000,
        "every admitted record queued or counted"
    );
    assert!(stats.queue_full > 100_000, "most were dropped: {stats:?}");
    assert_eq!(engine.status().acls[0].counters.rules[0].hits, 128_000);

    // Unblock: read everything; every queued record then reaches the log.
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        let mut reader = reader;
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => all.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
            if all.iter().filter(|&&b| b == b'\n').count() as u64 >= stats.queued {
                break;
            }
        }
        all
    });
    assert!(logger.flush(Duration::from_secs(60)));
    let all = drain.join().unwrap();
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.lines().count() as u64, stats.queued);
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert_eq!(logger.stats().json_frames, stats.queued);
}

#[test]
fn reopen_follows_logrotate_and_a_vanished_file_is_recreated() {
    let dir = TempDir::new("reopen");
    let engine = engine(&dir, &rules(1_000, 1_000));
    let logger = Logger::start(config(&dir)).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();
    let mut send = |n: u16| {
        let keys: Vec<_> = (0..n).map(telnet).collect();
        let frames: Vec<_> = (0..n).map(|i| frame(i, 60)).collect();
        run_batch(&mut h, &mut log, "wan0", &keys, &frames);
        assert!(logger.flush(FLUSH));
    };
    send(3);
    // logrotate: rename, then ask for a reopen (SIGUSR1 or `log-reopen`).
    std::fs::rename(dir.join("log.json"), dir.join("log.json.1")).unwrap();
    std::fs::rename(dir.join("log.pcapng"), dir.join("log.pcapng.1")).unwrap();
    logger.reopen(Duration::from_secs(10)).unwrap();
    send(2);
    assert_eq!(lines(&dir.join("log.json.1")).len(), 3);
    assert_eq!(lines(&dir.join("log.json")).len(), 2);
    assert_eq!(pcap_frames(&dir.join("log.pcapng.1")).len(), 3);
    assert_eq!(
        pcap_frames(&dir.join("log.pcapng")).len(),
        2,
        "a new file with its own header"
    );

    // Deleted under the writer: recreated within a second or so, without being asked.
    std::fs::remove_file(dir.join("log.json")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    send(4);
    assert_eq!(lines(&dir.join("log.json")).len(), 4);

    // A reopen that cannot create the file says so, and the records are counted as lost.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let err = logger.reopen(Duration::from_secs(10)).unwrap_err();
    assert!(err.contains("log.json") && err.contains("cannot reopen"), "{err}");
    let before = logger.stats().json_errors;
    send(5);
    assert_eq!(logger.stats().json_errors, before + 5);
    std::fs::create_dir_all(dir.path()).unwrap();
    logger.reopen(Duration::from_secs(10)).unwrap();
    send(1);
    assert_eq!(lines(&dir.join("log.json")).len(), 1);
}

use std::os::unix::fs::OpenOptionsExt as _;
