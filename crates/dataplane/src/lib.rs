//! Palisade's data path as a library: what a program that moves frames needs
//! to filter them with the engine.
//!
//! A gateway's packet loop reads frames from somewhere (packet sockets in
//! `palisade run --bridge`, a NIC driver or a capture in another program) and
//! asks a [`FrameFilter`] what becomes of each batch. The [`EngineFilter`]
//! parses each [`Frame`] and answers with the running engine's policy,
//! pinning one generation per batch, in the context the [`Topology`] gives
//! each frame: which `[[port]]` it entered, whether crossing the bridge is
//! switching within a VLAN or routing between two L3 interfaces, and which
//! VLAN tag it leaves with ([`Forward`]). Frames are handed over as they were
//! on the wire ([`vlan::reinsert`] puts back a tag the interface stripped) and
//! leave with the tags their egress port carries ([`vlan::retag`]); nothing
//! else in a frame is ever changed. Beside the real decision a [`ShadowSlot`]
//! may hold a candidate rule set that decides the same frames without
//! enforcing anything ([`shadow`]). The engine counts each frame's bytes, and
//! frames whose deciding rule has `log = true` are offered to the worker's
//! [`palisade_observe::WorkerLogger`] (rate-limited, never waiting). [`stats`]
//! holds the per-interface I/O counters ([`metrics`] exposes them to
//! Prometheus) and [`service`] answers the data path's control requests
//! (`data-path`, `shadow`, ...) on the engine's control socket.
//!
//! Nothing here does I/O on the hot path: deciding a batch never blocks,
//! allocates or panics. `examples/embed.rs` is a complete packet loop.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_dataplane::{EngineFilter, Forward, Frame, FrameFilter, ShadowSlot};
//! use palisade_engine::{Engine, EngineOptions};
//! let dir = std::env::temp_dir().join(format!("palisade-dp-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let config = dir.join("rules.toml");
//! std::fs::write(&config, "version = 1\n[[port]]\nname = \"in0\"\nvlan = 1\n[[port]]\nname = \"out0\"\ntrunk = [1]\n").unwrap();
//! let (engine, _) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
//! let mut filter = EngineFilter::new(engine.handle(), vec!["in0".into(), "out0".into()], 0, Arc::new(ShadowSlot::default()));
//! // No ACL is bound: an untagged frame entering in0 (access VLAN 1) leaves out0 tagged
//! // with VLAN 1 (a trunk); a runt frame is malformed: denied.
//! let frame = [0u8; 60];
//! let mut out = [Forward::Drop; 2];
//! filter.decide(0, &[Frame::new(&frame), Frame::new(&frame[..10])], &mut out);
//! assert_eq!(out, [Forward::Tagged(1), Forward::Drop]);
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
pub mod vlan;

pub use filter::{EngineFilter, Forward, Frame, FrameFilter};
pub use shadow::{Shadow, ShadowSlot};
pub use stats::{DataPathInfo, SideCounters, SideTotals};
pub use topology::{Path, Topology};

/// Most frames decided in one batch (and moved by one `recvmmsg`/`sendmmsg`).
pub const MAX_BATCH: usize = 64;
