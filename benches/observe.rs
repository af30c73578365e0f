//! What logging and metrics cost the data path.
//!
//! `cargo bench -p palisade-benches --bench observe`
//!
//! The data path's work per batch here is what a worker does besides the
//! packet-socket I/O: parse 64 frames of 64 bytes, classify them against a
//! 1,000-rule generation with frame lengths, and (when logging) offer each
//! decision to the logger. Every frame hits one deny rule, so with `log =
//! true` on it every frame goes through the rate limit (10 a second, burst
//! 20): the worst case for logging, line-rate 64-byte frames on a logged rule.
//! Leaving out the I/O makes the ratio an upper bound of the real one.
//!
//! * `log/off`: no logger (the baseline).
//! * `log/on-logged-rule`: `--log FILE`, every frame on the logged rule.
//! * `log/on-other-rule`: `--log FILE`, the same frames on a rule without `log`.
//! * `scrape/render-10000-rules`: one `/metrics` rendering of a 10,000-rule generation;
//!   `scrape/http-get-10000-rules`: the same over HTTP on loopback (connect, GET, read).
//! * `scrape-forwarding/other-core-busy` vs `scrape-forwarding/during-scrapes`:
//!   batches while another thread spins (sharing nothing) or scrapes back to back.
//!
//! After criterion, alternating runs (baseline, candidate, baseline, ... 21
//! rounds of 20,000 batches each) print the medians and their ratio, the
//! same-run baseline on a shared machine: logging off vs on, and forwarding
//! with the other thread spinning vs scraping back to back.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use palisade_engine::policy::Decision;
use palisade_engine::{Engine, EngineOptions, WorkerHandle};
use palisade_observe::{LogConfig, Logger, Target, WorkerLogger};
use palisade_packet::FlowKey;

const BATCH: usize = 64;

/// `n` rules on port wan0; rule `r{logged}` has `log = true` and denies tcp to port 23.
fn rules(n: usize, logged: usize) -> String {
    let mut s = String::from(
        "version = 1\n[logging]\nrate = 10\nburst = 20\n[[port]]\nname = \"wan0\"\n[[acl]]\nname = \"in\"\ndefault = \"permit\"\n",
    );
    for i in 0..n {
        let log = if i == logged { "  log = true\n" } else { "" };
        s.push_str(&format!(
            "  [[acl.rule]]\n  id = \"r{i}\"\n  action = \"deny\"\n  proto = \"tcp\"\n  src = \"10.{}.{}.0/24\"\n  dst_port = {}\n{log}",
            (i / 256) % 256,
            i % 256,
            if i == logged { 23 } else { 1000 + i % 60000 }
        ));
    }
    s.push_str("[[bind]]\nacl = \"in\"\nport = \"wan0\"\n");
    s
}

/// 64-byte Ethernet frames: TCP SYN from 10.0.`rule`.9 to port 23 (`rule` = the rule they hit).
fn frames(rule: usize, dst_port: u16) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 2, 1])
                .ipv4(
                    [10, (rule / 256) as u8, (rule % 256) as u8, 9],
                    [198, 18, 0, 2],
                    64,
                )
                .tcp(40000 + i as u16, dst_port, 1, 1024)
                .syn();
            let mut f = Vec::new();
            b.write(&mut f, &[]).unwrap();
            f.resize(64, 0); // padded to the minimum frame
            f
        })
        .collect()
}

struct Worker {
    handle: WorkerHandle,
    log: Option<WorkerLogger>,
    keys: [FlowKey; BATCH],
    lens: [usize; BATCH],
    out: [Decision; BATCH],
}

impl Worker {
    /// One batch as the data path does it (without the socket I/O).
    #[inline]
    fn batch(&mut self, frames: &[Vec<u8>]) {
        for ((k, l), f) in self.keys.iter_mut().zip(self.lens.iter_mut()).zip(frames) {
            *k = palisade_packet::parse(f);
            *l = f.len();
        }
        let mut b = self.handle.batch();
        let Some(ctx) = b.context("wan0", None) else {
            return;
        };
        b.classify_frames(&self.keys, &self.lens, &ctx, &mut self.out);
        if let Some(log) = self.log.as_mut() {
            if let Some(mut bl) = log.batch(b.generation()) {
                for ((k, f), d) in self.keys.iter().zip(frames).zip(&self.out) {
                    bl.frame(ctx.port, k, f, d);
                }
            }
        }
        black_box(&self.out);
    }
}

fn open(dir: &std::path::Path, text: &str) -> Engine {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("rules.toml"), text).unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts)
        .unwrap()
        .0
}

fn worker(engine: &Engine, log: Option<&Logger>) -> Worker {
    Worker {
        handle: engine.handle(),
        log: log.map(Logger::worker),
        keys: [FlowKey::new(); BATCH],
        lens: [0; BATCH],
        out: [Decision::default(); BATCH],
    }
}

struct Setup {
    dir: std::path::PathBuf,
    engine: Engine,
    logger: Logger,
    logged: Vec<Vec<u8>>,
    other: Vec<Vec<u8>>,
}

fn setup(tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("palisade-bench-observe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = open(&dir, &rules(1000, 500));
    let config = LogConfig {
        json: Some(Target::File(dir.join("log.json"))),
        pcap: Some(dir.join("log.pcapng")),
        ..LogConfig::default()
    };
    let logger = Logger::start(config).unwrap();
    Setup {
        dir,
        engine,
        logger,
        logged: frames(500, 23),
        other: frames(501, 1501),
    }
}

fn bench_logging(c: &mut Criterion) {
    let s = setup("log");
    let mut off = worker(&s.engine, None);
    let mut on = worker(&s.engine, Some(&s.logger));
    let mut g = c.benchmark_group("log");
    g.bench_function("off", |b| b.iter(|| off.batch(&s.logged)));
    g.bench_function("on-logged-rule", |b| b.iter(|| on.batch(&s.logged)));
    g.bench_function("on-other-rule", |b| b.iter(|| on.batch(&s.other)));
    g.finish();
    let st = s.logger.stats();
    eprintln!(
        "logger: {} records written, {} suppressed, {} dropped (queue full)",
        st.json_frames,
        st.suppressed_total(),
        st.queue_full
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

fn bench_scrape(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("palisade-bench-scrape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Arc::new(open(&dir, &rules(10_000, 5000)));
    let logger = Arc::new(Logger::start(LogConfig::default()).unwrap());
    engine.set_event_sink(Some(logger.event_sink()));
    let text = palisade_observe::metrics::render(&engine, Some(&logger), &[]);
    eprintln!(
        "scrape of 10,000 rules: {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    let mut g = c.benchmark_group("scrape");
    g.sample_size(20);
    g.bench_function("render-10000-rules", |b| {
        b.iter(|| palisade_observe::metrics::render(&engine, Some(&logger), &[]))
    });
    // The whole request as a scraper sees it: connect, GET /metrics, read the 1 MB answer.
    let server = {
        let (engine, logger) = (Arc::clone(&engine), Arc::clone(&logger));
        palisade_observe::http::MetricsServer::start(
            "127.0.0.1:0",
            Arc::new(move || palisade_observe::metrics::render(&engine, Some(&logger), &[])),
        )
        .unwrap()
    };
    let addr = server.local_addr();
    g.bench_function("http-get-10000-rules", |b| {
        b.iter(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = Vec::with_capacity(1 << 21);
            s.read_to_end(&mut body).unwrap();
            assert!(body.len() > 1_000_000);
            body
        })
    });
    drop(server);
    g.finish();

    let frames = frames(5000, 23);
    let mut w = worker(&engine, None);
    let mut g = c.benchmark_group("scrape-forwarding");
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut text = rules(100, 0).into_bytes();
            while !stop.load(Ordering::Relaxed) {
                text.rotate_left(1);
                black_box(palisade_rules::Digest::of(&text));
            }
        })
    };
    g.bench_function("other-core-busy", |b| b.iter(|| w.batch(&frames)));
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (engine, logger, stop, scrapes) = (
            Arc::clone(&engine),
            Arc::clone(&logger),
            Arc::clone(&stop),
            Arc::clone(&scrapes),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(palisade_observe::metrics::render(&engine, Some(&logger), &[]));
                scrapes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    g.bench_function("during-scrapes", |b| b.iter(|| w.batch(&frames)));
    stop.store(true, Ordering::Relaxed);
    scraper.join().unwrap();
    eprintln!(
        "scrapes during the measurement: {}",
        scrapes.load(Ordering::Relaxed)
    );
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Median of `rounds` timings of `batches` batches each, alternating baseline and candidate.
fn alternate(name: &str, mut base: impl FnMut(), mut cand: impl FnMut(), rounds: usize, batches: usize) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..batches {
            f();
        }
        t.elapsed()
    };
    let (mut a, mut b): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer cache or a quieter moment.
        if round % 2 == 0 {
            a.push(time(&mut base));
            b.push(time(&mut cand));
        } else {
            b.push(time(&mut cand));
            a.push(time(&mut base));
        }
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[rounds / 2], b[rounds / 2]);
    let per = |d: Duration| d.as_nanos() as f64 / (batches * BATCH) as f64;
    println!(
        "{name}: median ns/frame baseline {:.2} ({:.2} Mframes/s), candidate {:.2} ({:.2} Mframes/s); \
         candidate frame rate = {:.1}% of baseline",
        per(ma),
        1e3 / per(ma),
        per(mb),
        1e3 / per(mb),
        100.0 * ma.as_secs_f64() / mb.as_secs_f64()
    );
}

fn alternating() {
    let s = setup("alt");
    let mut off = worker(&s.engine, None);
    let mut on = worker(&s.engine, Some(&s.logger));
    let (logged, other) = (s.logged.clone(), s.other.clone());
    alternate(
        "alternating log off vs on (logged rule, 64-byte frames)",
        || off.batch(&logged),
        || on.batch(&logged),
        21,
        20_000,
    );
    let mut off = worker(&s.engine, None);
    let mut on = worker(&s.engine, Some(&s.logger));
    alternate(
        "alternating log off vs on (rule without log)",
        || off.batch(&other),
        || on.batch(&other),
        21,
        20_000,
    );
    let _ = std::fs::remove_dir_all(&s.dir);

    // Forwarding while another thread scrapes a 10,000-rule generation back to back, against
    // the same thread spinning on work that shares nothing; the thread switches with the rounds.
    let dir = std::env::temp_dir().join(format!("palisade-bench-scrape-alt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Arc::new(open(&dir, &rules(10_000, 5000)));
    let logger = Arc::new(Logger::start(LogConfig::default()).unwrap());
    let scraping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (engine, logger, scraping, stop) = (
            Arc::clone(&engine),
            Arc::clone(&logger),
            Arc::clone(&scraping),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let mut text = rules(100, 0).into_bytes();
            while !stop.load(Ordering::Relaxed) {
                if scraping.load(Ordering::Relaxed) {
                    black_box(palisade_observe::metrics::render(&engine, Some(&logger), &[]));
                } else {
                    text.rotate_left(1);
                    black_box(palisade_rules::Digest::of(&text));
                }
            }
        })
    };
    let frames = frames(5000, 23);
    let w = std::cell::RefCell::new(worker(&engine, None));
    alternate(
        "alternating forwarding with the other core spinning vs scraping 10,000 rules back to back",
        || {
            scraping.store(false, Ordering::Relaxed);
            w.borrow_mut().batch(&frames)
        },
        || {
            scraping.store(true, Ordering::Relaxed);
            w.borrow_mut().batch(&frames)
        },
        21,
        20_000,
    );
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_logging, bench_scrape);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary with `--bench` absent: only criterion's quick check then.
    if std::env::args().any(|a| a == "--bench") {
        alternating();
    }
}
