//! The engine: boot, reload, confirm, rollback, status, and worker handles.
//!
//! Locks of the control path, and why there are two:
//!
//! * `reloads` serializes reloads through their slow part (read, parse,
//!   validate, compile, self-test, audit), which may take minutes for a huge
//!   rule set; rollbacks are serialized among themselves by `rollbacks`
//!   (most need no compile at all: the rules replaced last stay in memory);
//! * `control` guards what is published (the pending confirm window, the
//!   numbers, the retired snapshots) and is held only for the short part:
//!   persist and publish. Confirm, rollback's decision, the commit-confirmed
//!   timer and status therefore never wait behind a compile.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use palisade_packet::FlowKey;
use palisade_rules::Digest;

use crate::counters::{add, bump, stage_index, Layout, Shard, ShardSet, SlotRegistry};
use crate::events::{ControlEvent, EventKind, EventSink, Outcome as EventOutcome};
use crate::flow::{Clock, SystemClock};
use crate::generation::{Compiled, Generation, GenerationState};
use crate::lkg::{unix_now, Companion, KeptError, KeptInfo, Outcome, PartRef, Store, StoreError};
use crate::policy::{Context, Decision, RuleRef, Stage, StageEvent, Verdict};
use crate::reload::{self, fault, Candidate, ReloadError, ReloadOptions, ReloadStage};
use crate::setfile::WriteThrough;
use crate::status::{self, LastReload, Status};

/// The progress slot of the running reload.
const RELOAD: usize = 0;
/// The progress slot of the running rollback.
const ROLLBACK: usize = 1;

/// How often an in-memory confirmation that could not be persisted is retried.
const CONFIRM_RETRY: Duration = Duration::from_secs(5);

/// How an [`Engine`] keeps its state.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How many generations the state directory keeps (default 10); the active
    /// generation and the newest confirmed one are kept besides, whatever their numbers.
    pub keep_generations: usize,
    /// fsync every persisted generation and the directory (default true). Turn
    /// off only in tests and benchmarks: a crash may then lose the last-known-good.
    pub durable: bool,
    /// Cap on the bytes of one generation's compiled classifiers (default
    /// [`crate::policy::DEFAULT_MEMORY_CAP`]); a rule set past it is refused at stage compile.
    pub memory_cap: usize,
    /// Boot from the config even when the state directory holds generations
    /// (default false: boot runs the generation that was active and confirmed
    /// when the engine stopped, and the config seeds only an empty state directory).
    pub boot_from_config: bool,
    /// The flow table's clock (default: the system's monotonic clock); tests inject a
    /// [`crate::flow::ManualClock`].
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            keep_generations: 10,
            durable: true,
            memory_cap: crate::policy::DEFAULT_MEMORY_CAP,
            boot_from_config: false,
            clock: None,
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

/// How a rollback is to be made.
#[derive(Clone, Debug, Default)]
pub struct RollbackOptions {
    /// Commit-confirmed: the rollback reverts by itself unless confirmed within this time.
    pub confirm_within: Option<Duration>,
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

/// A set change ([`Engine::change_set`]) that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetChanged {
    /// The set.
    pub set: String,
    /// Elements added or removed; 0 when there was nothing to do (then no
    /// new generation was made and `reload` describes the active one).
    pub changed: usize,
    /// Elements of the set now.
    pub elements: usize,
    /// The set file written through.
    pub file: PathBuf,
    /// SHA-256 of the set file now.
    pub file_digest: Digest,
    /// The generation made active (number, digest over every file, state).
    pub reload: ReloadOk,
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

/// Where the running generation came from at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootSource {
    /// The generation that was active and confirmed when the engine stopped.
    StateDirectory,
    /// The config (an empty state directory, or `boot_from_config`).
    Config,
    /// No rules: every frame denied.
    None,
}

/// What happened at boot.
#[derive(Clone, Debug)]
pub struct BootReport {
    /// What the engine runs on.
    pub state: GenerationState,
    /// The generation running (0 with no rules).
    pub generation: u64,
    /// Where it came from.
    pub source: BootSource,
    /// Why the config was not used, when it was tried and refused.
    pub config_error: Option<ReloadError>,
    /// Whether the config differs from the generation running (`None` when
    /// the config could not be read, or nothing runs).
    pub config_differs: Option<bool>,
    /// Kept generations (and files named as such) that were refused before one was used.
    pub lkg_errors: Vec<String>,
    /// The config was valid but could not be persisted as last-known-good.
    pub persist_error: Option<String>,
}

struct Pending {
    deadline: Instant,
    revert_to: Option<Arc<Compiled>>,
    revert_state: GenerationState,
    /// Generations published in this window, oldest first: reverted together.
    chain: Vec<u64>,
    /// Set files written through since the confirm window opened: a revert
    /// writes them back as `revert_to` has them.
    written: Vec<String>,
}

struct Control {
    /// The rules most recently replaced: rollback reuses them instead of compiling again.
    previous: Option<Arc<Compiled>>,
    /// Replaced snapshots, dropped here on the control path once no reader holds
    /// them, so a worker never pays for freeing a whole rule set.
    retired: Vec<Arc<Generation>>,
    pending: Option<Pending>,
    last_number: u64,
    shutdown: bool,
    /// Counter identities of the kept generations built since boot (their slots stay).
    kept_ids: HashMap<u64, Arc<[String]>>,
}

/// What the config file holds, cached by its identity on disk (status stats it, re-reads on change).
#[derive(Default)]
struct ConfigSeen {
    stamp: Option<FileStamp>,
    digest: Option<Digest>,
    /// The running generation's set files as they are on disk, by path.
    set_files: HashMap<PathBuf, (Option<FileStamp>, Digest)>,
    error: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) current: ArcSwap<Generation>,
    control: Mutex<Control>,
    /// One reload at a time (held through the slow stages; see the module doc).
    reloads: Mutex<()>,
    /// One rollback at a time; independent of `reloads`, so a rollback never
    /// waits behind a reload's compile (nor a reload behind a rollback's).
    rollbacks: Mutex<()>,
    wake: Condvar,
    pub(crate) last_reload: Mutex<Option<LastReload>>,
    /// Valid kept generations, refreshed after every change (status must not read the disk).
    pub(crate) kept: Mutex<Vec<KeptInfo>>,
    /// Files named as kept generations that are refused, with why.
    pub(crate) refused: Mutex<Vec<String>>,
    /// The reload running now: stage, source, start.
    /// Index [`RELOAD`] for the reload, [`ROLLBACK`] for the rollback.
    pub(crate) progress: Mutex<[Option<status::ReloadProgress>; 2]>,
    /// A confirmation made in memory whose write to the state directory failed:
    /// (generation, why); retried by the watchdog. Changed under the control lock,
    /// read by status without it.
    unpersisted_confirm: Mutex<Option<(u64, String)>>,
    config_seen: Mutex<ConfigSeen>,
    registry: SlotRegistry,
    /// Stable numbers of the names a flow entry keeps (its opening rule, port
    /// and interfaces; see [`crate::stateful::FlowPlan`]). Apart from the
    /// counter slots and never freed: a kept flow's number must keep its
    /// name however many generations come and go. It holds only the
    /// `keep_state` rules, ports and interfaces of stateful generations.
    pub(crate) flow_names: SlotRegistry,
    /// The all-frames and per-stage counter slots, counted with no rules too.
    pub(crate) base: Layout,
    memory_cap: usize,
    /// fsync what is written (kept generations, set files written through).
    durable: bool,
    pub(crate) shards: ShardSet,
    pub(crate) store: Store,
    pub(crate) config: PathBuf,
    /// Where control events go (see [`crate::events`]).
    events: Mutex<Option<EventSink>>,
    /// The flow table, kept across generations (see [`crate::stateful`]).
    pub(crate) flow_table: Mutex<Option<Arc<crate::flow::FlowTable>>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Stops the flow sweeper.
    pub(crate) flows_stop: std::sync::atomic::AtomicBool,
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
    sweeper: Option<JoinHandle<()>>,
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

/// A candidate ready to publish: freshly built, or rules already compiled in memory.
enum Ready {
    Built(Box<Candidate>),
    InMemory(Arc<Compiled>),
}

impl Engine {
    /// Boots an engine and takes its state directory for this process alone
    /// (a second engine on the same directory fails with a clear error).
    ///
    /// Boot runs the generation that was active and confirmed when the engine
    /// stopped, from `state_dir` (an unconfirmed one, pending when it stopped,
    /// is never booted). `config` is booted only when the state directory
    /// holds no generation, or with [`EngineOptions::boot_from_config`]; a
    /// config that differs from the running generation is said in the log and
    /// in status, and applied only by an explicit reload. When the newest
    /// confirmed generation is unreadable, an older one runs, said loudly
    /// (state `last-known-good`); with none, every frame is denied.
    ///
    /// Fails only when the state directory cannot be used (not a directory, a
    /// symlink, owned by another user, locked by another process, ...).
    pub fn open(
        config: &Path,
        state_dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, BootReport), StoreError> {
        let store = Store::open_locked(state_dir, options.keep_generations, options.durable)?;
        let registry = SlotRegistry::default();
        let inner = Arc::new(Inner {
            current: ArcSwap::from_pointee(Generation::no_rules()),
            control: Mutex::new(Control {
                previous: None,
                retired: Vec::new(),
                pending: None,
                last_number: 0,
                shutdown: false,
                kept_ids: HashMap::new(),
            }),
            unpersisted_confirm: Mutex::new(None),
            reloads: Mutex::new(()),
            rollbacks: Mutex::new(()),
            wake: Condvar::new(),
            last_reload: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            progress: Mutex::new([None, None]),
            config_seen: Mutex::new(ConfigSeen::default()),
            base: reload::base_layout(&registry),
            registry,
            flow_names: SlotRegistry::default(),
            memory_cap: options.memory_cap,
            durable: options.durable,
            shards: ShardSet::default(),
            store,
            config: config.to_path_buf(),
            events: Mutex::new(None),
            flow_table: Mutex::new(None),
            clock: options.clock.unwrap_or_else(|| Arc::new(SystemClock::default())),
            flows_stop: std::sync::atomic::AtomicBool::new(false),
        });
        let report = inner.boot(options.boot_from_config);
        // (a set change killed mid-compile leaves its staged set file beside the real one)
        for f in inner.current.load().rules.iter().flat_map(|r| r.files.iter()) {
            crate::setfile::remove_leftovers(&f.path);
        }
        inner.refresh_kept();
        let watchdog = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("palisade-confirm".into())
                .spawn(move || inner.watchdog())
                .ok()
        };
        let sweeper = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("palisade-flows".into())
                .spawn(move || crate::stateful::sweeper(&inner))
                .ok()
        };
        Ok((
            Engine {
                inner,
                watchdog,
                sweeper,
            },
            report,
        ))
    }

    /// Runs the whole pipeline on `source` and, if every stage passes, makes it
    /// the active generation. On error nothing changed.
    ///
    /// Reloads run one at a time; their slow stages (read to audit) hold no
    /// lock that confirm, rollback, the confirm-window timer or status need.
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
        let one = self.inner.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let res = self.inner.reload_now(source, opts);
        self.inner.record(&res);
        drop(one);
        self.inner.emit_result(EventKind::Reload, uid, &res);
        res
    }

    /// Sets (or with `None` removes) the receiver of [`crate::events::ControlEvent`]s.
    pub fn set_event_sink(&self, sink: Option<EventSink>) {
        *self.inner.events.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Adds elements to (or removes them from) set `set` of the active rule
    /// set: a new generation through the whole pipeline (validated, the one
    /// set recompiled, self-tested with the `[[expect]]`s, persisted,
    /// published atomically; `opts.confirm_within` opens a confirm window like
    /// a reload's), and the set's file written through atomically so that a
    /// later reload or restart keeps it (restored if the window reverts). A
    /// bad element changes nothing and is named in the error.
    ///
    /// ```
    /// use palisade_engine::{Engine, ReloadOptions};
    /// use palisade_rules::SetOp;
    /// let dir = std::env::temp_dir().join(format!("palisade-doc-set-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("bl.txt"), "203.0.113.0/24\n").unwrap();
    /// std::fs::write(dir.join("r.toml"), "version = 1\n[[port]]\nname = \"p\"\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n\
    ///     [[acl]]\nname = \"a\"\ndefault = \"permit\"\n[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n[[bind]]\nacl = \"a\"\nport = \"p\"\n").unwrap();
    /// let (engine, boot) = Engine::open(&dir.join("r.toml"), &dir.join("state"), Default::default()).unwrap();
    /// let ch = engine.change_set("bl", SetOp::Add, &["198.51.100.7".into()], &ReloadOptions::default()).unwrap();
    /// assert_eq!((ch.changed, ch.elements, ch.reload.generation), (1, 2, boot.generation + 1));
    /// assert_eq!(std::fs::read_to_string(dir.join("bl.txt")).unwrap(), "203.0.113.0/24\n198.51.100.7\n");
    /// let probe = palisade_rules::parse_packet_spec("tcp 198.51.100.7:1 -> 10.0.0.1:80").unwrap();
    /// assert_eq!(engine.probe("p", None, &probe).unwrap().rule, "#1");
    /// // A bad element refuses the whole change.
    /// let e = engine.change_set("bl", SetOp::Add, &["10.0.0.9".into(), "nope".into()], &ReloadOptions::default()).unwrap_err();
    /// assert!(e.errors[0].contains("element \"nope\""), "{e}");
    /// assert_eq!(engine.status().generation, ch.reload.generation);
    /// drop(engine);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn change_set(
        &self,
        set: &str,
        op: palisade_rules::SetOp,
        elements: &[String],
        opts: &ReloadOptions,
    ) -> Result<SetChanged, ReloadError> {
        self.change_set_by(set, op, elements, opts, None)
    }

    /// [`Engine::change_set`] on behalf of `uid`, named in its control event
    /// (a set change that changes nothing emits none).
    pub fn change_set_by(
        &self,
        set: &str,
        op: palisade_rules::SetOp,
        elements: &[String],
        opts: &ReloadOptions,
        uid: Option<u32>,
    ) -> Result<SetChanged, ReloadError> {
        // One reload (or set change) at a time: a reload never publishes set
        // files older than a set change it ran beside.
        let one = self.inner.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let label = format!("set {set}");
        self.inner.progress(RELOAD, &label, Some(ReloadStage::Validate));
        let res = self.inner.change_set(set, op, elements, opts, &label);
        self.inner.progress(RELOAD, &label, None);
        let generation = match &res {
            Ok(ch) if ch.changed == 0 => None,
            Ok(ch) => Some(Ok(ch.reload.clone())),
            Err(e) => Some(Err(e.clone())),
        };
        match &generation {
            Some(r) => self.inner.record(r),
            None => self.inner.refresh_kept(),
        }
        drop(one);
        if let Some(r) = &generation {
            self.inner.emit_result(EventKind::SetChange, uid, r);
        }
        res
    }

    /// Confirms a pending commit-confirmed reload; returns its generation.
    ///
    /// Answers Ok only once the confirmation is durable in the state directory.
    /// When that write fails, the generation stays active in memory (its revert
    /// timer is stopped: the operator confirmed it) but the answer is an error
    /// that says a restart would boot the previous generation; status shows
    /// `confirm_persisted: false`, and the write is retried every few seconds
    /// (and by the next `confirm`).
    pub fn confirm(&self) -> Result<u64, String> {
        self.confirm_by(None)
    }

    /// [`Engine::confirm`] on behalf of `uid`, named in its control event.
    pub fn confirm_by(&self, uid: Option<u32>) -> Result<u64, String> {
        let res = self.confirm_now();
        let (outcome, errors) = match &res {
            Ok(_) => (EventOutcome::Ok, Vec::new()),
            Err(e) => (EventOutcome::Refused, vec![e.clone()]),
        };
        self.inner.emit(EventKind::Confirm, outcome, uid, None, errors);
        res
    }

    fn confirm_now(&self) -> Result<u64, String> {
        let mut ctl = self.inner.lock();
        let cur = self.inner.current.load_full();
        let Some(p) = ctl
            .pending
            .take_if(|_| cur.state == GenerationState::PendingConfirm)
        else {
            // A confirmation that is only in memory: try to make it durable now.
            let unpersisted = self.inner.unpersisted().clone();
            if let Some((g, _)) = unpersisted {
                return match self.inner.store.mark_confirmed(g) {
                    Ok(()) => {
                        *self.inner.unpersisted() = None;
                        drop(ctl);
                        self.inner.refresh_kept();
                        Ok(g)
                    }
                    Err(e) => {
                        let msg = self.inner.unpersisted_message(g, &e.to_string());
                        *self.inner.unpersisted() = Some((g, e.to_string()));
                        Err(msg)
                    }
                };
            }
            return Err("no reload is waiting for confirmation".into());
        };
        let number = cur.number;
        let persisted = self.inner.store.mark_confirmed(number);
        // Earlier generations of the same window were replaced before anyone confirmed them.
        for &g in p.chain.iter().filter(|&&g| g != number) {
            let _ = self.inner.store.set_outcome(g, Outcome::Unconfirmed);
        }
        let old = self.inner.current.swap(Arc::new(Generation {
            number,
            state: GenerationState::Active,
            loaded_at: cur.loaded_at,
            confirm_deadline: None,
            rules: cur.rules.clone(),
            flows: cur.flows.clone(),
        }));
        drop(cur);
        retire(&mut ctl, old);
        let res = match persisted {
            Ok(()) => {
                *self.inner.unpersisted() = None;
                Ok(number)
            }
            Err(e) => {
                eprintln!("palisade: WARNING: generation {number} confirmed in memory, NOT on disk: {e}");
                *self.inner.unpersisted() = Some((number, e.to_string()));
                Err(self.inner.unpersisted_message(number, &e.to_string()))
            }
        };
        self.inner.wake.notify_all();
        drop(ctl);
        self.inner.refresh_kept();
        res
    }

    /// Makes a kept generation active again, as a new generation number, with
    /// no confirm window. See [`Engine::rollback_with`].
    pub fn rollback(&self, to: Option<u64>) -> Result<ReloadOk, ReloadError> {
        self.rollback_with_by(to, &RollbackOptions::default(), None)
    }

    /// [`Engine::rollback`] on behalf of `uid`, named in its control event.
    pub fn rollback_by(&self, to: Option<u64>, uid: Option<u32>) -> Result<ReloadOk, ReloadError> {
        self.rollback_with_by(to, &RollbackOptions::default(), uid)
    }

    /// Makes a kept generation active again, as a new generation number:
    /// `Some(n)` takes generation `n` from the state directory ("generation n
    /// is not kept" when it is not there); `None` the generation that was
    /// active and confirmed before the current one, skipping reverted,
    /// unconfirmed and pending ones and those with the current rules. Rescue
    /// rules may change (the target was accepted before). With
    /// `opts.confirm_within` it reverts by itself unless confirmed.
    ///
    /// A rollback does not wait for a reload that is compiling: both may run
    /// at once, and whichever finishes last is active.
    pub fn rollback_with(&self, to: Option<u64>, opts: &RollbackOptions) -> Result<ReloadOk, ReloadError> {
        self.rollback_with_by(to, opts, None)
    }

    /// [`Engine::rollback_with`] on behalf of `uid`, named in its control event.
    pub fn rollback_with_by(
        &self,
        to: Option<u64>,
        opts: &RollbackOptions,
        uid: Option<u32>,
    ) -> Result<ReloadOk, ReloadError> {
        let one = self.inner.rollbacks.lock().unwrap_or_else(|e| e.into_inner());
        let res = self.inner.rollback_now(to, opts);
        self.inner.record(&res);
        drop(one);
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
        let cand = reload::build(
            &name,
            bytes,
            &palisade_rules::DiskFiles,
            &opts,
            None,
            self.inner.memory_cap,
            &|_| {},
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

    /// Every flow of the flow table, named (see [`crate::stateful`]).
    pub fn flows(&self) -> Vec<crate::stateful::FlowEntry> {
        crate::stateful::list(&self.inner)
    }

    /// How many live flows `policy` (a candidate, see [`Engine::check_candidate`])
    /// would cut if it became active: (flows checked, flows whose opening frame
    /// it would not open in their context). Control path: reads the whole table.
    pub fn flows_cut_by(&self, policy: &crate::policy::Policy) -> (u64, u64) {
        crate::stateful::cut_by(&self.inner, policy)
    }

    /// The flow table's counters (`None` while no generation has kept state).
    pub fn flow_stats(&self) -> Option<crate::flow::FlowStats> {
        crate::stateful::stats(&self.inner)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.wake.notify_all();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        self.inner
            .flows_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.sweeper.take() {
            s.thread().unpark();
            let _ = s.join();
        }
    }
}

impl Inner {
    /// Gives a compiled generation its counter slots and, when it keeps
    /// state, its flow plan (under the control lock, just before it is published).
    fn place(&self, compiled: &mut Compiled) {
        compiled.layout = reload::layout(&compiled.policy, &self.registry);
        compiled.flows = crate::stateful::FlowPlan::of(&compiled.policy, &compiled.ruleset, &self.flow_names);
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unpersisted_message(&self, generation: u64, why: &str) -> String {
        let on_disk = self
            .store
            .newest(true)
            .map_or("no rules".to_string(), |k| format!("generation {}", k.generation));
        format!(
            "generation {generation} is confirmed in memory but the confirmation is NOT persisted ({why}); \
             a restart now would boot {on_disk}; retried every {} s, or run confirm again",
            CONFIRM_RETRY.as_secs()
        )
    }

    /// Re-reads the state directory for status (valid generations, refused files).
    fn refresh_kept(&self) {
        let scan = self.store.scan();
        let refused = scan
            .refused
            .iter()
            .map(|(n, why)| format!("generation {n}: {why}"))
            .collect();
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = refused;
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = scan.kept;
    }

    /// Hands one control event to the sink, if there is one. The generation and
    /// digest are those active now, after the action.
    fn emit(
        &self,
        event: EventKind,
        outcome: EventOutcome,
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
            Ok(_) => self.emit(event, EventOutcome::Ok, uid, None, Vec::new()),
            Err(e) => self.emit(
                event,
                EventOutcome::Refused,
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

    /// Tells status which stage the running reload is in.
    fn progress(&self, slot: usize, source: &str, stage: Option<ReloadStage>) {
        let mut all = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = all.get_mut(slot) else { return };
        *p = stage.map(|stage| status::ReloadProgress {
            stage,
            source: source.to_string(),
            started_at: p
                .as_ref()
                .filter(|p| p.source == source)
                .map_or_else(unix_now, |p| p.started_at),
        });
    }

    /// The config's digest (or why it cannot be read), re-read only when the file changed.
    pub(crate) fn config_digest(&self) -> Result<Digest, String> {
        let stamp = file_stamp(&self.config);
        let mut seen = self.config_seen.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() || seen.stamp != stamp {
            let (digest, error) = match read(&self.config) {
                Ok((_, bytes)) => (Some(Digest::of(&bytes)), None),
                Err(e) => (None, Some(e.errors.join("; "))),
            };
            seen.stamp = stamp;
            seen.digest = digest;
            seen.error = error;
        }
        let rules = match (seen.digest, &seen.error) {
            (Some(d), _) => d,
            (None, Some(e)) => return Err(e.clone()),
            (None, None) => return Err("not read".into()),
        };
        // The same rule file as the running generation: its set files on disk
        // count too (a set file edited since is a config that differs).
        let cur = self.current.load();
        let Some(c) = cur
            .rules
            .as_ref()
            .filter(|c| c.rules_digest == rules && !c.files.is_empty())
        else {
            return Ok(rules);
        };
        let mut parts = Vec::with_capacity(c.files.len());
        for f in &c.files {
            let stamp = file_stamp(&f.path);
            let known = seen
                .set_files
                .get(&f.path)
                .filter(|(s, _)| stamp.is_some() && *s == stamp);
            let digest = match known {
                Some((_, d)) => *d,
                None => {
                    let bytes = palisade_rules::SetFiles::read(&palisade_rules::DiskFiles, &f.name, &f.path)
                        .map_err(|e| format!("set file {}: {e}", f.path.display()))?;
                    let d = Digest::of(&bytes);
                    seen.set_files.insert(f.path.clone(), (stamp, d));
                    d
                }
            };
            parts.push((f.name.as_str(), digest));
        }
        Ok(Digest::of_manifest(rules, &parts))
    }

    /// Why a confirmation accepted in memory is not on disk, when that is so.
    pub(crate) fn confirm_error(&self) -> Option<String> {
        self.unpersisted()
            .as_ref()
            .map(|(g, e)| format!("generation {g}: {e}"))
    }

    fn unpersisted(&self) -> MutexGuard<'_, Option<(u64, String)>> {
        self.unpersisted_confirm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A number for a new generation: above every number used in memory and on
    /// disk, persisted as the high-water mark first.
    fn next_number(&self, ctl: &Control) -> Result<u64, StoreError> {
        let above = ctl.last_number.max(self.current.load().number);
        self.store.next_generation(above)
    }

    /// Reads and builds `source` (no control lock held), then persists and publishes it.
    fn reload_now(&self, source: ReloadSource, opts: &ReloadOptions) -> Result<ReloadOk, ReloadError> {
        let label = match &source {
            ReloadSource::Config => self.config.display().to_string(),
            ReloadSource::Path(p) => p.display().to_string(),
            ReloadSource::Bytes { name, .. } | ReloadSource::Generation { name, .. } => name.clone(),
        };
        self.progress(RELOAD, &label, Some(ReloadStage::Read));
        let res = self.build_and_publish(source, opts, &label);
        self.progress(RELOAD, &label, None);
        res
    }

    fn build_and_publish(
        &self,
        source: ReloadSource,
        opts: &ReloadOptions,
        label: &str,
    ) -> Result<ReloadOk, ReloadError> {
        fault(opts, ReloadStage::Read)?;
        // Set files: from disk beside the rule file, or a whole generation's own.
        let (name, bytes, kept) = match source {
            ReloadSource::Config => {
                let (n, b) = read(&self.config)?;
                (n, b, None)
            }
            ReloadSource::Path(p) => {
                let (n, b) = read(&p)?;
                (n, b, None)
            }
            ReloadSource::Bytes { name, bytes } => (name, bytes, None),
            ReloadSource::Generation {
                name,
                bytes,
                companions,
            } => (name, bytes, Some(kept_files(companions))),
        };
        let set_files: &dyn palisade_rules::SetFiles = match &kept {
            Some(k) => k,
            None => &palisade_rules::DiskFiles,
        };
        let active_rescue = self.current.load().rules.as_ref().map(|c| c.rescue_fingerprint);
        let cand = reload::build(
            &name,
            bytes,
            set_files,
            opts,
            active_rescue,
            self.memory_cap,
            &|stage| self.progress(RELOAD, label, Some(stage)),
        )?;
        self.progress(RELOAD, label, Some(ReloadStage::Persist));
        let mut ctl = self.lock();
        self.finish(&mut ctl, Ready::Built(Box::new(cand)), opts, true, None)
    }

    /// Persist and publish (the short part, under the control lock); a set
    /// change's file is written through before the persist (`write_through`).
    ///
    /// `persist_required = false` (boot only) runs the candidate even when it
    /// cannot be persisted, and reuses the newest confirmed generation's number
    /// when it has the same digest.
    fn finish(
        &self,
        ctl: &mut Control,
        ready: Ready,
        opts: &ReloadOptions,
        persist_required: bool,
        write_through: Option<WriteThrough<'_>>,
    ) -> Result<ReloadOk, ReloadError> {
        let cur = self.current.load_full();
        let (compiled, mut warnings) = match ready {
            Ready::Built(cand) => {
                // The active generation may have changed while this one compiled (a
                // revert, a rollback): its rescue rules are what must not change silently.
                let active = cur.rules.as_ref().map(|c| c.rescue_fingerprint);
                let c = &cand.compiled;
                reload::check_rescue(&c.source, &c.ruleset, c.rescue_fingerprint, active, opts)?;
                let mut compiled = cand.compiled;
                self.place(&mut compiled);
                (Arc::new(compiled), cand.warnings)
            }
            Ready::InMemory(c) => (c, Vec::new()),
        };

        // A set change writes its set file through first (atomically, durably),
        // then persists: a crash in between leaves the generation that ran kept,
        // and a file that is old or new but whole (a crash never leaves a kept
        // generation that did not run).
        let durable = self.durable;
        let (write_through, staged) = match write_through {
            Some(w) => (Some(w.file), Some(w.staged)),
            None => (None, None),
        };
        if let (Some(f), Some(staged)) = (write_through, staged) {
            staged.and_then(|s| s.commit()).map_err(|e| {
                ReloadError::new(
                    ReloadStage::Persist,
                    vec![format!("{}: cannot write the set file: {e}", f.path.display())],
                )
            })?;
        }
        // A refused commit puts the set file back as the active generation has it.
        let restore = || {
            let old = write_through.and_then(|f| {
                cur.rules
                    .as_ref()
                    .and_then(|r| r.files.iter().find(|o| o.name == f.name))
            });
            if let Some(old) = old {
                if let Err(e) = crate::setfile::write_atomic(&old.path, &old.bytes, durable) {
                    eprintln!(
                        "palisade: warning: set file {} not restored: {e}",
                        old.path.display()
                    );
                }
            }
        };
        let (number, saved) = match self.persist(ctl, &cur, &compiled, opts, persist_required, &mut warnings)
        {
            Ok(x) => x,
            Err(e) => {
                restore();
                return Err(e);
            }
        };

        // publish
        if let Err(e) = fault(opts, ReloadStage::Publish) {
            if saved {
                self.store.remove(number);
            }
            restore();
            return Err(e);
        }
        let (state, deadline) = match opts.confirm_within {
            Some(d) => {
                let (revert_to, revert_state, mut chain, mut written) = match ctl.pending.take() {
                    Some(p) => (p.revert_to, p.revert_state, p.chain, p.written),
                    None => (cur.rules.clone(), cur.state, Vec::new(), Vec::new()),
                };
                chain.push(number);
                if let Some(f) = write_through {
                    if !written.contains(&f.name) {
                        written.push(f.name.clone());
                    }
                }
                ctl.pending = Some(Pending {
                    deadline: Instant::now() + d,
                    revert_to,
                    revert_state,
                    chain,
                    written,
                });
                (
                    GenerationState::PendingConfirm,
                    Some(unix_now() + d.as_secs_f64().ceil() as u64),
                )
            }
            None => {
                // Generations still pending were replaced before anyone confirmed them.
                if let Some(p) = ctl.pending.take() {
                    for g in p.chain {
                        let _ = self.store.set_outcome(g, Outcome::Unconfirmed);
                    }
                }
                if saved {
                    // A newer confirmed generation is on disk: an older unpersisted confirmation no longer matters.
                    *self.unpersisted() = None;
                }
                (GenerationState::Active, None)
            }
        };
        let digest = compiled.digest;
        ctl.kept_ids
            .insert(number, Arc::clone(&compiled.layout.identities));
        self.publish(ctl, Some(compiled), number, state, deadline);
        self.prune(ctl);
        Ok(ReloadOk {
            generation: number,
            digest,
            state,
            confirm_deadline: deadline,
            warnings,
        })
    }

    /// Persists `compiled` as a kept generation (or, at boot, reuses the newest
    /// kept one with its digest): its number, and whether a file was saved.
    fn persist(
        &self,
        ctl: &mut Control,
        cur: &Generation,
        compiled: &Compiled,
        opts: &ReloadOptions,
        persist_required: bool,
        warnings: &mut Vec<String>,
    ) -> Result<(u64, bool), ReloadError> {
        // (at boot, a config identical to the newest kept generation keeps its
        // number and file, so restarts neither renumber nor crowd out older generations)
        let reuse = match persist_required || opts.confirm_within.is_some() {
            true => None,
            false => self.store.newest(true).filter(|k| k.digest == compiled.digest),
        };
        let outcome = match opts.confirm_within {
            Some(_) => Outcome::Pending,
            None => Outcome::Confirmed,
        };
        let persisted = match reuse {
            Some(k) => {
                ctl.last_number = ctl.last_number.max(k.generation);
                (k.generation, false)
            }
            None => {
                let persisted = fault(opts, ReloadStage::Persist)
                    .and_then(|()| {
                        self.next_number(ctl)
                            .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))
                    })
                    .and_then(|number| {
                        // (the digests are known: a big set file is neither hashed nor
                        // copied again, and stored only if it changed, as a delta of
                        // the active generation's when the change is local)
                        let info = KeptInfo {
                            generation: number,
                            digest: compiled.digest,
                            source: compiled.source.clone(),
                            saved_at: unix_now(),
                            outcome,
                        };
                        let bases = cur.rules.as_ref().map_or(&[][..], |r| r.files.as_slice());
                        self.store
                            .save_parts(
                                &info,
                                &compiled.bytes,
                                &parts_of(&compiled.files),
                                &parts_of(bases),
                            )
                            .map(|()| number)
                            .map_err(|e| ReloadError::new(ReloadStage::Persist, vec![e.to_string()]))
                    });
                match persisted {
                    Ok(number) => {
                        ctl.last_number = ctl.last_number.max(number);
                        (number, true)
                    }
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
        Ok(persisted)
    }

    /// Builds a set change on the active generation (no control lock held
    /// while it compiles), then persists, writes through and publishes it.
    fn change_set(
        &self,
        set: &str,
        op: palisade_rules::SetOp,
        elements: &[String],
        opts: &ReloadOptions,
        label: &str,
    ) -> Result<SetChanged, ReloadError> {
        // validate: the elements against the active generation's set.
        fault(opts, ReloadStage::Validate)?;
        let cur = self.current.load_full();
        let Some(c) = cur.rules.clone() else {
            return Err(ReloadError::new(
                ReloadStage::Validate,
                vec!["no rule set is active: load one before changing its sets".into()],
            ));
        };
        let loaded = palisade_rules::Loaded {
            file: c.source.clone(),
            ruleset: c.ruleset.clone(),
            warnings: Vec::new(),
            digest: c.digest,
            rules_digest: c.rules_digest,
            files: c.files.clone(),
        };
        let ch = palisade_rules::change_set(&loaded, set, op, elements).map_err(|e| {
            ReloadError::new(
                ReloadStage::Validate,
                e.to_string().lines().map(str::to_owned).collect(),
            )
        })?;
        drop(loaded);
        // The set file is written through: one that is not a regular file (a
        // FIFO, a device) is refused now, before anything is built or kept.
        crate::setfile::check_replaceable(&ch.file.path).map_err(|e| {
            ReloadError::new(
                ReloadStage::Validate,
                vec![format!(
                    "{}: cannot write the set file: {e}",
                    ch.file.path.display()
                )],
            )
        })?;
        let def = &ch.loaded.ruleset.sets[ch.set];
        let changed = |reload: ReloadOk| SetChanged {
            set: set.to_owned(),
            changed: ch.changed,
            elements: def.elements.len(),
            file: ch.file.path.clone(),
            file_digest: ch.file.digest,
            reload,
        };
        if ch.changed == 0 {
            return Ok(changed(ReloadOk {
                generation: cur.number,
                digest: c.digest,
                state: cur.state,
                confirm_deadline: cur.confirm_deadline,
                warnings: Vec::new(),
            }));
        }

        // The set file is written (not yet renamed over the old one) while the
        // changed set compiles and self-tests: the disk works while the CPU does.
        let file = ch.file.clone();
        let durable = self.durable;
        let result = std::thread::scope(|scope| {
            let staging = std::thread::Builder::new()
                .name("set-file-write".into())
                .spawn_scoped(scope, || {
                    crate::setfile::Staged::write(&file.path, &file.bytes, durable)
                });
            // Meanwhile the changed file is kept as an object of the state directory
            // (a delta of the active one's) and the next generation number reserved:
            // what persisting the generation then finds done.
            let preparing = std::thread::Builder::new()
                .name("set-change-keep".into())
                .spawn_scoped(scope, || {
                    let (parts, bases) = (parts_of(&ch.loaded.files), parts_of(&c.files));
                    let _ = self.store.store_objects(&parts, &bases);
                    let _ = self.store.reserve_generation(cur.number);
                });
            let built = self.build_set_change(&c, &ch, set, opts, label);
            if let Ok(h) = preparing {
                let _ = h.join();
            }
            let staged = match staging {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked"))),
                // (no thread: written here)
                Err(_) => crate::setfile::Staged::write(&file.path, &file.bytes, durable),
            };
            let compiled = built?;
            self.progress(RELOAD, label, Some(ReloadStage::Persist));
            let mut ctl = self.lock();
            // A rollback or a confirm-window revert may have replaced the rules this
            // change was made on while it compiled: publishing it would undo that.
            let now = self.current.load_full();
            if !now.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, &c)) {
                return Err(ReloadError::new(
                    ReloadStage::Publish,
                    vec![format!(
                        "the active generation changed (to {}) while the set change was made; nothing changed, try again",
                        now.number
                    )],
                ));
            }
            let through = WriteThrough { file: &file, staged };
            let ok = self.finish(&mut ctl, Ready::InMemory(compiled), opts, true, Some(through))?;
            Ok(changed(ok))
        });
        if result.is_err() {
            // The changed file stored ahead for a generation that is not kept.
            self.store.collect_garbage();
        }
        result
    }

    /// Compiles and self-tests a set change on `c` (only the changed set is rebuilt).
    fn build_set_change(
        &self,
        c: &Arc<Compiled>,
        ch: &palisade_rules::SetChange,
        set: &str,
        opts: &ReloadOptions,
        label: &str,
    ) -> Result<Arc<Compiled>, ReloadError> {
        let def = &ch.loaded.ruleset.sets[ch.set];
        // compile: only the changed set; every classifier is shared.
        self.progress(RELOAD, label, Some(ReloadStage::Compile));
        fault(opts, ReloadStage::Compile)?;
        let policy = c
            .policy
            .with_set(ch.set, &def.elements, &ch.touched, self.memory_cap)
            .map_err(|e| ReloadError::new(ReloadStage::Compile, vec![format!("{}: {e}", c.source)]))?;

        // self-test: the [[expect]]s (they may depend on the set) and the new set against its elements.
        self.progress(RELOAD, label, Some(ReloadStage::SelfTest));
        fault(opts, ReloadStage::SelfTest)?;
        let mut errors: Vec<String> = policy
            .check_expects(&ch.loaded)
            .iter()
            .map(|d| d.to_string())
            .collect();
        let compiled_set = policy.named_set(ch.set);
        if let Some(why) = compiled_set.and_then(|s| crate::setfile::self_test(s, &def.elements, &ch.touched))
        {
            errors.push(format!("set \"{set}\": {why}"));
        }
        if !errors.is_empty() {
            return Err(ReloadError::new(ReloadStage::SelfTest, errors));
        }
        fault(opts, ReloadStage::Audit)?;

        // The flows are re-checked under the new generation like after a reload.
        let flows = crate::stateful::FlowPlan::of(&policy, &ch.loaded.ruleset, &self.flow_names);
        Ok(Arc::new(Compiled {
            policy,
            ruleset: ch.loaded.ruleset.clone(),
            bytes: Arc::clone(&c.bytes),
            digest: ch.loaded.digest,
            rules_digest: c.rules_digest,
            files: ch.loaded.files.clone(),
            source: c.source.clone(),
            rescue_fingerprint: c.rescue_fingerprint,
            layout: c.layout.clone(),
            flows,
        }))
    }

    /// Prunes the state directory (keeping the active generation and the newest
    /// confirmed one), then frees the counter slots no generation needs any more.
    fn prune(&self, ctl: &mut Control) {
        let mut protect = vec![self.current.load().number];
        protect.extend(self.store.newest_confirmed());
        self.store.prune(&protect);
        self.collect_slots(ctl);
    }

    /// Frees the counter slots of identities in no generation that may run
    /// again: the current one, the one replaced, a pending window's revert
    /// target, snapshots readers still hold, and the kept generations.
    fn collect_slots(&self, ctl: &mut Control) {
        let kept: HashSet<u64> = self.store.scan().kept.iter().map(|k| k.generation).collect();
        ctl.kept_ids.retain(|n, _| kept.contains(n));
        ctl.retired.retain(|g| Arc::strong_count(g) > 1);
        let cur = self.current.load_full();
        let mut sets: Vec<Arc<[String]>> = ctl.kept_ids.values().cloned().collect();
        let mut add = |c: Option<&Arc<Compiled>>| {
            if let Some(c) = c {
                sets.push(Arc::clone(&c.layout.identities));
            }
        };
        add(cur.rules.as_ref());
        add(ctl.previous.as_ref());
        add(ctl.pending.as_ref().and_then(|p| p.revert_to.as_ref()));
        for g in &ctl.retired {
            add(g.rules.as_ref());
        }
        sets.push(Arc::clone(&self.base.identities));
        let live: HashSet<&str> = sets
            .iter()
            .flat_map(|ids| ids.iter().map(String::as_str))
            .collect();
        let freed = self.registry.retain(&live);
        self.shards.release(&freed);
    }

    fn rollback_now(&self, to: Option<u64>, ropts: &RollbackOptions) -> Result<ReloadOk, ReloadError> {
        let opts = ReloadOptions {
            allow_rescue_change: true,
            confirm_within: ropts.confirm_within,
            ..ReloadOptions::default()
        };
        let kept_list = || {
            let kept: Vec<String> = self
                .store
                .scan()
                .kept
                .iter()
                .map(|k| k.generation.to_string())
                .collect();
            match kept.is_empty() {
                true => "none".to_string(),
                false => kept.join(", "),
            }
        };
        let cur = self.current.load_full();
        let target = match to {
            Some(n) => self.store.load(n).map_err(|e| {
                let why = match e {
                    KeptError::NotKept { .. } => format!("{e} (kept: {})", kept_list()),
                    _ => format!("generation {n} cannot be used: {e}"),
                };
                ReloadError::new(ReloadStage::Read, vec![why])
            })?,
            None => {
                let candidates: Vec<KeptInfo> = self
                    .store
                    .scan()
                    .kept
                    .into_iter()
                    .rev()
                    .filter(|k| {
                        k.outcome == Outcome::Confirmed
                            && k.generation < cur.number
                            && Some(k.digest) != cur.digest()
                    })
                    .collect();
                let mut errors = Vec::new();
                let mut found = None;
                for k in candidates {
                    match self.store.load(k.generation) {
                        Ok(kept) => {
                            found = Some(kept);
                            break;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                match found {
                    Some(k) => k,
                    None => {
                        errors.insert(
                            0,
                            format!(
                                "no earlier confirmed generation with other rules than generation {} to roll back to (kept: {})",
                                cur.number,
                                kept_list()
                            ),
                        );
                        return Err(ReloadError::new(ReloadStage::Read, errors));
                    }
                }
            }
        };
        let label = format!("generation {}", target.generation);
        // The rules replaced last are still compiled in memory: no need to build them again.
        let in_memory = self.lock().previous.clone().filter(|p| p.digest == target.digest);
        let ready = match in_memory {
            Some(c) => Ready::InMemory(c),
            None => {
                self.progress(ROLLBACK, &label, Some(ReloadStage::Parse));
                let built = reload::build(
                    &target.source,
                    target.bytes,
                    &kept_files(target.companions),
                    &opts,
                    None,
                    self.memory_cap,
                    &|stage| self.progress(ROLLBACK, &label, Some(stage)),
                );
                self.progress(ROLLBACK, &label, None);
                Ready::Built(Box::new(built?))
            }
        };
        let mut ctl = self.lock();
        self.finish(&mut ctl, ready, &opts, true, None)
    }

    fn boot(&self, boot_from_config: bool) -> BootReport {
        let mut ctl = self.lock();
        let mut report = BootReport {
            state: GenerationState::NoRules,
            generation: 0,
            source: BootSource::None,
            config_error: None,
            config_differs: None,
            lkg_errors: Vec::new(),
            persist_error: None,
        };
        let scan = self.store.scan();
        ctl.last_number = self.store.max_generation();
        for (n, why) in &scan.refused {
            let msg = format!("kept generation file {n} refused: {why}");
            eprintln!("palisade: WARNING: {msg}");
            report.lkg_errors.push(msg);
        }
        // A generation still pending when the engine stopped was never confirmed: it never boots.
        for k in scan.kept.iter().filter(|k| k.outcome == Outcome::Pending) {
            eprintln!(
                "palisade: generation {} was waiting for confirmation when the engine stopped: not booted",
                k.generation
            );
            if let Err(e) = self.store.set_outcome(k.generation, Outcome::Unconfirmed) {
                eprintln!("palisade: warning: cannot record it as unconfirmed: {e}");
            }
        }
        let opts = ReloadOptions::default();
        let mut config_tried = false;
        let try_config = |ctl: &mut Control, report: &mut BootReport| -> bool {
            let built = read(&self.config).and_then(|(name, bytes)| {
                reload::build(
                    &name,
                    bytes,
                    &palisade_rules::DiskFiles,
                    &opts,
                    None,
                    self.memory_cap,
                    &|_| {},
                )
            });
            match built.and_then(|cand| self.finish(ctl, Ready::Built(Box::new(cand)), &opts, false, None)) {
                Ok(ok) => {
                    self.record(&Ok(ok.clone()));
                    eprintln!(
                        "palisade: booted generation {} from the config {} (digest {})",
                        ok.generation,
                        self.config.display(),
                        ok.digest
                    );
                    report.state = ok.state;
                    report.generation = ok.generation;
                    report.source = BootSource::Config;
                    report.config_differs = Some(false);
                    report.persist_error = ok
                        .warnings
                        .iter()
                        .find(|w| w.starts_with("not persisted"))
                        .cloned();
                    true
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
                    false
                }
            }
        };
        if boot_from_config || scan.kept.is_empty() {
            config_tried = true;
            if !boot_from_config && !scan.refused.is_empty() {
                eprintln!(
                    "palisade: WARNING: the state directory {} holds no usable generation ({} refused file(s)); booting the config",
                    self.store.dir().display(),
                    scan.refused.len()
                );
            }
            if try_config(&mut ctl, &mut report) {
                return report;
            }
        }
        // The newest confirmed generation is what ran when the engine stopped.
        let newest_refused = scan.refused.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let mut first = true;
        for info in scan.kept.iter().rev().filter(|k| k.outcome == Outcome::Confirmed) {
            let built = self
                .store
                .load(info.generation)
                .map_err(|e| ReloadError::new(ReloadStage::Read, vec![e.to_string()]))
                .and_then(|k| {
                    reload::build(
                        &k.source,
                        k.bytes,
                        &kept_files(k.companions),
                        &opts,
                        None,
                        self.memory_cap,
                        &|_| {},
                    )
                });
            match built {
                Ok(cand) => {
                    let mut compiled = cand.compiled;
                    self.place(&mut compiled);
                    let compiled = Arc::new(compiled);
                    let newest = first && newest_refused < info.generation && report.config_error.is_none();
                    let state = match newest {
                        true => GenerationState::Active,
                        false => GenerationState::LastKnownGood,
                    };
                    if newest {
                        eprintln!(
                            "palisade: booted generation {} from the state directory ({}, digest {}): the generation that was active when the engine stopped",
                            info.generation, info.source, info.digest
                        );
                    } else {
                        eprintln!(
                            "palisade: WARNING: running on LAST-KNOWN-GOOD generation {} ({}, digest {}): a newer generation or the config could not be used",
                            info.generation, info.source, info.digest
                        );
                    }
                    ctl.kept_ids
                        .insert(info.generation, Arc::clone(&compiled.layout.identities));
                    self.publish(&mut ctl, Some(compiled), info.generation, state, None);
                    report.state = state;
                    report.generation = info.generation;
                    report.source = BootSource::StateDirectory;
                    report.config_differs = self.config_digest().ok().map(|d| d != info.digest);
                    if report.config_differs == Some(true) && !config_tried {
                        eprintln!(
                            "palisade: the config {} differs from generation {}: it is not applied; apply it with `palisade reload` (no file) or SIGHUP",
                            self.config.display(),
                            info.generation
                        );
                    }
                    if !config_tried {
                        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(LastReload::ok(info.generation));
                    }
                    return report;
                }
                Err(e) => {
                    first = false;
                    let why = format!(
                        "kept generation {} refused at stage {}: {}",
                        info.generation,
                        e.stage,
                        e.errors.join("; ")
                    );
                    eprintln!("palisade: {why}");
                    report.lkg_errors.push(why);
                }
            }
        }
        if !config_tried {
            eprintln!(
                "palisade: WARNING: no usable generation in the state directory {}; booting the config",
                self.store.dir().display()
            );
            if try_config(&mut ctl, &mut report) {
                return report;
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
        let flows = crate::stateful::table_for(self, rules.as_deref());
        let old = self.current.swap(Arc::new(Generation {
            number,
            state,
            loaded_at: unix_now(),
            confirm_deadline,
            rules: rules.clone(),
            flows,
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

    /// Reverts unconfirmed reloads when their window closes, frees what
    /// readers released, and retries an unpersisted confirmation.
    fn watchdog(&self) {
        let mut ctl = self.lock();
        let mut next_retry = Instant::now() + CONFIRM_RETRY;
        loop {
            if ctl.shutdown {
                return;
            }
            let before = ctl.retired.len();
            ctl.retired.retain(|g| Arc::strong_count(g) > 1);
            if ctl.retired.len() < before && ctl.retired.is_empty() {
                // The last reader of a replaced generation let go: its counter slots may be free now.
                self.collect_slots(&mut ctl);
            }
            let unpersisted = self.unpersisted().clone();
            if let Some((g, _)) = unpersisted {
                if Instant::now() >= next_retry {
                    next_retry = Instant::now() + CONFIRM_RETRY;
                    match self.store.mark_confirmed(g) {
                        Ok(()) => {
                            eprintln!("palisade: the confirmation of generation {g} is persisted now");
                            *self.unpersisted() = None;
                            self.refresh_kept();
                        }
                        Err(e) => *self.unpersisted() = Some((g, e.to_string())),
                    }
                }
            }
            let mut wait = match ctl.retired.is_empty() {
                true => Duration::from_secs(3600),
                false => Duration::from_millis(200),
            };
            if self.unpersisted().is_some() {
                wait = wait.min(next_retry.saturating_duration_since(Instant::now()));
            }
            if let Some(p) = &ctl.pending {
                let now = Instant::now();
                if now >= p.deadline {
                    self.revert(&mut ctl);
                    continue;
                }
                wait = wait.min(p.deadline - now);
            }
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
                ctl.last_number.max(from).saturating_add(1)
            }
        };
        ctl.last_number = ctl.last_number.max(number);
        if let Some(rules) = &p.revert_to {
            let info = KeptInfo {
                generation: number,
                digest: rules.digest,
                source: rules.source.clone(),
                saved_at: unix_now(),
                outcome: Outcome::Confirmed,
            };
            match self
                .store
                .save_parts(&info, &rules.bytes, &parts_of(&rules.files), &[])
            {
                Ok(()) => {
                    ctl.kept_ids.insert(number, Arc::clone(&rules.layout.identities));
                }
                Err(e) => eprintln!("palisade: warning: reverted generation {number} not persisted: {e}"),
            }
        }
        for &g in &p.chain {
            if let Err(e) = self.store.set_outcome(g, Outcome::Reverted) {
                eprintln!("palisade: warning: generation {g} not recorded as reverted: {e}");
            }
        }
        let state = match p.revert_state {
            GenerationState::PendingConfirm => GenerationState::Active,
            s => s,
        };
        // Set files written through during the window get their old contents back.
        let restore = p.revert_to.as_ref().map_or(&[][..], |r| r.files.as_slice());
        for f in restore.iter().filter(|f| p.written.contains(&f.name)) {
            if let Err(e) = crate::setfile::write_atomic(&f.path, &f.bytes, self.durable) {
                eprintln!(
                    "palisade: warning: set file {} not restored on revert: {e}",
                    f.path.display()
                );
            }
        }
        self.publish(ctl, p.revert_to.clone(), number, state, None);
        self.prune(ctl);
        let msg = format!(
            "generation {from} was not confirmed in time; reverted to the previous rules as generation {number}"
        );
        eprintln!("palisade: {msg}");
        self.refresh_kept();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastReload::failed(
            &ReloadError::new(ReloadStage::Confirm, vec![msg]),
        ));
        self.emit(EventKind::Revert, EventOutcome::Ok, None, None, Vec::new());
    }
}

/// Counts one denied frame of `len` bytes in `layout`'s all-frames and per-stage counters.
#[inline]
fn count_denied(cells: &[AtomicU64], layout: &Layout, stage: Stage, len: u64) {
    bump(cells, layout.total);
    bump(cells, layout.total + 2);
    add(cells, layout.total + 3, len);
    bump(cells, layout.stages + 2 * stage_index(stage) + 1);
}

/// Keeps a replaced snapshot until no reader holds it (see `Control::retired`).
fn retire(ctl: &mut Control, old: Arc<Generation>) {
    ctl.retired.retain(|g| Arc::strong_count(g) > 1);
    ctl.retired.push(old);
}

fn read(path: &Path) -> Result<(String, Vec<u8>), ReloadError> {
    let name = path.display().to_string();
    // Bounded and non-blocking: a regular file of at most MAX_RULE_FILE_BYTES
    // (a FIFO or device is refused at once, never waited on).
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
    scratch: crate::stateful::FlowScratch,
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
        WorkerHandle {
            inner,
            shard,
            cells,
            scratch: crate::stateful::FlowScratch::default(),
        }
    }

    /// Starts a batch: loads the current snapshot once; every key classified
    /// through the returned [`Batch`] sees that snapshot and no other.
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        let gen = self.inner.current.load();
        let need = gen
            .rules
            .as_ref()
            .map_or(0, |c| c.layout.len)
            .max(self.inner.base.len);
        if self.cells.len() < need {
            // Once per new generation, never per frame.
            self.cells = self.shard.grow(need);
        }
        Batch {
            gen,
            cells: &self.cells,
            base: &self.inner.base,
            inner: &self.inner,
            scratch: &mut self.scratch,
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
    pub(crate) gen: Guard<Arc<Generation>>,
    pub(crate) cells: &'h [AtomicU64],
    /// Where frames are counted when the snapshot has no rules.
    base: &'h Layout,
    pub(crate) inner: &'h Inner,
    pub(crate) scratch: &'h mut crate::stateful::FlowScratch,
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
    /// advanced: [`Batch::classify_frames`] is the same with frame lengths. A
    /// stateful generation finds each key's flow state first: without the
    /// frames' bytes, ICMP queries and errors are then `invalid`
    /// ([`Batch::classify_tracked`] takes them).
    #[inline]
    pub fn classify(&mut self, keys: &[FlowKey], ctx: &Context, out: &mut [Decision]) {
        self.classify_with(keys, &[], &[], ctx, out, &mut []);
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
        self.classify_with(keys, lens, &[], ctx, out, &mut []);
    }

    /// [`Batch::classify_frames`] without flow state: each key as it is.
    #[inline]
    pub(crate) fn classify_stateless(
        &mut self,
        keys: &[FlowKey],
        lens: &[usize],
        ctx: &Context,
        out: &mut [Decision],
    ) {
        let cells = self.cells;
        let Some(c) = self.gen.rules.as_deref() else {
            // No rules: every frame denied, and counted.
            for (i, o) in out.iter_mut().take(keys.len()).enumerate() {
                *o = Decision::default();
                count_denied(cells, self.base, o.stage, lens.get(i).map_or(0, |&n| n as u64));
            }
            return;
        };
        let layout = &c.layout;
        let len_of = |i: usize| lens.get(i).map_or(0, |&n| n as u64);
        // Stage by stage over the batch (each ACL classifies its keys in one call).
        c.policy
            .evaluate_batch_traced(keys, ctx, out, |i, ev| count_event(cells, layout, ev, len_of(i)));
        for (i, d) in out.iter().take(keys.len()).enumerate() {
            count_decision(cells, layout, d, len_of(i));
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
        let rules = self.gen.rules.as_deref();
        // With no rules every frame is denied as ever (stage context), and counted all the same.
        let decision = match rules {
            None => Decision::default(),
            Some(_) => Decision {
                verdict: Verdict::Deny,
                stage,
                acl: None,
                rule: RuleRef::None,
            },
        };
        out[..n].fill(decision);
        let layout = rules.map_or(self.base, |c| &c.layout);
        for i in 0..n {
            count_denied(
                cells,
                layout,
                decision.stage,
                lens.get(i).map_or(0, |&l| l as u64),
            );
        }
    }
}

/// A kept generation's companion files, as the rules crate reads set files.
fn kept_files(companions: Vec<Companion>) -> palisade_rules::KeptFiles {
    palisade_rules::KeptFiles::new(companions.into_iter().map(|c| (c.name, c.bytes)))
}

/// The set files of a generation as last-known-good stores them (digests known, bytes borrowed).
fn parts_of(files: &[palisade_rules::CompanionFile]) -> Vec<PartRef<'_>> {
    files
        .iter()
        .map(|f| PartRef {
            name: &f.name,
            digest: f.digest,
            bytes: &f.bytes,
        })
        .collect()
}

/// A file's identity and version on disk: device, inode, size, mtime.
type FileStamp = (u64, u64, u64, i64, i64);

/// The [`FileStamp`] of `path`, if it can be stat'ed.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Counts one ACL's evaluation: its binding's counters, its rule's hits and bytes.
#[inline]
pub(crate) fn count_event(cells: &[AtomicU64], layout: &Layout, ev: &StageEvent, len: u64) {
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
}

/// Counts a frame's decision: its rescue rule's hits and bytes, the totals, its stage.
#[inline]
pub(crate) fn count_decision(cells: &[AtomicU64], layout: &Layout, d: &Decision, len: u64) {
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
}
