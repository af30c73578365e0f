//! The logger: per-worker lossy queues in front of one writer thread.
//!
//! A [`Logger`] owns the outputs and the writer thread. Each data-path
//! worker takes a [`WorkerLogger`] once; per batch it asks for a
//! [`BatchLogger`] (which exists only when the generation logs anything)
//! and offers it each decided frame. For a frame whose deciding rule has
//! `log = true`, the rule's [`crate::limit::RateLimiter`] decides whether a
//! record is made; if not, the frame's record is counted as suppressed. A
//! record is written into a slot taken from the worker's pool (allocated
//! once, `queue` slots of `snaplen` bytes) and handed to the writer. With no
//! free slot (the writer is behind: slow or full disk) the record is counted
//! as dropped. Nothing on this path blocks, allocates or makes a system call:
//! the pool and the hand-over are bounded `std::sync::mpsc::sync_channel`s
//! used only with `try_recv`/`try_send`, and the writer polls rather than
//! sleeping on them, so a producer never has a sleeper to wake.
//!
//! Control events reach the logger through [`Logger::event_sink`] (given to
//! [`palisade_engine::Engine::set_event_sink`]); they are counted by event
//! and outcome (metrics) and written as JSON lines.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use palisade_engine::events::{ControlEvent, EventSink};
use palisade_engine::policy::{Decision, PortId};
use palisade_engine::Generation;
use palisade_packet::FlowKey;

use crate::plan::{Plan, Registry};
use crate::record::FrameRecord;
use crate::writer;

/// Where the JSON lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`--log -`).
    Stdout,
    /// A file, created if missing and appended to.
    File(PathBuf),
}

/// What a [`Logger`] writes, and its bounds.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `--log`: JSON lines of logged frames and control events.
    pub json: Option<Target>,
    /// `--log-pcap`: logged frames as pcapng, each with a comment naming acl, rule and generation.
    pub pcap: Option<PathBuf>,
    /// Records each worker's queue holds (default 1024); more waiting records are dropped and counted.
    pub queue: usize,
    /// Bytes of each logged frame kept for the pcapng (default 2048; longer frames are cut,
    /// their original length recorded).
    pub snaplen: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            json: None,
            pcap: None,
            queue: 1024,
            snaplen: 2048,
        }
    }
}

/// A time for the data path: monotonic (rate limits) and wall clock (records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Nanoseconds on a monotonic clock.
    pub mono_ns: u64,
    /// Nanoseconds since the Unix epoch.
    pub unix_ns: u64,
}

/// Where the logger reads the time (once per batch that logs); tests inject their own.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Now;
}

/// The system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    epoch: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            epoch: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono_ns: self.epoch.elapsed().as_nanos() as u64,
            unix_ns: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }
}

/// A clock that moves only when told to (tests).
///
/// ```
/// use palisade_observe::logger::{Clock, ManualClock};
/// let c = ManualClock::new(1_000);
/// c.advance(std::time::Duration::from_millis(5));
/// assert_eq!(c.now().mono_ns, 5_001_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    ns: AtomicU64,
}

impl ManualClock {
    /// A clock at `ns` nanoseconds (both monotonic and since the epoch).
    pub fn new(ns: u64) -> Self {
        ManualClock {
            ns: AtomicU64::new(ns),
        }
    }

    /// Moves the clock on.
    pub fn advance(&self, d: Duration) {
        self.ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        let ns = self.ns.load(Ordering::Relaxed);
        Now {
            mono_ns: ns,
            unix_ns: ns,
        }
    }
}

/// Counters of one worker: written by that worker only.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Records handed to the writer.
    pub queued: AtomicU64,
    /// Records admitted by the rate limit but dropped: no free slot.
    pub queue_full: AtomicU64,
    /// Suppressed records per rule identity index (grown by the worker, once per generation).
    suppressed: Mutex<Arc<[AtomicU64]>>,
}

impl WorkerStats {
    fn suppressed(&self) -> Arc<[AtomicU64]> {
        Arc::clone(&self.suppressed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Grows the suppression counters to `len`, keeping their values; only the owning worker calls it.
    fn grow(&self, len: usize) -> Arc<[AtomicU64]> {
        let mut g = self.suppressed.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < len {
            let new: Arc<[AtomicU64]> = (0..len)
                .map(|i| AtomicU64::new(g.get(i).map_or(0, |c| c.load(Ordering::Relaxed))))
                .collect();
            *g = new;
        }
        Arc::clone(&g)
    }
}

/// Single-writer increment (a load and a store, no locked read-modify-write).
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// One worker's queue, as the writer sees it.
pub(crate) struct Lane {
    pub full: Receiver<Box<FrameRecord>>,
    pub free: SyncSender<Box<FrameRecord>>,
}

/// Counters of the writer (per output: json, pcap).
#[derive(Debug, Default)]
pub(crate) struct OutputStats {
    /// Frame records written.
    pub frames: AtomicU64,
    /// Event records written.
    pub events: AtomicU64,
    /// Records that could not be written (full disk, vanished directory, closed stdout).
    pub write_errors: AtomicU64,
    /// The last write or open error and when (Unix seconds).
    pub last_error: Mutex<Option<(u64, String)>>,
    /// Times the output was (re)opened.
    pub reopened: AtomicU64,
}

impl OutputStats {
    pub(crate) fn error(&self, n: u64, msg: String) {
        self.write_errors.fetch_add(n, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((palisade_now(), msg));
    }
}

pub(crate) fn palisade_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// At most this many control events wait for the writer; past it they are dropped and counted.
const EVENT_QUEUE: usize = 4096;
/// Control events remembered for `status`.
const RECENT_EVENTS: usize = 16;

/// State shared by the logger, its workers and its writer.
pub(crate) struct Shared {
    pub config: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub registry: Registry,
    /// The plan of the newest generation seen (built by the first worker that sees it).
    plan: Mutex<Option<Arc<Plan>>>,
    /// Per worker: its counters.
    pub workers: Mutex<Vec<Arc<WorkerStats>>>,
    /// New workers' queues, taken by the writer.
    pub new_lanes: Mutex<Vec<Lane>>,
    pub lanes_added: AtomicUsize,
    /// Control events waiting for the writer.
    pub events: Mutex<VecDeque<ControlEvent>>,
    pub events_queued: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Counts by (event, outcome) and the last few events.
    pub event_counts: Mutex<Vec<((&'static str, &'static str), u64)>>,
    pub recent: Mutex<VecDeque<ControlEvent>>,
    /// Records (frames and events) the writer has finished with, written or not.
    pub processed: AtomicU64,
    pub json: OutputStats,
    pub pcap: OutputStats,
    /// A reopen was asked for; the writer clears it when done.
    pub reopen: AtomicBool,
    /// Reopens completed, and the outcome of the last.
    pub reopens_done: AtomicU64,
    pub reopen_result: Mutex<Result<(), String>>,
    pub stop: AtomicBool,
    pub writer: Mutex<Option<std::thread::Thread>>,
}

impl Shared {
    /// The plan of `gen`: the cached one, or built now.
    fn plan_for(&self, gen: &Generation) -> Arc<Plan> {
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.as_ref().filter(|p| p.generation == gen.number()) {
            return Arc::clone(p);
        }
        let plan = Arc::new(Plan::build(gen, &self.registry));
        *cached = Some(Arc::clone(&plan));
        plan
    }

    fn wake_writer(&self) {
        if let Some(t) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            t.unpark();
        }
    }

    fn record_event(&self, ev: &ControlEvent) {
        let key = (ev.event.as_str(), ev.outcome.as_str());
        {
            let mut counts = self.event_counts.lock().unwrap_or_else(|e| e.into_inner());
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(ev.clone());
        }
        if self.config.json.is_none() {
            return;
        }
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= EVENT_QUEUE {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(ev.clone());
        self.events_queued.fetch_add(1, Ordering::Relaxed);
        drop(q);
        self.wake_writer();
    }
}

/// The logger of a running engine (see the module docs).
///
/// ```
/// use palisade_observe::logger::{LogConfig, Logger, Target};
/// let dir = std::env::temp_dir().join(format!("palisade-logger-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let config = LogConfig { json: Some(Target::File(dir.join("log.json"))), ..LogConfig::default() };
/// let logger = Logger::start(config).unwrap();
/// assert_eq!(logger.stats().json_frames, 0);
/// // A log file that cannot be created is an error at start, naming it.
/// let bad = LogConfig { json: Some(Target::File(dir.join("no/such/dir/log.json"))), ..LogConfig::default() };
/// assert!(Logger::start(bad).unwrap_err().contains("no/such/dir/log.json"));
/// # drop(logger);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct Logger {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Logger {
    /// Opens the outputs of `config` and starts the writer thread. Fails,
    /// naming the file, when an output cannot be opened. With no output it
    /// logs nothing but still counts control events (for metrics and status).
    pub fn start(config: LogConfig) -> Result<Logger, String> {
        Logger::start_with_clock(config, Arc::new(SystemClock::default()))
    }

    /// [`Logger::start`] with the given clock (tests drive rate limits with a [`ManualClock`]).
    pub fn start_with_clock(config: LogConfig, clock: Arc<dyn Clock>) -> Result<Logger, String> {
        let outputs = writer::Outputs::open(&config)?;
        let shared = Arc::new(Shared {
            config,
            clock,
            registry: Registry::default(),
            plan: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            new_lanes: Mutex::new(Vec::new()),
            lanes_added: AtomicUsize::new(0),
            events: Mutex::new(VecDeque::new()),
            events_queued: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            event_counts: Mutex::new(Vec::new()),
            recent: Mutex::new(VecDeque::new()),
            processed: AtomicU64::new(0),
            json: OutputStats::default(),
            pcap: OutputStats::default(),
            reopen: AtomicBool::new(false),
            reopens_done: AtomicU64::new(0),
            reopen_result: Mutex::new(Ok(())),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer = match outputs {
            None => None,
            Some(outputs) => {
                let s = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("palisade-log".into())
                    .spawn(move || writer::run(&s, outputs))
                    .map_err(|e| format!("cannot start the log writer: {e}"))?;
                *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.thread().clone());
                Some(handle)
            }
        };
        Ok(Logger { shared, writer })
    }

    /// Whether frames are logged at all (some output is configured).
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// The logger of one data-path worker; call once per worker thread.
    pub fn worker(&self) -> WorkerLogger {
        let stats = Arc::new(WorkerStats::default());
        self.shared
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&stats));
        let capacity = match self.enabled() {
            true => self.shared.config.queue.max(1),
            false => 0,
        };
        let snaplen = match self.shared.config.pcap {
            Some(_) => self.shared.config.snaplen,
            None => 0,
        };
        // Each pool and hand-over channel is allocated once, with all its slots.
        let (free_tx, free_rx) = mpsc::sync_channel(capacity.max(1));
        let (full_tx, full_rx) = mpsc::sync_channel(capacity.max(1));
        for _ in 0..capacity {
            let _ = free_tx.try_send(Box::new(FrameRecord::new(snaplen)));
        }
        if capacity > 0 {
            self.shared
                .new_lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Lane {
                    full: full_rx,
                    free: free_tx,
                });
            self.shared.lanes_added.fetch_add(1, Ordering::Release);
        }
        let suppressed = stats.suppressed();
        WorkerLogger {
            shared: Arc::clone(&self.shared),
            enabled: capacity > 0,
            stats,
            suppressed,
            free: free_rx,
            full: full_tx,
            plan: None,
        }
    }

    /// The sink to give [`palisade_engine::Engine::set_event_sink`]: every
    /// control event is counted, remembered for status, and logged.
    pub fn event_sink(&self) -> EventSink {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |ev: &ControlEvent| shared.record_event(ev))
    }

    /// Asks the writer to reopen its files (SIGUSR1, logrotate) and returns at once.
    pub fn request_reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.shared.wake_writer();
    }

    /// Reopens the files (the control request `log-reopen`): waits up to
    /// `timeout` for the writer, and says whether every file could be opened.
    pub fn reopen(&self, timeout: Duration) -> Result<(), String> {
        if self.writer.is_none() {
            return Err("no log output is configured (--log, --log-pcap)".into());
        }
        let before = self.shared.reopens_done.load(Ordering::Acquire);
        self.request_reopen();
        let deadline = Instant::now() + timeout;
        while self.shared.reopens_done.load(Ordering::Acquire) == before {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the log writer did not reopen within {} s (a write is blocked: slow or stuck disk)",
                    timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.shared
            .reopen_result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the writer has handled every record queued so far
    /// (written or dropped); false when `timeout` passes first.
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.writer.is_none() {
            return true;
        }
        let target = self.queued_total();
        let deadline = Instant::now() + timeout;
        self.shared.wake_writer();
        while self.shared.processed.load(Ordering::Acquire) < target {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn queued_total(&self) -> u64 {
        let workers = self.shared.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .iter()
            .map(|w| w.queued.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.shared.events_queued.load(Ordering::Relaxed)
    }

    /// The logger's counters, summed over workers.
    pub fn stats(&self) -> LogStats {
        let s = &*self.shared;
        let workers = s.workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let rules = s.registry.all();
        let mut suppressed = vec![0u64; rules.len()];
        let (mut queued, mut queue_full) = (0, 0);
        for w in &workers {
            queued += w.queued.load(Ordering::Relaxed);
            queue_full += w.queue_full.load(Ordering::Relaxed);
            for (sum, c) in suppressed.iter_mut().zip(w.suppressed().iter()) {
                *sum += c.load(Ordering::Relaxed);
            }
        }
        let last = |o: &OutputStats| o.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        LogStats {
            json: s.config.json.clone(),
            pcap: s.config.pcap.clone(),
            queued,
            queue_full,
            suppressed: rules
                .iter()
                .zip(suppressed)
                .map(|(r, n)| (r.acl.clone(), r.rule.clone(), n))
                .collect(),
            json_frames: s.json.frames.load(Ordering::Relaxed),
            json_events: s.json.events.load(Ordering::Relaxed),
            json_errors: s.json.write_errors.load(Ordering::Relaxed),
            json_last_error: last(&s.json),
            pcap_frames: s.pcap.frames.load(Ordering::Relaxed),
            pcap_errors: s.pcap.write_errors.load(Ordering::Relaxed),
            pcap_last_error: last(&s.pcap),
            events_dropped: s.events_dropped.load(Ordering::Relaxed),
            reopens: s.reopens_done.load(Ordering::Relaxed),
            events: s.event_counts.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            recent_events: s
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_writer();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The logger's figures (for metrics and status).
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    /// The JSON output, if any.
    pub json: Option<Target>,
    /// The pcapng output, if any.
    pub pcap: Option<PathBuf>,
    /// Frame records admitted by the rate limits and handed to the writer.
    pub queued: u64,
    /// Frame records admitted but dropped because the worker's queue was full.
    pub queue_full: u64,
    /// Per logged rule `(acl, rule, count)`: frames not logged because the rule was over its rate.
    pub suppressed: Vec<(String, String, u64)>,
    /// Frame records written to the JSON output.
    pub json_frames: u64,
    /// Control events written to the JSON output.
    pub json_events: u64,
    /// Records that could not be written to the JSON output.
    pub json_errors: u64,
    /// The JSON output's last error, with its time (Unix seconds).
    pub json_last_error: Option<(u64, String)>,
    /// Frames written to the pcapng output.
    pub pcap_frames: u64,
    /// Frames that could not be written to the pcapng output.
    pub pcap_errors: u64,
    /// The pcapng output's last error, with its time (Unix seconds).
    pub pcap_last_error: Option<(u64, String)>,
    /// Control events dropped because the writer was far behind.
    pub events_dropped: u64,
    /// Reopens done (SIGUSR1, `log-reopen`, or a vanished file).
    pub reopens: u64,
    /// Control events by `(event, outcome)`.
    pub events: Vec<((&'static str, &'static str), u64)>,
    /// The last few control events, oldest first.
    pub recent_events: Vec<ControlEvent>,
}

impl LogStats {
    /// Frames not logged because their rule was over its rate, all rules together.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.iter().map(|(_, _, n)| n).sum()
    }
}

/// One worker's side of the logger (see the module docs); not shared between threads.
pub struct WorkerLogger {
    shared: Arc<Shared>,
    enabled: bool,
    stats: Arc<WorkerStats>,
    suppressed: Arc<[AtomicU64]>,
    free: Receiver<Box<FrameRecord>>,
    full: SyncSender<Box<FrameRecord>>,
    plan: Option<Arc<Plan>>,
}

impl std::fmt::Debug for WorkerLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLogger")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl WorkerLogger {
    /// Starts logging one batch decided by `gen` (the batch's pinned
    /// generation). `None` when nothing of that generation is logged, or
    /// no output is configured: the caller then skips logging for the batch.
    #[inline]
    pub fn batch(&mut self, gen: &Generation) -> Option<BatchLogger<'_>> {
        if !self.enabled {
            return None;
        }
        if self.plan.as_ref().map(|p| p.generation) != Some(gen.number()) {
            // Once per generation, never per frame.
            let plan = self.shared.plan_for(gen);
            if self.suppressed.len() < plan.index_len() {
                self.suppressed = self.stats.grow(plan.index_len());
            }
            self.plan = Some(plan);
        }
        if !self.plan.as_ref().is_some_and(|p| p.logs_anything()) {
            return None;
        }
        Some(BatchLogger {
            w: self,
            now: None,
            over: u32::MAX,
            over_index: 0,
            over_count: 0,
        })
    }
}

/// Logging for one batch: offer it every decided frame (see [`WorkerLogger::batch`]).
pub struct BatchLogger<'w> {
    w: &'w mut WorkerLogger,
    /// Read once, at the first frame that needs it.
    now: Option<Now>,
    /// A rule (position in the plan) found over its rate in this batch: time
    /// stands still within a batch, so its next frames are over it too. They
    /// are counted here and added to the rule's suppression counter once, at
    /// the end of the batch.
    over: u32,
    over_index: u32,
    over_count: u64,
}

impl Drop for BatchLogger<'_> {
    #[inline]
    fn drop(&mut self) {
        self.settle();
    }
}

impl BatchLogger<'_> {
    /// Logs `frame` (its parsed `key`, ingress `port`, and `decision`) if the
    /// deciding rule has `log = true` and is within its rate; else counts it
    /// as suppressed (over the rate) or dropped (queue full), or does nothing
    /// (the rule does not log). Never blocks or allocates.
    #[inline]
    pub fn frame(&mut self, port: PortId, key: &FlowKey, frame: &[u8], decision: &Decision) {
        let Some(plan) = self.w.plan.as_ref() else { return };
        let Some(position) = plan.position(decision.acl, decision.rule) else {
            return;
        };
        if position == self.over {
            self.over_count += 1;
            return;
        }
        self.offer(position, port, key, frame, decision);
    }

    /// Adds the frames counted against the rule over its rate to its suppression counter.
    #[inline]
    fn settle(&mut self) {
        if self.over_count > 0 {
            if let Some(c) = self.w.suppressed.get(self.over_index as usize) {
                c.store(
                    c.load(Ordering::Relaxed).wrapping_add(self.over_count),
                    Ordering::Relaxed,
                );
            }
            self.over_count = 0;
        }
    }

    /// The rate check and the record, for a frame of a logged rule not yet known to be over its rate.
    fn offer(&mut self, position: u32, port: PortId, key: &FlowKey, frame: &[u8], decision: &Decision) {
        let BatchLogger {
            w,
            now,
            over,
            over_index,
            over_count,
        } = self;
        let Some(plan) = w.plan.as_ref() else { return };
        let Some(rule) = plan.rule(position) else { return };
        let now = *now.get_or_insert_with(|| w.shared.clock.now());
        if !rule.limiter.admit_at(now.mono_ns, plan.rate) {
            if *over_count > 0 {
                if let Some(c) = w.suppressed.get(*over_index as usize) {
                    c.store(
                        c.load(Ordering::Relaxed).wrapping_add(*over_count),
                        Ordering::Relaxed,
                    );
                }
            }
            (*over, *over_index, *over_count) = (position, rule.index, 1);
            return;
        }
        let Ok(mut rec) = w.free.try_recv() else {
            bump(&w.stats.queue_full);
            return;
        };
        rec.plan = Some(Arc::clone(plan));
        rec.position = position;
        rec.unix_ns = now.unix_ns;
        rec.port = port;
        rec.stage = decision.stage;
        rec.verdict = decision.verdict;
        rec.key = *key;
        rec.len = frame.len() as u32;
        let n = frame.len().min(rec.frame.len());
        rec.frame[..n].copy_from_slice(&frame[..n]);
        rec.captured = n as u32;
        // The hand-over channel holds as many slots as the pool: it is never full.
        match w.full.try_send(rec) {
            Ok(()) => bump(&w.stats.queued),
            Err(_) => bump(&w.stats.queue_full),
        }
    }
}
