//! Shadow evaluation: a candidate rule set decides the same live frames as
//! the active generation, without enforcing anything, and counts where it
//! would decide differently.
//!
//! `palisade reload --control SOCK --shadow RULES` checks the candidate with
//! the engine's own reload stages ([`Engine::check_candidate`]: read, parse,
//! validate, compile under the memory cap, self-test, audit; a candidate that
//! fails any of them is refused like a reload, except that changed rescue
//! rules are only refused when it is promoted). Every worker then evaluates each
//! batch against it after the real decision, so enforcement is untouched.
//! `palisade status --json` shows, per ACL and rule of the candidate, how
//! many frames it would have decided differently, with a few examples, and
//! how many of the live flows it would cut (`flows_cut` of `flows_checked`:
//! their opening frame, in its context, would no longer open a flow). The
//! candidate decides frames in the flow state the active generation found.
//! `palisade reload --promote` (or a reload of the same file) makes it active
//! through the normal pipeline; once the active digest equals the
//! candidate's, it is no longer evaluated.
//!
//! Served through the data path's control service ([`crate::service`]) as
//! `{"cmd":"shadow","path":...}`, `{"cmd":"shadow-status"}` and
//! `{"cmd":"shadow-clear"}`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use palisade_engine::control::{ErrorReply, ShadowAcl, ShadowExample, ShadowReport, ShadowRule};
use palisade_engine::policy::{Decision, Policy, RuleRef};
use palisade_engine::Engine;
use palisade_packet::FlowKey;
use palisade_rules::{Digest, RuleSet};

/// Examples of differing frames kept per candidate.
const EXAMPLES: usize = 5;

/// A candidate rule set under evaluation, with its difference counters.
pub struct Shadow {
    /// The compiled candidate.
    pub policy: Policy,
    /// Its rule set (for the topology).
    pub ruleset: RuleSet,
    /// SHA-256 of the candidate file.
    pub digest: Digest,
    /// Where it was read from.
    pub source: String,
    /// Distinguishes candidates, so workers rebuild their topology for a new one.
    pub serial: u64,
    frames: AtomicU64,
    differ: AtomicU64,
    /// Live flows when it was loaded, and how many of them it would cut (its
    /// rules would not open their opening frame in its context).
    flows_checked: u64,
    flows_cut: u64,
    /// Per candidate ACL: one counter per rule, then one for the default.
    per_rule: Vec<Vec<AtomicU64>>,
    /// Differences not decided by an ACL of the candidate (rescue, malformed, VLAN, context).
    other: AtomicU64,
    examples: Mutex<Vec<ShadowExample>>,
}

impl Shadow {
    /// Checks a candidate with the engine's own reload stages (read, parse,
    /// validate, compile under the memory cap, self-test, audit), without
    /// persisting or publishing it; a refusal names its stage like a reload's.
    pub fn load(engine: &Engine, path: &Path, serial: u64) -> Result<Shadow, ErrorReply> {
        let checked = engine.check_candidate(path).map_err(|e| ErrorReply {
            error: "candidate refused".into(),
            ..ErrorReply::from(&e)
        })?;
        let policy = checked.policy;
        let (flows_checked, flows_cut) = engine.flows_cut_by(&policy);
        let per_rule = policy
            .acls()
            .iter()
            .map(|a| (0..=a.rule_ids.len()).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Ok(Shadow {
            policy,
            ruleset: checked.ruleset,
            digest: checked.digest,
            source: checked.source,
            serial,
            frames: AtomicU64::new(0),
            differ: AtomicU64::new(0),
            flows_checked,
            flows_cut,
            per_rule,
            other: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        })
    }

    /// Counts a batch of `frames` compared frames.
    #[inline]
    pub fn count_frames(&self, frames: u64) {
        self.frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// Records one frame the candidate decides differently (rare: only then is anything shared touched).
    pub fn record(&self, interface: &str, key: &FlowKey, active: &Decision, candidate: &Decision) {
        self.differ.fetch_add(1, Ordering::Relaxed);
        let slot = candidate.acl.and_then(|acl| {
            let rules = self.per_rule.get(acl as usize)?;
            match candidate.rule {
                RuleRef::Rule(i) => rules.get(i as usize),
                RuleRef::Default => rules.last(),
                _ => None,
            }
        });
        slot.unwrap_or(&self.other).fetch_add(1, Ordering::Relaxed);
        if let Ok(mut ex) = self.examples.try_lock() {
            if ex.len() < EXAMPLES {
                // Allocates, but only for the first few differences of a candidate.
                ex.push(ShadowExample {
                    interface: interface.to_owned(),
                    packet: palisade_rules::format_packet(key),
                    active: active.verdict,
                    candidate: candidate.verdict,
                    stage: candidate.stage.as_str().to_owned(),
                    acl: self.policy.acl_name(candidate.acl).map(str::to_owned),
                    rule: self.policy.rule_label(candidate.acl, candidate.rule).to_owned(),
                });
            }
        }
    }

    /// The report shown by `palisade status --json` under `shadow`.
    pub fn report(&self, active_digest: Option<Digest>) -> ShadowReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let acls = self
            .policy
            .acls()
            .iter()
            .zip(&self.per_rule)
            .map(|(acl, counts)| ShadowAcl {
                name: acl.name.clone(),
                rules: acl
                    .rule_ids
                    .iter()
                    .zip(counts)
                    .map(|(id, c)| ShadowRule {
                        id: id.clone(),
                        differ: load(c),
                    })
                    .collect(),
                default_differ: counts.last().map_or(0, load),
            })
            .collect();
        ShadowReport {
            source: self.source.clone(),
            digest: self.digest.to_string(),
            promoted: active_digest == Some(self.digest),
            frames: load(&self.frames),
            differ: load(&self.differ),
            other_differ: load(&self.other),
            flows_checked: self.flows_checked,
            flows_cut: self.flows_cut,
            acls,
            examples: self.examples.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// The one candidate slot, shared by the workers and the control socket.
#[derive(Default)]
pub struct ShadowSlot {
    /// The candidate, if any; loaded once per batch by each worker.
    pub current: ArcSwapOption<Shadow>,
    serial: AtomicU64,
}

impl ShadowSlot {
    /// Checks the candidate at `path` (see [`Shadow::load`]) and, when it
    /// passes, makes it the one evaluated beside the active generation.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<ShadowReport, ErrorReply> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let sh = Shadow::load(engine, path, serial)?;
        let report = sh.report(engine.current().digest());
        self.current.store(Some(Arc::new(sh)));
        Ok(report)
    }

    /// The candidate's report, if there is one.
    pub fn report(&self, engine: &Engine) -> Option<ShadowReport> {
        let active = engine.current().digest();
        self.current.load().as_ref().map(|s| s.report(active))
    }

    /// Stops evaluating the candidate.
    pub fn clear(&self) {
        self.current.store(None);
    }
}
