//! The compiled classifier against the reference linear scan on every
//! ClassBench set with a trace in `../shared/classbench` (and their IPv6
//! versions), and the large sets and fresh 100,000-rule sets within 64 MiB.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use palisade_classify::classbench::{
    map_key_to_ipv6_site, map_rule_to_ipv6_site, parse_filters, parse_trace, synthesize, synthesize_trace,
    FilterOptions, TraceFormat,
};
use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, LinearClassifier, RuleMatch,
};
use palisade_packet::FlowKey;

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/classbench"));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("SKIPPED: ../shared/classbench not present");
        None
    }
}

fn load_rules(path: &Path) -> Vec<RuleMatch> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_filters(&text, &FilterOptions::default()).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

/// (rule file, trace file) pairs present in the directory.
fn sets_with_traces(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for sub in ["wustl", "cb12"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(rules) = name.strip_suffix("_trace") {
                out.push((p.with_file_name(rules), p.clone()));
            }
        }
    }
    out
}

#[test]
fn compiled_equals_linear_on_every_trace() {
    let Some(dir) = data_dir() else { return };
    let sets = sets_with_traces(&dir);
    assert!(
        sets.len() >= 18,
        "expected the wustl and cb12 traces, found {}",
        sets.len()
    );
    for (rules_path, trace_path) in sets {
        let rules = load_rules(&rules_path);
        let trace = parse_trace(&std::fs::read_to_string(&trace_path).unwrap()).unwrap();
        let t0 = Instant::now();
        let compiled = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
        let build = t0.elapsed();
        // The other lookups: scalar, and the trees where the default uses bit sets.
        let mut others = vec![(
            "scalar lookup",
            BuildConfig {
                vector: false,
                ..BuildConfig::default()
            },
        )];
        if compiled.uses_bitsets() {
            let trees = BuildConfig {
                bitset_max_rules: 0,
                ..BuildConfig::default()
            };
            others.push(("trees", trees));
            others.push((
                "trees, scalar lookup",
                BuildConfig {
                    vector: false,
                    ..trees
                },
            ));
        }
        let linear = LinearClassifier::new(rules.clone());
        // Traces repeat headers heavily: the reference runs once per distinct header.
        let mut reference: HashMap<FlowKey, u32> = HashMap::new();
        for e in &trace {
            reference.entry(e.key).or_insert_with(|| linear.classify(&e.key));
        }
        let keys: Vec<FlowKey> = trace.iter().map(|e| e.key).collect();
        for (name, config) in &others {
            let other = CompiledClassifier::build(&rules, config).unwrap();
            let mut got = vec![0u32; keys.len()];
            other.classify_batch(&keys, &mut got);
            for (i, e) in trace.iter().enumerate() {
                assert_eq!(
                    got[i],
                    reference[&e.key],
                    "{}: line {}: compiled ({name}) != linear",
                    trace_path.display(),
                    i + 1
                );
            }
        }
        let mut got = vec![0u32; keys.len()];
        compiled.classify_batch(&keys, &mut got);
        for (i, e) in trace.iter().enumerate() {
            let want = reference[&e.key];
            assert_eq!(
                got[i],
                want,
                "{}: line {}: compiled != linear",
                trace_path.display(),
                i + 1
            );
            assert_eq!(
                compiled.classify(&e.key),
                want,
                "{}: line {} (single)",
                trace_path.display(),
                i + 1
            );
            match e.format {
                TraceFormat::Wustl => assert_eq!(
                    Some(want),
                    e.tag_index(),
                    "{}: line {}",
                    trace_path.display(),
                    i + 1
                ),
                TraceFormat::Cb12 => assert!(want <= e.tag, "{}: line {}", trace_path.display(), i + 1),
            }
        }
        // Corner keys of the rules, too.
        let corners = corner_keys(&rules, 5_000);
        let mut got = vec![0u32; corners.len()];
        compiled.classify_batch(&corners, &mut got);
        for (k, g) in corners.iter().zip(&got) {
            assert_eq!(
                *g,
                linear.classify(k),
                "{}: corner key {k:?}",
                rules_path.display()
            );
        }
        println!(
            "{}: {} rules, {} lines ({} distinct), build {:.1} ms, {} bytes, {} trees, bit sets {}",
            rules_path.display(),
            rules.len(),
            trace.len(),
            reference.len(),
            build.as_secs_f64() * 1e3,
            compiled.memory_bytes(),
            compiled.tree_count(),
            compiled.uses_bitsets()
        );
    }
}

/// The most memory a 100K-rule ClassBench set may take (issue 15's target).
const LARGE_SET_BYTES: usize = 64 << 20;

/// A large set builds with the default configuration within
/// [`LARGE_SET_BYTES`], and agrees with the reference on a sample of its
/// trace's distinct headers and on its corner keys (the reference scans
/// 100,000 rules per key, so every header would take minutes: the sample
/// is evenly spread, and its size is printed).
fn check_large_set(name: &str, rules: &[RuleMatch]) {
    let config = BuildConfig::default();
    let t0 = Instant::now();
    let compiled = CompiledClassifier::build(rules, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
    let build = t0.elapsed();
    assert!(
        compiled.memory_bytes() <= LARGE_SET_BYTES,
        "{name}: {} bytes",
        compiled.memory_bytes()
    );
    let trace = synthesize_trace(rules, 100_000, 1);
    let mut distinct: Vec<FlowKey> = trace.clone();
    distinct.sort_by_key(|k| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.l4_proto));
    distinct.dedup();
    let step = distinct.len().div_ceil(2_500).max(1);
    let mut sample: Vec<FlowKey> = distinct.iter().copied().step_by(step).collect();
    sample.extend(corner_keys(rules, 1_500));
    let linear = LinearClassifier::new(rules.to_vec());
    let mut got = vec![0u32; sample.len()];
    compiled.classify_batch(&sample, &mut got);
    for (k, g) in sample.iter().zip(&got) {
        assert_eq!(*g, linear.classify(k), "{name}: {k:?}");
    }
    // The whole trace through both lookups gives the same answers.
    let scalar = CompiledClassifier::build(
        rules,
        &BuildConfig {
            vector: false,
            ..config
        },
    )
    .unwrap();
    let (mut a, mut b) = (vec![0u32; trace.len()], vec![0u32; trace.len()]);
    compiled.classify_batch(&trace, &mut a);
    scalar.classify_batch(&trace, &mut b);
    assert_eq!(a, b, "{name}: vector and scalar lookups differ");
    println!(
        "{name}: {} rules, build {:.0} ms, {} bytes, {} trees; {} sampled of {} distinct trace headers, plus corner keys",
        rules.len(),
        build.as_secs_f64() * 1e3,
        compiled.memory_bytes(),
        compiled.tree_count(),
        sample.len() - sample.len().min(1_500),
        distinct.len()
    );
}

/// The shared large sets (44K to 51K rules) and fresh 100,000-rule sets
/// grown from them by the db_generator-like `synthesize` (seeded), plus
/// two from the 10K seeds that replicate most (cb12 acl3 and acl4).
#[test]
fn large_and_100k_sets_build_within_64_mib_and_agree_with_the_reference() {
    let Some(dir) = data_dir() else { return };
    let mut seeds = Vec::new();
    for name in [
        "large/acl1_100k",
        "large/fw1_100k",
        "large/ipc1_50k",
        "cb12/acl3_10k",
        "cb12/acl4_10k",
    ] {
        let path = dir.join(name);
        assert!(path.exists(), "{} is missing", path.display());
        seeds.push((name, load_rules(&path)));
    }
    for (name, rules) in &seeds[..3] {
        check_large_set(name, rules);
    }
    for (name, seed) in &seeds {
        let rules = synthesize(seed, 100_000, 1);
        assert_eq!(rules.len(), 100_000, "{name}");
        check_large_set(&format!("{name} grown to 100K"), &rules);
    }
}

/// A /48 site (2001:db8:5a1::/48) the IPv4 sets are moved into.
const SITE: u128 = 0x2001_0db8_05a1u128 << 80;

/// Every shared IPv4 set with a trace, moved into one IPv6 /48 (prefix `a/l`
/// becomes `SITE | a << 48` of length `48 + l`): the compiled classifier,
/// both lookups, gives every trace line the first match it has in IPv4.
#[test]
fn ipv6_site_versions_match_as_in_ipv4() {
    let Some(dir) = data_dir() else { return };
    let sets = sets_with_traces(&dir);
    assert!(
        sets.len() >= 18,
        "expected the wustl and cb12 traces, found {}",
        sets.len()
    );
    for (rules_path, trace_path) in sets {
        let rules = load_rules(&rules_path);
        let trace = parse_trace(&std::fs::read_to_string(&trace_path).unwrap()).unwrap();
        let keys: Vec<FlowKey> = trace.iter().map(|e| e.key).collect();
        let v4 = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
        let mut want = vec![0u32; keys.len()];
        v4.classify_batch(&keys, &mut want);
        let rules6: Vec<RuleMatch> = rules.iter().map(|r| map_rule_to_ipv6_site(r, SITE)).collect();
        let keys6: Vec<FlowKey> = keys.iter().map(|k| map_key_to_ipv6_site(k, SITE)).collect();
        for vector in [true, false] {
            let config = BuildConfig {
                vector,
                ..BuildConfig::default()
            };
            let t0 = Instant::now();
            let v6 = CompiledClassifier::build(&rules6, &config).unwrap();
            let build = t0.elapsed();
            let mut got = vec![0u32; keys6.len()];
            v6.classify_batch(&keys6, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{}: line {} (vector {vector})", trace_path.display(), i + 1);
            }
            for (i, k) in keys6.iter().enumerate().step_by(97) {
                assert_eq!(
                    v6.classify(k),
                    want[i],
                    "{}: line {} single",
                    trace_path.display(),
                    i + 1
                );
            }
            if vector {
                println!(
                    "{}: IPv6 site: build {:.1} ms (IPv4 {} bytes, IPv6 {} bytes), {:?}",
                    rules_path.display(),
                    build.as_secs_f64() * 1e3,
                    v4.memory_bytes(),
                    v6.memory_bytes(),
                    v6.ipv6_address_lookup()
                );
            }
        }
    }
}
