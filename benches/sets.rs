//! Named sets: building a million-prefix set and looking it up for batches.
//!
//! The set is `prefixes::bgp_like(1_000_000, 5, ..)`: a routing table's
//! length mix, 5% IPv6. Groups:
//!
//! * `set_build_1m`: `AddrList::from_prefixes` (sort, dedup) and
//!   `CompiledSet::addresses` (merge, trie, index) from the same prefixes;
//!   the memory of the compiled set is printed once at start.
//! * `set_lookup`: `Membership::fill` of one source-address test over 4096
//!   keys in batches of 64 (95% IPv4; half of the keys inside an element,
//!   half random), against the same fill on a 100-prefix set (cache
//!   resident, the same-run baseline) and a plain copy of the keys.
//!   Criterion's throughput line is lookups per second.
//! * `set_change_1m`: `Engine::change_set` on a running engine whose rule
//!   set has that million-prefix set in a file: adding 1 element and adding
//!   10,000 (each measured after the previous ones were removed again, not
//!   measured), through the whole pipeline with fsync, the set file written
//!   through; against a reload of the same rule set (what a change costs
//!   without `set add`: read, parse, build everything again).
//!
//! * `policy_1m_set`: the policy of `rules/office.toml` evaluating a batch of
//!   64 keys (the mix of `benches/policy.rs`, routed LAN -> WAN), against the
//!   same policy with a first rule `deny src @bl` in every ACL, `bl` the
//!   million-prefix set (the set looked up for the batch, then a set test in
//!   every ACL on the path). The target: at most 1.5x.
//!
//! Run: `cargo bench -p palisade-benches --bench sets`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use palisade_benches::prefixes::{bgp_like, inside, Rng};
use palisade_classify::{AddrList, CompiledSet, IpFamily, Membership, Prefix, SetField};
use palisade_engine::policy::{Context, Decision, Policy, Route};
use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};
use palisade_packet::FlowKey;
use palisade_rules::SetOp;

const KEYS: usize = 4096;
const BATCH: usize = 64;

/// Keys whose source is inside an element of `prefixes` half of the time.
fn traffic(prefixes: &[Prefix], seed: u64) -> Vec<FlowKey> {
    let mut rng = Rng(seed);
    (0..KEYS)
        .map(|_| {
            let p = prefixes[rng.below(prefixes.len() as u64) as usize];
            let hit = rng.below(2) == 0;
            let dst = [198, 18, 0, 1];
            match p.family {
                IpFamily::V4 => {
                    let a = if hit {
                        inside(&mut rng, &p) as u32
                    } else {
                        rng.bits() as u32
                    };
                    FlowKey::new()
                        .with_ipv4(a.to_be_bytes(), dst)
                        .with_proto(6)
                        .with_ports(40000, 443)
                }
                IpFamily::V6 => {
                    let a = if hit {
                        inside(&mut rng, &p)
                    } else {
                        (0x2001u128 << 112) | rng.bits() as u128
                    };
                    FlowKey::new()
                        .with_ipv6(a, 1)
                        .with_proto(6)
                        .with_ports(40000, 443)
                }
            }
        })
        .collect()
}

fn fill_all(m: &Membership, keys: &[FlowKey], buf: &mut [FlowKey]) {
    for (chunk, out) in keys.chunks(BATCH).zip(buf.chunks_mut(BATCH)) {
        out.copy_from_slice(chunk);
        m.fill(out);
    }
}

fn bench(c: &mut Criterion) {
    let prefixes = bgp_like(1_000_000, 5, 0x5e75);
    let list = AddrList::from_prefixes(prefixes.iter().copied());
    let big = Arc::new(CompiledSet::addresses(&list));
    println!(
        "1M set: {} elements ({} IPv4, {} IPv6), compiled {} bytes ({:.1} MiB)",
        list.len(),
        list.v4_len(),
        list.v6_len(),
        big.memory_bytes(),
        big.memory_bytes() as f64 / (1 << 20) as f64
    );

    let mut g = c.benchmark_group("set_build_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("addr_list_from_prefixes", |b| {
        b.iter(|| black_box(AddrList::from_prefixes(black_box(&prefixes).iter().copied())))
    });
    g.bench_function("compiled_set_addresses", |b| {
        b.iter(|| black_box(CompiledSet::addresses(black_box(&list))))
    });
    g.finish();

    let small_prefixes: Vec<Prefix> = prefixes.iter().step_by(10_000).copied().collect();
    let small = Arc::new(CompiledSet::addresses(&AddrList::from_prefixes(
        small_prefixes.iter().copied(),
    )));
    let keys = traffic(&prefixes, 7);
    let small_keys = traffic(&small_prefixes, 7);
    let m_big = Membership::new(vec![(big, SetField::Src)]).unwrap();
    let m_small = Membership::new(vec![(small, SetField::Src)]).unwrap();
    let mut buf = vec![FlowKey::new(); KEYS];

    let mut g = c.benchmark_group("set_lookup");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    g.bench_function("fill_1m_set", |b| {
        b.iter(|| fill_all(&m_big, black_box(&keys), &mut buf))
    });
    g.bench_function("fill_100_prefix_set", |b| {
        b.iter(|| fill_all(&m_small, black_box(&small_keys), &mut buf))
    });
    g.bench_function("copy_keys_only", |b| {
        b.iter(|| fill_all(&Membership::default(), black_box(&keys), &mut buf))
    });
    g.finish();
}

fn text_of(p: &Prefix) -> String {
    match p.family {
        IpFamily::V4 => format!("{}/{}", std::net::Ipv4Addr::from(p.addr as u32), p.len),
        IpFamily::V6 => format!("{}/{}", std::net::Ipv6Addr::from(p.addr), p.len),
    }
}

fn set_change(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("palisade-bench-sets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let list = bgp_like(1_000_000, 5, 0x5e75);
    let mut file = String::new();
    for p in &list {
        file.push_str(&text_of(p));
        file.push('\n');
    }
    std::fs::write(dir.join("bl.txt"), file).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "version = 1\n[[port]]\nname = \"wan0\"\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n[[acl]]\nname = \"in\"\n\
         default = \"permit\"\n[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n[[bind]]\nacl = \"in\"\nport = \"wan0\"\n",
    )
    .unwrap();
    let (engine, _) = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap();
    let opts = ReloadOptions::default();
    // Elements no generated prefix lists (198.18.0.0/15 is for benchmarks).
    let one = vec!["198.18.0.1".to_string()];
    let many: Vec<String> = (0..10_000u32)
        .map(|i| format!("198.19.{}.{}", i / 256, i % 256))
        .collect();

    let mut g = c.benchmark_group("set_change_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("add_1_element", |b| {
        b.iter_batched(
            || {
                let _ = engine.change_set("bl", SetOp::Del, &one, &opts);
            },
            |()| black_box(engine.change_set("bl", SetOp::Add, &one, &opts).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("add_10000_elements", |b| {
        b.iter_batched(
            || {
                let _ = engine.change_set("bl", SetOp::Del, &many, &opts);
            },
            |()| black_box(engine.change_set("bl", SetOp::Add, &many, &opts).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("baseline_reload_whole_set", |b| {
        b.iter(|| black_box(engine.reload(ReloadSource::Config, &opts).unwrap()))
    });
    // The same without fsync (EngineOptions::durable false): the pipeline's own work.
    drop(engine);
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let (engine, _) = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions {
            durable: false,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    g.bench_function("add_1_element_no_fsync", |b| {
        b.iter_batched(
            || {
                let _ = engine.change_set("bl", SetOp::Del, &one, &opts);
            },
            |()| black_box(engine.change_set("bl", SetOp::Add, &one, &opts).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mix of `benches/policy.rs`.
const MIX: [&str; 15] = [
    "tcp 10.0.10.5:50000 -> 198.51.100.7:443",
    "tcp 10.0.10.5:50001 -> 198.51.100.7:22",
    "udp 10.0.10.5:53000 -> 10.0.10.1:53",
    "icmp 10.0.10.5 -> 198.51.100.7 type 8 code 0",
    "tcp 10.0.10.5:50000 -> 198.51.100.7:443 flags ack,psh",
    "tcp 192.168.20.7:40000 -> 198.51.100.7:443 vlan 20",
    "tcp 192.168.20.7:40001 -> 10.0.10.5:22 vlan 20",
    "udp 192.168.20.7:40002 -> 10.0.10.1:53 vlan 20",
    "tcp [2001:db8:10::5]:50002 -> [2001:db8:ffff::7]:443",
    "udp 10.0.10.5 -> 198.51.100.7 fragment non-first",
    "udp 10.0.10.5:1 -> 8.8.8.8:53",
    "tcp 10.0.10.5:50003 -> 198.51.100.9:80",
    "udp [2001:db8:10::5]:1 -> [2001:db8:ffff::7]:443",
    "icmpv6 2001:db8:10::5 -> 2001:db8:ffff::7 type 128 code 0",
    "tcp 10.9.9.9:1 -> 198.51.100.7:443",
];

fn policy_1m_set(c: &mut Criterion) {
    let office_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/office.toml");
    let office = std::fs::read_to_string(office_path).expect("rules/office.toml");
    let dir = std::env::temp_dir().join(format!("palisade-bench-policy-set-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys: Vec<FlowKey> = MIX
        .iter()
        .cycle()
        .take(64)
        .map(|s| palisade_rules::parse_packet_spec(s).unwrap())
        .collect();
    // The list without the prefixes that hold the mix's sources: the decisions stay those of
    // office.toml, and the set rule is evaluated (and passed) on every ACL of the path.
    let family = |k: &FlowKey| {
        if k.ip_version == 6 {
            IpFamily::V6
        } else {
            IpFamily::V4
        }
    };
    let mut file = String::new();
    let mut listed = 0;
    for p in bgp_like(1_000_000, 5, 0x5e75) {
        if keys.iter().any(|k| p.contains(family(k), k.src_ip)) {
            continue;
        }
        listed += 1;
        file.push_str(&text_of(&p));
        file.push('\n');
    }
    std::fs::write(dir.join("bl.txt"), file).unwrap();
    // Every ACL's first rule: deny what comes from a listed address.
    let mut with_set = String::new();
    let mut seen_rule = false;
    for line in office.lines() {
        if line.starts_with("[[acl]]") {
            seen_rule = false;
        }
        if line.trim() == "[[acl.rule]]" && !seen_rule {
            seen_rule = true;
            with_set
                .push_str("  [[acl.rule]]\n  id = \"blocklisted\"\n  action = \"deny\"\n  src = \"@bl\"\n");
        }
        with_set.push_str(line);
        with_set.push('\n');
    }
    with_set.push_str("[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n");
    std::fs::write(dir.join("office-bl.toml"), &with_set).unwrap();
    let plain = Policy::compile(
        &palisade_rules::parse("office.toml", office.as_bytes())
            .unwrap()
            .ruleset,
    )
    .unwrap();
    let loaded = palisade_rules::load(&dir.join("office-bl.toml")).unwrap();
    println!(
        "office + set of {} elements ({listed} listed)",
        loaded.ruleset.sets[0].elements.len()
    );
    let big = Policy::compile(&loaded.ruleset).unwrap();
    let ctx = |p: &Policy| Context {
        port: p.port("lan1").unwrap(),
        route: Some(Route {
            from: p.interface("lan").unwrap(),
            to: p.interface("wan").unwrap(),
        }),
    };
    let (ctx_plain, ctx_big) = (ctx(&plain), ctx(&big));
    // Same decisions on this mix, so the work compared is the same path.
    let mut a = vec![Decision::default(); keys.len()];
    let mut b = vec![Decision::default(); keys.len()];
    plain.evaluate_batch(&keys, &ctx_plain, &mut a);
    big.evaluate_batch(&keys, &ctx_big, &mut b);
    assert!(a.iter().zip(&b).all(|(x, y)| x.verdict == y.verdict));

    let mut g = c.benchmark_group("policy_1m_set");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    for round in ["a", "b"] {
        g.bench_function(format!("office_evaluate_batch_{round}"), |bch| {
            bch.iter(|| plain.evaluate_batch(black_box(&keys), &ctx_plain, &mut a))
        });
        g.bench_function(format!("office_plus_1m_set_evaluate_batch_{round}"), |bch| {
            bch.iter(|| big.evaluate_batch(black_box(&keys), &ctx_big, &mut b))
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench, set_change, policy_1m_set
}
criterion_main!(benches);
