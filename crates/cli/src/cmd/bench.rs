//! `palisade bench`: classifier throughput on ClassBench sets, and the whole
//! data path end to end.
//!
//! **ClassBench sets** (`--classbench A[,B...]`): each set (either dialect,
//! IPv4 or IPv6, `--ipv6-site` moves an IPv4 set into a /48) is built (timed)
//! and its trace classified by `--threads N` threads, each pinned to its
//! own core, sharing one classifier, in rounds of batches of `--batch` keys
//! until `--min-time-ms` have passed. The trace of a set is the matching
//! `--trace` (by position), else the file `SET_trace` beside it, else one
//! generated from the rules (ClassBench-style corners, and corner keys with
//! misses). Per set it prints the figures, and with `--json` one JSON
//! object a line: `rules`, `packets`, `build_ms`, `memory_bytes`, `mpps`
//! (all threads, median rounds), `per_thread_mpps`, `threads`,
//! `ns_per_packet`, `cpu_ns_per_packet` / `cpu_mpps` (thread CPU time,
//! which a loaded machine inflates less), `latency_ns` (per batch: p50,
//! p99, p99.9), `cpu_model`, `avx512` (whether the lookup used it),
//! `verified` / `mismatches` (with `--verify`). `--verify` compares every
//! answer with the reference linear scan, on an even sample of the
//! distinct headers when that would take more than a few seconds (the
//! output says so); any mismatch exits 1. `--plot F.svg` draws Mpps, build
//! time and memory of every set. `--synthesize N` benches a fresh N-rule
//! set grown from each set (`--seed`), `--save DIR` writes each set and
//! trace as benchmarked (ClassBench files, e.g. for DPDK's test-acl).
//! `--results OUT` (one set) writes, per trace line, the 0-based first
//! matching rule or -1.
//!
//! **End to end** (`--rules RULES --port P [--route FROM:TO]` with
//! `--pcap CAPTURE` or `--generate N`): see [`e2e`].
//!
//! A missing file or a bad line: `FILE:LINE: cause` on stderr, exit 2. A
//! build refused by the memory cap: exit 1.

mod e2e;
mod plot;

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use palisade_classify::classbench::{
    format_filter_line, format_trace_line, map_key_to_ipv6_site, map_rule_to_ipv6_site, parse_filters,
    parse_trace, synthesize, synthesize_trace, FilterOptions, FlagsMode, NO_TAG,
};
use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, LinearClassifier, RuleIndex, RuleMatch,
    NO_MATCH,
};
use palisade_packet::FlowKey;

/// Which classifier to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The compiled classifier (what the engine uses).
    Compiled,
    /// The reference linear scan.
    Linear,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Compiled => "compiled",
            Kind::Linear => "linear",
        }
    }
}

/// Arguments of `palisade bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ClassBench filter sets, comma-separated (cb12 TAB 6-field or wustl space 5-field format, IPv4 or IPv6).
    #[arg(
        long,
        value_name = "FILTERS[,FILTERS...]",
        value_delimiter = ',',
        required_unless_present = "rules"
    )]
    pub classbench: Vec<PathBuf>,
    /// ClassBench traces (7 or 6 columns), by position; a set without one
    /// uses SET_trace beside it, else a trace generated from its rules.
    #[arg(long, value_name = "TRACE[,TRACE...]", value_delimiter = ',')]
    pub trace: Vec<PathBuf>,
    /// Write, per trace line, the 0-based first matching rule or -1 (one set only).
    #[arg(long, value_name = "OUT")]
    pub results: Option<PathBuf>,
    /// Print the figures as one JSON object a line (a set, or the end-to-end run).
    #[arg(long)]
    pub json: bool,
    /// Classifier to measure.
    #[arg(long, value_enum, default_value = "compiled")]
    pub classifier: Kind,
    /// Match the ClassBench flags field (as TCP flags / ICMP type-code) instead of ignoring it.
    #[arg(long)]
    pub match_flags: bool,
    /// Keep classifying the trace for at least this long (milliseconds).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub min_time_ms: u64,
    /// Memory cap of the compiled classifier's build, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub memory_cap_mib: usize,
    /// Compiled classifier: use the scalar lookup even on a CPU with AVX-512
    /// (the baseline the vector lookup is measured against).
    #[arg(long)]
    pub scalar: bool,
    /// Compiled classifier: use trees even for a set small enough for bit
    /// sets (the baseline the bit-set lookup is measured against).
    #[arg(long)]
    pub trees: bool,
    /// Move an IPv4 set and its trace into this IPv6 /48 site (prefix a/l
    /// becomes SITE | a << 48 of length 48 + l): the set's IPv6 version.
    #[arg(long, value_name = "SITE")]
    pub ipv6_site: Option<std::net::Ipv6Addr>,
    /// Threads classifying, each on its own core, sharing one classifier.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Keys per classify call (the batch the latency percentiles are of).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch: usize,
    /// Compare every answer with the reference linear scan (on a sample of
    /// the distinct headers when that would take long); exit 1 on a mismatch.
    #[arg(long)]
    pub verify: bool,
    /// Draw Mpps, build time and memory of every set into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Bench a fresh set of this many rules grown from each set (db_generator-like).
    #[arg(long, value_name = "N")]
    pub synthesize: Option<usize>,
    /// Seed of `--synthesize` and of generated traces.
    #[arg(long, default_value_t = 1, value_name = "SEED")]
    pub seed: u64,
    /// Write each set and its trace, as benchmarked, into this directory
    /// (ClassBench format), and the set as a rule file (NAME.toml: the set
    /// as the Port ACL of port `p0`, every third rule deny) for the end-to-end bench.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Test only: change the answer to trace line N (0-based) before `--verify`
    /// checks it: a deliberately wrong classifier.
    #[arg(long, hide = true, value_name = "N")]
    pub flip_answer: Option<usize>,
    /// End to end: a rule file (TOML) whose policy decides every frame.
    #[arg(long, value_name = "RULES", conflicts_with = "classbench")]
    pub rules: Option<PathBuf>,
    /// End to end: the capture replayed (read into memory first).
    #[arg(long, value_name = "CAPTURE", requires = "rules", conflicts_with = "generate")]
    pub pcap: Option<PathBuf>,
    /// End to end: make a capture of N frames from the rules (hits on every rule, and misses).
    #[arg(long, value_name = "N", requires = "rules")]
    pub generate: Option<usize>,
    /// End to end: the ingress port.
    #[arg(long, value_name = "PORT", requires = "rules")]
    pub port: Option<String>,
    /// End to end: the frames are routed between these L3 interfaces.
    #[arg(long, value_name = "FROM:TO", requires = "rules")]
    pub route: Option<String>,
}

/// A failed step: message and exit code.
struct Failure(String, u8);

/// Runs `palisade bench`.
pub fn run(args: Args) -> ExitCode {
    let result = if args.rules.is_some() {
        e2e::bench(&args)
    } else {
        bench_sets(&args)
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg, code)) => {
            eprintln!("palisade bench: {msg}");
            ExitCode::from(code)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display()), 2))
}

/// This thread's CPU time (Linux `/proc/thread-self/schedstat`, nanoseconds
/// on CPU). Unlike the wall clock it does not count time spent waiting for a
/// core on a loaded machine; it is updated at scheduler ticks, so it is only
/// used over many rounds.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The CPU model, as `/proc/cpuinfo` names it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| String::from("unknown"))
}

/// Pins the calling thread to core `i` (modulo the cores there are); best effort.
fn pin_to_core(i: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside
    // it (the core number is below CPU_SETSIZE for any machine this runs on,
    // and taken modulo the core count); sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What one thread measured.
struct ThreadFigures {
    rounds: usize,
    /// Median round.
    median: Duration,
    /// Nanoseconds of every batch.
    batch_ns: Vec<u64>,
    /// CPU time over all timed rounds.
    cpu: Option<Duration>,
}

/// All threads' figures.
struct Figures {
    threads: Vec<ThreadFigures>,
    packets_timed: usize,
}

impl Figures {
    /// Mpps of each thread (median round).
    fn per_thread_mpps(&self) -> Vec<f64> {
        self.threads
            .iter()
            .map(|t| {
                let s = t.median.as_secs_f64();
                if s > 0.0 {
                    self.packets_timed as f64 / s / 1e6
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Nanoseconds per packet of thread CPU time, all threads and rounds.
    fn cpu_ns_per_packet(&self) -> Option<f64> {
        let mut ns = 0.0;
        let mut packets = 0.0;
        for t in &self.threads {
            ns += t.cpu?.as_secs_f64() * 1e9;
            packets += (self.packets_timed * t.rounds) as f64;
        }
        (packets > 0.0 && ns > 0.0).then(|| ns / packets)
    }

    /// Batch latency percentile `p` (0..1), nanoseconds.
    fn latency(&self, sorted: &[u64], p: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// Classifies `keys` on `threads` threads (each pinned to its own core), in
/// rounds of batches of `batch` keys, until `min_time` has passed and at
/// least 3 rounds ran (or 3x `min_time`).
fn measure(
    c: Arc<dyn Classifier + Send + Sync>,
    keys: Arc<Vec<FlowKey>>,
    threads: usize,
    batch: usize,
    min_time: Duration,
    progress: bool,
) -> Figures {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (c, keys, barrier) = (Arc::clone(&c), Arc::clone(&keys), Arc::clone(&barrier));
            std::thread::spawn(move || {
                pin_to_core(i);
                let mut out = vec![NO_MATCH; batch];
                // One warm-up round (page faults, caches).
                for chunk in keys.chunks(batch) {
                    c.classify_batch(chunk, &mut out);
                }
                barrier.wait();
                let mut times = Vec::new();
                let mut batch_ns = Vec::new();
                let start = Instant::now();
                let cpu_start = thread_cpu_time();
                loop {
                    let round = Instant::now();
                    let mut t = round;
                    for chunk in std::hint::black_box(&keys[..]).chunks(batch) {
                        c.classify_batch(chunk, &mut out);
                        std::hint::black_box(&out);
                        let now = Instant::now();
                        batch_ns.push((now - t).as_nanos() as u64);
                        t = now;
                    }
                    times.push(round.elapsed());
                    let total = start.elapsed();
                    if progress && i == 0 {
                        let pct = (total.as_secs_f64() / min_time.as_secs_f64().max(1e-9) * 100.0).min(100.0);
                        eprint!("\rclassifying: round {} ({pct:.0}%)   ", times.len());
                    }
                    if (total >= min_time && times.len() >= 3)
                        || total >= 3 * min_time
                        || times.len() >= 1_000_000
                    {
                        break;
                    }
                }
                let cpu = match (cpu_start, thread_cpu_time()) {
                    (Some(a), Some(b)) if b > a => Some(b - a),
                    _ => None,
                };
                times.sort();
                ThreadFigures {
                    rounds: times.len(),
                    median: times[times.len() / 2],
                    batch_ns,
                    cpu,
                }
            })
        })
        .collect();
    let threads = handles
        .into_iter()
        .map(|h| h.join().expect("a bench thread panicked"))
        .collect();
    if progress {
        eprint!("\r{:40}\r", "");
    }
    Figures {
        threads,
        packets_timed: keys.len(),
    }
}

/// A classifier that gives one key a wrong answer (`--flip-answer`, tests only).
struct FlipOne<C> {
    inner: C,
    key: FlowKey,
}

impl<C: Classifier> FlipOne<C> {
    fn flip(&self, key: &FlowKey, r: RuleIndex) -> RuleIndex {
        match (*key == self.key, r) {
            (false, r) => r,
            (true, NO_MATCH) => 0,
            (true, r) => r + 1,
        }
    }
}

impl<C: Classifier> Classifier for FlipOne<C> {
    fn classify(&self, key: &FlowKey) -> RuleIndex {
        self.flip(key, self.inner.classify(key))
    }

    fn classify_batch(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        self.inner.classify_batch(keys, out);
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.flip(k, *o);
        }
    }

    fn rule_count(&self) -> usize {
        self.inner.rule_count()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

/// Rule checks the reference may make for `--verify` before it samples (a few seconds).
const VERIFY_BUDGET: usize = 2_000_000_000;

/// What `--verify` found.
struct Verified {
    /// Trace lines whose answers were compared.
    lines: usize,
    /// Distinct headers run through the reference, and how many there are.
    checked: usize,
    distinct: usize,
    mismatches: usize,
    /// The first mismatches: line, answer, reference.
    examples: Vec<(usize, RuleIndex, RuleIndex)>,
}

/// Compares `answers` (per trace line) with the reference on every distinct
/// header, or an even sample of them within [`VERIFY_BUDGET`] rule checks.
fn verify(rules: &[RuleMatch], keys: &[FlowKey], answers: &[RuleIndex]) -> Verified {
    let mut first_line: HashMap<FlowKey, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        first_line.entry(*k).or_insert(i);
    }
    let mut distinct: Vec<(usize, FlowKey)> = first_line.iter().map(|(k, &i)| (i, *k)).collect();
    distinct.sort_by_key(|&(i, _)| i);
    let most = (VERIFY_BUDGET / rules.len().max(1)).max(1_000);
    let step = distinct.len().div_ceil(most).max(1);
    let linear = LinearClassifier::new(rules.to_vec());
    let reference: HashMap<FlowKey, RuleIndex> = distinct
        .iter()
        .step_by(step)
        .map(|(_, k)| (*k, linear.classify(k)))
        .collect();
    let mut v = Verified {
        lines: 0,
        checked: reference.len(),
        distinct: distinct.len(),
        mismatches: 0,
        examples: Vec::new(),
    };
    for (i, (k, got)) in keys.iter().zip(answers).enumerate() {
        if let Some(&want) = reference.get(k) {
            v.lines += 1;
            if *got != want {
                v.mismatches += 1;
                if v.examples.len() < 5 {
                    v.examples.push((i, *got, want));
                }
            }
        }
    }
    v
}

/// One set's name for output: its file name, with what was done to it.
fn set_name(path: &Path, args: &Args) -> String {
    let mut name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if let Some(n) = args.synthesize {
        name = format!("{name}-grown-{n}");
    }
    if args.ipv6_site.is_some() {
        name.push_str("-ipv6");
    }
    name
}

/// The figures of one set, for the JSON line and the plot.
pub(crate) struct SetResult {
    pub name: String,
    /// Mpps of all threads from each thread's CPU time (the wall clock's when the OS does not say).
    pub mpps: f64,
    pub build_ms: f64,
    pub memory_bytes: usize,
    pub rules: usize,
}

fn bench_sets(args: &Args) -> Result<ExitCode, Failure> {
    if args.results.is_some() && args.classbench.len() > 1 {
        return Err(Failure(String::from("--results takes one --classbench set"), 2));
    }
    if args.threads == 0 || args.batch == 0 {
        return Err(Failure(
            String::from("--threads and --batch must be at least 1"),
            2,
        ));
    }
    let cpu = cpu_model();
    let mut results = Vec::new();
    let mut failed = false;
    for (i, path) in args.classbench.iter().enumerate() {
        let r = bench_set(args, path, args.trace.get(i), &cpu)?;
        failed |= r.1;
        results.push(r.0);
    }
    if let Some(out) = &args.plot {
        plot::draw(out, &results, &cpu, args).map_err(|e| Failure(format!("{}: {e}", out.display()), 2))?;
        println!("plot: {}", out.display());
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Benches one set; the figures and whether `--verify` found a mismatch.
fn bench_set(
    args: &Args,
    path: &Path,
    trace: Option<&PathBuf>,
    cpu: &str,
) -> Result<(SetResult, bool), Failure> {
    let options = FilterOptions {
        flags: if args.match_flags {
            FlagsMode::Match
        } else {
            FlagsMode::Ignore
        },
    };
    let mut rules = parse_filters(&read(path)?, &options)
        .map_err(|e| Failure(format!("{}:{}: {}", path.display(), e.line, e.message), 2))?;
    if let Some(n) = args.synthesize {
        rules = synthesize(&rules, n, args.seed);
    }
    let beside = PathBuf::from(format!("{}_trace", path.display()));
    let trace = match trace {
        Some(t) => Some(t.clone()),
        None if args.synthesize.is_none() && beside.is_file() => Some(beside),
        None => None,
    };
    let keys: Vec<FlowKey> = match &trace {
        Some(path) => parse_trace(&read(path)?)
            .map_err(|e| Failure(format!("{}:{}: {}", path.display(), e.line, e.message), 2))?
            .into_iter()
            .map(|e| e.key)
            .collect(),
        None => {
            // ClassBench-style corners of random rules, then corner keys (misses included).
            let n = (rules.len() * 10).clamp(10_000, 200_000);
            let mut keys = synthesize_trace(&rules, n / 2, args.seed);
            keys.extend(corner_keys(&rules, n - keys.len()));
            keys
        }
    };
    let (rules, keys): (Vec<RuleMatch>, Vec<FlowKey>) = match args.ipv6_site {
        Some(site) => {
            let site = site.to_bits();
            (
                rules.iter().map(|r| map_rule_to_ipv6_site(r, site)).collect(),
                keys.iter().map(|k| map_key_to_ipv6_site(k, site)).collect(),
            )
        }
        None => (rules, keys),
    };
    let name = set_name(path, args);
    let mut config = BuildConfig::default().with_memory_cap(args.memory_cap_mib.saturating_mul(1 << 20));
    config.vector = !args.scalar;
    if args.trees {
        config.bitset_max_rules = 0;
    }
    let t0 = Instant::now();
    let mut vector = false;
    let mut structure = "linear";
    let classifier: Arc<dyn Classifier + Send + Sync> = match args.classifier {
        Kind::Compiled => {
            let c = CompiledClassifier::build(&rules, &config)
                .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?;
            vector = c.uses_vector_leaves();
            structure = if c.uses_bitsets() { "bitsets" } else { "trees" };
            match args.flip_answer.and_then(|i| keys.get(i)) {
                Some(&key) => Arc::new(FlipOne { inner: c, key }),
                None => Arc::new(c),
            }
        }
        Kind::Linear => Arc::new(LinearClassifier::new(rules.clone())),
    };
    let build = t0.elapsed();

    let progress = std::io::stderr().is_terminal();
    let answers = if args.results.is_some() || args.verify || args.save.is_some() {
        let mut out = vec![NO_MATCH; keys.len()];
        for (k, o) in keys.chunks(4096).zip(out.chunks_mut(4096)) {
            classifier.classify_batch(k, o);
        }
        out
    } else {
        Vec::new()
    };
    if let Some(out) = &args.results {
        write_results(&answers, out)?;
    }
    if let Some(dir) = &args.save {
        save(dir, &name, &rules, &keys, &answers)?;
    }
    let verified = args.verify.then(|| verify(&rules, &keys, &answers));
    // The linear scan is timed on a sample so a round stays near 2e8 rule checks.
    let sample = match args.classifier {
        Kind::Compiled => keys.len(),
        Kind::Linear => keys.len().min((200_000_000 / rules.len().max(1)).max(1_000)),
    };
    let timed = Arc::new(keys[..sample].to_vec());
    let figures = measure(
        Arc::clone(&classifier),
        timed,
        args.threads,
        args.batch,
        Duration::from_millis(args.min_time_ms),
        progress,
    );
    let per_thread = figures.per_thread_mpps();
    let mpps: f64 = per_thread.iter().sum();
    let ns = if mpps > 0.0 {
        1e3 / mpps * args.threads as f64
    } else {
        0.0
    };
    let cpu_ns = figures.cpu_ns_per_packet();
    let mut batch_ns: Vec<u64> = figures
        .threads
        .iter()
        .flat_map(|t| t.batch_ns.iter().copied())
        .collect();
    batch_ns.sort_unstable();
    let (p50, p99, p999) = (
        figures.latency(&batch_ns, 0.5),
        figures.latency(&batch_ns, 0.99),
        figures.latency(&batch_ns, 0.999),
    );
    let build_ms = build.as_secs_f64() * 1e3;
    let memory = classifier.memory_bytes();
    let rounds: usize = figures.threads.iter().map(|t| t.rounds).sum();
    let trace_name = trace
        .as_ref()
        .map_or_else(|| String::from("(generated)"), |p| p.display().to_string());
    println!("set: {name}");
    println!("filters: {}", path.display());
    println!("trace: {trace_name}");
    println!("classifier: {}", args.classifier.name());
    println!("lookup: {}", if vector { "avx512" } else { "scalar" });
    println!("structure: {structure}");
    println!("cpu: {cpu}");
    println!("rules: {}", rules.len());
    println!("packets: {}", keys.len());
    println!("build_ms: {build_ms:.2}");
    println!("memory_bytes: {memory}");
    println!(
        "rounds: {rounds} of {} packets on {} thread(s) (median round per thread)",
        figures.packets_timed, args.threads
    );
    println!("mpps: {mpps:.2}");
    if args.threads > 1 {
        let list: Vec<String> = per_thread.iter().map(|m| format!("{m:.2}")).collect();
        println!("per_thread_mpps: {}", list.join(" "));
    }
    println!("ns_per_packet: {ns:.2}");
    if let Some(c) = cpu_ns {
        println!(
            "cpu_ns_per_packet: {c:.2} (thread CPU time, all rounds; {:.2} Mpps per thread)",
            1e3 / c
        );
    }
    println!(
        "latency_ns: p50 {p50}, p99 {p99}, p99.9 {p999} (per batch of {} keys)",
        args.batch
    );
    let mut mismatch = false;
    if let Some(v) = &verified {
        let how = if v.checked < v.distinct {
            format!(
                "sampled: {} of {} distinct headers run through the reference",
                v.checked, v.distinct
            )
        } else {
            format!("all {} distinct headers run through the reference", v.distinct)
        };
        println!("verified: {} of {} lines ({how})", v.lines, keys.len());
        println!("mismatches: {}", v.mismatches);
        for (line, got, want) in &v.examples {
            let show = |r: &RuleIndex| {
                if *r == NO_MATCH {
                    String::from("-1")
                } else {
                    r.to_string()
                }
            };
            eprintln!(
                "palisade bench: {name}: trace line {}: answer {}, reference {}",
                line + 1,
                show(got),
                show(want)
            );
        }
        mismatch = v.mismatches > 0;
    }
    if args.json {
        let v = serde_json::json!({
            "set": name,
            "rules": rules.len(),
            "packets": keys.len(),
            "build_ms": build_ms,
            "memory_bytes": memory,
            "mpps": mpps,
            "per_thread_mpps": per_thread,
            "threads": args.threads,
            "ns_per_packet": ns,
            "classifier": args.classifier.name(),
            "lookup": if vector { "avx512" } else { "scalar" },
            "avx512": vector,
            "structure": structure,
            "cpu_model": cpu,
            "rounds": rounds,
            "packets_timed": figures.packets_timed,
            "batch": args.batch,
            "latency_ns": { "p50": p50, "p99": p99, "p99_9": p999 },
            "filters": path.display().to_string(),
            "trace": trace_name,
            "cpu_ns_per_packet": cpu_ns,
            "cpu_mpps": cpu_ns.map(|c| 1e3 / c),
            "verified": verified.as_ref().map(|v| v.lines),
            "verify_sampled": verified.as_ref().map(|v| v.checked < v.distinct),
            "mismatches": verified.as_ref().map(|v| v.mismatches),
        });
        println!("{v}");
    }
    Ok((
        SetResult {
            name,
            mpps: cpu_ns.map_or(mpps, |c| 1e3 / c * args.threads as f64),
            build_ms,
            memory_bytes: memory,
            rules: rules.len(),
        },
        mismatch,
    ))
}

fn write_results(answers: &[RuleIndex], path: &Path) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure(format!("{}: {e}", path.display()), 2);
    let file = std::fs::File::create(path).map_err(fail)?;
    let mut w = BufWriter::new(file);
    for &r in answers {
        if r == NO_MATCH {
            writeln!(w, "-1").map_err(fail)?;
        } else {
            writeln!(w, "{r}").map_err(fail)?;
        }
    }
    w.flush().map_err(fail)
}

/// Writes `DIR/NAME` (the rules) and `DIR/NAME_trace` (the keys, each line
/// tagged with its answer) in ClassBench's format.
fn save(
    dir: &Path,
    name: &str,
    rules: &[RuleMatch],
    keys: &[FlowKey],
    answers: &[RuleIndex],
) -> Result<(), Failure> {
    let fail = |p: &Path, e: std::io::Error| Failure(format!("{}: {e}", p.display()), 2);
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let path = dir.join(name);
    let mut w = BufWriter::new(std::fs::File::create(&path).map_err(|e| fail(&path, e))?);
    for (i, r) in rules.iter().enumerate() {
        let line = format_filter_line(r).ok_or_else(|| {
            Failure(
                format!("{}: rule {} has no ClassBench form", path.display(), i + 1),
                2,
            )
        })?;
        writeln!(w, "{line}").map_err(|e| fail(&path, e))?;
    }
    w.flush().map_err(|e| fail(&path, e))?;
    let path = dir.join(format!("{name}_trace"));
    let mut w = BufWriter::new(std::fs::File::create(&path).map_err(|e| fail(&path, e))?);
    for (k, a) in keys.iter().zip(answers) {
        let tag = if *a == NO_MATCH { NO_TAG } else { *a };
        writeln!(w, "{}", format_trace_line(k, tag)).map_err(|e| fail(&path, e))?;
    }
    w.flush().map_err(|e| fail(&path, e))?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, rule_file(name, rules)).map_err(|e| fail(&path, e))
}

/// A rule file with one port, `p0`, whose Port ACL is `rules` (every third
/// rule deny, the others permit; default deny).
fn rule_file(name: &str, rules: &[RuleMatch]) -> String {
    use std::fmt::Write as _;
    let mut t = format!(
        "# {name} as a Port ACL (written by palisade bench --save)\nversion = 1\n\n[[port]]\nname = \"p0\"\n\n[[acl]]\nname = \"classbench\"\ndefault = \"deny\"\n"
    );
    let prefix = |p: &palisade_classify::Prefix| match p.family {
        palisade_classify::IpFamily::V4 => {
            format!("{}/{}", std::net::Ipv4Addr::from_bits(p.addr as u32), p.len)
        }
        palisade_classify::IpFamily::V6 => format!("{}/{}", std::net::Ipv6Addr::from_bits(p.addr), p.len),
    };
    let ports = |list: &[palisade_classify::PortRange]| -> String {
        let items: Vec<String> = list
            .iter()
            .map(|r| {
                if r.lo == r.hi {
                    r.lo.to_string()
                } else {
                    format!("\"{}-{}\"", r.lo, r.hi)
                }
            })
            .collect();
        format!("[{}]", items.join(", "))
    };
    for (i, r) in rules.iter().enumerate() {
        let action = if i % 3 == 2 { "deny" } else { "permit" };
        let _ = write!(t, "  [[acl.rule]]\n  action = \"{action}\"\n");
        if let Some(p) = r.proto {
            let _ = writeln!(t, "  proto = {p}");
        }
        for (field, list) in [("src", &r.src), ("dst", &r.dst)] {
            if let Some(p) = list.first() {
                let _ = writeln!(t, "  {field} = \"{}\"", prefix(p));
            }
        }
        // Ports only where the rule language reads them (TCP and UDP).
        if matches!(r.proto, Some(6 | 17)) {
            if !r.src_port.is_empty() {
                let _ = writeln!(t, "  src_port = {}", ports(&r.src_port));
            }
            if !r.dst_port.is_empty() {
                let _ = writeln!(t, "  dst_port = {}", ports(&r.dst_port));
            }
        }
    }
    t.push_str("\n[[bind]]\nacl = \"classbench\"\nport = \"p0\"\n");
    t
}
