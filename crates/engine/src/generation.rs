//! A generation: one immutable snapshot of one rule set, published whole.
//!
//! A [`Generation`] holds every compiled ACL and every binding of one rule
//! file (inside its [`Policy`]), the file's digest, its number, load time and
//! source, and the state the engine is in. The engine publishes it with one
//! atomic pointer swap; the data path and `status` read the same pointer, so
//! what status reports is what the data path enforces.

use std::sync::Arc;

use palisade_rules::{Digest, RuleSet};

use crate::counters::Layout;
use crate::lkg::Companion;
use crate::policy::Policy;

/// What the engine is running on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenerationState {
    /// A rule set loaded from the config or a reload, confirmed or without a confirm window.
    Active,
    /// The config was missing or invalid at boot: running on a persisted last-known-good.
    LastKnownGood,
    /// Active, but reverts by itself unless confirmed before the deadline.
    PendingConfirm,
    /// No valid rule set at all: every frame is denied, the control socket stays open.
    NoRules,
}

impl GenerationState {
    /// `active`, `last-known-good`, `pending-confirm` or `no-rules`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::GenerationState::NoRules.as_str(), "no-rules");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            GenerationState::Active => "active",
            GenerationState::LastKnownGood => "last-known-good",
            GenerationState::PendingConfirm => "pending-confirm",
            GenerationState::NoRules => "no-rules",
        }
    }
}

impl std::fmt::Display for GenerationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compiled rule set, shared by every generation that runs it (a revert
/// or a confirmation republishes the same rules under a new snapshot).
#[derive(Debug)]
pub(crate) struct Compiled {
    pub policy: Policy,
    pub ruleset: RuleSet,
    pub bytes: Arc<Vec<u8>>,
    /// The generation's digest (over the rule file and its set files).
    pub digest: Digest,
    /// SHA-256 of the rule file alone.
    pub rules_digest: Digest,
    /// The set files, with their bytes.
    pub files: Vec<palisade_rules::CompanionFile>,
    pub source: String,
    /// Fingerprint of the `[[rescue]]` rules, to refuse silent changes.
    pub rescue_fingerprint: Digest,
    pub layout: Layout,
    /// How its frames' flows are tracked (`None`: no rule is stateful).
    pub flows: Option<crate::stateful::FlowPlan>,
}

/// One immutable snapshot: what the data path enforces and status reports.
#[derive(Debug)]
pub struct Generation {
    pub(crate) number: u64,
    pub(crate) state: GenerationState,
    pub(crate) loaded_at: u64,
    pub(crate) confirm_deadline: Option<u64>,
    pub(crate) rules: Option<Arc<Compiled>>,
    /// The flow table, shared with the generations before and after it,
    /// when its rules are stateful.
    pub(crate) flows: Option<Arc<crate::flow::FlowTable>>,
}

impl Generation {
    pub(crate) fn no_rules() -> Self {
        Generation {
            number: 0,
            state: GenerationState::NoRules,
            loaded_at: crate::lkg::unix_now(),
            confirm_deadline: None,
            rules: None,
            flows: None,
        }
    }

    /// The generation number (0 for the no-rules state); increases with every publish.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The engine state this snapshot was published in.
    pub fn state(&self) -> GenerationState {
        self.state
    }

    /// The generation's digest (`None` in the no-rules state): SHA-256 of the
    /// rule file's bytes, or [`palisade_rules::Digest::of_parts`] of the rule
    /// file and its set files (companion files) when it has any.
    pub fn digest(&self) -> Option<Digest> {
        self.rules.as_ref().map(|c| c.digest)
    }

    /// Where the rules came from.
    pub fn source(&self) -> Option<&str> {
        self.rules.as_ref().map(|c| c.source.as_str())
    }

    /// When it was published, seconds since the Unix epoch.
    pub fn loaded_at(&self) -> u64 {
        self.loaded_at
    }

    /// For a pending-confirm generation: when it reverts, seconds since the Unix epoch.
    pub fn confirm_deadline(&self) -> Option<u64> {
        self.confirm_deadline
    }

    /// The compiled policy (`None` in the no-rules state, where every frame is denied).
    pub fn policy(&self) -> Option<&Policy> {
        self.rules.as_ref().map(|c| &c.policy)
    }

    /// The validated rule set (`None` in the no-rules state).
    pub fn ruleset(&self) -> Option<&RuleSet> {
        self.rules.as_ref().map(|c| &c.ruleset)
    }

    /// The rule file's bytes (`None` in the no-rules state).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.rules.as_ref().map(|c| c.bytes.as_slice())
    }

    /// The companion files (set files) of the rule file, as they were loaded
    /// and as last-known-good keeps them (empty in the no-rules state and for
    /// a rule file that names none).
    pub fn companions(&self) -> Vec<Companion> {
        self.files().iter().map(crate::lkg::Companion::of).collect()
    }

    /// The set files of the generation, with their bytes (empty in the no-rules state).
    pub fn files(&self) -> &[palisade_rules::CompanionFile] {
        self.rules.as_ref().map_or(&[], |c| c.files.as_slice())
    }
}
