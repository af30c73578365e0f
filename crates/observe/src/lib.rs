//! Seeing what the firewall does: rate-limited per-rule frame logs, the
//! control-event audit trail, and a Prometheus endpoint.
//!
//! A rule with `log = true` (an ACL with `log_default = true`) asks for a
//! record of every frame it decides. Records cost the data path a table
//! lookup per frame, and for a logged rule one rate-limit check
//! ([`limit`]); a record within its rule's `[logging]` rate is copied into
//! a slot of the worker's bounded queue and handed to a writer thread
//! ([`logger`]). The data path never waits for logging: over the rate, a
//! record is counted as suppressed; with the queue full (the writer behind
//! a slow or full disk), it is counted as dropped. The frame itself is
//! decided exactly as without logging. The writer ([`writer`]) formats
//! JSON lines and pcapng ([`record`]), survives a full disk and a vanished
//! file, and reopens its files on request (logrotate's SIGUSR1).
//!
//! Control actions (reload, refused reload, confirm, rollback, revert) come
//! from the engine's event sink and are logged beside the frames, with the
//! uid of the client that asked.
//!
//! [`metrics`] renders the Prometheus text format from the engine's counter
//! shards and the logger's figures; [`http`] serves it at `GET /metrics`.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_engine::policy::Decision;
//! use palisade_observe::logger::{LogConfig, Logger, ManualClock, Target};
//! use palisade_packet::FlowKey;
//!
//! let dir = std::env::temp_dir().join(format!("palisade-observe-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("rules.toml"), "version = 1\n[logging]\nrate = 1\nburst = 2\n\
//!     [[port]]\nname = \"wan0\"\n[[acl]]\nname = \"wan-in\"\ndefault = \"permit\"\n\
//!     [[acl.rule]]\nid = \"no-telnet\"\naction = \"deny\"\nproto = \"tcp\"\ndst_port = 23\nlog = true\n\
//!     [[bind]]\nacl = \"wan-in\"\nport = \"wan0\"\n").unwrap();
//! let (engine, _) = palisade_engine::Engine::open(&dir.join("rules.toml"), &dir.join("state"), Default::default()).unwrap();
//!
//! let clock = Arc::new(ManualClock::new(1_000_000_000));
//! let config = LogConfig { json: Some(Target::File(dir.join("log.json"))), ..LogConfig::default() };
//! let logger = Logger::start_with_clock(config, clock).unwrap();
//! let mut log = logger.worker();
//!
//! // The data path: classify a batch, then offer its decisions to the logger.
//! let telnet = FlowKey::new().with_ipv4([198, 18, 0, 1], [198, 18, 0, 2]).with_proto(6).with_ports(40000, 23);
//! let keys = [telnet; 5];
//! let mut worker = engine.handle();
//! let mut batch = worker.batch();
//! let ctx = batch.context("wan0", None).unwrap();
//! let mut out = [Decision::default(); 5];
//! batch.classify_frames(&keys, &[60; 5], &ctx, &mut out);
//! if let Some(mut b) = log.batch(batch.generation()) {
//!     for (k, d) in keys.iter().zip(&out) {
//!         b.frame(ctx.port, k, &[0u8; 60], d);
//!     }
//! }
//! drop(batch);
//! assert!(logger.flush(std::time::Duration::from_secs(5)));
//! let stats = logger.stats();
//! assert_eq!((stats.json_frames, stats.suppressed_total()), (2, 3)); // the burst; the rest counted
//! let text = palisade_observe::metrics::render(&engine, Some(&logger), &[]);
//! assert!(text.contains("palisade_rule_packets_total{acl=\"wan-in\",rule=\"no-telnet\"} 5\n"));
//! assert!(text.contains("palisade_log_suppressed_total{acl=\"wan-in\",rule=\"no-telnet\"} 3\n"));
//! # drop(logger);
//! # drop(engine);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod http;
pub mod limit;
pub mod logger;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod service;
pub mod writer;

pub use logger::{BatchLogger, LogConfig, LogStats, Logger, Target, WorkerLogger};
