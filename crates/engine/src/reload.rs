//! The reload pipeline: read -> parse -> validate -> compile -> self-test ->
//! audit -> persist -> publish -> confirm window.
//!
//! Every stage before `publish` works on a private candidate; nothing a
//! reader can see changes until the one pointer swap of `publish`. A stage
//! that fails names itself ([`ReloadStage`]) and every cause it found, each
//! as `file:line:col: message` when it has a place in the file.
//!
//! The stages before persisting are pure functions of the file bytes (and,
//! for the rescue check, of the active generation), kept here; persisting,
//! publishing and the confirm window live in [`crate::Engine`].

use std::fmt;
use std::time::Duration;

use palisade_classify::{corner_keys, Classifier, LinearClassifier, RuleMatch};
use palisade_rules::{Digest, Loaded, RuleSet, Span};

use crate::counters::{self, BindingSlots, Layout, SlotRegistry};
use crate::generation::Compiled;
use crate::policy::Policy;

/// A stage of the reload pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadStage {
    /// Reading the rule file.
    Read,
    /// TOML syntax.
    Parse,
    /// The rule language: names, ranges, version, `requires`, unchanged rescue rules.
    Validate,
    /// Compiling ACLs, bindings and classifiers.
    Compile,
    /// `[[expect]]` vectors, and compiled classifiers agreeing with the reference.
    SelfTest,
    /// Completeness: every ACL, rule, binding and rescue rule of the file is in the candidate.
    Audit,
    /// Writing the last-known-good copy to the state directory.
    Persist,
    /// The atomic swap.
    Publish,
    /// The confirm window (an unconfirmed reload reverted).
    Confirm,
}

impl ReloadStage {
    /// Every stage that can refuse a reload, in pipeline order.
    pub const ALL: [ReloadStage; 8] = [
        ReloadStage::Read,
        ReloadStage::Parse,
        ReloadStage::Validate,
        ReloadStage::Compile,
        ReloadStage::SelfTest,
        ReloadStage::Audit,
        ReloadStage::Persist,
        ReloadStage::Publish,
    ];

    /// The stage's name: `read`, `parse`, `validate`, `compile`, `self-test`,
    /// `audit`, `persist`, `publish`, `confirm`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::ReloadStage::SelfTest.as_str(), "self-test");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ReloadStage::Read => "read",
            ReloadStage::Parse => "parse",
            ReloadStage::Validate => "validate",
            ReloadStage::Compile => "compile",
            ReloadStage::SelfTest => "self-test",
            ReloadStage::Audit => "audit",
            ReloadStage::Persist => "persist",
            ReloadStage::Publish => "publish",
            ReloadStage::Confirm => "confirm",
        }
    }
}

impl fmt::Display for ReloadStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a reload is to be made.
#[derive(Clone, Debug, Default)]
pub struct ReloadOptions {
    /// Commit-confirmed: revert by itself unless [`crate::Engine::confirm`] is called within this time.
    pub confirm_within: Option<Duration>,
    /// Allow the reload to change or remove `[[rescue]]` rules.
    pub allow_rescue_change: bool,
    /// Fault injection for tests: fail deliberately at this stage (before it takes effect).
    pub fail_at: Option<ReloadStage>,
    /// For tests: wait this long as this stage starts (a reload that is slow
    /// however fast the machine builds it).
    #[doc(hidden)]
    pub hold_at: Option<(ReloadStage, Duration)>,
}

/// A refused reload: the stage that refused it and every cause. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadError {
    /// The stage that failed.
    pub stage: ReloadStage,
    /// Every cause, `file:line:col: message` where the cause has a place.
    pub errors: Vec<String>,
}

impl ReloadError {
    pub(crate) fn new(stage: ReloadStage, errors: Vec<String>) -> Self {
        ReloadError { stage, errors }
    }
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reload refused at stage {}", self.stage)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReloadError {}

pub(crate) fn fault(opts: &ReloadOptions, stage: ReloadStage) -> Result<(), ReloadError> {
    if let Some((at, hold)) = opts.hold_at {
        if at == stage {
            std::thread::sleep(hold);
        }
    }
    if opts.fail_at == Some(stage) {
        return Err(ReloadError::new(
            stage,
            vec![format!("fault injected at stage {stage}")],
        ));
    }
    Ok(())
}

/// A candidate that passed every stage up to persisting, with its warnings.
/// Its counter layout is left empty: the engine assigns slots when it
/// publishes (under its control lock, so slot collection never races a build).
pub(crate) struct Candidate {
    pub compiled: Compiled,
    pub warnings: Vec<String>,
}

/// The most keys per ACL on which the compiled classifier is checked against the reference.
const SELF_TEST_KEYS: usize = 4096;
/// The fewest (even for the largest ACL).
const SELF_TEST_MIN_KEYS: usize = 256;
/// Rule checks the reference may spend per ACL: its scan is O(rules) per key,
/// so a large ACL gets fewer keys (16,384 rules: 512 keys) and the self-test
/// stays a small part of a reload instead of growing with rules x keys.
const SELF_TEST_BUDGET: usize = 8 << 20;

/// The number of self-test keys for an ACL of `rules` rules.
fn self_test_keys(rules: usize) -> usize {
    (SELF_TEST_BUDGET / rules.max(1)).clamp(SELF_TEST_MIN_KEYS, SELF_TEST_KEYS)
}

/// Runs parse -> validate -> compile -> self-test -> audit on `bytes` and the
/// set files it names, read through `set_files` (from disk for a reload, from
/// a kept generation's companion files at boot or rollback); they are carried
/// into the candidate and covered by its digest.
///
/// `active_rescue` is the rescue fingerprint of the active generation, if any;
/// a candidate with a different one is refused unless `opts.allow_rescue_change`.
/// `progress` is told each stage as it starts.
pub(crate) fn build(
    file: &str,
    bytes: Vec<u8>,
    set_files: &dyn palisade_rules::SetFiles,
    opts: &ReloadOptions,
    active_rescue: Option<Digest>,
    memory_cap: usize,
    progress: &dyn Fn(ReloadStage),
) -> Result<Candidate, ReloadError> {
    // parse: TOML syntax, kept as a raw table for the independent audit.
    progress(ReloadStage::Parse);
    fault(opts, ReloadStage::Parse)?;
    let raw = parse_raw(file, &bytes).map_err(|e| ReloadError::new(ReloadStage::Parse, vec![e]))?;

    // validate: the rule language, this engine's version, the rescue rules.
    progress(ReloadStage::Validate);
    fault(opts, ReloadStage::Validate)?;
    let loaded = palisade_rules::parse_with(file, &bytes, set_files)
        .map_err(|d| ReloadError::new(ReloadStage::Validate, d.iter().map(|d| d.to_string()).collect()))?;
    let rescue_fingerprint = rescue_fingerprint(&loaded.ruleset);
    check_rescue(file, &loaded.ruleset, rescue_fingerprint, active_rescue, opts)?;

    // compile.
    progress(ReloadStage::Compile);
    fault(opts, ReloadStage::Compile)?;
    let policy = Policy::compile_with_cap(&loaded.ruleset, memory_cap)
        .map_err(|e| ReloadError::new(ReloadStage::Compile, vec![locate_policy_error(&loaded, &e)]))?;

    // self-test.
    progress(ReloadStage::SelfTest);
    fault(opts, ReloadStage::SelfTest)?;
    let mut errors: Vec<String> = policy
        .check_expects(&loaded)
        .iter()
        .map(|d| d.to_string())
        .collect();
    errors.extend(self_test_classifiers(&loaded, &policy));
    if !errors.is_empty() {
        return Err(ReloadError::new(ReloadStage::SelfTest, errors));
    }

    // audit: counted from the raw TOML, independently of the rules crate and the compiler.
    progress(ReloadStage::Audit);
    fault(opts, ReloadStage::Audit)?;
    let errors = audit(file, &raw, &loaded.ruleset, &policy);
    if !errors.is_empty() {
        return Err(ReloadError::new(ReloadStage::Audit, errors));
    }

    let warnings = loaded.warnings.iter().map(|d| d.to_string()).collect();
    Ok(Candidate {
        compiled: Compiled {
            policy,
            ruleset: loaded.ruleset,
            digest: loaded.digest,
            rules_digest: loaded.rules_digest,
            files: loaded.files,
            bytes: std::sync::Arc::new(bytes),
            source: file.to_string(),
            rescue_fingerprint,
            layout: Layout::default(),
            // Set with the layout, when the generation is placed in an engine.
            flows: None,
        },
        warnings,
    })
}

/// Refuses a candidate whose rescue rules (fingerprint `candidate`) differ from
/// the active generation's (`active`) unless `opts.allow_rescue_change`.
pub(crate) fn check_rescue(
    file: &str,
    ruleset: &RuleSet,
    candidate: Digest,
    active: Option<Digest>,
    opts: &ReloadOptions,
) -> Result<(), ReloadError> {
    let Some(active) = active else { return Ok(()) };
    if active == candidate || opts.allow_rescue_change {
        return Ok(());
    }
    let at = ruleset
        .rescue
        .first()
        .map_or(Span { line: 1, col: 1 }, |r| r.span);
    Err(ReloadError::new(
        ReloadStage::Validate,
        vec![format!(
            "{file}:{}:{}: the [[rescue]] rules differ from the active generation's ({} rule(s) now); \
             changing or removing them needs --allow-rescue-change",
            at.line,
            at.col,
            ruleset.rescue.len()
        )],
    ))
}

/// What the audit counts, straight from the TOML document (not from the rules crate's model).
pub(crate) struct RawFile {
    acls: Vec<RawAcl>,
    binds: Vec<RawBind>,
    rescues: usize,
}

struct RawAcl {
    name: String,
    rules: usize,
    at: (usize, usize),
}

struct RawBind {
    acl: String,
    kind: &'static str,
    target: String,
    direction: Option<String>,
    at: (usize, usize),
}

/// Parses the TOML syntax only; errors at `file:line:col`.
fn parse_raw(file: &str, bytes: &[u8]) -> Result<RawFile, String> {
    use toml::de::{DeTable, DeValue};
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(bytes, e.valid_up_to());
        format!("{file}:{line}:{col}: not UTF-8 text")
    })?;
    let doc = DeTable::parse(text).map_err(|e| {
        let (line, col) = line_col(bytes, e.span().map_or(0, |s| s.start));
        format!("{file}:{line}:{col}: {}", e.message().trim())
    })?;
    let tables = |key: &str| -> Vec<(&DeTable<'_>, (usize, usize))> {
        match doc.get_ref().get(key).map(|v| v.get_ref()) {
            Some(DeValue::Array(a)) => a
                .iter()
                .filter_map(|v| match v.get_ref() {
                    DeValue::Table(t) => Some((t, line_col(bytes, v.span().start))),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let string = |t: &DeTable<'_>, key: &str| match t.get(key).map(|v| v.get_ref()) {
        Some(DeValue::String(s)) => Some(s.to_string()),
        _ => None,
    };
    let acls = tables("acl")
        .into_iter()
        .map(|(t, at)| RawAcl {
            name: string(t, "name").unwrap_or_default(),
            rules: match t.get("rule").map(|v| v.get_ref()) {
                Some(DeValue::Array(a)) => a.len(),
                _ => 0,
            },
            at,
        })
        .collect();
    let binds = tables("bind")
        .into_iter()
        .map(|(t, at)| {
            let (kind, target) = if let Some(p) = string(t, "port") {
                ("port", p)
            } else if let Some(DeValue::Integer(v)) = t.get("vlan").map(|v| v.get_ref()) {
                let digits = v.as_str().replace('_', "");
                let n = i128::from_str_radix(&digits, v.radix()).map_or(digits, |n| n.to_string());
                ("vlan", n)
            } else {
                ("routed", string(t, "interface").unwrap_or_default())
            };
            RawBind {
                acl: string(t, "acl").unwrap_or_default(),
                kind,
                target,
                direction: string(t, "direction"),
                at,
            }
        })
        .collect();
    Ok(RawFile {
        acls,
        binds,
        rescues: tables("rescue").len(),
    })
}

fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

/// `file:line:col: cause` for a compile error, at its ACL when it names one.
fn locate_policy_error(loaded: &Loaded, e: &crate::policy::PolicyError) -> String {
    let span = e
        .acl
        .as_ref()
        .and_then(|name| loaded.ruleset.acls.iter().find(|a| &a.name == name))
        .map_or(Span { line: 1, col: 1 }, |a| a.span);
    format!("{}:{}:{}: {e}", loaded.file, span.line, span.col)
}

/// A fingerprint of what the rescue rules match (identities and places excluded, order kept).
pub(crate) fn rescue_fingerprint(rs: &RuleSet) -> Digest {
    let text: String = rs.rescue.iter().map(|r| format!("{:?}\n", r.matcher)).collect();
    Digest::of(text.as_bytes())
}

/// The compiled classifier of every ACL (and of the rescue rules) must give the
/// reference classifier's answer on keys at the corners of the ACL's own rules.
fn self_test_classifiers(loaded: &Loaded, policy: &Policy) -> Vec<String> {
    let mut errors = Vec::new();
    for def in &loaded.ruleset.acls {
        let Some(id) = policy.acls().iter().position(|a| a.name == def.name) else {
            continue; // the audit reports a missing ACL
        };
        let rules: Vec<RuleMatch> = def.rules.iter().map(|r| r.matcher.clone()).collect();
        let reference = LinearClassifier::new(rules);
        for mut key in corner_keys(reference.rules(), self_test_keys(reference.rules().len())) {
            // The sets' real answers (a long list compiled as a set is a list to the reference).
            policy.fill_sets(std::slice::from_mut(&mut key));
            let want = reference.classify(&key);
            let got = policy.acl_first_match(id as u32, &key);
            if got != Some(want) {
                errors.push(format!(
                    "{}:{}:{}: acl \"{}\": compiled classifier answers {:?}, reference answers rule {} for {:?}",
                    loaded.file, def.span.line, def.span.col, def.name, got, want, key
                ));
                break;
            }
        }
    }
    let rescue: Vec<RuleMatch> = loaded.ruleset.rescue.iter().map(|r| r.matcher.clone()).collect();
    let reference = LinearClassifier::new(rescue);
    for key in corner_keys(reference.rules(), self_test_keys(reference.rules().len())) {
        let (want, got) = (reference.classify(&key), policy.rescue_first_match(&key));
        if got != want {
            errors.push(format!(
                "{}:1:1: rescue rules: compiled classifier answers {got}, reference answers {want} for {key:?}",
                loaded.file
            ));
            break;
        }
    }
    errors
}

/// Every ACL, rule, binding and rescue rule of the file must be in the candidate,
/// counted from the raw TOML table, the rule set and the compiled policy.
fn audit(file: &str, raw: &RawFile, rs: &RuleSet, policy: &Policy) -> Vec<String> {
    let mut errors = Vec::new();
    let mut check = |what: &str, file_n: usize, model_n: usize, compiled_n: usize| {
        if file_n != model_n || file_n != compiled_n {
            errors.push(format!(
                "{file}:1:1: the file has {file_n} {what}, the validated model {model_n}, the compiled policy {compiled_n}"
            ));
        }
    };
    check("[[acl]]", raw.acls.len(), rs.acls.len(), policy.acls().len());
    check(
        "[[bind]]",
        raw.binds.len(),
        rs.bindings.len(),
        policy.bindings().len(),
    );
    check("[[rescue]]", raw.rescues, rs.rescue.len(), policy.rescue_count());
    for a in &raw.acls {
        let (line, col) = a.at;
        match policy.acls().iter().find(|c| c.name == a.name) {
            None => errors.push(format!(
                "{file}:{line}:{col}: acl \"{}\" is in the file but not in the compiled policy",
                a.name
            )),
            Some(c) if c.rule_ids.len() != a.rules => errors.push(format!(
                "{file}:{line}:{col}: acl \"{}\" has {} rules in the file, {} compiled",
                a.name,
                a.rules,
                c.rule_ids.len()
            )),
            Some(_) => {}
        }
    }
    // Every binding of the file, by (acl, kind, target, direction).
    for b in &raw.binds {
        let found = policy.bindings().iter().any(|c| {
            policy.acls().get(c.acl as usize).is_some_and(|a| a.name == b.acl)
                && c.kind.as_str() == b.kind
                && c.target == b.target
                && (b.kind != "routed" || c.direction.map(|d| d.as_str()) == b.direction.as_deref())
        });
        if !found {
            let (line, col) = b.at;
            errors.push(format!(
                "{file}:{line}:{col}: binding of acl \"{}\" to {} {} is in the file but not in the compiled policy",
                b.acl, b.kind, b.target
            ));
        }
    }
    errors
}

/// The all-frames and per-stage counter slots alone: where frames are counted
/// when no rule set runs (every layout shares these identities, so the counts carry on).
pub(crate) fn base_layout(registry: &SlotRegistry) -> Layout {
    let total = registry.slot(counters::TOTAL_IDENTITY, counters::TOTAL_WIDTH);
    let stages = registry.slot(counters::STAGES_IDENTITY, 2 * counters::STAGES.len() as u32);
    let mut l = Layout {
        total,
        stages,
        identities: vec![
            counters::TOTAL_IDENTITY.to_string(),
            counters::STAGES_IDENTITY.to_string(),
        ]
        .into(),
        ..Layout::default()
    };
    l.fix_len();
    l
}

/// Counter slots of a policy: by identity, so counters follow rules across reloads.
pub(crate) fn layout(policy: &Policy, registry: &SlotRegistry) -> Layout {
    let mut identities: Vec<String> = Vec::new();
    let mut slot = |id: String, width: u32| {
        let s = registry.slot(&id, width);
        identities.push(id);
        s
    };
    let acl_rules = policy
        .acls()
        .iter()
        .map(|a| {
            let mut v: Vec<u32> = a
                .rule_ids
                .iter()
                .map(|id| slot(counters::rule_identity(&a.name, id), counters::RULE_WIDTH))
                .collect();
            v.push(slot(counters::default_identity(&a.name), counters::RULE_WIDTH));
            v
        })
        .collect();
    let rescue = policy
        .rescue_ids()
        .iter()
        .map(|id| slot(counters::rescue_identity(id), counters::RULE_WIDTH))
        .collect();
    let bindings = policy
        .bindings()
        .iter()
        .map(|b| {
            let acl = policy.acls().get(b.acl as usize).map_or("", |a| a.name.as_str());
            let id =
                counters::binding_identity(acl, b.kind.as_str(), &b.target, b.direction.map(|d| d.as_str()));
            BindingSlots { base: slot(id, 3) }
        })
        .collect();
    let total = slot(counters::TOTAL_IDENTITY.to_string(), counters::TOTAL_WIDTH);
    let stages = slot(
        counters::STAGES_IDENTITY.to_string(),
        2 * counters::STAGES.len() as u32,
    );
    let flows = slot(counters::FLOWS_IDENTITY.to_string(), 2);
    let mut l = Layout {
        acl_rules,
        rescue,
        bindings,
        total,
        stages,
        flows,
        len: 0,
        identities: identities.into(),
    };
    l.fix_len();
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "version = 1\n[[port]]\nname = \"p\"\nvlan = 10\n[[interface]]\nname = \"i\"\nport = \"p\"\n\
        [[acl]]\nname = \"a\"\n  [[acl.rule]]\n  action = \"permit\"\n\
        [[bind]]\nacl = \"a\"\nvlan = 0x0a\n[[bind]]\nacl = \"a\"\ninterface = \"i\"\ndirection = \"out\"\n";

    fn compiled(text: &str) -> (Loaded, Policy) {
        let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
        let policy = Policy::compile(&loaded.ruleset).unwrap();
        (loaded, policy)
    }

    #[test]
    fn the_audit_passes_a_complete_candidate() {
        let raw = parse_raw("t.toml", FILE.as_bytes()).unwrap();
        assert_eq!((raw.acls.len(), raw.binds.len(), raw.rescues), (1, 2, 0));
        assert_eq!(raw.binds[0].target, "10", "hex VLAN read as its value");
        let (loaded, policy) = compiled(FILE);
        assert_eq!(
            audit("t.toml", &raw, &loaded.ruleset, &policy),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_audit_names_what_the_candidate_lost() {
        // The candidate lost the routed binding and a rule: the audit must say so, at their places.
        let raw = parse_raw("t.toml", FILE.as_bytes()).unwrap();
        let lost = FILE.replace(
            "[[bind]]\nacl = \"a\"\ninterface = \"i\"\ndirection = \"out\"\n",
            "",
        );
        let lost = lost.replace("  [[acl.rule]]\n  action = \"permit\"\n", "");
        let (loaded, policy) = compiled(&lost);
        let errors = audit("t.toml", &raw, &loaded.ruleset, &policy);
        assert!(errors.iter().any(|e| e.contains("2 [[bind]]")), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("t.toml:15:") && e.contains("routed i")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("t.toml:8:") && e.contains("1 rules")),
            "{errors:?}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse_raw("t.toml", b"version = 1\n[[acl]\n").err().unwrap();
        assert!(err.starts_with("t.toml:2:"), "{err}");
        let err = parse_raw("t.toml", b"a = \"\xff\"\n").err().unwrap();
        assert!(err.starts_with("t.toml:1:6: not UTF-8"), "{err}");
    }
}
