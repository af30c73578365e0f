//! Property tests of the IPv6 lookup: rules that share long prefixes (a /48
//! site with /56 to /128 rules, as a site's ACL has), seen through a window
//! or by rank, and sets that mix IPv4 and IPv6 rules, all equal to the
//! reference linear scan.

use palisade_classify::{
    corner_keys, AddressLookup, BuildConfig, Classifier, CompiledClassifier, IpFamily, LinearClassifier,
    PortRange, Prefix, RuleMatch,
};
use palisade_packet::FlowKey;
use proptest::prelude::*;

/// The site, 2001:db8:5a1::/48.
const SITE: u128 = 0x2001_0db8_05a1u128 << 80;

/// Suffixes (the 80 bits after the site) that prefixes and keys cluster
/// around, so that prefixes nest and differ only in their last bits.
const SUFFIXES: [u128; 6] = [
    0,
    0x0001_0000_0000_0000_0000,
    0x0001_8000_0000_0000_0000,
    0x0001_0000_0000_0000_0001,
    0x00ff_ffff_ffff_ffff_ffff,
    0x1234_5678_9abc_def0_1234,
];

/// An address of the site near one of the suffixes (low bits varied).
fn site_addr() -> impl Strategy<Value = u128> {
    (0..SUFFIXES.len(), any::<u128>(), 0u32..80).prop_map(|(s, noise, bits)| {
        let low = if bits == 0 {
            0
        } else {
            noise & ((1u128 << bits) - 1)
        };
        SITE | ((SUFFIXES[s] ^ low) & ((1u128 << 80) - 1))
    })
}

/// An IPv6 address: mostly in the site, sometimes just outside it or anywhere.
fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        8 => site_addr(),
        1 => Just(SITE - 1),
        1 => Just(SITE + (1 << 80)),
        1 => any::<u128>(),
    ]
}

/// A prefix of the site from /48 to /128, mostly /56, /64 and /128.
fn site_prefix() -> impl Strategy<Value = Prefix> {
    (
        site_addr(),
        prop_oneof![Just(48u8), Just(56), Just(64), Just(128), 48u8..=128],
    )
        .prop_map(|(a, l)| Prefix::v6(a, l))
}

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        prop::sample::select(vec![22u16, 53, 80, 443, 1024]).prop_map(PortRange::single),
        (0u16..2000, 0u16..2000).prop_map(|(a, b)| PortRange {
            lo: a.min(b),
            hi: a.max(b)
        }),
        Just(PortRange { lo: 1024, hi: 65535 }),
    ]
}

prop_compose! {
    /// A rule of the site's ACL: IPv6, site prefixes, ports, protocol; now
    /// and then a second prefix or a prefix outside the site (so the
    /// addresses are looked up by rank), or a constraint the index does not hold.
    fn site_rule(outside: bool)(
        src in prop::option::weighted(0.8, site_prefix()),
        dst in prop::option::weighted(0.8, site_prefix()),
        extra in prop::option::weighted(0.05, site_prefix()),
        far in (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Prefix::v6(a, l)),
        far_here in prop::bool::weighted(0.1),
        proto in prop::option::weighted(0.7, prop::sample::select(vec![6u8, 17, 58])),
        sp in prop::option::weighted(0.2, port_range()),
        dp in prop::option::weighted(0.6, port_range()),
        family in prop::bool::weighted(0.8),
        flags in prop::bool::weighted(0.05),
    ) -> RuleMatch {
        let mut r = RuleMatch {
            family: family.then_some(IpFamily::V6),
            src: src.into_iter().collect(),
            dst: dst.into_iter().chain(extra).collect(),
            proto,
            ..RuleMatch::any()
        };
        if outside && far_here {
            r.src = vec![far];
        }
        if proto.is_some_and(|p| p != 58) {
            r.src_port = sp.into_iter().collect();
            r.dst_port = dp.into_iter().collect();
        }
        if flags && proto == Some(6) {
            r.tcp_flags = Some(palisade_classify::TcpFlagsMatch { value: 2, mask: 0x12 });
        }
        r
    }
}

prop_compose! {
    /// An IPv4 rule (for mixed sets).
    fn v4_rule()(
        src in prop::option::of((any::<u32>(), 0u8..=32)),
        dst in prop::option::of((0x0a00_0000u32..0x0a00_ffff, 8u8..=32)),
        proto in prop::option::weighted(0.7, prop::sample::select(vec![6u8, 17, 1])),
        dp in prop::option::weighted(0.5, port_range()),
    ) -> RuleMatch {
        RuleMatch {
            family: Some(IpFamily::V4),
            src: src.map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)).into_iter().collect(),
            dst: dst.map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)).into_iter().collect(),
            proto,
            dst_port: if proto.is_some_and(|p| p != 1) { dp.into_iter().collect() } else { Vec::new() },
            ..RuleMatch::any()
        }
    }
}

prop_compose! {
    fn key()(
        v6 in prop::bool::weighted(0.8),
        s6 in v6_addr(), d6 in v6_addr(),
        s4 in any::<u32>(), d4 in 0x0a00_0000u32..0x0a00_ffff,
        proto in prop::sample::select(vec![6u8, 17, 58, 1]),
        ports in prop::option::weighted(0.9, (0u16..2100, 0u16..2100)),
        flags in 0u16..0x20,
    ) -> FlowKey {
        let k = if v6 {
            FlowKey::new().with_ipv6(s6, d6)
        } else {
            FlowKey::new().with_ipv4(s4.to_be_bytes(), d4.to_be_bytes())
        };
        let mut k = k.with_proto(proto);
        if let (Some((a, b)), 6 | 17) = (ports, proto) {
            k = k.with_ports(a, b);
        }
        if proto == 6 {
            k = k.with_tcp_flags(flags);
        }
        k
    }
}

/// Keys at a prefix's first and last address and just outside them.
fn edges(rules: &[RuleMatch], base: &FlowKey) -> Vec<FlowKey> {
    let mut out = Vec::new();
    for p in rules
        .iter()
        .flat_map(|r| r.src.iter().chain(&r.dst))
        .filter(|p| p.family == IpFamily::V6)
    {
        let (lo, hi) = p.range();
        for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
            out.push(base.with_ipv6(a, base.dst_ip));
            out.push(base.with_ipv6(base.src_ip, a));
        }
    }
    out
}

/// Every lookup (vector and scalar; bit sets, deep trees, wide leaves, the
/// default) against the reference, batched and one key at a time.
fn check_equal(rules: &[RuleMatch], keys: &[FlowKey]) -> Result<(), TestCaseError> {
    let linear = LinearClassifier::new(rules.to_vec());
    let mut all = corner_keys(rules, 1_500);
    all.extend_from_slice(keys);
    if let Some(k) = keys.first() {
        all.extend(edges(rules, &k.with_ipv6(SITE, SITE)));
    }
    let want: Vec<u32> = all.iter().map(|k| linear.classify(k)).collect();
    let configs = [
        BuildConfig::default(),
        BuildConfig {
            bitset_max_rules: 0,
            leaf_size: 1,
            space_factor: 8,
            ..BuildConfig::default()
        },
        BuildConfig {
            bitset_max_rules: 0,
            leaf_size: 40,
            ..BuildConfig::default()
        },
    ];
    for config in configs {
        for vector in [true, false] {
            let config = BuildConfig { vector, ..config };
            let compiled =
                CompiledClassifier::build(rules, &config).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut got = vec![0u32; all.len()];
            compiled.classify_batch(&all, &mut got);
            for ((k, g), w) in all.iter().zip(&got).zip(&want) {
                prop_assert_eq!(*g, *w, "batch, {:?}, key {:?}", config, k);
            }
            for (k, w) in all.iter().zip(&want).step_by(7) {
                prop_assert_eq!(compiled.classify(k), *w, "single, {:?}, key {:?}", config, k);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// A /48 site's ACL: every prefix inside the site, so addresses up to
    /// /80 are seen through a window (and longer ones by rank).
    #[test]
    fn a_site_acl_equals_linear(
        rules in prop::collection::vec(site_rule(false), 1..80),
        keys in prop::collection::vec(key(), 1..200),
    ) {
        let c = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
        let fields: [fn(&RuleMatch) -> &Vec<Prefix>; 2] = [|r| &r.src, |r| &r.dst];
        for (lookup, field) in c.ipv6_address_lookup().iter().zip(fields) {
            let lens: Vec<u8> = rules.iter().flat_map(field).map(|p| p.len).filter(|&l| l > 0).collect();
            if !lens.is_empty() && lens.iter().all(|&l| l <= 80) {
                prop_assert!(
                    matches!(lookup, AddressLookup::Window { common_len } if *common_len >= 48),
                    "{:?}", lookup
                );
            }
        }
        check_equal(&rules, &keys)?;
    }

    /// The same with prefixes outside the site now and then (addresses by rank).
    #[test]
    fn a_site_acl_with_outside_prefixes_equals_linear(
        rules in prop::collection::vec(site_rule(true), 1..80),
        keys in prop::collection::vec(key(), 1..200),
    ) {
        check_equal(&rules, &keys)?;
    }

    /// IPv4 and IPv6 rules in one set, interleaved.
    #[test]
    fn mixed_ipv4_and_ipv6_sets_equal_linear(
        rules in prop::collection::vec(prop_oneof![site_rule(true), v4_rule()], 1..100),
        keys in prop::collection::vec(key(), 1..200),
    ) {
        check_equal(&rules, &keys)?;
    }
}

/// Mixed sets large enough for trees in both parts, on their own corner keys.
#[test]
fn large_mixed_sets_build_trees_for_both_families() {
    let mut rules = Vec::new();
    for i in 0..3000u128 {
        let v4 = RuleMatch {
            family: Some(IpFamily::V4),
            src: vec![Prefix::v4(((i as u32) << 12).to_be_bytes(), 20 + (i % 13) as u8)],
            proto: Some(6),
            dst_port: vec![PortRange::single(i as u16)],
            ..RuleMatch::any()
        };
        let v6 = RuleMatch {
            family: Some(IpFamily::V6),
            src: vec![Prefix::v6(SITE | i << 60, 64 + (i % 65) as u8)],
            dst: vec![Prefix::v6(SITE | (i % 7) << 70, 58)],
            proto: Some(17),
            ..RuleMatch::any()
        };
        rules.push(v4);
        rules.push(v6);
    }
    let c = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
    assert!(!c.uses_bitsets());
    assert!(c.tree_count() >= 2);
    let linear = LinearClassifier::new(rules.clone());
    let keys = corner_keys(&rules, 20_000);
    let mut got = vec![0u32; keys.len()];
    c.classify_batch(&keys, &mut got);
    for (k, g) in keys.iter().zip(&got) {
        assert_eq!(*g, linear.classify(k), "{k:?}");
    }
}
