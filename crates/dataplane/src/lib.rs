//! Palisade's data path as a library: what a program that moves frames needs
//! to filter them with the engine.
//!
//! A gateway's packet loop reads frames from somewhere (packet sockets in
//! `palisade run --bridge`, a NIC driver or a capture in another program),
//! parses each into a [`palisade_packet::FlowKey`], and asks a
//! [`FrameFilter`] for a batch of verdicts. The [`EngineFilter`] answers with
//! the running engine's policy, pinning one generation per batch, in the
//! context the [`Topology`] gives each frame: which `[[port]]` it entered,
//! whether crossing the bridge is switching within a VLAN or routing between
//! two L3 interfaces. Beside the real decision a [`ShadowSlot`] may hold a
//! candidate rule set that decides the same frames without enforcing
//! anything ([`shadow`]). Frames whose deciding rule has `log = true` are
//! offered to the worker's [`palisade_observe::WorkerLogger`] (rate-limited,
//! never waiting). [`stats`] holds the per-interface I/O counters ([`metrics`]
//! exposes them to Prometheus) and
//! [`service`] answers the data path's control requests (`data-path`,
//! `shadow`, ...) on the engine's control socket.
//!
//! Nothing here does I/O on the hot path: deciding a batch never blocks,
//! allocates or panics.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_dataplane::{EngineFilter, FrameFilter, ShadowSlot};
//! use palisade_engine::{Engine, EngineOptions};
//! use palisade_packet::parse;
//! let dir = std::env::temp_dir().join(format!("palisade-dp-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let config = dir.join("rules.toml");
//! std::fs::write(&config, "version = 1\n[[port]]\nname = \"in0\"\nvlan = 1\n[[port]]\nname = \"out0\"\nvlan = 1\n").unwrap();
//! let (engine, _) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
//! let mut filter = EngineFilter::new(engine.handle(), vec!["in0".into(), "out0".into()], 0, Arc::new(ShadowSlot::default()));
//! // No ACL is bound: a frame entering in0 passes to out0 (a runt frame is malformed: denied).
//! let frame = [0u8; 60];
//! let keys = [parse(&frame), parse(&frame[..10])];
//! let mut permit = [false; 2];
//! filter.decide(0, &keys, &mut permit);
//! assert_eq!(permit, [true, false]);
//! drop((filter, engine));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod filter;
pub mod metrics;
pub mod service;
pub mod shadow;
pub mod stats;
pub mod topology;

pub use filter::{EngineFilter, FrameFilter, Frames};
pub use shadow::{Shadow, ShadowSlot};
pub use stats::{DataPathInfo, SideCounters, SideTotals};
pub use topology::Topology;

/// Most frames decided in one batch (and moved by one `recvmmsg`/`sendmmsg`).
pub const MAX_BATCH: usize = 64;
