//! `palisade bench --classbench FILTERS [--trace TRACE]`: build and classify throughput.
//!
//! Reads a ClassBench filter set (either dialect), builds the chosen
//! classifier (timed), then classifies the trace on one thread in rounds
//! until at least `--min-time-ms` have passed and reports the median round:
//! `rules`, `packets`, `build_ms`, `memory_bytes`, `mpps`, `ns_per_packet`.
//! `--json` adds those (and `classifier`, `rounds`, `filters`, `trace`, and
//! `cpu_ns_per_packet` / `cpu_mpps` from the thread's CPU time over all
//! rounds, which a loaded machine inflates less) as one JSON object on the
//! last line. `--results OUT` writes, per trace line, the
//! 0-based index of the first matching rule or -1. Without `--trace`, the
//! trace is generated from the rules' corners ([`palisade_classify::corner_keys`]).
//!
//! The linear reference is timed on a bounded sample of the trace (about
//! 2·10^8 rule checks per round at most) so it finishes; `--results` still
//! covers every line. A missing file or a bad line: `FILE:LINE: cause` on
//! stderr, exit 2. A build refused by the memory cap: exit 1.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use palisade_classify::classbench::{
    map_key_to_ipv6_site, map_rule_to_ipv6_site, parse_filters, parse_trace, FilterOptions, FlagsMode,
};
use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, LinearClassifier, NO_MATCH,
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
    /// ClassBench filter set (cb12 TAB 6-field or wustl space 5-field format).
    #[arg(long, value_name = "FILTERS")]
    pub classbench: PathBuf,
    /// ClassBench trace (7 or 6 columns); generated from the rules when absent.
    #[arg(long, value_name = "TRACE")]
    pub trace: Option<PathBuf>,
    /// Write, per trace line, the 0-based first matching rule or -1.
    #[arg(long, value_name = "OUT")]
    pub results: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
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
}

/// A failed step: message and exit code.
struct Failure(String, u8);

/// Runs `palisade bench`.
pub fn run(args: Args) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("palisade bench: {msg}");
            ExitCode::from(code)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display()), 2))
}

/// The measured figures.
struct Figures {
    rounds: usize,
    packets_timed: usize,
    median: Duration,
    /// The thread's CPU time over all timed rounds, when the OS reports it.
    cpu: Option<Duration>,
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

fn bench(args: &Args) -> Result<(), Failure> {
    let options = FilterOptions {
        flags: if args.match_flags {
            FlagsMode::Match
        } else {
            FlagsMode::Ignore
        },
    };
    let rules = parse_filters(&read(&args.classbench)?, &options).map_err(|e| {
        Failure(
            format!("{}:{}: {}", args.classbench.display(), e.line, e.message),
            2,
        )
    })?;
    let keys: Vec<FlowKey> = match &args.trace {
        Some(path) => parse_trace(&read(path)?)
            .map_err(|e| Failure(format!("{}:{}: {}", path.display(), e.line, e.message), 2))?
            .into_iter()
            .map(|e| e.key)
            .collect(),
        None => corner_keys(&rules, (rules.len() * 12).clamp(10_000, 200_000)),
    };
    let (rules, keys) = match args.ipv6_site {
        Some(site) => {
            let site = site.to_bits();
            (
                rules.iter().map(|r| map_rule_to_ipv6_site(r, site)).collect(),
                keys.iter().map(|k| map_key_to_ipv6_site(k, site)).collect(),
            )
        }
        None => (rules, keys),
    };
    let mut config = BuildConfig::default().with_memory_cap(args.memory_cap_mib.saturating_mul(1 << 20));
    config.vector = !args.scalar;
    if args.trees {
        config.bitset_max_rules = 0;
    }
    let t0 = Instant::now();
    let mut vector = false;
    let mut structure = "linear";
    let classifier: Box<dyn Classifier> = match args.classifier {
        Kind::Compiled => {
            let c = CompiledClassifier::build(&rules, &config)
                .map_err(|e| Failure(format!("{}: {e}", args.classbench.display()), 1))?;
            vector = c.uses_vector_leaves();
            structure = if c.uses_bitsets() { "bitsets" } else { "trees" };
            Box::new(c)
        }
        Kind::Linear => Box::new(LinearClassifier::new(rules.clone())),
    };
    let build = t0.elapsed();

    let progress = std::io::stderr().is_terminal();
    if let Some(out) = &args.results {
        write_results(classifier.as_ref(), &keys, out, progress)?;
    }
    // The linear scan is timed on a sample so a round stays near 2e8 rule checks.
    let sample = match args.classifier {
        Kind::Compiled => keys.len(),
        Kind::Linear => keys.len().min((200_000_000 / rules.len().max(1)).max(1_000)),
    };
    let figures = measure(
        classifier.as_ref(),
        &keys[..sample],
        Duration::from_millis(args.min_time_ms),
        progress,
    );
    let ns = if figures.packets_timed == 0 {
        0.0
    } else {
        figures.median.as_secs_f64() * 1e9 / figures.packets_timed as f64
    };
    let mpps = if ns > 0.0 { 1e3 / ns } else { 0.0 };
    let cpu_ns = figures
        .cpu
        .filter(|_| figures.packets_timed > 0)
        .map(|d| d.as_secs_f64() * 1e9 / (figures.packets_timed * figures.rounds) as f64);
    let build_ms = build.as_secs_f64() * 1e3;
    let memory = classifier.memory_bytes();
    let trace_name = args
        .trace
        .as_ref()
        .map_or_else(|| String::from("(generated)"), |p| p.display().to_string());
    println!("filters: {}", args.classbench.display());
    println!("trace: {trace_name}");
    println!("classifier: {}", args.classifier.name());
    println!("lookup: {}", if vector { "avx512" } else { "scalar" });
    println!("structure: {structure}");
    println!("rules: {}", rules.len());
    println!("packets: {}", keys.len());
    println!("build_ms: {build_ms:.2}");
    println!("memory_bytes: {memory}");
    println!(
        "rounds: {} of {} packets (median round)",
        figures.rounds, figures.packets_timed
    );
    println!("mpps: {mpps:.2}");
    println!("ns_per_packet: {ns:.2}");
    if let Some(c) = cpu_ns {
        println!(
            "cpu_ns_per_packet: {c:.2} (thread CPU time, all rounds; {:.2} Mpps)",
            1e3 / c
        );
    }
    if args.json {
        let v = serde_json::json!({
            "rules": rules.len(),
            "packets": keys.len(),
            "build_ms": build_ms,
            "memory_bytes": memory,
            "mpps": mpps,
            "ns_per_packet": ns,
            "classifier": args.classifier.name(),
            "lookup": if vector { "avx512" } else { "scalar" },
            "structure": structure,
            "rounds": figures.rounds,
            "packets_timed": figures.packets_timed,
            "filters": args.classbench.display().to_string(),
            "trace": trace_name,
            "cpu_ns_per_packet": cpu_ns,
            "cpu_mpps": cpu_ns.map(|c| 1e3 / c),
        });
        println!("{v}");
    }
    Ok(())
}

/// Classifies `keys` in rounds until `min_time` has passed and at least 3
/// rounds ran (or 3x `min_time`); returns the median round.
fn measure(c: &dyn Classifier, keys: &[FlowKey], min_time: Duration, progress: bool) -> Figures {
    let mut out = vec![NO_MATCH; keys.len()];
    let mut times = Vec::new();
    let start = Instant::now();
    // One warm-up round (page faults, caches).
    c.classify_batch(keys, &mut out);
    let cpu_start = thread_cpu_time();
    loop {
        let t = Instant::now();
        c.classify_batch(std::hint::black_box(keys), &mut out);
        std::hint::black_box(&out);
        times.push(t.elapsed());
        let total = start.elapsed();
        if progress {
            let pct = (total.as_secs_f64() / min_time.as_secs_f64().max(1e-9) * 100.0).min(100.0);
            eprint!("\rclassifying: round {} ({pct:.0}%)   ", times.len());
        }
        // At least 3 rounds, unless rounds are so slow that 3x the time has passed.
        if (total >= min_time && times.len() >= 3) || total >= 3 * min_time || times.len() >= 1_000_000 {
            break;
        }
    }
    if progress {
        eprint!("\r{:40}\r", "");
    }
    let cpu = match (cpu_start, thread_cpu_time()) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    times.sort();
    Figures {
        rounds: times.len(),
        packets_timed: keys.len(),
        median: times[times.len() / 2],
        cpu,
    }
}

fn write_results(c: &dyn Classifier, keys: &[FlowKey], path: &Path, progress: bool) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure(format!("{}: {e}", path.display()), 2);
    let file = std::fs::File::create(path).map_err(fail)?;
    let mut w = BufWriter::new(file);
    let mut out = vec![NO_MATCH; 4096];
    for (n, chunk) in keys.chunks(4096).enumerate() {
        c.classify_batch(chunk, &mut out);
        for &r in &out[..chunk.len()] {
            if r == NO_MATCH {
                writeln!(w, "-1").map_err(fail)?;
            } else {
                writeln!(w, "{r}").map_err(fail)?;
            }
        }
        if progress {
            eprint!("\rresults: {}/{} lines   ", n * 4096 + chunk.len(), keys.len());
        }
    }
    if progress {
        eprint!("\r{:40}\r", "");
    }
    w.flush().map_err(fail)
}
