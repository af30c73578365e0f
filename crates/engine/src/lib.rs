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
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod control;
mod counters;
mod engine;
pub mod generation;
pub mod lkg;
pub mod policy;
pub mod reload;
pub mod status;

pub use engine::{Batch, BootReport, Engine, EngineOptions, Probe, ReloadOk, ReloadSource, WorkerHandle};
pub use generation::{Generation, GenerationState};
pub use reload::{ReloadError, ReloadOptions, ReloadStage};
pub use status::Status;
