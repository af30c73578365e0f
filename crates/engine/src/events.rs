//! Control events: one per control action, handed to an [`EventSink`].
//!
//! Every action that can change (or refuses to change) what the data path
//! enforces produces exactly one [`ControlEvent`]: a reload (made active or
//! refused), a confirm, a rollback, a set change, and the revert of an
//! unconfirmed reload when its window closes. The engine emits them itself, so no front end can
//! forget one; a front end names who asked (the uid of a control client) by
//! calling the `*_by` methods of [`crate::Engine`].
//!
//! The sink runs on the thread that performed the action (the revert: the
//! engine's confirm watchdog, with the control lock held), so it must be
//! quick and must not call back into the engine: push the event to a queue.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use palisade_engine::events::{ControlEvent, EventKind, Outcome};
//! use palisade_engine::{Engine, ReloadOptions, ReloadSource};
//! let dir = std::env::temp_dir().join(format!("palisade-events-doc-{}", std::process::id()));
//! let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
//! let seen = Arc::new(Mutex::new(Vec::<ControlEvent>::new()));
//! let sink = Arc::clone(&seen);
//! engine.set_event_sink(Some(Arc::new(move |e: &ControlEvent| sink.lock().unwrap().push(e.clone()))));
//! let rules = ReloadSource::Bytes { name: "r.toml".into(), bytes: b"version = 1\n".to_vec() };
//! engine.reload_by(rules, &ReloadOptions::default(), Some(1000)).unwrap();
//! assert!(engine.confirm().is_err()); // nothing to confirm: refused, and said so
//! let seen = seen.lock().unwrap();
//! assert_eq!((seen[0].event, seen[0].outcome, seen[0].uid, seen[0].generation), (EventKind::Reload, Outcome::Ok, Some(1000), 1));
//! assert_eq!((seen[1].event, seen[1].outcome, seen[1].uid), (EventKind::Confirm, Outcome::Refused, None));
//! # drop(engine);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use palisade_rules::Digest;

/// Which control action an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A reload: from the config (boot excluded), a file or pushed bytes.
    Reload,
    /// A confirm of a commit-confirmed reload.
    Confirm,
    /// A rollback to the previous or a kept generation.
    Rollback,
    /// An unconfirmed reload reverted by the engine when its window closed.
    Revert,
    /// A set change (`palisade set add|del`): a new generation like a reload.
    SetChange,
}

impl EventKind {
    /// `reload`, `confirm`, `rollback`, `revert` or `set-change`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::events::EventKind::Revert.as_str(), "revert");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Reload => "reload",
            EventKind::Confirm => "confirm",
            EventKind::Rollback => "rollback",
            EventKind::Revert => "revert",
            EventKind::SetChange => "set-change",
        }
    }
}

/// How a control action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// It took effect.
    Ok,
    /// It was refused; the active generation is unchanged.
    Refused,
}

impl Outcome {
    /// `ok` or `refused`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::events::Outcome::Refused.as_str(), "refused");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        }
    }
}

/// One control action and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlEvent {
    /// When the action ended.
    pub time: SystemTime,
    /// What was done.
    pub event: EventKind,
    /// Whether it took effect.
    pub outcome: Outcome,
    /// Who asked: the uid of the control client, `None` for the engine itself
    /// (a revert) or a caller that did not say.
    pub uid: Option<u32>,
    /// The generation active after the action (for a refused one: the unchanged one; 0 with no rules).
    pub generation: u64,
    /// That generation's digest (`None` with no rules).
    pub digest: Option<Digest>,
    /// For a refused action: the stage that refused it, when there is one (`validate`, ...).
    pub stage: Option<&'static str>,
    /// For a refused action: its causes (`file:line:col: message`); empty when ok.
    pub errors: Vec<String>,
}

/// Receives every [`ControlEvent`]; see the module docs for what it may do.
pub type EventSink = Arc<dyn Fn(&ControlEvent) + Send + Sync>;
