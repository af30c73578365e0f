//! The engine filter counts bytes and logs the frames of `log = true` rules,
//! without changing a verdict.

use std::sync::Arc;
use std::time::Duration;

use palisade_dataplane::{EngineFilter, Forward, Frame, FrameFilter, ShadowSlot};
use palisade_engine::{Engine, EngineOptions};
use palisade_observe::{LogConfig, Logger, Target};

const RULES: &str = r#"version = 1
[logging]
rate = 1
burst = 2
[[port]]
name = "a"
vlan = 1
[[port]]
name = "b"
vlan = 1
[[acl]]
name = "in"
default = "permit"
  [[acl.rule]]
  id = "no-udp"
  action = "deny"
  proto = "udp"
  log = true
[[bind]]
acl = "in"
port = "a"
"#;

fn udp_frame(sport: u16) -> Box<[u8]> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(sport, 53);
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 20]).unwrap();
    f.into_boxed_slice()
}

#[test]
fn decide_counts_bytes_and_logs_within_the_rate() {
    let dir = std::env::temp_dir().join(format!("palisade-dp-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap();
    let config = LogConfig {
        json: Some(Target::File(dir.join("log.json"))),
        ..LogConfig::default()
    };
    let logger = Logger::start(config).unwrap();
    let mut filter = EngineFilter::new(
        engine.handle(),
        vec!["a".into(), "b".into()],
        0,
        Arc::new(ShadowSlot::default()),
    )
    .with_logger(logger.worker());
    // 70 frames: more than one chunk of MAX_BATCH (64).
    let bufs: Vec<Box<[u8]>> = (0..70).map(|i| udp_frame(1000 + i)).collect();
    let lens: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
    let frames: Vec<Frame> = bufs.iter().map(|b| Frame::new(b)).collect();
    let mut out = vec![Forward::AsReceived; 70];
    filter.decide(0, &frames, &mut out);
    assert!(
        out.iter().all(|o| *o == Forward::Drop),
        "every frame denied, logged or not"
    );
    assert!(logger.flush(Duration::from_secs(20)));
    let stats = logger.stats();
    assert_eq!((stats.json_frames, stats.suppressed_total()), (2, 68));
    let text = std::fs::read_to_string(dir.join("log.json")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["port"].as_str(), first["rule"].as_str()),
        (Some("a"), Some("no-udp"))
    );
    assert_eq!(first["len"].as_u64(), Some(lens[0] as u64));
    let status = engine.status();
    let rule = &status.acls[0].counters.rules[0];
    assert_eq!((rule.hits, rule.bytes), (70, lens.iter().sum::<usize>() as u64));
    // The next batch is offered too: over the rate, so suppressed, still decided.
    filter.decide(0, &frames[..5], &mut out[..5]);
    assert!(out[..5].iter().all(|o| *o == Forward::Drop));
    assert!(logger.flush(Duration::from_secs(20)));
    assert_eq!(logger.stats().json_frames + logger.stats().suppressed_total(), 75);
    drop((filter, logger, engine));
    std::fs::remove_dir_all(&dir).unwrap();
}
