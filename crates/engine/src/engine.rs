//! The engine: boot, reload, confirm, rollback, status, and worker handles.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use palisade_packet::FlowKey;
use palisade_rules::Digest;

use crate::counters::{add, bump, stage_index, Shard, ShardSet, SlotRegistry};
use crate::events::{ControlEvent, EventKind, EventSink, Outcome};
use crate::generation::{Compiled, Generation, GenerationState};
use crate::lkg::{unix_now, Companion, Kept, KeptError, Outcome as KeptOutcome, Store, StoreError};
use crate::policy::{Context, Decision, RuleRef, Stage, Verdict};
use crate::reload::{self, fault, ReloadError, ReloadOptions, ReloadStage};
use crate::status::{self, LastReload, Status};

/// How an [`Engine`] keeps its state.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How many generations the state directory keeps (default 10).
    pub keep_generations: usize,
    /// fsync every persisted generation and the directory (default true). Turn
    /// off only in tests and benchmarks: a crash may then lose the last-known-good.
    pub durable: bool,
    /// Cap on the bytes of one generation's compiled classifiers (default
    /// [`crate::policy::DEFAULT_MEMORY_CAP`]); a rule set past it is refused at stage compile.
    pub memory_cap: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            keep_generations: 10,
            durable: true,
            memory_cap: crate::policy::DEFAULT_MEMORY_CAP,
        }
    }
}

/// Where a reload takes its rules from.
#[derive(Clone, Debug)]
pub enum ReloadSource {
    /// The config path the engine was opened with.
    Config,
    /// A rule file.
    Path(PathBuf),
    /// Rule file bytes, with the name used in diagnostics and status.
    Bytes {
        /// Name for `file:line:col` and `source`.
        name: String,
        /// The rule file's bytes.
        bytes: Vec<u8>,
    },
    /// A whole generation: a rule file's bytes and its companion files (the
    /// set files it names, by the names it gives them). The digest covers
    /// them all and last-known-good keeps them all.
    Generation {
        /// Name for `file:line:col` and `source`.
        name: String,
        /// The rule file's bytes.
        bytes: Vec<u8>,
        /// The companion files, in the order the rule file names them.
        companions: Vec<Companion>,
    },
}

/// A reload (or rollback) that made a new generation active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadOk {
    /// The new generation's number.
    pub generation: u64,
    /// SHA-256 of its rule file.
    pub digest: Digest,
    /// `Active`, or `PendingConfirm` with a confirm window.
    pub state: GenerationState,
    /// When it reverts unless confirmed, seconds since the Unix epoch.
    pub confirm_deadline: Option<u64>,
    /// Warnings of the rule file (the set is valid).
    pub warnings: Vec<String>,
}

/// The decision of [`Engine::probe`], with names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The generation that decided.
    pub generation: u64,
    /// permit or deny.
    pub verdict: Verdict,
    /// The deciding stage (`no-rules` with no rules).
    pub stage: String,
    /// The deciding ACL.
    pub acl: Option<String>,
    /// The deciding rule's identity (empty when none).
    pub rule: String,
}

/// What happened at boot.
#[derive(Clone, Debug)]
pub struct BootReport {
    /// What the engine runs on.
    pub state: GenerationState,
    /// The generation running (0 with no rules).
    pub generation: u64,
    /// Why the config was not used, when it was not.
    pub config_error: Option<ReloadError>,
    /// Kept generations that were tried and refused before one was used.
    pub lkg_errors: Vec<String>,
    /// The config was valid but could not be persisted as last-known-good.
    pub persist_error: Option<String>,
}

struct Pending {
    deadline: Instant,
    revert_to: Option<Arc<Compiled>>,
    revert_state: GenerationState,
}

struct Control {
    previous: Option<Arc<Compiled>>,
    /// Replaced snapshots, dropped here on the control path once no reader holds
    /// them, so a worker never pays for freeing a whole rule set.
    retired: Vec<Arc<Generation>>,
    pending: Option<Pending>,
    last_number: u64,
    shutdown: bool,
}

pub(crate) struct Inner {
    pub(crate) current: ArcSwap<Generation>,
    control: Mutex<Control>,
    wake: Condvar,
    pub(crate) last_reload: Mutex<Option<LastReload>>,
    /// Valid kept generation numbers, refreshed after every change (status must not read the disk).
    pub(crate) kept: Mutex<Vec<u64>>,
    registry: SlotRegistry,
    memory_cap: usize,
    pub(crate) shards: ShardSet,
    pub(crate) store: Store,
    config: PathBuf,
    /// Where control events go (see [`crate::events`]).
    events: Mutex<Option<EventSink>>,
}

/// The Palisade engine: one active generation, a reload pipeline, a state
/// directory of last-known-good generations, counters and status.
///
/// Everything but [`WorkerHandle::classify_batch`] is the control path: it
/// may block (reloads are serialized) and allocate. The data path never
/// waits for it.
///
/// ```
/// use palisade_engine::{Engine, EngineOptions, GenerationState, ReloadOptions, ReloadSource};
/// use palisade_packet::FlowKey;
/// let dir = std::env::temp_dir().join(format!("palisade-engine-doc-{}", std::process::id()));
/// let config = dir.join("rules.toml");
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(&config, "version = 1\n[[port]]\nname = \"lan1\"\n[[acl]]\nname = \"in\"\ndefault = \"permit\"\n\
///     [[acl.rule]]\naction = \"deny\"\nproto = \"udp\"\n[[bind]]\nacl = \"in\"\nport = \"lan1\"\n").unwrap();
/// let (engine, boot) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
/// assert_eq!(boot.state, GenerationState::Active);
///
/// let mut worker = engine.handle();
/// let udp = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(17).with_ports(1, 53);
/// let mut out = [Default::default(); 2];
/// let mut batch = worker.batch();
/// let ctx = batch.context("lan1", None).unwrap();
/// batch.classify(&[udp, udp.with_proto(6)], &ctx, &mut out);
/// assert_eq!(out[0].verdict, palisade_engine::policy::Verdict::Deny);
/// assert_eq!(out[1].verdict, palisade_engine::policy::Verdict::Permit);
/// drop(batch);
///
/// // A broken update is refused and changes nothing.
/// let bad = ReloadSource::Bytes { name: "bad.toml".into(), bytes: b"version = 1\n[[bind]]\nacl = \"x\"\nport = \"p\"\n".to_vec() };
/// assert!(engine.reload(bad, &ReloadOptions::default()).is_err());
/// assert_eq!(engine.status().generation, boot.generation);
/// drop(engine);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct Engine {
    inner: Arc<Inner>,
    watchdog: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.current.load();
        f.debug_struct("Engine")
            .field("generation", &g.number())
            .field("state", &g.state())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Boots an engine: from `config` if it is valid; else from the newest
    /// valid last-known-good generation in `state_dir` (said loudly on stderr
    /// and in status); else with no rules, denying every frame.
    ///
    /// Fails only when the state directory cannot be created or is not a directory.
    pub fn open(
        config: &Path,
        state_dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, BootReport), StoreError> {
        let store = Store::open_locked(state_dir, options.keep_generations, options.durable)?;
        let inner = Arc::new(Inner {
            current: ArcSwap::from_pointee(Generation::no_rules()),
            control: Mutex::new(Control {
                previous: None,
                retired: Vec::new(),
                pending: None,
                last_number: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            last_reload: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            registry: SlotRegistry::default(),
            memory_cap: options.memory_cap,
            shards: ShardSet::default(),
            store,
            config: config.to_path_buf(),
            events: Mutex::new(None),
        });
        let report = inner.boot();
        inner.refresh_kept();
        let watchdog = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("palisade-confirm".into())
                .spawn(move || inner.watchdog())
                .ok()
        };
        Ok((Engine { inner, watchdog }, report))
    }

    /// Runs the whole pipeline on `source` and, if every stage passes, makes it
    /// the active generation. On error nothing changed.
    pub fn reload(&self, source: ReloadSource, opts: &ReloadOptions) -> Result<ReloadOk, ReloadError> {
        self.reload_by(source, opts, None)
    }

    /// [`Engine::reload`] on behalf of `uid` (a control client), named in its control event.
    pub fn reload_by(
        &self,
        source: ReloadSource,
        opts: &ReloadOptions,
        uid: Option<u32>,
    ) -> Result<ReloadOk, ReloadError> {
        let mut ctl = self.inner.lock();
        let res = self.inner.reload_locked(&mut ctl, source, opts, true);
        self.inner.record(&res);
        drop(ctl);
        self.inner.emit_result(EventKind::Reload, uid, &res);
        res
    }

    /// Sets (or with `None` removes) the receiver of [`crate::events::ControlEvent`]s.
    pub fn set_event_sink(&self, sink: Option<EventSink>) {
        *self.inner.events.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Confirms a pending commit-confirmed reload; returns its generation.
    pub fn confirm(&self) -> Result<u64, String> {
        self.confirm_by(None)
    }

    /// [`Engine::confirm`] on behalf of `uid`, named in its control event.
    pub fn confirm_by(&self, uid: Option<u32>) -> Result<u64, String> {
        let res = self.confirm_locked();
        let (outcome, errors) = match &res {
            Ok(_) => (Outcome::Ok, Vec::new()),
            Err(e) => (Outcome::Refused, vec![e.clone()]),
        };
        self.inner.emit(EventKind::Confirm, outcome, uid, None, errors);
        res
    }

    fn confirm_locked(&self) -> Result<u64, String> {
        let mut ctl = self.inner.lock();
        let cur = self.inner.current.load_full();
        if ctl.pending.take().is_none() || cur.state != GenerationState::PendingConfirm {
            return Err("no reload is waiting for confirmation".into());
        }
        if let Err(e) = self.inner.store.mark_confirmed(cur.number) {
            eprintln!(
                "palisade: warning: generation {} confirmed but not marked on disk: {e}",
                cur.number
            );
        }
        let cur_number = cur.number;
        let old = self.inner.current.swap(Arc::new(Generation {
            number: cur.number,
            state: GenerationState::Active,
            loaded_at: cur.loaded_at,
            confirm_deadline: None,
            rules: cur.rules.clone(),
        }));
        drop(cur);
        retire(&mut ctl, old);
        self.inner.wake.notify_all();
        Ok(cur_number)
    }

    /// Makes a kept generation active again, as a new generation number:
    /// `Some(n)` takes generation `n` from the state directory (it is run
    /// through the whole pipeline again); `None` the rules the active ones
    /// replaced (after a boot: the newest kept generation with other rules).
    /// Rescue rules may change (the target was accepted before).
    pub fn rollback(&self, to: Option<u64>) -> Result<ReloadOk, ReloadError> {
        self.rollback_by(to, None)
    }

    /// [`Engine::rollback`] on behalf of `uid`, named in its control event.
    pub fn rollback_by(&self, to: Option<u64>, uid: Option<u32>) -> Result<ReloadOk, ReloadError> {
        let mut ctl = self.inner.lock();
        let res = self.inner.rollback_locked(&mut ctl, to);
        self.inner.record(&res);
        drop(ctl);
        self.inner.emit_result(EventKind::Rollback, uid, &res);
        res
    }

    /// The status, read from the snapshot the data path uses.
    pub fn status(&self) -> Status {
        status::build(&self.inner)
    }

    /// Runs a candidate rule file through every checking stage of a reload
    /// (read, parse, validate, compile under this engine's memory cap,
    /// self-test, audit) without persisting or publishing it: what shadow
    /// evaluation runs before it compares a candidate with live traffic.
    /// Changed `[[rescue]]` rules are not refused here, since nothing is
    /// enforced; reloading the file later still applies that check.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("palisade-doc-check-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let (engine, _) =
    ///     palisade_engine::Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
    /// std::fs::write(dir.join("bad.toml"), "version = 1\n[[bind]]\nacl = \"missing\"\nvlan = 10\n").unwrap();
    /// let refused = engine.check_candidate(&dir.join("bad.toml")).unwrap_err();
    /// assert_eq!(refused.stage.as_str(), "validate");
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn check_candidate(&self, path: &Path) -> Result<CheckedCandidate, ReloadError> {
        let (name, bytes) = read(path)?;
        let opts = ReloadOptions {
            allow_rescue_change: true,
            ..ReloadOptions::default()
        };
        // A registry of its own: a candidate that is never promoted claims no counter slots.
        let cand = reload::build(
            &name,
            bytes,
            Vec::new(),
            &opts,
            None,
            &SlotRegistry::default(),
            self.inner.memory_cap,
        )?;
        let c = cand.compiled;
        Ok(CheckedCandidate {
            policy: c.policy,
            ruleset: c.ruleset,
            digest: c.digest,
            source: c.source,
            warnings: cand.warnings,
        })
    }

    /// Decides one packet with the active generation, as the data path would,
    /// without counting it: what the running engine does with this packet.
    /// Fails when the port or an interface is unknown to the active generation.
    pub fn probe(&self, port: &str, route: Option<(&str, &str)>, key: &FlowKey) -> Result<Probe, String> {
        let gen = self.inner.current.load_full();
        let Some(policy) = gen.policy() else {
            return Ok(Probe {
                generation: gen.number,
                verdict: Verdict::Deny,
                stage: "no-rules".into(),
                acl: None,
                rule: String::new(),
            });
        };
        let ctx = policy
            .resolve(port, route)
            .map_err(|e| format!("{e} in generation {}", gen.number))?;
        let d = policy.evaluate(key, &ctx);
        Ok(Probe {
            generation: gen.number,
            verdict: d.verdict,
            stage: d.stage.as_str().into(),
            acl: policy.acl_name(d.acl).map(str::to_owned),
            rule: policy.rule_name(&d).to_owned(),
        })
    }

    /// The current snapshot (what the data path enforces right now).
    pub fn current(&self) -> Arc<Generation> {
        self.inner.current.load_full()
    }

    /// The state directory's store of kept generations.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A handle for one worker thread, with its own counter shard.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle::new(Arc::clone(&self.inner))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.wake.notify_all();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_kept(&self) {
        let kept = self.store.scan().kept.iter().map(|k| k.generation).collect();
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = kept;
    }

    /// Hands one control event to the sink, if there is one. The generation and
    /// digest are those active now, after the action.
    fn emit(
        &self,
        event: EventKind,
        outcome: Outcome,
        uid: Option<u32>,
        stage: Option<&'static str>,
        errors: Vec<String>,
    ) {
        let sink = self.events.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(sink) = sink else { return };
        let gen = self.current.load();
        sink(&ControlEvent {
            time: std::time::SystemTime::now(),
            event,
            outcome,
            uid,
            generation: gen.number,
            digest: gen.digest(),
            stage,
            errors,
        });
    }

    fn emit_result(&self, event: EventKind, uid: Option<u32>, res: &Result<ReloadOk, ReloadError>) {
        match res {
            Ok(_) => self.emit(event, Outcome::Ok, uid, None, Vec::new()),
            Err(e) => self.emit(
                event,
                Outcome::Refused,
                uid,
                Some(e.stage.as_str()),
                e.errors.clone(),
            ),
        }
    }

    fn record(&self, res: &Result<ReloadOk, ReloadError>) {
        self.refresh_kept();
        let entry = match res {
            Ok(ok) => LastReload::ok(ok.generation),
            Err(e) => LastReload::failed(e),
        };
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry);
    }

    /// A number for a new generation: above every number used in memory and on
    /// disk, persisted as the high-water mark first.
    fn next_number(&self, ctl: &mut Control) -> Result<u64, StoreError> {
        let n = self
            .store
            .next_generation(ctl.last_number.max(self.current.load().number))?;
        ctl.last_number = n;
        Ok(n)
    }

    /// Removes old kept generations, never the active one or the newest confirmed one.
    fn prune(&self) {
        let mut protect = vec![self.current.load().number];
        if let Some(k) = self.store.newest(true) {
            protect.push(k.generation);
        }
        self.store.prune(&protect);
    }

    fn boot(&self) -> BootReport {
        let mut ctl = self.lock();
        let mut report = BootReport {
            state: GenerationState::NoRules,
            generation: 0,
            config_error: None,
            lkg_errors: Vec::new(),
            persist_error: None,
        };
        let opts = ReloadOptions::default();
        match self.reload_locked(&mut ctl, ReloadSource::Config, &opts, false) {
            Ok(ok) => {
                self.record(&Ok(ok.clone()));
                report.state = ok.state;
                report.generation = ok.generation;
                report.persist_error = ok
                    .warnings
                    .iter()
                    .find(|w| w.starts_with("not persisted"))
                    .cloned();
                return report;
            }
            Err(e) => {
                eprintln!(
                    "palisade: ERROR: config {} refused at stage {}; not running it:",
                    self.config.display(),
                    e.stage
                );
                for line in &e.errors {
                    eprintln!("palisade:   {line}");
                }
                self.record(&Err(e.clone()));
                report.config_error = Some(e);
            }
        }
        for kept in self.store.list().into_iter().rev().filter(|k| k.is_confirmed()) {
            match reload::build(
                &kept.source,
                kept.bytes.clone(),
                kept.companions.clone(),
                &opts,
                None,
                &self.registry,
                self.memory_cap,
            ) {
                Ok(c) => {
                    eprintln!(
                        "palisade: WARNING: running on LAST-KNOWN-GOOD generation {} ({}, digest {}), not on the config",
                        kept.generation, kept.source, kept.digest
                    );
                    ctl.last_number = ctl.last_number.max(kept.generation);
                    self.publish(
                        &mut ctl,
                        Some(Arc::new(c.compiled)),
                        kept.generation,
                        GenerationState::LastKnownGood,
                        None,
                    );
                    report.state = GenerationState::LastKnownGood;
                    report.generation = kept.generation;
                    return report;
                }
                Err(e) => {
                    let why = format!(
                        "kept generation {} refused at stage {}: {}",
                        kept.generation,
                        e.stage,
                        e.errors.join("; ")
                    );
                    eprintln!("palisade: {why}");
                    report.lkg_errors.push(why);
                }
            }
        }
        eprintln!(
            "palisade: ERROR: NO RULES: no valid config and no last-known-good in {}; denying every frame until a valid rule set is loaded",
            self.store.dir().display()
        );
        report
    }

    /// Swaps in a new snapshot; remembers the rules it replaces for rollback.
    fn publish(
        &self,
        ctl: &mut Control,
        rules: Option<Arc<Compiled>>,
        number: u64,
        state: GenerationState,
        confirm_deadline: Option<u64>,
    ) {
        let old = self.current.swap(Arc::new(Generation {
            number,
            state,
            loaded_at: unix_now(),
            confirm_deadline,
            rules: rules.clone(),
        }));
        let same = match (&old.rules, &rules) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same && old.rules.is_some() {
            ctl.previous = old.rules.clone();
        }
        retire(ctl, old);
        self.wake.notify_all();
    }

    fn reload_locked(
        &self,
        ctl: &mut Control,
        source: ReloadSource,
        opts: &ReloadOptions,
        persist_required: bool,
    ) -> Result<ReloadOk, ReloadError> {
        // read
        fault(opts, ReloadStage::Read)?;
        let (name, bytes, companions) = match source {
            ReloadSource::Config => {
                let (n, b) = read(&self.config)?;
                (n, b, Vec::new())
            }
            ReloadSource::Path(p) => {
                let (n, b) = read(&p)?;
                (n, b, Vec::new())
            }
            ReloadSource::Bytes { name, bytes } => (name, bytes, Vec::new()),
            ReloadSource::Generation {
                name,
                bytes,
                companions,
            } => (name, bytes, companions),
        };
        let cur = self.current.load_full();
        let active_rescue = cur.rules.as_ref().map(|c| c.rescue_fingerprint);
        let cand = reload::build(
            &name,
            bytes,
            companions,
            opts,
            active_rescue,
            &self.registry,
            self.memory_cap,
        )?;
        let compiled = Arc::new(cand.compiled);
        let mut warnings = cand.warnings;

        // persist (at boot, a config identical to the newest kept generation keeps its
        // number and file, so restarts neither renumber nor crowd out older generations)
        let reuse = match persist_required || opts.confirm_within.is_some() {
            true => None,
            false => self.store.newest(true).filter(|k| k.digest == compiled.digest),
        };
        let (number, saved) = match reuse {
            Some(k) => {
                ctl.last_number = ctl.last_number.max(k.generation);
                (k.generation, false)
            }
            None => {
                let outcome = match opts.confirm_within {
                    Some(_) => KeptOutcome::Pending,
                    None => KeptOutcome::Confirmed,
                };
                let persisted = fault(opts, ReloadStage::Persist)
                    .and_then(|()| {
                        self.next_number(ctl)
                            .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))
                    })
                    .and_then(|number| {
                        let kept = Kept::with_companions(
                            number,
                            &compiled.source,
                            compiled.bytes.to_vec(),
                            compiled.companions.to_vec(),
                            outcome,
                        );
                        self.store
                            .save(&kept)
                            .map(|()| number)
                            .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))
                    });
                match persisted {
                    Ok(number) => (number, true),
                    Err(e) if persist_required => return Err(e),
                    Err(e) => {
                        let msg = format!("not persisted as last-known-good: {}", e.errors.join("; "));
                        eprintln!("palisade: WARNING: {msg}");
                        warnings.push(msg);
                        let above = ctl.last_number.max(cur.number).max(self.store.max_generation());
                        let number = above.checked_add(1).ok_or_else(|| {
                            ReloadError::new(
                                ReloadStage::Persist,
                                vec!["generation numbers are exhausted".into()],
                            )
                        })?;
                        ctl.last_number = number;
                        (number, false)
                    }
                }
            }
        };

        // publish
        if let Err(e) = fault(opts, ReloadStage::Publish) {
            if saved {
                self.store.remove(number);
            }
            return Err(e);
        }
        let (state, deadline) = match opts.confirm_within {
            Some(d) => {
                let (revert_to, revert_state) = match ctl.pending.take() {
                    Some(p) => (p.revert_to, p.revert_state),
                    None => (cur.rules.clone(), cur.state),
                };
                ctl.pending = Some(Pending {
                    deadline: Instant::now() + d,
                    revert_to,
                    revert_state,
                });
                self.wake.notify_all();
                (
                    GenerationState::PendingConfirm,
                    Some(unix_now() + d.as_secs_f64().ceil() as u64),
                )
            }
            None => {
                ctl.pending = None;
                (GenerationState::Active, None)
            }
        };
        let digest = compiled.digest;
        self.publish(ctl, Some(compiled), number, state, deadline);
        self.prune();
        Ok(ReloadOk {
            generation: number,
            digest,
            state,
            confirm_deadline: deadline,
            warnings,
        })
    }

    fn rollback_locked(&self, ctl: &mut Control, to: Option<u64>) -> Result<ReloadOk, ReloadError> {
        let opts = ReloadOptions {
            allow_rescue_change: true,
            ..ReloadOptions::default()
        };
        match to {
            Some(n) => {
                let kept = self.store.load(n).map_err(|e| {
                    let why = match e {
                        KeptError::NotKept { .. } => e.to_string(),
                        _ => format!("generation {n} cannot be used: {e}"),
                    };
                    ReloadError::new(ReloadStage::Read, vec![why])
                })?;
                let source = ReloadSource::Generation {
                    name: kept.source,
                    bytes: kept.bytes,
                    companions: kept.companions,
                };
                self.reload_locked(ctl, source, &opts, true)
            }
            None => {
                let Some(prev) = ctl.previous.clone() else {
                    // Nothing replaced since boot: the newest kept generation with other rules.
                    let current = self.current.load().digest();
                    let older = self
                        .store
                        .list()
                        .into_iter()
                        .rev()
                        .find(|k| k.is_confirmed() && Some(k.digest) != current);
                    return match older {
                        Some(k) => self.rollback_locked(ctl, Some(k.generation)),
                        None => Err(ReloadError::new(
                            ReloadStage::Read,
                            vec!["no previous generation to roll back to".into()],
                        )),
                    };
                };
                let number = self
                    .next_number(ctl)
                    .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))?;
                let kept = Kept::with_companions(
                    number,
                    &prev.source,
                    prev.bytes.to_vec(),
                    prev.companions.to_vec(),
                    KeptOutcome::Confirmed,
                );
                self.store
                    .save(&kept)
                    .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))?;
                ctl.pending = None;
                let digest = prev.digest;
                self.publish(ctl, Some(prev), number, GenerationState::Active, None);
                self.prune();
                Ok(ReloadOk {
                    generation: number,
                    digest,
                    state: GenerationState::Active,
                    confirm_deadline: None,
                    warnings: Vec::new(),
                })
            }
        }
    }

    /// Reverts unconfirmed reloads when their window closes.
    fn watchdog(&self) {
        let mut ctl = self.lock();
        loop {
            if ctl.shutdown {
                return;
            }
            ctl.retired.retain(|g| Arc::strong_count(g) > 1);
            let idle = match ctl.retired.is_empty() {
                true => Duration::from_secs(3600),
                false => Duration::from_millis(200),
            };
            let wait = match &ctl.pending {
                None => idle,
                Some(p) => {
                    let now = Instant::now();
                    if now >= p.deadline {
                        self.revert(&mut ctl);
                        continue;
                    }
                    (p.deadline - now).min(idle)
                }
            };
            ctl = self
                .wake
                .wait_timeout(ctl, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn revert(&self, ctl: &mut Control) {
        let Some(p) = ctl.pending.take() else { return };
        let from = self.current.load().number;
        // A revert happens whatever the disk says: without a persisted number it
        // takes the next one in memory (and says so).
        let number = match self.next_number(ctl) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("palisade: warning: revert: {e}");
                ctl.last_number = ctl.last_number.max(from).saturating_add(1);
                ctl.last_number
            }
        };
        if let Some(rules) = &p.revert_to {
            let kept = Kept::with_companions(
                number,
                &rules.source,
                rules.bytes.to_vec(),
                rules.companions.to_vec(),
                KeptOutcome::Confirmed,
            );
            if let Err(e) = self.store.save(&kept) {
                eprintln!("palisade: warning: reverted generation {number} not persisted: {e}");
            }
        }
        let state = match p.revert_state {
            GenerationState::PendingConfirm => GenerationState::Active,
            s => s,
        };
        self.publish(ctl, p.revert_to.clone(), number, state, None);
        self.prune();
        let msg = format!(
            "generation {from} was not confirmed in time; reverted to the previous rules as generation {number}"
        );
        eprintln!("palisade: {msg}");
        self.refresh_kept();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastReload::failed(
            &ReloadError::new(ReloadStage::Confirm, vec![msg]),
        ));
        self.emit(EventKind::Revert, Outcome::Ok, None, None, Vec::new());
    }
}

/// Keeps a replaced snapshot until no reader holds it (see `Control::retired`).
fn retire(ctl: &mut Control, old: Arc<Generation>) {
    ctl.retired.retain(|g| Arc::strong_count(g) > 1);
    ctl.retired.push(old);
}

fn read(path: &Path) -> Result<(String, Vec<u8>), ReloadError> {
    let name = path.display().to_string();
    // Bounded: a regular file of at most MAX_RULE_FILE_BYTES (never a FIFO or device).
    match palisade_rules::read_rule_file(path) {
        Ok(bytes) => Ok((name, bytes)),
        Err(e) => Err(ReloadError::new(
            ReloadStage::Read,
            vec![format!("{name}: cannot read: {e}")],
        )),
    }
}

/// A candidate rule set that passed every checking stage of a reload
/// ([`Engine::check_candidate`]) but is neither persisted nor published.
#[derive(Debug)]
pub struct CheckedCandidate {
    /// The compiled policy.
    pub policy: crate::policy::Policy,
    /// The rule set it was compiled from.
    pub ruleset: palisade_rules::RuleSet,
    /// SHA-256 of the file bytes.
    pub digest: Digest,
    /// The file it was read from.
    pub source: String,
    /// Warnings (shadowed rules, unbound ACLs).
    pub warnings: Vec<String>,
}

/// One worker thread's view of the engine: classifies batches and counts
/// into its own counter shard. Cloning gives a new handle with a new shard.
pub struct WorkerHandle {
    inner: Arc<Inner>,
    shard: Arc<Shard>,
    cells: Arc<Box<[AtomicU64]>>,
}

impl Clone for WorkerHandle {
    fn clone(&self) -> Self {
        WorkerHandle::new(Arc::clone(&self.inner))
    }
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

impl WorkerHandle {
    fn new(inner: Arc<Inner>) -> Self {
        let shard = inner.shards.add();
        let cells = shard.cells();
        WorkerHandle { inner, shard, cells }
    }

    /// Starts a batch: loads the current snapshot once; every key classified
    /// through the returned [`Batch`] sees that snapshot and no other.
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        let gen = self.inner.current.load();
        let need = gen.rules.as_ref().map_or(0, |c| c.layout.len);
        if self.cells.len() < need {
            // Once per new generation, never per frame.
            self.cells = self.shard.grow(need);
        }
        Batch {
            gen,
            cells: &self.cells,
        }
    }

    /// Classifies `keys` with one snapshot; `out[i]` receives the decision for
    /// `keys[i]`. `ctx` holds ids of that snapshot: resolve it with
    /// [`Batch::context`] (or check [`Batch::generation`]) when generations
    /// may change. Returns the generation number used.
    #[inline]
    pub fn classify_batch(&mut self, keys: &[FlowKey], ctx: &Context, out: &mut [Decision]) -> u64 {
        let mut b = self.batch();
        b.classify(keys, ctx, out);
        b.generation().number()
    }
}

/// One batch's pinned snapshot (see [`WorkerHandle::batch`]).
pub struct Batch<'h> {
    gen: Guard<Arc<Generation>>,
    cells: &'h [AtomicU64],
}

impl Batch<'_> {
    /// The snapshot this batch uses.
    #[inline]
    pub fn generation(&self) -> &Generation {
        &self.gen
    }

    /// The context for frames entering `port` (and routed `from` -> `to`), in
    /// this snapshot's ids; `None` when a name is unknown to it.
    pub fn context(&self, port: &str, route: Option<(&str, &str)>) -> Option<Context> {
        self.gen.policy()?.resolve(port, route).ok()
    }

    /// Classifies `keys` into `out` (only `min(keys.len(), out.len())` written)
    /// and counts. With no rules every frame is denied. Byte counters are not
    /// advanced: [`Batch::classify_frames`] is the same with frame lengths.
    #[inline]
    pub fn classify(&mut self, keys: &[FlowKey], ctx: &Context, out: &mut [Decision]) {
        self.classify_frames(keys, &[], ctx, out);
    }

    /// [`Batch::classify`] for frames whose lengths are known: `lens[i]` is
    /// the length in bytes of the frame `keys[i]` was parsed from, added to
    /// the byte counters of the deciding rule and of all frames (a key with
    /// no length, past the end of `lens`, counts 0 bytes).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("palisade-doc-frames-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # std::fs::write(dir.join("r.toml"), "version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\n\
    /// #     [[acl.rule]]\nid = \"udp\"\naction = \"deny\"\nproto = \"udp\"\n[[bind]]\nacl = \"a\"\nport = \"p\"\n").unwrap();
    /// # let (engine, _) = palisade_engine::Engine::open(&dir.join("r.toml"), &dir.join("s"), Default::default()).unwrap();
    /// use palisade_packet::FlowKey;
    /// let udp = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(17).with_ports(1, 53);
    /// let mut worker = engine.handle();
    /// let mut batch = worker.batch();
    /// let ctx = batch.context("p", None).unwrap();
    /// let mut out = [Default::default(); 2];
    /// batch.classify_frames(&[udp, udp], &[60, 1514], &ctx, &mut out);
    /// drop(batch);
    /// let rule = &engine.status().acls[0].counters.rules[0];
    /// assert_eq!((rule.id.as_str(), rule.hits, rule.bytes), ("udp", 2, 1574));
    /// # drop(engine);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    #[inline]
    pub fn classify_frames(&mut self, keys: &[FlowKey], lens: &[usize], ctx: &Context, out: &mut [Decision]) {
        let cells = self.cells;
        let Some(c) = self.gen.rules.as_deref() else {
            for o in out.iter_mut().take(keys.len()) {
                *o = Decision::default();
            }
            return;
        };
        let layout = &c.layout;
        for (i, (k, o)) in keys.iter().zip(out.iter_mut()).enumerate() {
            let len = lens.get(i).map_or(0, |&n| n as u64);
            let d = c.policy.evaluate_traced(k, ctx, |ev| {
                if let Some(b) = layout.bindings.get(ev.binding as usize) {
                    bump(cells, b.base);
                    bump(cells, b.base + if ev.verdict == Verdict::Permit { 1 } else { 2 });
                }
                if let Some(rules) = layout.acl_rules.get(ev.acl as usize) {
                    let slot = match ev.rule {
                        RuleRef::Rule(i) => rules.get(i as usize),
                        RuleRef::Default => rules.last(),
                        _ => None,
                    };
                    if let Some(&s) = slot {
                        bump(cells, s);
                        add(cells, s + 1, len);
                    }
                }
            });
            if let RuleRef::Rescue(i) = d.rule {
                if let Some(&s) = layout.rescue.get(i as usize) {
                    bump(cells, s);
                    add(cells, s + 1, len);
                }
            }
            let denied = u32::from(d.verdict != Verdict::Permit);
            bump(cells, layout.total);
            bump(cells, layout.total + 1 + denied);
            add(cells, layout.total + 3, len);
            bump(cells, layout.stages + 2 * stage_index(d.stage) + denied);
            *o = d;
        }
    }

    /// Decides frames that cannot be evaluated in any context (a data path
    /// found no port for their interface, or no way across for their VLAN):
    /// each is denied at `stage` with no ACL run, and counted like a
    /// classified frame (frames, stage, bytes: `lens[i]` is the length of
    /// the frame of `keys[i]`, as for [`Batch::classify_frames`]), so the
    /// engine's counters hold every frame the data path decided. `out[i]`
    /// receives the decision for `keys[i]` (only `min(keys.len(), out.len())`
    /// written).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("palisade-doc-refuse-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # std::fs::write(dir.join("r.toml"), "version = 1\n[[port]]\nname = \"p\"\n").unwrap();
    /// # let (engine, _) = palisade_engine::Engine::open(&dir.join("r.toml"), &dir.join("s"), Default::default()).unwrap();
    /// use palisade_engine::policy::{Stage, Verdict};
    /// let mut worker = engine.handle();
    /// let mut out = [Default::default(); 3];
    /// worker.batch().refuse(&[palisade_packet::FlowKey::new(); 3], &[60, 60, 64], Stage::VlanFilter, &mut out);
    /// assert!(out.iter().all(|d| d.verdict == Verdict::Deny && d.stage == Stage::VlanFilter));
    /// let status = engine.status();
    /// assert_eq!((status.frames.denied, status.bytes), (3, 184));
    /// let vlan_filter = status.stages.iter().find(|s| s.stage == "vlan-filter").unwrap();
    /// assert_eq!(vlan_filter.denied, 3);
    /// # drop((worker, engine));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    #[inline]
    pub fn refuse(&mut self, keys: &[FlowKey], lens: &[usize], stage: Stage, out: &mut [Decision]) {
        let n = keys.len().min(out.len());
        let cells = self.cells;
        let Some(c) = self.gen.rules.as_deref() else {
            out[..n].fill(Decision::default());
            return;
        };
        let layout = &c.layout;
        out[..n].fill(Decision {
            verdict: Verdict::Deny,
            stage,
            acl: None,
            rule: RuleRef::None,
        });
        for i in 0..n {
            bump(cells, layout.total);
            bump(cells, layout.total + 2);
            add(cells, layout.total + 3, lens.get(i).map_or(0, |&l| l as u64));
            bump(cells, layout.stages + 2 * stage_index(stage) + 1);
        }
    }
}
