//! The flow table: established-flow lookups with a million flows, new flows
//! per second, bytes per flow; and the cost of a stateful decision against
//! a stateless one of the same frames.
//!
//! * `flows_lookup/established_1m`: 1,048,576 flows in a table of
//!   `max = 1048576` (the TCP ones past their handshake); batches of 64
//!   frames of established flows (TCP ACKs and UDP replies, in a random
//!   order so every batch touches cold lines),
//!   through `FlowTable::lookup_batch`. Median / 64 is the time per frame.
//!   The keys stream in from a 64 MB array, a cache miss a frame of their own
//!   beside the table's. `..._keys_in_cache`: the same lookups with the keys
//!   in cache, closer to a data path, which looks up the batch it has just
//!   parsed: 64 batches of keys are copied (untimed) into a 256 KB pool from
//!   the same random order, then looked up (timed together: the clock is
//!   read at the start and end of each run of 64 batches). The pool is in L2,
//!   not L1 as a data path's one batch of keys would be. With a million flows
//!   the table's lines are as cold as in `established_1m`; with 16K the
//!   pool's writes push some of the table out of cache, so the two 16K
//!   figures are not quite like for like.
//! * `flows_floor/random_lines_128m`: 64 independent loads of random lines
//!   of 128 MB, the memory floor of this machine in the same run: a lookup
//!   in a big table costs at least one such miss. `..._huge_pages`: the same
//!   memory on 2 MiB pages, as the flow table asks for.
//! * `flows_create/new_flows`: lookups and opens of new flows (64 per batch)
//!   into a table of 4 M flows, replaced (untimed) when full.
//! * `flows_policy/*`: the same 64 established frames of `rules/office.toml`
//!   (permitted, from the LAN) classified statelessly (`Policy::evaluate_batch`,
//!   the baseline) and statefully (lookup, the same evaluation in the states
//!   found): the policy alone, without the engine's counting.
//! * `flows_engine/*`: the data path's own call, `Batch::classify_tracked`
//!   (counters, re-checks, flows opened) on an engine running
//!   `rules/office.toml` with `[flows] max = 1048576` and 1,048,576 live
//!   flows (TCP and UDP to port 443, opened and answered through the engine;
//!   its clock stands still, so none expires while measured),
//!   batches of 64 frames of established flows from the LAN side in a random
//!   order: `stateful_*`; and the same frames through an engine running
//!   the same rules without `keep_state` and `state` (so stateless):
//!   `stateless_*`, the baseline. Their ratio is what tracking flows costs
//!   an established frame.
//!
//! Run: `cargo bench -p palisade-benches --bench flows`. Times are the bench
//! thread's CPU time (the machine is shared); the bytes per flow are printed
//! once at the start.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use palisade_benches::ThreadCpuTime;
use palisade_engine::flow::{
    Clock, FlowTable, ManualClock, Moment, Origin, Seen, TcpPhase, Tick, Timeouts, LOOKUP_BATCH,
};
use palisade_engine::policy::{Context, Decision, Policy, Route, Verdict};
use palisade_engine::{Engine, EngineOptions};
use palisade_packet::{FlowKey, FlowState};

const MILLION: u32 = 1 << 20;
/// Batches of keys copied into cache and then looked up, timed together.
const POOL_BATCHES: usize = 64;

/// A deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `items` in a random order (Fisher-Yates with `seed`), so every batch touches cold lines.
fn shuffled(mut items: Vec<u32>, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed);
    for i in (1..items.len()).rev() {
        items.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    items
}

/// The start of each next batch of `LOOKUP_BATCH` in `len` keys, going round.
fn batch_starts(len: usize) -> impl FnMut() -> usize {
    let mut at = 0;
    move || {
        at = if at + 2 * LOOKUP_BATCH > len {
            0
        } else {
            at + LOOKUP_BATCH
        };
        at
    }
}

/// Flow `n`'s opening frame: a LAN host (10.0.10.0/24, what `rules/office.toml`
/// lets in on lan1) to a server's port 443, TCP SYN (2 in 3) or UDP (QUIC);
/// distinct for every `n` below 16 million (host and source port say which).
fn opener(n: u32) -> FlowKey {
    let host = [10, 0, 10, 1 + (n % 250) as u8];
    let server = [198, 51, 100 + (n >> 20 & 1) as u8, 1 + (n % 7) as u8];
    let k = FlowKey::new()
        .with_ipv4(host, server)
        .with_ports(1024 + (n / 250) as u16, 443);
    match n % 3 {
        0 => k.with_proto(17),
        _ => k.with_proto(6).with_tcp_flags(0x002),
    }
}

/// A later frame of flow `n`: the reply for odd `n`, else the opener's next ACK.
fn established(n: u32) -> FlowKey {
    let o = opener(n);
    let mut k = o;
    if n % 2 == 1 {
        k.src_ip = o.dst_ip;
        k.dst_ip = o.src_ip;
        k.src_port = o.dst_port;
        k.dst_port = o.src_port;
    }
    if k.l4_proto == 6 {
        k = k.with_tcp_flags(0x010);
    }
    k
}

fn filled_table(flows: u32, timeouts: &Timeouts) -> FlowTable {
    let table = FlowTable::new(flows);
    let m = Moment::new(Tick(0), 1, timeouts);
    let mut seen = [Seen::default(); LOOKUP_BATCH];
    let keys: Vec<FlowKey> = (0..flows).map(opener).collect();
    for chunk in keys.chunks(LOOKUP_BATCH) {
        table.lookup_batch(chunk, &[], &m, &mut seen);
        for (s, k) in seen.iter().zip(chunk) {
            table
                .create(s, k, &Origin::default(), &m)
                .expect("room for every flow");
        }
    }
    assert_eq!(table.stats().active, flows as u64);
    // Established flows: the TCP ones complete their handshake (the
    // responder's SYN-ACK, the opener's ACK), as live connections have.
    let reversed = |k: FlowKey| {
        let mut r = k;
        (r.src_ip, r.dst_ip, r.src_port, r.dst_port) = (k.dst_ip, k.src_ip, k.dst_port, k.src_port);
        r
    };
    let tcp: Vec<FlowKey> = keys.iter().filter(|k| k.l4_proto == 6).copied().collect();
    for flags_and_way in [(0x012, true), (0x010, false)] {
        let frames: Vec<FlowKey> = tcp
            .iter()
            .map(|&k| match flags_and_way {
                (flags, true) => reversed(k).with_tcp_flags(flags),
                (flags, false) => k.with_tcp_flags(flags),
            })
            .collect();
        for chunk in frames.chunks(LOOKUP_BATCH) {
            table.lookup_batch(chunk, &[], &m, &mut seen);
            assert!(seen[..chunk.len()]
                .iter()
                .all(|s| s.state == FlowState::Established));
        }
    }
    let phases = table.entries(Tick(0));
    let established = phases.iter().filter(|f| f.phase == TcpPhase::Established).count();
    assert_eq!(established, tcp.len(), "every TCP flow established");
    table
}

fn lookup(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("flows_lookup");
    g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    // 16 K flows fit the caches: the lookup's own work, against the 1 M flows' memory latency.
    for (name, flows) in [("established_16k", 1 << 14), ("established_1m", MILLION)] {
        let timeouts = Timeouts::default();
        let table = filled_table(flows, &timeouts);
        println!(
            "flow table: max {flows}, {} bytes, {:.1} bytes per flow",
            table.memory_bytes(),
            table.memory_bytes() as f64 / flows as f64
        );
        let order = shuffled((0..flows).collect(), 0x9e37_79b9_7f4a_7c15);
        let keys: Vec<FlowKey> = order.iter().map(|&n| established(n)).collect();
        let m = Moment::new(Tick(1), 1, &timeouts);
        let mut seen = [Seen::default(); LOOKUP_BATCH];
        table.lookup_batch(&keys[..LOOKUP_BATCH], &[], &m, &mut seen);
        assert!(seen.iter().all(|s| s.state == FlowState::Established));
        let mut next = batch_starts(keys.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                let i = next();
                table.lookup_batch(&keys[i..i + LOOKUP_BATCH], &[], &m, &mut seen);
                black_box(&seen);
            })
        });
        // The keys of the next 64 batches, copied where the lookups find them in cache.
        let mut at = 0usize;
        let mut pool = vec![FlowKey::new(); POOL_BATCHES * LOOKUP_BATCH];
        g.bench_function(format!("{name}_keys_in_cache"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let len = pool.len();
                    if at + len > keys.len() {
                        at = 0;
                    }
                    pool.copy_from_slice(&keys[at..at + len]);
                    at += len;
                    let run = left.min(POOL_BATCHES as u64) as usize;
                    let t = ThreadCpuTime.start();
                    for batch in pool.chunks(LOOKUP_BATCH).take(run) {
                        table.lookup_batch(batch, &[], &m, &mut seen);
                        black_box(&seen);
                    }
                    spent += ThreadCpuTime.end(t);
                    left -= run as u64;
                }
                spent
            })
        });
    }
    g.finish();
}

/// The machine's floor: 64 independent loads from random lines of a 128 MB
/// array (what one cache miss costs when 64 are in flight together).
fn floor(c: &mut Criterion<ThreadCpuTime>) {
    let lines = (128 << 20) / 64;
    let memory: Vec<u64> = (0..lines * 8).map(|i| i as u64).collect();
    let mut rng = Rng(3);
    let picks: Vec<usize> = (0..1 << 22)
        .map(|_| (rng.next() % lines as u64) as usize * 8)
        .collect();
    let mut g = c.benchmark_group("flows_floor");
    g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    let mut at = 0;
    let mut sixty_four_lines = |memory: &[u64]| {
        if at + LOOKUP_BATCH > picks.len() {
            at = 0;
        }
        let mut sink = 0u64;
        for &i in &picks[at..at + LOOKUP_BATCH] {
            sink ^= memory[i];
        }
        at += LOOKUP_BATCH;
        sink
    };
    g.bench_function("random_lines_128m", |b| {
        b.iter(|| black_box(sixty_four_lines(&memory)))
    });
    // The same with 2 MiB pages, as the flow table has (no page walk per line).
    let huge: Vec<u64> = memory.clone();
    drop(memory);
    let collapsed = palisade_engine::flow::advise_huge_pages(&huge);
    println!(
        "flows_floor: huge pages {}",
        if collapsed { "granted" } else { "refused" }
    );
    g.bench_function("random_lines_128m_huge_pages", |b| {
        b.iter(|| black_box(sixty_four_lines(&huge)))
    });
    g.finish();
}

fn create(c: &mut Criterion<ThreadCpuTime>) {
    let timeouts = Timeouts::default();
    const TABLE: u32 = 4 << 20;
    let keys: Vec<FlowKey> = (0..TABLE).map(opener).collect();
    let mut g = c.benchmark_group("flows_create");
    g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    g.bench_function("new_flows", |b| {
        let mut table = FlowTable::new(TABLE);
        let mut at = 0usize;
        let mut seen = [Seen::default(); LOOKUP_BATCH];
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if at + LOOKUP_BATCH > keys.len() {
                    table = FlowTable::new(TABLE); // untimed: a fresh table
                    at = 0;
                }
                // As many batches as the table has room for, timed together
                // (one read of the clock a run, not one a batch).
                let run = left.min(((keys.len() - at) / LOOKUP_BATCH) as u64);
                let m = Moment::new(Tick(0), 1, &timeouts);
                let t = ThreadCpuTime.start();
                for _ in 0..run {
                    let chunk = &keys[at..at + LOOKUP_BATCH];
                    table.lookup_batch(chunk, &[], &m, &mut seen);
                    for (s, k) in seen.iter().zip(chunk) {
                        let _ = black_box(table.create(s, k, &Origin::default(), &m));
                    }
                    at += LOOKUP_BATCH;
                }
                spent += ThreadCpuTime.end(t);
                left -= run;
                // Every frame was a new flow, and opened.
                assert_eq!(table.stats().active, at as u64, "a frame did not open a flow");
            }
            spent
        })
    });
    g.finish();
}

/// `rules/office.toml`, the same established frames, stateless and stateful.
fn policy(c: &mut Criterion<ThreadCpuTime>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/office.toml");
    let loaded = palisade_rules::load(&path).expect("rules/office.toml");
    let policy = Policy::compile(&loaded.ruleset).expect("compile");
    let ctx = Context {
        port: policy.port("lan1").unwrap(),
        route: Some(Route {
            from: policy.interface("lan").unwrap(),
            to: policy.interface("wan").unwrap(),
        }),
    };
    let timeouts = Timeouts::from(&loaded.ruleset.flows.timeouts);
    let table = filled_table(MILLION, &timeouts);
    // The opener's side of every flow (the context is lan1, routed lan -> wan), in a random order.
    let order = shuffled((0..MILLION / 2).map(|n| 2 * n).collect(), 7);
    let keys: Vec<FlowKey> = order.iter().map(|&n| established(n)).collect();
    let m = Moment::new(Tick(1), 1, &timeouts);
    let mut seen = [Seen::default(); LOOKUP_BATCH];
    table.lookup_batch(&keys[..LOOKUP_BATCH], &[], &m, &mut seen);
    assert!(seen.iter().all(|s| s.state == FlowState::Established));
    let mut states = [FlowState::Untracked; LOOKUP_BATCH];
    let mut out = [Decision::default(); LOOKUP_BATCH];
    // Every frame is permitted (through every stage of its path), statelessly
    // and as established, alike.
    let mut stateless_out = vec![Decision::default(); keys.len()];
    let mut established_out = vec![Decision::default(); keys.len()];
    policy.evaluate_batch(&keys, &ctx, &mut stateless_out);
    let established = vec![FlowState::Established; keys.len()];
    policy.evaluate_batch_in_states(&keys, &established, &ctx, &mut established_out, |_, _| {});
    assert!(
        stateless_out.iter().all(|d| d.verdict == Verdict::Permit),
        "{:?}",
        stateless_out[0]
    );
    assert!(stateless_out == established_out, "decided alike");
    let mut g = c.benchmark_group("flows_policy");
    g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    let mut next = batch_starts(keys.len());
    // Alternating, so both see the same machine state.
    for run in 1..=2 {
        g.bench_function(format!("stateless_evaluate_batch_run{run}"), |b| {
            b.iter(|| {
                let i = next();
                policy.evaluate_batch(black_box(&keys[i..i + LOOKUP_BATCH]), &ctx, &mut out);
                black_box(&out);
            })
        });
        g.bench_function(format!("stateful_lookup_and_evaluate_run{run}"), |b| {
            b.iter(|| {
                let i = next();
                let batch = black_box(&keys[i..i + LOOKUP_BATCH]);
                table.lookup_batch(batch, &[], &m, &mut seen);
                for (s, o) in states.iter_mut().zip(&seen) {
                    *s = o.state;
                }
                policy.evaluate_batch_in_states(batch, &states, &ctx, &mut out, |_, _| {});
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// An engine running `text` (durable state off: the bench measures frames),
/// its flows timed by `clock` (a clock that stands still: no flow expires
/// while the bench runs, however long it takes).
fn engine_on(dir: &Path, text: &str, clock: &Arc<ManualClock>) -> Engine {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("rules.toml"), text).unwrap();
    let opts = EngineOptions {
        durable: false,
        clock: Some(Arc::clone(clock) as Arc<dyn Clock>),
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).expect("engine");
    assert!(engine.status().generation > 0, "rules not loaded: {boot:?}");
    engine
}

/// `rules/office.toml` through the engine, stateful and stateless (see the module docs).
fn engine(c: &mut Criterion<ThreadCpuTime>) {
    let office = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/office.toml"))
        .expect("rules/office.toml");
    assert!(
        office.contains("max = 65536"),
        "office.toml's [flows] max changed: update this bench"
    );
    let stateful_text = office.replace("max = 65536", &format!("max = {MILLION}"));
    // Without state, and without the [[expect]] vectors (last in the file) that check it.
    let before_expects = &stateful_text[..stateful_text.find("[[expect]]").unwrap_or(stateful_text.len())];
    let stateless_text: String = before_expects
        .lines()
        .filter(|l| !l.trim_start().starts_with("keep_state") && !l.trim_start().starts_with("state"))
        .map(|l| format!("{l}\n"))
        .collect();
    let base = std::env::temp_dir().join(format!("palisade-bench-flows-{}", std::process::id()));
    let clock = Arc::new(ManualClock::new());
    let stateful = engine_on(&base.join("stateful"), &stateful_text, &clock);
    let stateless = engine_on(&base.join("stateless"), &stateless_text, &clock);
    assert!(stateful.status().flows.is_some(), "the office rules track flows");
    assert!(
        stateless.status().flows.is_none(),
        "the rules made stateless track none"
    );
    let (mut sf, mut sl) = (stateful.handle(), stateless.handle());
    let lan = sf.batch().context("lan1", Some(("lan", "wan"))).unwrap();
    let wan = sf.batch().context("wan0", Some(("wan", "lan"))).unwrap();
    let lan_stateless = sl.batch().context("lan1", Some(("lan", "wan"))).unwrap();
    let reversed = |k: FlowKey| {
        let mut r = k;
        (r.src_ip, r.dst_ip, r.src_port, r.dst_port) = (k.dst_ip, k.src_ip, k.dst_port, k.src_port);
        r
    };
    // Every frame of `keys` through `h` in `ctx`: their decisions and states.
    let decide = |h: &mut palisade_engine::WorkerHandle, keys: &[FlowKey], ctx: &Context| {
        let mut decisions = vec![Decision::default(); keys.len()];
        let mut states = vec![FlowState::Untracked; keys.len()];
        for ((k, d), s) in keys
            .chunks(LOOKUP_BATCH)
            .zip(decisions.chunks_mut(LOOKUP_BATCH))
            .zip(states.chunks_mut(LOOKUP_BATCH))
        {
            h.batch().classify_tracked_states(k, &[], ctx, d, s);
        }
        (decisions, states)
    };
    let all = |ds: &[Decision], ss: &[FlowState], state: FlowState| {
        ds.iter().all(|d| d.verdict == Verdict::Permit) && ss.iter().all(|&s| s == state)
    };
    // Opened from the LAN, answered from the WAN (TCP SYN-ACK, UDP reply),
    // acknowledged (TCP): a million live flows.
    let openers: Vec<FlowKey> = (0..MILLION).map(opener).collect();
    let (d, s) = decide(&mut sf, &openers, &lan);
    assert!(all(&d, &s, FlowState::New), "every opener a new frame, permitted");
    let replies: Vec<FlowKey> = openers
        .iter()
        .map(|&k| match k.l4_proto {
            6 => reversed(k).with_tcp_flags(0x012),
            _ => reversed(k),
        })
        .collect();
    let (d, s) = decide(&mut sf, &replies, &wan);
    assert!(
        all(&d, &s, FlowState::Established),
        "every reply established, permitted"
    );
    let acks: Vec<FlowKey> = openers
        .iter()
        .filter(|k| k.l4_proto == 6)
        .map(|&k| k.with_tcp_flags(0x010))
        .collect();
    let (d, s) = decide(&mut sf, &acks, &lan);
    assert!(all(&d, &s, FlowState::Established));
    let flows_then = stateful.status().flows.expect("flows");
    assert_eq!(
        (
            flows_then.active,
            flows_then.created,
            flows_then.expired,
            flows_then.cut
        ),
        (MILLION as u64, MILLION as u64, 0, 0),
        "every flow open in the engine"
    );
    // Later frames from the LAN side, in a random order: every one established
    // and permitted in the stateful engine, decided alike (permitted, by the
    // same stage, ACL and rule) by the stateless one.
    let order = shuffled((0..MILLION).collect(), 11);
    let keys: Vec<FlowKey> = order
        .iter()
        .map(|&n| match opener(n) {
            k if k.l4_proto == 6 => k.with_tcp_flags(0x010),
            k => k,
        })
        .collect();
    let (stateful_d, s) = decide(&mut sf, &keys, &lan);
    assert!(all(&stateful_d, &s, FlowState::Established));
    let (stateless_d, _) = decide(&mut sl, &keys, &lan_stateless);
    assert!(stateful_d == stateless_d, "the same frames decided alike");
    let mut out = [Decision::default(); LOOKUP_BATCH];
    let mut g = c.benchmark_group("flows_engine");
    g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    let mut next = batch_starts(keys.len());
    for round in 1..=2 {
        g.bench_function(format!("stateless_run{round}"), |b| {
            b.iter(|| {
                let i = next();
                sl.batch().classify_tracked(
                    black_box(&keys[i..i + LOOKUP_BATCH]),
                    &[],
                    &lan_stateless,
                    &mut out,
                );
                black_box(&out);
            })
        });
        g.bench_function(format!("stateful_run{round}"), |b| {
            b.iter(|| {
                let i = next();
                sf.batch()
                    .classify_tracked(black_box(&keys[i..i + LOOKUP_BATCH]), &[], &lan, &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
    // No flow came or went while it was measured: every measured frame was established.
    let flows_now = stateful.status().flows.expect("flows");
    assert_eq!(
        (
            flows_now.active,
            flows_now.created,
            flows_now.expired,
            flows_now.cut,
            flows_now.invalid_frames
        ),
        (MILLION as u64, MILLION as u64, 0, 0, 0)
    );
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    targets = floor, lookup, create, policy, engine
}
criterion_main!(benches);
