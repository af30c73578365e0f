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
//! many frames it would have decided differently, with a few examples.
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
use palisade_engine::control::Extension;
use palisade_engine::policy::{Decision, Policy, RuleRef};
use palisade_engine::Engine;
use palisade_packet::FlowKey;
use palisade_rules::{Digest, RuleSet};
use serde_json::{json, Value};

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
    /// Per candidate ACL: one counter per rule, then one for the default.
    per_rule: Vec<Vec<AtomicU64>>,
    /// Differences not decided by an ACL of the candidate (rescue, malformed, VLAN, context).
    other: AtomicU64,
    examples: Mutex<Vec<Value>>,
}

impl Shadow {
    /// Checks a candidate with the engine's own reload stages (read, parse,
    /// validate, compile under the memory cap, self-test, audit), without
    /// persisting or publishing it; a refusal names its stage like a reload's.
    pub fn load(engine: &Engine, path: &Path, serial: u64) -> Result<Shadow, Value> {
        let checked = engine.check_candidate(path).map_err(|e| {
            json!({"ok": false, "stage": e.stage.as_str(), "errors": e.errors, "error": "candidate refused"})
        })?;
        let policy = checked.policy;
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
                ex.push(json!({
                    "interface": interface,
                    "packet": palisade_rules::format_packet(key),
                    "active": active.verdict.as_str(),
                    "candidate": candidate.verdict.as_str(),
                    "stage": candidate.stage.as_str(),
                    "acl": self.policy.acl_name(candidate.acl),
                    "rule": self.policy.rule_label(candidate.acl, candidate.rule),
                }));
            }
        }
    }

    /// The report shown by `palisade status --json` under `shadow`.
    pub fn report(&self, active_digest: Option<Digest>) -> Value {
        let acls: Vec<Value> = self
            .policy
            .acls()
            .iter()
            .zip(&self.per_rule)
            .map(|(acl, counts)| {
                let rules: Vec<Value> = acl
                    .rule_ids
                    .iter()
                    .zip(counts)
                    .map(|(id, c)| json!({"id": id, "differ": c.load(Ordering::Relaxed)}))
                    .collect();
                json!({
                    "name": acl.name,
                    "rules": rules,
                    "default_differ": counts.last().map_or(0, |c| c.load(Ordering::Relaxed)),
                })
            })
            .collect();
        let examples = self.examples.lock().map(|e| e.clone()).unwrap_or_default();
        json!({
            "source": self.source,
            "digest": self.digest.to_string(),
            "promoted": active_digest == Some(self.digest),
            "frames": self.frames.load(Ordering::Relaxed),
            "differ": self.differ.load(Ordering::Relaxed),
            "other_differ": self.other.load(Ordering::Relaxed),
            "acls": acls,
            "examples": examples,
        })
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
    /// The control-socket extension serving `shadow`, `shadow-status` and `shadow-clear`.
    pub fn extension(self: &Arc<Self>) -> Extension {
        let slot = Arc::clone(self);
        Arc::new(move |engine, req| {
            let active = engine.current().digest();
            match req.get("cmd").and_then(Value::as_str)? {
                "shadow" => {
                    let Some(path) = req.get("path").and_then(Value::as_str) else {
                        return Some(json!({"ok": false, "error": "shadow needs a path"}));
                    };
                    let serial = slot.serial.fetch_add(1, Ordering::Relaxed) + 1;
                    Some(match Shadow::load(engine, Path::new(path), serial) {
                        Ok(sh) => {
                            let reply = json!({"ok": true, "shadow": sh.report(active)});
                            slot.current.store(Some(Arc::new(sh)));
                            reply
                        }
                        Err(refused) => refused,
                    })
                }
                "shadow-status" => Some(json!({
                    "ok": true,
                    "shadow": slot.current.load().as_ref().map(|s| s.report(active)),
                })),
                "shadow-clear" => {
                    slot.current.store(None);
                    Some(json!({"ok": true}))
                }
                _ => None,
            }
        })
    }
}
