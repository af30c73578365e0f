//! Property tests: compiled sets equal a naive scan of their elements, for
//! IPv4 and IPv6 addresses (small sets and trie/indexed ones) and ports, and
//! `Membership::fill` writes exactly the bits the naive scan gives.

use std::sync::Arc;

use palisade_classify::{
    AddrList, CompiledSet, IpFamily, Membership, PortList, PortRange, Prefix, SetField, MAX_SET_TESTS,
};
use palisade_packet::{FlowKey, Present};
use proptest::prelude::*;

/// Addresses cluster around a few bases so prefixes nest, overlap and touch.
const V4_BASES: [u32; 4] = [0x0a00_0000, 0x0a01_ff00, 0xc0a8_0100, 0xffff_ff00];
const V6_BASES: [u128; 3] = [0x2001_0db8 << 96, (0x2001_0db8 << 96) | (1 << 80), 0xfe80 << 112];

fn v4_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0..V4_BASES.len(), 0u32..0x2_0000).prop_map(|(b, off)| V4_BASES[b].wrapping_add(off)),
        1 => any::<u32>(),
        1 => prop::sample::select(vec![0u32, u32::MAX, 0x0a00_0000, 0x0aff_ffff]),
    ]
}

fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => (0..V6_BASES.len(), any::<u64>()).prop_map(|(b, off)| V6_BASES[b] | (off as u128 >> 8)),
        1 => any::<u128>(),
        1 => prop::sample::select(vec![0u128, u128::MAX]),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        4 => (v4_addr(), prop_oneof![0u8..=32, 20u8..=32, Just(24u8), Just(32u8)])
            .prop_map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)),
        1 => (v6_addr(), prop_oneof![0u8..=128, 28u8..=64, Just(128u8)]).prop_map(|(a, l)| Prefix::v6(a, l)),
    ]
}

/// A blocklist's prefixes: long ones (so hundreds of them stay apart), some
/// whole /16s and /24s, and a few /8s.
fn long_prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        8 => (v4_addr(), prop_oneof![17u8..=32, Just(24u8), Just(32u8)]).prop_map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)),
        1 => (v4_addr(), prop_oneof![Just(8u8), Just(16u8), 9u8..=16]).prop_map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)),
        2 => (v6_addr(), prop_oneof![32u8..=64, 48u8..=128]).prop_map(|(a, l)| Prefix::v6(a, l)),
        // Wider than an index bucket: they cross bucket edges.
        1 => (v6_addr(), 1u8..=24).prop_map(|(a, l)| Prefix::v6(a, l)),
    ]
}

/// Small lists, and lists long enough for the trie and the bucket index.
fn prefixes() -> impl Strategy<Value = Vec<Prefix>> {
    prop_oneof![
        prop::collection::vec(prefix(), 0..40),
        prop::collection::vec(long_prefix(), 300..2000),
    ]
}

fn naive_addr(list: &[Prefix], family: IpFamily, addr: u128) -> bool {
    list.iter().any(|p| p.contains(family, addr))
}

/// Probes: random addresses and the edges of every element.
fn probes(list: &[Prefix], extra4: &[u32], extra6: &[u128]) -> Vec<(IpFamily, u128)> {
    let mut out: Vec<(IpFamily, u128)> = extra4.iter().map(|&a| (IpFamily::V4, a as u128)).collect();
    out.extend(extra6.iter().map(|&a| (IpFamily::V6, a)));
    for p in list {
        let (lo, hi) = p.range();
        let max = if p.family == IpFamily::V4 {
            u32::MAX as u128
        } else {
            u128::MAX
        };
        for a in [lo.wrapping_sub(1) & max, lo, hi, hi.wrapping_add(1) & max] {
            out.push((p.family, a));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn address_sets_equal_a_scan_of_their_elements(
        list in prefixes(),
        extra4 in prop::collection::vec(v4_addr(), 64),
        extra6 in prop::collection::vec(v6_addr(), 64),
    ) {
        let set = CompiledSet::addresses(&AddrList::from_prefixes(list.iter().copied()));
        for (family, addr) in probes(&list, &extra4, &extra6) {
            prop_assert_eq!(
                set.contains_addr(family, addr),
                naive_addr(&list, family, addr),
                "{:?} {:#x}", family, addr
            );
        }
    }

    #[test]
    fn adding_and_removing_elements_keeps_the_list_exact(
        list in prop::collection::vec(prefix(), 0..60),
        more in prop::collection::vec(prefix(), 0..20),
        drop in prop::collection::vec(0usize..80, 0..20),
    ) {
        let mut elements = AddrList::from_prefixes(list.iter().copied());
        elements.extend(more.iter().copied());
        let mut want: Vec<Prefix> = list.iter().chain(&more).copied().collect();
        want.sort_by_key(|p| (p.family == IpFamily::V6, p.addr, p.len));
        want.dedup();
        let gone: Vec<Prefix> = drop.iter().filter_map(|&i| want.get(i).copied()).collect();
        prop_assert_eq!(elements.remove_all(&gone), {
            let mut g = gone.clone();
            g.sort_by_key(|p| (p.family == IpFamily::V6, p.addr, p.len));
            g.dedup();
            g.len()
        });
        want.retain(|p| !gone.contains(p));
        prop_assert_eq!(elements.iter().collect::<Vec<_>>(), want.clone());
        let set = CompiledSet::addresses(&elements);
        for (family, addr) in probes(&list, &[], &[]) {
            prop_assert_eq!(set.contains_addr(family, addr), naive_addr(&want, family, addr));
        }
    }

    #[test]
    fn updated_sets_equal_a_scan_of_the_changed_list(
        list in prop::collection::vec(long_prefix(), 300..2000),
        steps in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(prefix(), 1..6), prop::collection::vec(0usize..2000, 0..6)),
            1..6,
        ),
        extra4 in prop::collection::vec(v4_addr(), 32),
    ) {
        let mut elements = AddrList::from_prefixes(list.iter().copied());
        let mut set = CompiledSet::addresses(&elements);
        let mut probe_list = list.clone();
        for (add, more, drop) in steps {
            let listed: Vec<Prefix> = elements.iter().collect();
            let touched: Vec<Prefix> = if add {
                more.iter().copied().filter(|p| !elements.lists(p)).collect()
            } else {
                drop.iter().filter_map(|&i| listed.get(i).copied()).collect()
            };
            let touched = AddrList::from_prefixes(touched);
            if add {
                elements.extend(touched.iter());
            } else {
                let gone: Vec<Prefix> = touched.iter().collect();
                elements.remove_all(&gone);
            }
            probe_list.extend(touched.iter());
            set = set.updated(&elements, &touched);
            let now: Vec<Prefix> = elements.iter().collect();
            for (family, addr) in probes(&probe_list, &extra4, &[]) {
                prop_assert_eq!(
                    set.contains_addr(family, addr),
                    naive_addr(&now, family, addr),
                    "{:?} {:#x}", family, addr
                );
            }
            prop_assert_eq!(set.elements(), elements.len());
        }
    }

    #[test]
    fn port_sets_equal_a_scan_of_their_elements(
        ranges in prop::collection::vec(
            prop_oneof![
                any::<u16>().prop_map(PortRange::single),
                (any::<u16>(), 0u16..2000).prop_map(|(a, w)| PortRange { lo: a, hi: a.saturating_add(w) }),
            ],
            0..30,
        ),
        extra in prop::collection::vec(any::<u16>(), 64),
    ) {
        let set = CompiledSet::ports(&PortList::from_ranges(ranges.iter().copied()));
        let mut ports = extra;
        for r in &ranges {
            ports.extend([r.lo.wrapping_sub(1), r.lo, r.hi, r.hi.wrapping_add(1)]);
        }
        ports.extend([0, 65535]);
        for p in ports {
            prop_assert_eq!(set.contains_port(p), ranges.iter().any(|r| r.contains(p)), "port {}", p);
        }
    }

    #[test]
    fn fill_writes_the_naive_bits(
        sets in prop::collection::vec(prefixes(), 1..4),
        port_set in prop::collection::vec(any::<u16>().prop_map(PortRange::single), 0..20),
        keys in prop::collection::vec(
            (0u8..5, v4_addr(), v4_addr(), v6_addr(), v6_addr(), any::<u16>(), any::<u16>(), any::<bool>(), any::<u32>()),
            1..200,
        ),
        fields in prop::collection::vec(prop_oneof![Just(SetField::Src), Just(SetField::Dst)], 1..10),
    ) {
        let compiled: Vec<Arc<CompiledSet>> = sets
            .iter()
            .map(|l| Arc::new(CompiledSet::addresses(&AddrList::from_prefixes(l.iter().copied()))))
            .collect();
        let ports = Arc::new(CompiledSet::ports(&PortList::from_ranges(port_set.iter().copied())));
        let mut tests: Vec<(Arc<CompiledSet>, SetField)> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (Arc::clone(&compiled[i % compiled.len()]), *f))
            .collect();
        tests.push((Arc::clone(&ports), SetField::DstPort));
        let membership = Membership::new(tests.clone()).unwrap();
        let mut batch: Vec<FlowKey> = keys
            .iter()
            .map(|&(fam, s4, d4, s6, d6, sp, dp, has_ports, junk)| {
                let mut k = match fam {
                    0..=2 => FlowKey::new().with_ipv4(s4.to_be_bytes(), d4.to_be_bytes()),
                    3 => FlowKey::new().with_ipv6(s6, d6),
                    _ => FlowKey::new(),
                };
                if has_ports {
                    k = k.with_ports(sp, dp);
                }
                k.set_bits = junk; // stale bits must be overwritten
                k
            })
            .collect();
        membership.fill(&mut batch);
        for k in &batch {
            let mut want = 0u32;
            for (bit, (_, field)) in tests.iter().enumerate() {
                let hit = match field {
                    SetField::DstPort => {
                        k.present.has(Present::PORTS) && port_set.iter().any(|r| r.contains(k.dst_port))
                    }
                    _ => {
                        let list = &sets[bit % sets.len()];
                        let a = if *field == SetField::Src { k.src_ip } else { k.dst_ip };
                        match k.ip_family() {
                            Some(4) => naive_addr(list, IpFamily::V4, a),
                            Some(6) => naive_addr(list, IpFamily::V6, a),
                            _ => false,
                        }
                    }
                };
                want |= u32::from(hit) << bit;
            }
            prop_assert_eq!(k.set_bits, want, "{:?}", k);
        }
    }
}

#[test]
fn membership_refuses_too_many_tests() {
    let set = Arc::new(CompiledSet::addresses(&AddrList::new()));
    let tests = vec![(set, SetField::Src); MAX_SET_TESTS + 1];
    let e = Membership::new(tests).unwrap_err();
    assert_eq!(
        e.to_string(),
        "33 set tests, more than the limit of 32 (MAX_SET_TESTS)"
    );
}
