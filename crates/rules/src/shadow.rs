//! Finding, for each rule of an ACL, the first earlier rule that covers it,
//! without comparing every pair.
//!
//! A rule that covers another has, for the other's source address, a prefix
//! that contains it (or no source constraint), the same for the destination,
//! the same protocol or none, and a destination port range that contains the
//! other's (or none). So earlier rules are indexed by their exact source
//! prefix, then destination prefix, then protocol, then destination port
//! (single ports by value; ranges and lists apart), and a rule looks up only
//! the ancestors of its own prefixes, at the prefix lengths that occur in the
//! ACL: a few dozen hash lookups instead of a scan of every earlier rule.
//! Each candidate found is confirmed with [`covers`], the definition, so the
//! warnings are exactly those of the pairwise check. A rule is looked up
//! before it is inserted, so every candidate is earlier.
//!
//! Cost: O(n · L²) lookups for L distinct prefix lengths, plus the
//! candidates confirmed, which are only rules with an ancestor prefix pair,
//! a compatible protocol and port: near n log n on real rule sets. Rules that
//! share one source, destination and protocol and differ only by port
//! *ranges* are still compared pairwise within that group.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use palisade_classify::{IpFamily, PortRange, Prefix, RuleMatch};

use crate::parse::families;
use crate::validate::covers;

/// A prefix key: `None` for "no constraint" (an empty list).
type AddrKey = Option<(IpFamily, u128, u8)>;

/// A multiply-rotate hasher (the keys are addresses from the operator's own
/// rule file, not from the network, so no flooding defence is needed and
/// SipHash was a tenth of a large reload).
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Rules indexed by destination port.
#[derive(Default)]
struct PortIndex {
    /// No port constraint (or the full range).
    any: Vec<usize>,
    /// Exactly one single port.
    single: Map<u16, Vec<usize>>,
    /// Ranges and lists.
    other: Vec<usize>,
}

/// Earlier rules: source key -> destination key -> protocol -> ports.
#[derive(Default)]
pub(crate) struct Index {
    by_src: Map<AddrKey, Map<AddrKey, Map<Option<u8>, PortIndex>>>,
    /// Prefix lengths present, per family, for sources and destinations.
    src_lens: [BTreeSet<u8>; 2],
    dst_lens: [BTreeSet<u8>; 2],
    /// Rules filed so far.
    count: usize,
}

fn fam_ix(f: IpFamily) -> usize {
    match f {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

fn key_of(p: &Prefix) -> AddrKey {
    Some((p.family, p.addr, p.len))
}

/// The keys a list is filed under: each prefix, or `None` for no constraint.
fn keys_of(list: &[Prefix]) -> Vec<AddrKey> {
    if list.is_empty() {
        vec![None]
    } else {
        list.iter().map(key_of).collect()
    }
}

/// The keys under which a rule covering `list` (for the families `fams`) can be filed.
fn ancestor_keys(list: &[Prefix], fams: &[IpFamily], lens: &[BTreeSet<u8>; 2]) -> Vec<AddrKey> {
    let mut out = vec![None];
    // A covering rule contains the first prefix of a family the rule can match.
    let pick = list.iter().find(|p| fams.contains(&p.family));
    match pick {
        Some(p) => {
            for &l in lens[fam_ix(p.family)].range(..=p.len) {
                let masked = p.addr & Prefix::mask_of(p.family, l);
                out.push(Some((p.family, masked, l)));
            }
        }
        None if list.is_empty() => {
            // Any address: only a whole-space prefix covers it.
            for &f in fams {
                if lens[fam_ix(f)].contains(&0) {
                    out.push(Some((f, 0, 0)));
                }
            }
        }
        None => {}
    }
    out
}

fn is_any(ranges: &[PortRange]) -> bool {
    ranges.is_empty() || ranges.iter().any(PortRange::is_full)
}

/// The single port of a list that is one port (possibly repeated), if it is one.
fn single_port(ranges: &[PortRange]) -> Option<u16> {
    let first = ranges.first()?;
    (first.lo == first.hi && ranges.iter().all(|r| r == first)).then_some(first.lo)
}

impl Index {
    /// Files rule `i`.
    pub(crate) fn insert(&mut self, i: usize, m: &RuleMatch) {
        self.count = self.count.max(i + 1);
        for p in &m.src {
            self.src_lens[fam_ix(p.family)].insert(p.len);
        }
        for p in &m.dst {
            self.dst_lens[fam_ix(p.family)].insert(p.len);
        }
        for s in keys_of(&m.src) {
            let by_dst = self.by_src.entry(s).or_default();
            for d in keys_of(&m.dst) {
                let ports = by_dst.entry(d).or_default().entry(m.proto).or_default();
                if is_any(&m.dst_port) {
                    ports.any.push(i);
                } else if let Some(p) = single_port(&m.dst_port) {
                    ports.single.entry(p).or_default().push(i);
                } else {
                    ports.other.push(i);
                }
            }
        }
    }

    /// The first filed rule that covers `m` (rules are `all[i]`).
    pub(crate) fn first_cover(&self, m: &RuleMatch, all: &[&RuleMatch]) -> Option<usize> {
        let fams: Vec<IpFamily> = if m.needs_ip() {
            families(m)
        } else {
            vec![IpFamily::V4, IpFamily::V6]
        };
        if fams.is_empty() {
            // A rule of no family (an error of its own) is covered by any rule
            // passing the other checks: scan, as the definition does.
            return all.iter().take(self.count).position(|a| covers(a, m));
        }
        let mut best: Option<usize> = None;
        let consider = |list: &[usize], best: &mut Option<usize>| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    break; // lists are in rule order
                }
                if all.get(i).is_some_and(|a| covers(a, m)) {
                    *best = Some(i);
                    break;
                }
            }
        };
        let dst_keys = ancestor_keys(&m.dst, &fams, &self.dst_lens);
        for s in ancestor_keys(&m.src, &fams, &self.src_lens) {
            let Some(by_dst) = self.by_src.get(&s) else {
                continue;
            };
            for d in &dst_keys {
                let Some(by_proto) = by_dst.get(d) else {
                    continue;
                };
                for proto in [None, m.proto] {
                    let Some(ports) = by_proto.get(&proto) else {
                        continue;
                    };
                    consider(&ports.any, &mut best);
                    consider(&ports.other, &mut best);
                    if let Some(list) = single_port(&m.dst_port).and_then(|p| ports.single.get(&p)) {
                        consider(list, &mut best);
                    }
                    if m.proto.is_none() {
                        break; // [None, None]: looked at once
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_classify::{FragmentMatch, SetMatch, TcpFlagsMatch};
    use proptest::prelude::*;

    /// The definition: the first earlier rule that covers rule `j`.
    fn naive(all: &[&RuleMatch], j: usize) -> Option<usize> {
        all[..j].iter().position(|a| covers(a, all[j]))
    }

    fn prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            4 => (prop::sample::select(vec![0x0a00_0000u32, 0x0a01_0000, 0x0a01_0100, 0xc000_0200]), 0u32..0x300, 0u8..=32)
                .prop_map(|(b, o, l)| Prefix::v4((b + o).to_be_bytes(), l)),
            1 => (prop::sample::select(vec![0x2001_0db8u128 << 96, 0xfe80 << 112]), 0u8..=128)
                .prop_map(|(a, l)| Prefix::v6(a, l)),
        ]
    }

    fn ports() -> impl Strategy<Value = Vec<PortRange>> {
        prop_oneof![
            3 => Just(vec![]),
            3 => prop::sample::select(vec![22u16, 53, 80]).prop_map(|p| vec![PortRange::single(p)]),
            1 => Just(vec![PortRange { lo: 0, hi: 65535 }]),
            1 => Just(vec![PortRange::single(80), PortRange::single(80)]),
            2 => (0u16..100, 0u16..100).prop_map(|(a, w)| vec![PortRange { lo: a, hi: a + w }]),
            1 => Just(vec![PortRange::single(22), PortRange { lo: 50, hi: 90 }]),
        ]
    }

    fn rule() -> impl Strategy<Value = RuleMatch> {
        (
            prop::collection::vec(prefix(), 0..3),
            prop::collection::vec(prefix(), 0..3),
            prop::option::weighted(0.6, prop::sample::select(vec![6u8, 17, 1])),
            ports(),
            ports(),
            prop::option::weighted(0.1, prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)]),
            (
                prop::option::weighted(
                    0.1,
                    (0u16..4, 0u16..4).prop_map(|(v, m)| TcpFlagsMatch {
                        value: v & m,
                        mask: m,
                    }),
                ),
                prop::collection::vec(1u16..3, 0..2),
                prop::option::weighted(0.1, Just(FragmentMatch::First)),
                prop::option::weighted(0.1, (0u32..4, 0u32..4)),
                prop::option::weighted(0.05, Just(0x0806u16)),
            ),
        )
            .prop_map(
                |(src, dst, proto, sp, dp, family, (flags, vlan, fragment, sets, ethertype))| {
                    let mut m = RuleMatch::any();
                    m.src = src;
                    m.dst = dst;
                    m.proto = proto;
                    if matches!(proto, Some(6 | 17)) {
                        m.src_port = sp;
                        m.dst_port = dp;
                    }
                    m.family = family;
                    m.tcp_flags = flags.filter(|_| proto == Some(6));
                    m.vlan = vlan;
                    m.fragment = fragment;
                    if let Some((member, non)) = sets {
                        m.sets = SetMatch {
                            member,
                            non_member: non & !member,
                            needs_ports: false,
                        };
                    }
                    m.ethertype = ethertype;
                    m
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn the_index_finds_the_first_covering_rule(rules in prop::collection::vec(rule(), 1..80)) {
            let all: Vec<&RuleMatch> = rules.iter().collect();
            let mut index = Index::default();
            for j in 0..all.len() {
                prop_assert_eq!(index.first_cover(all[j], &all), naive(&all, j), "rule {}: {:?}", j, all[j]);
                index.insert(j, all[j]);
            }
        }
    }
}
