//! Replays every committed corpus file of the fuzz targets `classbench`
//! (fuzz/corpus/classbench, through fuzz/cases/classbench.rs) on stable
//! Rust, and keeps the compiled-classifier regressions the fuzz target
//! `policy` found.

use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, IpFamily, LinearClassifier, PortRange, Prefix,
    RuleMatch,
};

#[path = "../../../fuzz/cases/classbench.rs"]
mod case;
#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn every_classbench_corpus_file_replays() {
    replay::replay_corpus("classbench", 10, case::run);
}

/// Found by the fuzz target `policy`: with small leaves the cut search's
/// difference array went below zero, an arithmetic overflow panic in builds
/// with overflow checks (debug, fuzzing). The answers must equal the reference.
#[test]
fn small_leaves_build_and_agree_with_the_reference() {
    let icmp = |t: u8, code: Option<u8>| RuleMatch {
        proto: Some(1),
        icmp_type: Some(t),
        icmp_code: code,
        ..RuleMatch::any()
    };
    let rules = vec![
        RuleMatch {
            family: Some(IpFamily::V4),
            dst: vec![Prefix::v4([11, 192, 0, 0], 10)],
            ..icmp(13, None)
        },
        RuleMatch {
            dscp: vec![16],
            ..icmp(121, Some(46))
        },
    ];
    let reference = LinearClassifier::new(rules.clone());
    for leaf_size in 1..=3 {
        for space_factor in 2..=4 {
            let config = BuildConfig {
                leaf_size,
                space_factor,
                ..BuildConfig::default()
            };
            let compiled = CompiledClassifier::build(&rules, &config).unwrap();
            for k in corner_keys(&rules, 256) {
                assert_eq!(compiled.classify(&k), reference.classify(&k), "{k:?}");
            }
        }
    }
}

/// Found by the fuzz target `policy`: a cut that only isolated a hull
/// narrower than its power-of-two span left the region unchanged and was
/// chosen again forever; the build overflowed the stack (an abort, not a panic).
#[test]
fn isolating_a_narrow_hull_terminates() {
    let v6_any = Prefix::v6(0, 0);
    let rules = vec![
        RuleMatch {
            src: vec![Prefix::v4([0, 0, 0, 0], 10)],
            dst: vec![Prefix::v4([192, 0, 2, 1], 32), Prefix::v4([0, 0, 0, 0], 0)],
            proto: Some(6),
            src_port: vec![
                PortRange { lo: 0, hi: 65280 },
                PortRange { lo: 0, hi: 256 },
                PortRange { lo: 0, hi: 2 },
            ],
            dst_port: vec![PortRange { lo: 0, hi: 255 }],
            ..RuleMatch::any()
        },
        RuleMatch {
            family: Some(IpFamily::V6),
            src: vec![Prefix::v6(0xffff_ff00_0000_0000_0000_0000_ffff_0000, 126), v6_any],
            dst: vec![v6_any],
            proto: Some(6),
            src_port: vec![PortRange::single(0)],
            dst_port: vec![PortRange::single(0)],
            dscp: vec![0],
            ..RuleMatch::any()
        },
    ];
    let reference = LinearClassifier::new(rules.clone());
    let config = BuildConfig {
        leaf_size: 1,
        space_factor: 2,
        ..BuildConfig::default()
    };
    let compiled = CompiledClassifier::build(&rules, &config).unwrap();
    for k in corner_keys(&rules, 256) {
        assert_eq!(compiled.classify(&k), reference.classify(&k), "{k:?}");
    }
}
