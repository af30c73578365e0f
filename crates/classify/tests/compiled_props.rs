//! Property tests: the compiled classifier equals the reference linear scan
//! on random rule sets using every field, for random keys and corner keys.

use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, FragmentMatch, IpFamily, LinearClassifier,
    PortRange, Prefix, RuleMatch, SetMatch, TcpFlagsMatch,
};
use palisade_packet::{FlowKey, FlowState, FlowStates, FragmentState, Present};
use proptest::prelude::*;

/// Addresses cluster around a few bases so prefixes nest and overlap.
const V4_BASES: [u32; 4] = [0x0a00_0000, 0x0a01_0000, 0xc0a8_0100, 0xffff_ff00];
const V6_BASES: [u128; 3] = [0x2001_0db8 << 96, (0x2001_0db8 << 96) | (1 << 80), 0xfe80 << 112];

fn v4_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        (0..V4_BASES.len(), 0u32..0x2_0000).prop_map(|(b, off)| V4_BASES[b].wrapping_add(off)),
        any::<u32>(),
        Just(0u32),
        Just(u32::MAX),
    ]
}

fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        (0..V6_BASES.len(), any::<u64>()).prop_map(|(b, off)| V6_BASES[b] | (off as u128 >> 8)),
        any::<u128>(),
        Just(0u128),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        3 => (v4_addr(), 0u8..=32).prop_map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)),
        1 => (v6_addr(), prop_oneof![0u8..=128, Just(32u8), Just(64u8)]).prop_map(|(a, l)| Prefix::v6(a, l)),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![0u16, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65534, 65535]),
        any::<u16>(),
    ]
}

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        port().prop_map(PortRange::single),
        (port(), port()).prop_map(|(a, b)| PortRange {
            lo: a.min(b),
            hi: a.max(b)
        }),
        Just(PortRange { lo: 0, hi: 65535 }),
    ]
}

fn proto() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(vec![0u8, 1, 6, 17, 58, 255]), any::<u8>()]
}

/// A non-empty set of named flow states.
fn states() -> impl Strategy<Value = FlowStates> {
    (1u8..16).prop_map(FlowStates)
}

/// Any flow state a key can carry, untracked included.
fn flow_state() -> impl Strategy<Value = FlowState> {
    prop::sample::select(vec![
        FlowState::Untracked,
        FlowState::New,
        FlowState::Established,
        FlowState::Related,
        FlowState::Invalid,
    ])
}

fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>, p: f64) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(p, s)
}

prop_compose! {
    fn rule()(
        family in opt(prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)], 0.15),
        src in prop::collection::vec(prefix(), 0..3),
        dst in prop::collection::vec(prefix(), 0..3),
        proto in opt(proto(), 0.5),
        src_port in prop::collection::vec(port_range(), 0..3),
        dst_port in prop::collection::vec(port_range(), 0..3),
        icmp_type in opt(0u8..4, 0.1),
        icmp_code in opt(0u8..2, 0.1),
        tcp_flags in opt((0u16..0x40, 0u16..0x40).prop_map(|(v, m)| TcpFlagsMatch { value: v & m, mask: m }), 0.1),
        vlan in prop::collection::vec(0u16..4, 0..2),
        fragment in opt(prop_oneof![
            Just(FragmentMatch::None), Just(FragmentMatch::First), Just(FragmentMatch::NonFirst), Just(FragmentMatch::Any)
        ], 0.1),
        dscp in prop::collection::vec(0u8..4, 0..2),
        ethertype in opt(prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806]), 0.05),
        state in opt(states(), 0.15),
        // Most rules are plain 5-tuple rules, as in real rule sets.
        plain in prop::bool::weighted(0.6),
        // Set tests over four bits of the key's set_bits ("in" and "not in" apart).
        sets in opt((0u32..16, 0u32..16, any::<bool>()).prop_map(|(m, n, p)| SetMatch {
            member: m, non_member: n & !m, needs_ports: p,
        }), 0.25),
    ) -> RuleMatch {
        let mut r = RuleMatch {
            family, src, dst, proto, src_port, dst_port, icmp_type, icmp_code, tcp_flags, vlan, fragment, dscp,
            ethertype, state, sets: sets.unwrap_or_default(), ..RuleMatch::any()
        };
        if plain {
            r.family = None;
            r.src.retain(|p| p.family == IpFamily::V4);
            r.dst.retain(|p| p.family == IpFamily::V4);
            r.src.truncate(1);
            r.dst.truncate(1);
            r.src_port.truncate(1);
            r.dst_port.truncate(1);
            r.icmp_type = None;
            r.icmp_code = None;
            r.tcp_flags = None;
            r.vlan.clear();
            r.fragment = None;
            r.dscp.clear();
            r.ethertype = None;
            r.sets = SetMatch::default();
            r.state = None;
        }
        r
    }
}

prop_compose! {
    /// A plain 5-tuple rule (the kind the leaf check decides without the
    /// reference) with, half the time, a flow-state constraint added: only the
    /// state can send it to the exact check.
    fn plain_rule_with_state()(r in rule(), state in opt(states(), 0.5)) -> RuleMatch {
        let mut r = r;
        r.family = None;
        r.src.retain(|p| p.family == IpFamily::V4);
        r.dst.retain(|p| p.family == IpFamily::V4);
        r.src.truncate(1);
        r.dst.truncate(1);
        r.src_port.truncate(1);
        r.dst_port.truncate(1);
        r.icmp_type = None;
        r.icmp_code = None;
        r.tcp_flags = None;
        r.vlan.clear();
        r.fragment = None;
        r.dscp.clear();
        r.ethertype = None;
        r.state = state;
        r
    }
}

prop_compose! {
    fn key()(
        fam in 0u8..10,
        s4 in v4_addr(), d4 in v4_addr(), s6 in v6_addr(), d6 in v6_addr(),
        proto in opt(proto(), 0.9),
        ports in opt((port(), port()), 0.7),
        icmp in opt((0u8..4, 0u8..2), 0.2),
        flags in opt(0u16..0x40, 0.3),
        vlan in opt(0u16..4, 0.3),
        frag in 0u8..6,
        dscp in opt(0u8..4, 0.8),
        set_bits in 0u32..16,
        state in flow_state(),
    ) -> FlowKey {
        let mut k = match fam {
            0..=5 => FlowKey::new().with_ipv4(s4.to_be_bytes(), d4.to_be_bytes()),
            6..=8 => FlowKey::new().with_ipv6(s6, d6),
            _ => {
                let mut k = FlowKey::new();
                k.present.0 |= Present::ETHERTYPE;
                k.ethertype = 0x0806;
                k
            }
        };
        if let Some(p) = proto { k = k.with_proto(p); }
        if let Some((a, b)) = ports { k = k.with_ports(a, b); }
        if let Some((t, c)) = icmp { k = k.with_icmp(t, c); }
        if let Some(f) = flags { k = k.with_tcp_flags(f); }
        if let Some(v) = vlan { k = k.with_vlan(v); }
        match frag {
            4 => k = k.with_fragment(FragmentState::First, 0, true),
            5 => {
                k = k.with_fragment(FragmentState::NonFirst, 1480, false);
                k.present.0 &= !Present::PORTS;
            }
            _ => {}
        }
        match dscp {
            Some(d) => k = k.with_dscp(d),
            None => k.present.0 &= !Present::DSCP,
        }
        k.set_bits = set_bits;
        k.with_flow_state(state)
    }
}

prop_compose! {
    /// A rule whose protocol, ICMP type or ICMP code may be a list of several
    /// values (`proto = ["tcp", "udp"]`), otherwise plain or full like [`rule`].
    fn list_rule()(
        mut r in rule(),
        protos in opt(prop::collection::vec(prop_oneof![proto(), Just(6u8), Just(17u8), Just(1u8), Just(58u8)], 2..5), 0.5),
        icmp_types in opt(prop::collection::vec(0u8..4, 2..4), 0.2),
        icmp_codes in opt(prop::collection::vec(0u8..2, 2..3), 0.15),
    ) -> RuleMatch {
        let list = |v: Option<Vec<u8>>| {
            let mut v = v.unwrap_or_default();
            v.sort_unstable();
            v.dedup();
            if v.len() < 2 { v.clear(); }
            v
        };
        r.protos = list(protos);
        if !r.protos.is_empty() { r.proto = None; }
        r.icmp_types = list(icmp_types);
        if !r.icmp_types.is_empty() { r.icmp_type = None; }
        r.icmp_codes = list(icmp_codes);
        if !r.icmp_codes.is_empty() { r.icmp_code = None; }
        r
    }
}

/// Both lookups of the configuration (AVX-512, where the CPU has it, and
/// scalar) against the reference, batched and one key at a time.
fn check_equal(rules: &[RuleMatch], keys: &[FlowKey], config: &BuildConfig) -> Result<(), TestCaseError> {
    let linear = LinearClassifier::new(rules.to_vec());
    let mut corners = corner_keys(rules, 2_000);
    corners.extend_from_slice(keys);
    let want: Vec<u32> = corners.iter().map(|k| linear.classify(k)).collect();
    for vector in [true, false] {
        let config = BuildConfig { vector, ..*config };
        let compiled =
            CompiledClassifier::build(rules, &config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut batch = vec![0u32; corners.len()];
        compiled.classify_batch(&corners, &mut batch);
        for ((k, b), w) in corners.iter().zip(&batch).zip(&want) {
            prop_assert_eq!(*b, *w, "batch, vector {}, key {:?}", vector, k);
            prop_assert_eq!(compiled.classify(k), *w, "single, vector {}, key {:?}", vector, k);
        }
        // Batches of every length up to a vector batch and past it, so partial lane groups are covered.
        for len in [1, 7, 15, 17, 33, 63, 65] {
            let part = &corners[..len.min(corners.len())];
            let mut got = vec![0u32; part.len()];
            compiled.classify_batch(part, &mut got);
            prop_assert_eq!(
                &got[..],
                &want[..part.len()],
                "batch of {}, vector {}",
                len,
                vector
            );
        }
    }
    Ok(())
}

/// Bit sets (the default for sets of up to 1024 rules; see
/// `bitsets_for_small_sets`) up to 4096 rules, so that several lines are covered.
fn bitsets() -> BuildConfig {
    BuildConfig {
        bitset_max_rules: 4096,
        ..BuildConfig::default()
    }
}

/// Small leaves and generous cuts: deep trees, so every cut path is exercised.
fn deep() -> BuildConfig {
    BuildConfig {
        leaf_size: 1,
        space_factor: 8,
        bitset_max_rules: 0,
        ..BuildConfig::default()
    }
}

/// Leaves of up to 64 rules: leaves with more than 16 rules take several
/// vector steps (blocks), and those of 31 or more keep their count in a header word.
fn wide() -> BuildConfig {
    BuildConfig {
        leaf_size: 64,
        bitset_max_rules: 0,
        ..BuildConfig::default()
    }
}

/// Trees over IPv4 ranks (the default from 8192 rules on; see
/// `compiled::rank32`), with small leaves so that rank space is cut deep.
fn ranked() -> BuildConfig {
    BuildConfig {
        ipv4_rank_min_rules: 0,
        bitset_max_rules: 0,
        leaf_size: 2,
        ..BuildConfig::default()
    }
}

/// Bit sets over IPv4 ranks.
fn ranked_bitsets() -> BuildConfig {
    BuildConfig {
        ipv4_rank_min_rules: 0,
        ..bitsets()
    }
}

/// A set grown as ClassBench's generator grows one, in random order: wide
/// rules anywhere, so that most later rules are shadowed (by one earlier
/// rule or by several together), and clusters of nested prefixes.
fn shadowed_set() -> impl Strategy<Value = Vec<RuleMatch>> {
    let wide = (
        0u8..=8,
        0u8..=8,
        opt(prop::sample::select(vec![6u8, 17]), 0.5),
        opt(port_range(), 0.3),
    )
        .prop_map(|(sl, dl, proto, dp)| RuleMatch {
            src: vec![Prefix::v4(V4_BASES[0].to_be_bytes(), sl)],
            dst: vec![Prefix::v4(V4_BASES[2].to_be_bytes(), dl)],
            proto,
            dst_port: dp.into_iter().collect(),
            ..RuleMatch::any()
        });
    let narrow = (
        0..V4_BASES.len(),
        0u32..512,
        20u8..=32,
        0..V4_BASES.len(),
        0u32..512,
        16u8..=32,
        opt(port_range(), 0.7),
        opt(prop::sample::select(vec![6u8, 17]), 0.8),
    )
        .prop_map(|(sb, so, sl, db, d_off, dl, dp, proto)| RuleMatch {
            src: vec![Prefix::v4(V4_BASES[sb].wrapping_add(so << 4).to_be_bytes(), sl)],
            dst: vec![Prefix::v4(
                V4_BASES[db].wrapping_add(d_off << 6).to_be_bytes(),
                dl,
            )],
            proto,
            dst_port: dp.into_iter().collect(),
            ..RuleMatch::any()
        });
    prop::collection::vec(prop_oneof![1 => wide, 8 => narrow], 20..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compiled_equals_linear(
        rules in prop::collection::vec(rule(), 0..60),
        keys in prop::collection::vec(key(), 0..200),
    ) {
        check_equal(&rules, &keys, &bitsets())?;
        check_equal(&rules, &keys, &deep())?;
        check_equal(&rules, &keys, &wide())?;
        check_equal(&rules, &keys, &ranked())?;
        check_equal(&rules, &keys, &ranked_bitsets())?;
    }

    /// Sets where most rules can never be the first match, in address
    /// space and in rank space: the build drops them (see
    /// `Builder::live_rules`), and a dropped rule that could match would
    /// show here as a wrong answer.
    #[test]
    fn shadowed_sets_equal_linear(
        rules in shadowed_set(),
        keys in prop::collection::vec(key(), 0..100),
    ) {
        check_equal(&rules, &keys, &ranked())?;
        check_equal(&rules, &keys, &deep())?;
        check_equal(&rules, &keys, &BuildConfig { bitset_max_rules: 0, ..BuildConfig::default() })?;
    }

    /// Lists of protocols and ICMP types/codes: the rule's box spans the
    /// list, and the exact check picks the listed values (a list rule is never "plain").
    #[test]
    fn compiled_equals_linear_with_protocol_and_icmp_lists(
        rules in prop::collection::vec(list_rule(), 1..80),
        keys in prop::collection::vec(key(), 0..200),
    ) {
        prop_assume!(rules.iter().any(|r| !r.protos.is_empty() || !r.icmp_types.is_empty() || !r.icmp_codes.is_empty()));
        check_equal(&rules, &keys, &bitsets())?;
        check_equal(&rules, &keys, &deep())?;
        check_equal(&rules, &keys, &wide())?;
    }

    /// A state constraint on an otherwise plain rule must send it to the
    /// exact check in every structure (bit sets, deep and wide trees), both lookups.
    #[test]
    fn state_rules_are_checked_exactly(
        rules in prop::collection::vec(plain_rule_with_state(), 1..80),
        keys in prop::collection::vec(key(), 0..200),
    ) {
        check_equal(&rules, &keys, &bitsets())?;
        check_equal(&rules, &keys, &deep())?;
        check_equal(&rules, &keys, &wide())?;
    }

    #[test]
    fn compiled_equals_linear_on_plain_ipv4_sets(
        rules in prop::collection::vec(rule().prop_filter("plain", |r| r.icmp_type.is_none() && r.vlan.is_empty()), 20..120),
        keys in prop::collection::vec(key(), 0..200),
    ) {
        check_equal(&rules, &keys, &deep())?;
        check_equal(&rules, &keys, &bitsets())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Sets of several 512-rule lines, so that a bit-set lookup intersects
    /// more than one line and its first match may lie in any of them.
    #[test]
    fn bitsets_over_several_lines_equal_linear(
        rules in prop::collection::vec(rule(), 500..1600),
        keys in prop::collection::vec(key(), 0..300),
    ) {
        let config = bitsets();
        prop_assert!(CompiledClassifier::build(&rules, &config).unwrap().uses_bitsets());
        check_equal(&rules, &keys, &config)?;
    }
}

#[test]
fn bitsets_for_small_sets() {
    let rules = |n: u32| -> Vec<RuleMatch> {
        (0..n)
            .map(|i| RuleMatch {
                dst: vec![Prefix::v4((i << 8).to_be_bytes(), 24)],
                dst_port: vec![PortRange::single(i as u16)],
                proto: Some(6),
                ..RuleMatch::any()
            })
            .collect()
    };
    let default = BuildConfig::default();
    assert!(CompiledClassifier::build(&rules(1024), &default)
        .unwrap()
        .uses_bitsets());
    let big = CompiledClassifier::build(&rules(1025), &default).unwrap();
    assert!(!big.uses_bitsets());
    assert!(big.tree_count() >= 1);
    // Bit sets that would pass a quarter of the memory cap give way to trees.
    let small = rules(1000);
    let bitsets = CompiledClassifier::build(&small, &default).unwrap();
    assert!(bitsets.uses_bitsets());
    let capped = default.with_memory_cap(bitsets.memory_bytes() * 2);
    let trees = CompiledClassifier::build(&small, &capped).unwrap();
    assert!(!trees.uses_bitsets());
    assert!(trees.memory_bytes() <= capped.memory_cap_bytes);
}

#[test]
fn memory_cap_is_reported() {
    let rules: Vec<RuleMatch> = (0..500u32)
        .map(|i| RuleMatch {
            src: vec![Prefix::v4((i << 12).to_be_bytes(), 20)],
            ..RuleMatch::any()
        })
        .collect();
    let err = CompiledClassifier::build(&rules, &BuildConfig::default().with_memory_cap(4096)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cap 4096 bytes"), "{text}");
    let ok = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
    assert!(ok.memory_bytes() <= BuildConfig::default().memory_cap_bytes);
    assert_eq!(ok.rule_count(), 500);
}

#[test]
fn non_ip_and_portless_keys_follow_the_reference() {
    let mut tcp22 = RuleMatch::any();
    tcp22.proto = Some(6);
    tcp22.dst_port = vec![PortRange::single(22)];
    let mut v4only = RuleMatch::any();
    v4only.family = Some(IpFamily::V4);
    let mut arp = RuleMatch::any();
    arp.ethertype = Some(0x0806);
    let rules = vec![tcp22, v4only, arp, RuleMatch::any()];
    let compiled = CompiledClassifier::build(&rules, &deep()).unwrap();
    let mut arp_key = FlowKey::new();
    arp_key.present.0 |= Present::ETHERTYPE;
    arp_key.ethertype = 0x0806;
    let cases = [
        (
            FlowKey::new()
                .with_ipv4([1, 1, 1, 1], [2, 2, 2, 2])
                .with_proto(6)
                .with_ports(1, 22),
            0,
        ),
        (
            FlowKey::new().with_ipv4([1, 1, 1, 1], [2, 2, 2, 2]).with_proto(6),
            1,
        ),
        (FlowKey::new().with_ipv6(1, 2).with_proto(6), 3),
        (arp_key, 2),
        (FlowKey::new(), 3),
    ];
    for (k, want) in cases {
        assert_eq!(compiled.classify(&k), want, "{k:?}");
    }
}

#[test]
fn compiled_classifier_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    let c = CompiledClassifier::build(&[RuleMatch::any()], &BuildConfig::default()).unwrap();
    shared(&c);
    let handle = std::thread::spawn(move || c.classify(&FlowKey::new()));
    assert_eq!(handle.join().unwrap(), 0);
}
