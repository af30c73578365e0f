//! Status: what the engine enforces, read from the snapshot the data path uses.
//!
//! Everything about the rules (generation, digest, source, state, ACLs,
//! bindings) comes from one load of the published [`crate::Generation`];
//! counters are summed over every worker's shard at that generation's slots.
//! Only `last_reload` (which may describe a refused reload that never became
//! a generation), `reloading`, `kept`, `config` and the confirmation's
//! persistence come from elsewhere. Status never waits for a reload.

use serde::{Deserialize, Serialize};

use crate::generation::GenerationState;
use crate::lkg::Outcome;
use crate::policy::{BindingKind, Verdict};
use crate::reload::ReloadStage;
use palisade_rules::Direction;

use crate::engine::Inner;
use crate::reload::ReloadError;

/// The engine's status; `palisade status --json` prints exactly this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Generation number (0 with no rules).
    pub generation: u64,
    /// The active generation's digest, lowercase hex (`null` with no rules):
    /// SHA-256 of the rule file, or with set files of them all.
    pub digest: Option<String>,
    /// Where the active rules came from (`null` with no rules).
    pub source: Option<String>,
    /// `active`, `last-known-good`, `pending-confirm` or `no-rules`.
    pub state: GenerationState,
    /// When this generation was published (RFC 3339, UTC).
    pub loaded_at: String,
    /// For `pending-confirm`: when it reverts unless confirmed (RFC 3339, UTC).
    pub confirm_deadline: Option<String>,
    /// This engine's version.
    pub engine_version: String,
    /// Number of `[[rescue]]` rules.
    pub rescue: usize,
    /// Hits per rescue rule.
    pub rescue_hits: Vec<RuleHits>,
    /// Every frame classified by every worker (all generations).
    pub frames: Counts,
    /// Bytes of those frames (as far as the data path gave their lengths).
    #[serde(default)]
    pub bytes: u64,
    /// Frames per deciding stage (all generations), every stage listed.
    #[serde(default)]
    pub stages: Vec<StageCounts>,
    /// Every ACL of the generation, in file order.
    pub acls: Vec<AclStatus>,
    /// The last reload, confirm-window revert or boot load: refused ones included.
    pub last_reload: Option<LastReload>,
    /// The reload (or else the rollback) running now, if any: its stage and since when.
    #[serde(default)]
    pub reloading: Option<ReloadProgress>,
    /// False when a confirmation was accepted in memory but could not be
    /// written to the state directory (a restart would boot the generation before it).
    #[serde(default = "yes")]
    pub confirm_persisted: bool,
    /// Why the confirmation is not persisted, when it is not.
    #[serde(default)]
    pub confirm_error: Option<String>,
    /// The config file and whether it differs from the running generation.
    #[serde(default)]
    pub config: ConfigStatus,
    /// Generations kept in the state directory (valid files only), oldest first.
    pub kept: Vec<KeptStatus>,
    /// Files in the state directory named as generations but refused, with why.
    #[serde(default)]
    pub kept_refused: Vec<String>,
    /// Every named set of the generation, in file order.
    #[serde(default)]
    pub sets: Vec<SetStatus>,
    /// The flow table (`null` while no generation has kept state).
    #[serde(default)]
    pub flows: Option<FlowsStatus>,
}

fn yes() -> bool {
    true
}

/// A reload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadProgress {
    /// The stage it is in (`read`, `parse`, `validate`, `compile`, `self-test`, `audit`, `persist`).
    pub stage: ReloadStage,
    /// What is being loaded.
    pub source: String,
    /// When it started, seconds since the Unix epoch.
    pub started_at: u64,
}

/// The config file, compared with the running generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// Its path.
    pub path: String,
    /// SHA-256 of its bytes (`null` when it cannot be read).
    pub digest: Option<String>,
    /// Why it cannot be read.
    pub error: Option<String>,
    /// Whether it differs from the running generation: it is then not
    /// enforced; `palisade reload` without a file (or SIGHUP) applies it.
    pub differs: bool,
}

/// One kept generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptStatus {
    /// Its number.
    pub generation: u64,
    /// Its digest.
    pub digest: String,
    /// Where its rules came from.
    pub source: String,
    /// When it was saved (RFC 3339, UTC).
    pub time: String,
    /// `confirmed`, `pending`, `reverted` or `unconfirmed`.
    pub outcome: Outcome,
}

/// One named set of the active generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatus {
    /// The set's name.
    pub name: String,
    /// `address` or `port`.
    pub kind: String,
    /// Elements (as listed, duplicates once).
    pub elements: usize,
    /// Its file as the rule file names it (`null` without one).
    pub file: Option<String>,
    /// SHA-256 of the file's bytes in this generation (`null` without one).
    pub file_digest: Option<String>,
}

/// The flow table's counters, and the frames its states decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsStatus {
    /// Entries in use.
    pub active: u64,
    /// Capacity (`[flows] max`).
    pub max: u64,
    /// Flows opened.
    pub created: u64,
    /// Flows removed after their idle timeout.
    pub expired: u64,
    /// New flows refused because the table was full.
    pub refused: u64,
    /// Flows cut because a new generation's rules would not open them.
    pub cut: u64,
    /// Frames whose flow state was `invalid` (counted like a rule, by identity).
    pub invalid_frames: u64,
    /// Frames denied at stage `flows-full`.
    pub full_frames: u64,
}

/// Evaluated / permitted / denied frame counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Frames evaluated.
    pub evaluated: u64,
    /// Frames permitted.
    pub permitted: u64,
    /// Frames denied.
    pub denied: u64,
}

/// Frames one stage decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounts {
    /// The stage's name (`rescue`, `pacl`, ..., `none`), as in `palisade classify`.
    pub stage: String,
    /// Frames it permitted (for a permit: it was the last stage that ran).
    pub permitted: u64,
    /// Frames it denied.
    pub denied: u64,
}

/// One ACL of the active generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AclStatus {
    /// ACL name.
    pub name: String,
    /// Number of rules (the implicit default not included).
    pub rules: usize,
    /// `permit` or `deny`: the implicit last rule.
    pub default: Verdict,
    /// Where it is bound, with per-binding counters.
    pub bindings: Vec<BindingStatus>,
    /// The ACL's counters.
    pub counters: AclCounters,
}

/// One binding of an ACL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BindingStatus {
    /// `port`, `vlan` or `routed`.
    pub kind: BindingKind,
    /// Port name, VLAN id or L3 interface name.
    pub target: String,
    /// `in` or `out` for routed bindings, else `null`.
    pub direction: Option<Direction>,
    /// Frames on which this binding's ACL was evaluated, permitted, denied.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Counters of one ACL: sums over its bindings, and hits per rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AclCounters {
    /// Frames the ACL was evaluated on (all bindings).
    pub evaluated: u64,
    /// Of those, permitted by it.
    pub permitted: u64,
    /// Of those, denied by it.
    pub denied: u64,
    /// Frames decided by the implicit default.
    pub default_hits: u64,
    /// Bytes of those frames.
    #[serde(default)]
    pub default_bytes: u64,
    /// Hits per rule, in order.
    pub rules: Vec<RuleHits>,
}

/// A rule's identity and hit count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleHits {
    /// The rule's `id`, or `#N` (1-based position) without one.
    pub id: String,
    /// Frames it decided.
    pub hits: u64,
    /// Bytes of those frames.
    #[serde(default)]
    pub bytes: u64,
}

/// The outcome of the last reload attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastReload {
    /// Whether it became active.
    pub ok: bool,
    /// The stage that refused it (`null` when ok).
    pub stage: Option<ReloadStage>,
    /// Every cause, `file:line:col: message`.
    pub errors: Vec<String>,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The generation it made active, when ok.
    pub generation: Option<u64>,
}

impl LastReload {
    pub(crate) fn ok(generation: u64) -> Self {
        LastReload {
            ok: true,
            stage: None,
            errors: Vec::new(),
            at: rfc3339(crate::lkg::unix_now()),
            generation: Some(generation),
        }
    }

    pub(crate) fn failed(e: &ReloadError) -> Self {
        LastReload {
            ok: false,
            stage: Some(e.stage),
            errors: e.errors.clone(),
            at: rfc3339(crate::lkg::unix_now()),
            generation: None,
        }
    }
}

pub(crate) fn build(inner: &Inner) -> Status {
    let gen = inner.current.load_full();
    let last_reload = inner
        .last_reload
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let kept = inner
        .kept
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|k| KeptStatus {
            generation: k.generation,
            digest: k.digest.to_string(),
            source: k.source.clone(),
            time: rfc3339(k.saved_at),
            outcome: k.outcome,
        })
        .collect();
    let kept_refused = inner.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let reloading = {
        let p = inner.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().flatten().next().cloned()
    };
    let confirm_error = inner.confirm_error();
    let config = {
        let (digest, error) = match inner.config_digest() {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        };
        ConfigStatus {
            path: inner.config.display().to_string(),
            digest: digest.map(|d| d.to_string()),
            error,
            differs: digest != gen.digest(),
        }
    };
    let mut status = Status {
        generation: gen.number(),
        digest: gen.digest().map(|d| d.to_string()),
        source: gen.source().map(str::to_owned),
        state: gen.state(),
        loaded_at: rfc3339(gen.loaded_at()),
        confirm_deadline: gen.confirm_deadline().map(rfc3339),
        engine_version: palisade_rules::ENGINE_VERSION.to_owned(),
        rescue: 0,
        rescue_hits: Vec::new(),
        frames: Counts::default(),
        bytes: 0,
        stages: Vec::new(),
        acls: Vec::new(),
        last_reload,
        reloading,
        confirm_persisted: confirm_error.is_none(),
        confirm_error,
        config,
        kept,
        kept_refused,
        sets: Vec::new(),
        flows: crate::stateful::stats(inner).map(|f| FlowsStatus {
            active: f.active,
            max: f.max,
            created: f.created,
            expired: f.expired,
            refused: f.refused,
            cut: f.cut,
            ..FlowsStatus::default()
        }),
    };
    let stage_counts = |totals: &[u64], base: u32| {
        let at = |slot: usize| totals.get(slot).copied().unwrap_or(0);
        crate::counters::STAGES
            .iter()
            .enumerate()
            .map(|(i, s)| StageCounts {
                stage: s.as_str().to_owned(),
                permitted: at(base as usize + 2 * i),
                denied: at(base as usize + 2 * i + 1),
            })
            .collect()
    };
    let Some(c) = gen.rules.as_deref() else {
        // No rules: frames are still counted (every one denied).
        let b = &inner.base;
        let totals = inner.shards.totals(b.len);
        let at = |slot: u32| totals.get(slot as usize).copied().unwrap_or(0);
        status.frames = Counts {
            evaluated: at(b.total),
            permitted: at(b.total + 1),
            denied: at(b.total + 2),
        };
        status.bytes = at(b.total + 3);
        status.stages = stage_counts(&totals, b.stages);
        return status;
    };
    status.sets = c
        .ruleset
        .sets
        .iter()
        .map(|s| SetStatus {
            name: s.name.clone(),
            kind: s.elements.kind().as_str().into(),
            elements: s.elements.len(),
            file: s.file.as_ref().map(|f| f.name.clone()),
            file_digest: s.file.as_ref().map(|f| f.digest.to_string()),
        })
        .collect();
    let totals = inner.shards.totals(c.layout.len);
    let at = |slot: u32| totals.get(slot as usize).copied().unwrap_or(0);
    if let Some(f) = status.flows.as_mut() {
        f.invalid_frames = at(c.layout.flows);
        f.full_frames = at(c.layout.flows + 1);
    }
    let counts = |base: u32| Counts {
        evaluated: at(base),
        permitted: at(base + 1),
        denied: at(base + 2),
    };
    status.frames = counts(c.layout.total);
    status.bytes = at(c.layout.total + 3);
    status.stages = stage_counts(&totals, c.layout.stages);
    status.rescue = c.policy.rescue_count();
    status.rescue_hits = c
        .policy
        .rescue_ids()
        .iter()
        .zip(&c.layout.rescue)
        .map(|(id, &s)| RuleHits {
            id: id.clone(),
            hits: at(s),
            bytes: at(s + 1),
        })
        .collect();
    for (i, acl) in c.policy.acls().iter().enumerate() {
        let slots = c.layout.acl_rules.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let bindings: Vec<BindingStatus> = c
            .policy
            .bindings()
            .iter()
            .zip(&c.layout.bindings)
            .filter(|(b, _)| b.acl as usize == i)
            .map(|(b, s)| BindingStatus {
                kind: b.kind,
                target: b.target.clone(),
                direction: b.direction,
                counts: counts(s.base),
            })
            .collect();
        let sum = |f: fn(&Counts) -> u64| bindings.iter().map(|b| f(&b.counts)).sum();
        status.acls.push(AclStatus {
            name: acl.name.clone(),
            rules: acl.rule_ids.len(),
            default: acl.default,
            counters: AclCounters {
                evaluated: sum(|c| c.evaluated),
                permitted: sum(|c| c.permitted),
                denied: sum(|c| c.denied),
                default_hits: slots.last().map_or(0, |&s| at(s)),
                default_bytes: slots.last().map_or(0, |&s| at(s + 1)),
                rules: acl
                    .rule_ids
                    .iter()
                    .zip(slots)
                    .map(|(id, &s)| RuleHits {
                        id: id.clone(),
                        hits: at(s),
                        bytes: at(s + 1),
                    })
                    .collect(),
            },
            bindings,
        });
    }
    status
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
///
/// ```
/// assert_eq!(palisade_engine::status::rfc3339(0), "1970-01-01T00:00:00Z");
/// assert_eq!(palisade_engine::status::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
/// ```
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
