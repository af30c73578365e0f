//! ClassBench classification: the compiled classifier against the linear
//! reference on the WUSTL and ClassBench (cb12) sets at 1K and 10K rules,
//! each with its own trace from `../shared/classbench`.
//!
//! Per set, `compiled` classifies the whole trace per iteration (throughput in
//! packets), and on an AVX-512 CPU `compiled-scalar` does the same with the
//! scalar lookup (the baseline for the vector code), and on sets small enough
//! for bit sets `compiled-trees` does it with trees (the baseline for the bit
//! sets); `compiled-ipv6-site` classifies the set and trace moved into an
//! IPv6 /48 (prefix `a/l` becomes `SITE | a << 48` of length `48 + l`), the
//! IPv6 version of the set; `linear` classifies the first 256 headers of the same trace, so
//! the reference finishes at 10K rules. Criterion's throughput line gives
//! packets per second; median / packets is the time per packet. Sets that are
//! absent are skipped with a message.
//!
//! Run: `cargo bench -p palisade-benches --bench classbench`
//! (one set: `... --bench classbench -- wustl/acl1_10K`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use palisade_classify::classbench::{
    map_key_to_ipv6_site, map_rule_to_ipv6_site, parse_filters, parse_trace, FilterOptions,
};
use palisade_classify::{BuildConfig, Classifier, CompiledClassifier, LinearClassifier, NO_MATCH};
use palisade_packet::FlowKey;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench");

/// (rules, trace) relative to the data directory.
const SETS: [(&str, &str); 10] = [
    ("wustl/acl1_1K", "wustl/acl1_1K_trace"),
    ("wustl/fw1_1K", "wustl/fw1_1K_trace"),
    ("wustl/ipc1_1K", "wustl/ipc1_1K_trace"),
    ("cb12/fw1_1k", "cb12/fw1_1k_trace"),
    ("cb12/ipc1_1k", "cb12/ipc1_1k_trace"),
    ("wustl/acl1_10K", "wustl/acl1_10K_trace"),
    ("wustl/fw1_10K", "wustl/fw1_10K_trace"),
    ("wustl/ipc1_10K", "wustl/ipc1_10K_trace"),
    ("cb12/fw1_10k", "cb12/fw1_10k_trace"),
    ("cb12/ipc1_10k", "cb12/ipc1_10k_trace"),
];

/// Headers the linear scan classifies per iteration.
const LINEAR_SAMPLE: usize = 256;

fn classbench(c: &mut Criterion) {
    let dir = Path::new(DATA);
    if !dir.is_dir() {
        println!("SKIPPED: ../shared/classbench not present");
        return;
    }
    for (rules_name, trace_name) in SETS {
        let (Ok(rules_text), Ok(trace_text)) = (
            std::fs::read_to_string(dir.join(rules_name)),
            std::fs::read_to_string(dir.join(trace_name)),
        ) else {
            println!("SKIPPED: {rules_name} or {trace_name} not present");
            continue;
        };
        let rules = parse_filters(&rules_text, &FilterOptions::default()).expect("ClassBench rules");
        let keys: Vec<FlowKey> = parse_trace(&trace_text)
            .expect("ClassBench trace")
            .iter()
            .map(|e| e.key)
            .collect();
        let compiled = CompiledClassifier::build(&rules, &BuildConfig::default()).expect("build");
        // The same trees without the AVX-512 lookup: what its `unsafe` code gains.
        let scalar = BuildConfig {
            vector: false,
            ..BuildConfig::default()
        };
        let compiled_scalar = CompiledClassifier::build(&rules, &scalar).expect("build");
        // Trees where the default uses bit sets (sets of up to 1024 rules): what the bit sets gain.
        let trees = BuildConfig {
            bitset_max_rules: 0,
            ..BuildConfig::default()
        };
        let compiled_trees = CompiledClassifier::build(&rules, &trees).expect("build");
        let linear = LinearClassifier::new(rules.clone());
        // The IPv6 version: the set and its trace in 2001:db8:5a1::/48.
        let site = 0x2001_0db8_05a1u128 << 80;
        let rules6: Vec<_> = rules.iter().map(|r| map_rule_to_ipv6_site(r, site)).collect();
        let keys6: Vec<FlowKey> = keys.iter().map(|k| map_key_to_ipv6_site(k, site)).collect();
        let compiled6 = CompiledClassifier::build(&rules6, &BuildConfig::default()).expect("build");

        let mut group = c.benchmark_group(rules_name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let mut out = vec![NO_MATCH; keys.len()];
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_function(BenchmarkId::new("compiled", keys.len()), |b| {
            b.iter(|| {
                compiled.classify_batch(black_box(&keys), &mut out);
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("compiled-ipv6-site", keys.len()), |b| {
            b.iter(|| {
                compiled6.classify_batch(black_box(&keys6), &mut out);
                black_box(&out);
            })
        });
        if compiled.uses_bitsets() {
            group.bench_function(BenchmarkId::new("compiled-trees", keys.len()), |b| {
                b.iter(|| {
                    compiled_trees.classify_batch(black_box(&keys), &mut out);
                    black_box(&out);
                })
            });
        }
        if compiled.uses_vector_leaves() {
            group.bench_function(BenchmarkId::new("compiled-scalar", keys.len()), |b| {
                b.iter(|| {
                    compiled_scalar.classify_batch(black_box(&keys), &mut out);
                    black_box(&out);
                })
            });
        }
        let sample = &keys[..keys.len().min(LINEAR_SAMPLE)];
        let mut out = vec![NO_MATCH; sample.len()];
        group.throughput(Throughput::Elements(sample.len() as u64));
        group.bench_function(BenchmarkId::new("linear", sample.len()), |b| {
            b.iter(|| {
                linear.classify_batch(black_box(sample), &mut out);
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, classbench);
criterion_main!(benches);
