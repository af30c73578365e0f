//! `palisade bench --rules RULES --port P [--route FROM:TO] (--pcap CAPTURE | --generate N)`:
//! the data path end to end.
//!
//! The rule file goes through the engine as `palisade run` loads it (parse,
//! validate, compile, self-test, publish; a scratch state directory, not
//! kept). The capture is read into memory first (or made from the rules:
//! for every rule in turn a frame at a corner of it, a hit on every rule
//! when there are at least as many frames as rules, and every fourth frame
//! a key at or just outside a rule's edge, often a miss). Then
//! each of `--threads N` threads (each on its own core, with its own worker
//! handle, as `palisade run`'s workers) takes the frames in batches of
//! [`BATCH`] as the data path does: parses each frame into a flow key, then
//! decides the batch with one pinned snapshot through every stage, counters
//! included. It reports frames per second (all threads, and per thread:
//! per core), and the time per frame of parsing and of the policy.
//!
//! The policy's share is split by stage afterwards: every key is traced once
//! to find the stages it reaches, and each stage's classifier is then timed
//! on the keys that reach it (one key at a time, as the policy calls it).

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use etherparse::{IpNumber, PacketBuilder, VlanId};
use palisade_classify::classbench::synthesize_trace;
use palisade_classify::{corner_keys, RuleMatch};
use palisade_engine::policy::{Context, Decision, Policy, Stage, Verdict};
use palisade_engine::{Engine, EngineOptions};
use palisade_packet::FlowKey;

use super::{cpu_model, pin_to_core, thread_cpu_time, Args, Failure};
use crate::bridge::worker::BATCH;

/// The frames of a capture, back to back in one buffer.
struct Frames {
    bytes: Vec<u8>,
    /// Each frame's start and end in `bytes`.
    spans: Vec<(usize, usize)>,
}

impl Frames {
    fn push(&mut self, frame: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(frame);
        self.spans.push((start, self.bytes.len()));
    }

    fn get(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.bytes[a..b]
    }

    fn len(&self) -> usize {
        self.spans.len()
    }
}

/// A frame carrying `key` (Ethernet II, its VLAN tag, IPv4 or IPv6, TCP, UDP,
/// ICMP or ICMPv6, or another protocol with an empty payload); empty when
/// the protocol is the number of an IPv6 extension header.
fn frame_of(key: &FlowKey) -> Vec<u8> {
    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let tag = (key.vlan_count > 0)
        .then(|| VlanId::try_new(key.outer_vlan & 0x0fff).ok())
        .flatten();
    let (sp, dp) = key.ports().unwrap_or((1024, 80));
    let (t, c) = key.icmp().unwrap_or((8, 0));
    let mut out = Vec::new();
    macro_rules! l4 {
        ($ip:expr, $icmp:ident) => {{
            let ip = $ip;
            let written = match key.l4_proto {
                6 => {
                    let mut tcp = ip.tcp(sp, dp, 1, 64240);
                    let f = key.tcp_flags;
                    if f & 0x02 != 0 {
                        tcp = tcp.syn();
                    }
                    if f & 0x10 != 0 {
                        tcp = tcp.ack(1);
                    }
                    if f & 0x01 != 0 {
                        tcp = tcp.fin();
                    }
                    if f & 0x04 != 0 {
                        tcp = tcp.rst();
                    }
                    tcp.write(&mut out, &[])
                }
                17 => ip.udp(sp, dp).write(&mut out, &[]),
                1 | 58 => ip.$icmp(t, c, [0; 4]).write(&mut out, &[]),
                // An IPv6 extension header's number as the payload: no such frame.
                p if IpNumber(p).is_ipv6_ext_header_value() => return Vec::new(),
                p => ip.write(&mut out, IpNumber(p), &[]),
            };
            written.is_ok()
        }};
    }
    let ok = match (key.ip_family(), tag) {
        (Some(6), Some(v)) => l4!(
            eth.single_vlan(v)
                .ipv6(key.src_ip.to_be_bytes(), key.dst_ip.to_be_bytes(), 64),
            icmpv6_raw
        ),
        (Some(6), None) => l4!(
            eth.ipv6(key.src_ip.to_be_bytes(), key.dst_ip.to_be_bytes(), 64),
            icmpv6_raw
        ),
        (_, Some(v)) => l4!(
            eth.single_vlan(v).ipv4(
                (key.src_ip as u32).to_be_bytes(),
                (key.dst_ip as u32).to_be_bytes(),
                64
            ),
            icmpv4_raw
        ),
        (_, None) => l4!(
            eth.ipv4(
                (key.src_ip as u32).to_be_bytes(),
                (key.dst_ip as u32).to_be_bytes(),
                64
            ),
            icmpv4_raw
        ),
    };
    if !ok {
        out.clear();
    }
    out
}

/// `n` frames from the rules of every ACL (see the module docs).
fn generate(acls: &[Vec<RuleMatch>], n: usize, seed: u64) -> Frames {
    let rules: Vec<&RuleMatch> = acls.iter().flatten().collect();
    let all: Vec<RuleMatch> = rules.iter().map(|r| (*r).clone()).collect();
    let edges = corner_keys(&all, n / 4 + 1);
    let mut frames = Frames {
        bytes: Vec::new(),
        spans: Vec::new(),
    };
    let mut e = 0;
    let mut i = 0usize;
    while frames.len() < n && !rules.is_empty() {
        let key = if i % 4 == 3 && e < edges.len() {
            e += 1;
            edges[e - 1]
        } else {
            let r = rules[i % rules.len()];
            synthesize_trace(std::slice::from_ref(r), 1, seed ^ i as u64)[0]
        };
        i += 1;
        let f = frame_of(&key);
        if !f.is_empty() {
            frames.push(&f);
        }
    }
    frames
}

/// What one thread measured.
struct ThreadRun {
    frames: u64,
    elapsed: Duration,
    parse: Duration,
    policy: Duration,
    cpu: Option<Duration>,
}

/// Runs the end-to-end bench.
pub(super) fn bench(args: &Args) -> Result<ExitCode, Failure> {
    let rules_path = args.rules.as_deref().unwrap_or(Path::new(""));
    let port = args
        .port
        .as_deref()
        .ok_or_else(|| Failure(String::from("--rules needs --port P"), 2))?;
    let route = match args.route.as_deref() {
        None => None,
        Some(r) => Some(
            r.split_once(':')
                .ok_or_else(|| Failure(format!("--route `{r}` is not FROM:TO"), 2))?,
        ),
    };
    if args.threads == 0 {
        return Err(Failure(String::from("--threads must be at least 1"), 2));
    }
    let state = std::env::temp_dir().join(format!("palisade-bench-{}", std::process::id()));
    let options = EngineOptions {
        durable: false,
        keep_generations: 1,
        memory_cap: args.memory_cap_mib.saturating_mul(1 << 20),
        ..EngineOptions::default()
    };
    let t0 = Instant::now();
    let opened = Engine::open(rules_path, &state, options);
    let _ = std::fs::remove_dir_all(&state);
    let (engine, _report) = opened.map_err(|e| Failure(format!("{}: {e}", state.display()), 2))?;
    let load = t0.elapsed();
    let mut handle = engine.handle();
    let (ctx, acls) = {
        let batch = handle.batch();
        let gen = batch.generation();
        let (Some(_), Some(rs)) = (gen.policy(), gen.ruleset()) else {
            let why = engine
                .status()
                .last_reload
                .map(|r| r.errors.join("; "))
                .unwrap_or_default();
            return Err(Failure(format!("{}: not loaded: {why}", rules_path.display()), 1));
        };
        let ctx = batch.context(port, route).ok_or_else(|| {
            Failure(
                format!(
                    "{}: no port `{port}` (or route interfaces) in the rules",
                    rules_path.display()
                ),
                2,
            )
        })?;
        let acls: Vec<Vec<RuleMatch>> = rs
            .acls
            .iter()
            .map(|a| a.rules.iter().map(|r| r.matcher.clone()).collect())
            .collect();
        (ctx, acls)
    };
    let frames = match (&args.pcap, args.generate) {
        (Some(path), _) => {
            let mut frames = Frames {
                bytes: Vec::new(),
                spans: Vec::new(),
            };
            crate::capture::for_each_frame(path, |f| frames.push(f.data))
                .map_err(|e| Failure(e.to_string(), 2))?;
            frames
        }
        (None, Some(n)) => generate(&acls, n, args.seed),
        (None, None) => {
            return Err(Failure(
                String::from("--rules needs --pcap CAPTURE or --generate N"),
                2,
            ))
        }
    };
    if frames.len() == 0 {
        return Err(Failure(String::from("no frames to replay"), 2));
    }
    let frames = Arc::new(frames);
    let min_time = Duration::from_millis(args.min_time_ms);
    let barrier = Arc::new(Barrier::new(args.threads));
    let runs: Vec<ThreadRun> = (0..args.threads)
        .map(|i| {
            let (frames, barrier) = (Arc::clone(&frames), Arc::clone(&barrier));
            let mut handle = engine.handle();
            std::thread::spawn(move || {
                pin_to_core(i);
                let mut keys = [FlowKey::new(); BATCH];
                let mut lens = [0usize; BATCH];
                let mut out = [Decision::default(); BATCH];
                let n = frames.len();
                // One warm-up pass.
                for start in (0..n).step_by(BATCH) {
                    let m = BATCH.min(n - start);
                    for (j, (k, l)) in keys.iter_mut().zip(lens.iter_mut()).enumerate().take(m) {
                        let f = frames.get(start + j);
                        (*k, *l) = (palisade_packet::parse(f), f.len());
                    }
                    handle
                        .batch()
                        .classify_frames(&keys[..m], &lens[..m], &ctx, &mut out);
                }
                barrier.wait();
                let (mut parse, mut decide, mut count) = (Duration::ZERO, Duration::ZERO, 0u64);
                let start_all = Instant::now();
                let cpu_start = thread_cpu_time();
                while start_all.elapsed() < min_time || count < n as u64 {
                    for start in (0..n).step_by(BATCH) {
                        let m = BATCH.min(n - start);
                        let t0 = Instant::now();
                        for (j, (k, l)) in keys.iter_mut().zip(lens.iter_mut()).enumerate().take(m) {
                            let f = std::hint::black_box(frames.get(start + j));
                            (*k, *l) = (palisade_packet::parse(f), f.len());
                        }
                        let t1 = Instant::now();
                        // As the data path's filter decides a batch: one snapshot, counters and bytes.
                        handle
                            .batch()
                            .classify_frames(&keys[..m], &lens[..m], &ctx, &mut out);
                        std::hint::black_box(&out);
                        let t2 = Instant::now();
                        parse += t1 - t0;
                        decide += t2 - t1;
                        count += m as u64;
                    }
                }
                let cpu = match (cpu_start, thread_cpu_time()) {
                    (Some(a), Some(b)) if b > a => Some(b - a),
                    _ => None,
                };
                ThreadRun {
                    frames: count,
                    elapsed: start_all.elapsed(),
                    parse,
                    policy: decide,
                    cpu,
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("a bench thread panicked"))
        .collect();
    // The stages: each key traced once, then each stage's classifier timed on the keys that reach it.
    let keys: Vec<FlowKey> = (0..frames.len())
        .map(|i| palisade_packet::parse(frames.get(i)))
        .collect();
    let (permit, stages) = {
        let batch = handle.batch();
        match batch.generation().policy() {
            Some(policy) => stage_split(policy, &ctx, &keys),
            None => (0, Vec::new()),
        }
    };
    let per_thread: Vec<f64> = runs
        .iter()
        .map(|r| r.frames as f64 / r.elapsed.as_secs_f64().max(1e-9) / 1e6)
        .collect();
    let total: f64 = per_thread.iter().sum();
    let frames_all: u64 = runs.iter().map(|r| r.frames).sum();
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / frames_all.max(1) as f64;
    let parse_ns = ns(runs.iter().map(|r| r.parse).sum());
    let policy_ns = ns(runs.iter().map(|r| r.policy).sum());
    let cpu_ns = runs
        .iter()
        .map(|r| r.cpu)
        .sum::<Option<Duration>>()
        .map(|d| d.as_secs_f64() * 1e9 / frames_all.max(1) as f64);
    let avx512 =
        palisade_classify::CompiledClassifier::build(&[], &palisade_classify::BuildConfig::default())
            .map(|c| c.uses_vector_leaves())
            .unwrap_or(false);
    let cpu = cpu_model();
    println!(
        "rules: {} (loaded in {:.1} ms)",
        rules_path.display(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "frames: {} ({}), {} permitted",
        frames.len(),
        args.pcap.as_ref().map_or_else(
            || String::from("generated from the rules"),
            |p| p.display().to_string()
        ),
        permit
    );
    println!(
        "cpu: {cpu} (AVX-512 lookup: {})",
        if avx512 { "yes" } else { "no" }
    );
    println!("threads: {} (batches of {BATCH} frames)", args.threads);
    println!("mfps: {total:.2} (million frames per second, all threads)");
    let list: Vec<String> = per_thread.iter().map(|m| format!("{m:.2}")).collect();
    println!("per_thread_mfps: {}", list.join(" "));
    println!(
        "ns_per_frame: parse {parse_ns:.1}, policy {policy_ns:.1} (every stage and counter), total {:.1}",
        parse_ns + policy_ns
    );
    if let Some(c) = cpu_ns {
        println!("cpu_ns_per_frame: {c:.1} (thread CPU time)");
    }
    for s in &stages {
        println!(
            "stage {} (acl {}): {} of {} frames, {:.1} ns each, {:.1} ns per frame",
            s.stage,
            s.acl,
            s.frames,
            keys.len(),
            s.ns_each,
            s.ns_each * s.frames as f64 / keys.len().max(1) as f64
        );
    }
    if args.json {
        let v = serde_json::json!({
            "rules": rules_path.display().to_string(),
            "frames": frames.len(),
            "permitted": permit,
            "threads": args.threads,
            "batch": BATCH,
            "mfps": total,
            "per_thread_mfps": per_thread,
            "parse_ns_per_frame": parse_ns,
            "policy_ns_per_frame": policy_ns,
            "cpu_ns_per_frame": cpu_ns,
            "cpu_model": cpu,
            "avx512": avx512,
            "stages": stages.iter().map(|s| serde_json::json!({
                "stage": s.stage, "acl": s.acl, "frames": s.frames, "ns_each": s.ns_each,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One stage's share of the policy's time.
struct StageTime {
    stage: &'static str,
    acl: String,
    frames: usize,
    ns_each: f64,
}

/// Permitted frames, and the time of each stage (rescue first) on the keys that reach it.
fn stage_split(policy: &Policy, ctx: &Context, keys: &[FlowKey]) -> (usize, Vec<StageTime>) {
    let mut reach: Vec<(Stage, u32, Vec<FlowKey>)> = Vec::new();
    let mut permit = 0;
    for k in keys {
        let d = policy.evaluate_traced(k, ctx, |ev| {
            match reach.iter_mut().find(|(s, a, _)| *s == ev.stage && *a == ev.acl) {
                Some((_, _, list)) => list.push(*k),
                None => reach.push((ev.stage, ev.acl, vec![*k])),
            }
        });
        permit += (d.verdict == Verdict::Permit) as usize;
    }
    let time = |f: &dyn Fn(&FlowKey) -> u32, list: &[FlowKey]| -> f64 {
        let t = Instant::now();
        let mut rounds = 0;
        while rounds < 3 || t.elapsed() < Duration::from_millis(100) {
            for k in list {
                std::hint::black_box(f(std::hint::black_box(k)));
            }
            rounds += 1;
        }
        t.elapsed().as_secs_f64() * 1e9 / (rounds * list.len().max(1)) as f64
    };
    let mut out = vec![StageTime {
        stage: "rescue",
        acl: String::from("-"),
        frames: keys.len(),
        ns_each: time(&|k| policy.rescue_first_match(k), keys),
    }];
    for (stage, acl, list) in &reach {
        out.push(StageTime {
            stage: stage.as_str(),
            acl: policy.acl_name(Some(*acl)).unwrap_or("?").to_string(),
            frames: list.len(),
            ns_each: time(&|k| policy.acl_first_match(*acl, k).unwrap_or(0), list),
        });
    }
    (permit, out)
}
