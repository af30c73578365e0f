//! Palisade's engine: the policy that evaluates Port, VLAN and Routed ACLs in
//! a fixed order, and the machinery that makes a rule set active entirely or
//! not at all.
//!
//! The two pipelines of the design are the module tree:
//!
//! * data path: [`policy`] (key -> verdict through the stages), reached by a
//!   worker through [`WorkerHandle`] on one pinned [`Generation`];
//! * control path: [`reload`] (read -> parse -> validate -> compile ->
//!   self-test -> audit), [`lkg`] (persist), [`Engine`] (publish, confirm
//!   window, rollback, boot), [`status`], and [`control`] (the daemon's
//!   socket protocol).
//!
//! A generation is published with one atomic pointer swap ([`arc_swap`]);
//! readers never block and never see two generations within one batch.
//! Every stage before the swap works on a private candidate, so a refused
//! update changes nothing: not the rules, not the digest, not the counters.
//! Boot runs the generation that was active and confirmed when the engine
//! stopped (from the state directory); the config only seeds an empty state
//! directory and is applied later by an explicit reload. With neither, "no
//! rules" (every frame denied, control path open): never "allow all".
//!
//! ```
//! use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource, ReloadStage};
//! let dir = std::env::temp_dir().join(format!("palisade-lib-doc-{}", std::process::id()));
//! // No config and an empty state directory: the engine runs with no rules.
//! let (engine, boot) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), EngineOptions::default()).unwrap();
//! assert_eq!(engine.status().state, palisade_engine::GenerationState::NoRules);
//! assert_eq!(boot.config_error.unwrap().stage, ReloadStage::Read);
//! // A valid rule set pushed over the control path becomes generation 1.
//! let rules = b"version = 1\n[[port]]\nname = \"lan1\"\n".to_vec();
//! let ok = engine.reload(ReloadSource::Bytes { name: "push.toml".into(), bytes: rules }, &ReloadOptions::default()).unwrap();
//! assert_eq!((ok.generation, engine.status().state), (1, palisade_engine::GenerationState::Active));
//! drop(engine);
//! // A restart runs what was active, not the (missing) config.
//! let (engine, _) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), EngineOptions::default()).unwrap();
//! assert_eq!((engine.status().generation, engine.status().state), (1, palisade_engine::GenerationState::Active));
//! drop(engine);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(missing_docs)]
// Three exceptions, named: control::peer reads SO_PEERCRED (std has no stable call for it);
// flow::huge asks madvise(2) for huge pages under the flow table, flow::prefetch prefetches its
// lines in lookups (benches/flows.rs shows both pay).
#![deny(unsafe_code)]

pub mod control;
mod counters;
mod engine;
pub mod events;
pub mod flow;
pub mod generation;
pub mod lkg;
pub mod policy;
pub mod reload;
mod setfile;
pub mod stateful;
pub mod status;

pub use engine::{
    Batch, BootReport, BootSource, CheckedCandidate, Engine, EngineOptions, Probe, ReloadOk, ReloadSource,
    RollbackOptions, SetChanged, WorkerHandle,
};
pub use generation::{Generation, GenerationState};
pub use reload::{ReloadError, ReloadOptions, ReloadStage};
pub use status::Status;
