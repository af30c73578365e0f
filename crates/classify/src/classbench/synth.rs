//! Fresh ClassBench-shaped rule sets and traces, from a seed set and a seed number.
//!
//! ClassBench's `db_generator` grows a rule set of any size from a
//! *parameter file*: the joint distribution of prefix lengths, port range
//! classes and protocols of a real filter set, and a model of how its
//! addresses nest. [`synthesize`] does the same from a filter set itself
//! (say `../shared/classbench/large/acl1_100k`): every new rule starts from
//! a rule of the seed set drawn at random, so the set keeps the seed's
//! family and the joint distribution of its source and destination prefix
//! lengths, port ranges (wildcard, exact, `1024 : 65535`, the seed's
//! arbitrary ranges) and protocols; its addresses keep the seed rule's
//! first bits and draw up to the last 8 of the prefix afresh, so prefixes
//! nest and cluster as the seed's do (a /24 next to the seed's, a /3 of
//! any of the eight); an exact port is the seed rule's or, one time in
//! four, another exact port of the seed set. Exact duplicates are dropped,
//! as `db_generator` drops redundant rules. The same seed set, size and
//! seed number give the same rules on every machine.
//!
//! [`synthesize_trace`] is ClassBench's `trace_generator`: a header at a
//! random corner of a random rule (each field its low or high end), repeated
//! a Pareto-distributed number of times.
//!
//! ```
//! use palisade_classify::classbench::{parse_filters, synthesize, synthesize_trace, FilterOptions};
//! use palisade_classify::{Classifier, LinearClassifier};
//! let seed = parse_filters(
//!     "@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
//!      @192.168.7.0/24\t10.0.0.0/8\t1024 : 65535\t53 : 53\t0x11/0xFF\t0x0000/0x0000\t\n",
//!     &FilterOptions::default(),
//! )
//! .unwrap();
//! let rules = synthesize(&seed, 500, 7);
//! assert_eq!(rules.len(), 500);
//! assert_eq!(rules, synthesize(&seed, 500, 7), "deterministic");
//! assert!(rules.iter().all(|r| r.proto == Some(6) || r.proto == Some(17)));
//! let trace = synthesize_trace(&rules, 2_000, 7);
//! let linear = LinearClassifier::new(rules);
//! assert!(trace.iter().all(|k| linear.classify(k) != palisade_classify::NO_MATCH));
//! ```

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use palisade_packet::FlowKey;

use crate::{IpFamily, PortRange, Prefix, RuleMatch};

/// The deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 11) as u128 * n as u128) >> 53) as usize
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Most trailing prefix bits drawn afresh.
const FRESH_BITS: u8 = 8;

/// `n` distinct rules in the shape of `seed` (see the module docs), from
/// the seed number `seed_number`. Rules of `seed` that are not ClassBench
/// rules (more than one prefix or port range per field, other constraints)
/// are used for their ClassBench fields only. An empty seed set gives no rules.
pub fn synthesize(seed: &[RuleMatch], n: usize, seed_number: u64) -> Vec<RuleMatch> {
    let mut rng = Rng(seed_number ^ 0x5ca1_ab1e_0dd5_eed5);
    let exact_ports: Vec<u16> = seed
        .iter()
        .flat_map(|r| r.dst_port.iter().chain(&r.src_port))
        .filter(|p| p.lo == p.hi)
        .map(|p| p.lo)
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    // Bounded: a tiny seed set may not have n distinct variations.
    let mut tries = 0usize;
    while out.len() < n && !seed.is_empty() && tries < n.saturating_mul(20).max(1000) {
        tries += 1;
        let t = &seed[rng.below(seed.len())];
        let mut rng_prefix = |list: &[Prefix]| -> Vec<Prefix> {
            list.first()
                .map(|p| {
                    let bits = p.family.bits() as u32;
                    let fresh = (rng.below(FRESH_BITS as usize + 1) as u8).min(p.len) as u32;
                    let noise = (rng.next() as u128) << 64 | rng.next() as u128;
                    // The `fresh` bits just above the host part.
                    let span = if fresh == 0 {
                        0
                    } else {
                        ((1u128 << fresh) - 1) << (bits - p.len as u32)
                    };
                    let addr = (p.addr & !span) | (noise & span);
                    match p.family {
                        IpFamily::V4 => Prefix::v4((addr as u32).to_be_bytes(), p.len),
                        IpFamily::V6 => Prefix::v6(addr, p.len),
                    }
                })
                .into_iter()
                .collect()
        };
        let src = rng_prefix(&t.src);
        let dst = rng_prefix(&t.dst);
        let mut port = |list: &[PortRange]| -> Vec<PortRange> {
            list.first()
                .map(|r| {
                    if r.lo == r.hi && !exact_ports.is_empty() && rng.below(4) == 0 {
                        PortRange::single(exact_ports[rng.below(exact_ports.len())])
                    } else {
                        *r
                    }
                })
                .into_iter()
                .collect()
        };
        let rule = RuleMatch {
            family: t.family,
            src,
            dst,
            proto: t.proto,
            src_port: port(&t.src_port),
            dst_port: port(&t.dst_port),
            ..RuleMatch::any()
        };
        let fingerprint = (
            rule.src.first().map(|p| (p.addr, p.len)),
            rule.dst.first().map(|p| (p.addr, p.len)),
            rule.src_port.first().map(|p| (p.lo, p.hi)),
            rule.dst_port.first().map(|p| (p.lo, p.hi)),
            rule.proto,
            rule.family.map(|f| f.bits()),
        );
        if seen.insert(fingerprint) {
            out.push(rule);
        }
    }
    out
}

/// `n` headers in the manner of ClassBench's `trace_generator`: a random
/// rule's random corner (each address its prefix's first or last address,
/// each port range its low or high end, the rule's protocol or, for a
/// wildcard, 0 or 255), repeated a Pareto-distributed number of times (shape
/// 1, scale 0.1: most headers once, a few in long bursts). Deterministic.
pub fn synthesize_trace(rules: &[RuleMatch], n: usize, seed_number: u64) -> Vec<FlowKey> {
    let mut rng = Rng(seed_number ^ 0x007a_ce0f_c0ff_ee00);
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !rules.is_empty() {
        let r = &rules[rng.below(rules.len())];
        let family = r
            .family
            .or_else(|| r.src.first().map(|p| p.family))
            .or_else(|| r.dst.first().map(|p| p.family))
            .unwrap_or(IpFamily::V4);
        let mut addr = |list: &[Prefix]| -> u128 {
            let (lo, hi) = list.first().map_or(
                (
                    0,
                    if family == IpFamily::V4 {
                        u32::MAX as u128
                    } else {
                        u128::MAX
                    },
                ),
                |p| p.range(),
            );
            if rng.below(2) == 0 {
                lo
            } else {
                hi
            }
        };
        let (s, d) = (addr(&r.src), addr(&r.dst));
        let mut key = match family {
            IpFamily::V4 => FlowKey::new().with_ipv4((s as u32).to_be_bytes(), (d as u32).to_be_bytes()),
            IpFamily::V6 => FlowKey::new().with_ipv6(s, d),
        };
        let proto = r.proto.unwrap_or(if rng.below(2) == 0 { 0 } else { 255 });
        key = key.with_proto(proto);
        let mut port = |list: &[PortRange]| {
            let p = list.first().copied().unwrap_or(PortRange { lo: 0, hi: u16::MAX });
            if rng.below(2) == 0 {
                p.lo
            } else {
                p.hi
            }
        };
        let (sp, dp) = (port(&r.src_port), port(&r.dst_port));
        key = key.with_ports(sp, dp);
        // Pareto(a = 1, b = 0.1) copies: ceil(b / (1 - u)).
        let copies = (0.1 / (1.0 - rng.unit()).max(1e-9)).ceil().clamp(1.0, 10_000.0) as usize;
        for _ in 0..copies.min(n - out.len()) {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn seed() -> Vec<RuleMatch> {
        let rule = |s: ([u8; 4], u8), d: ([u8; 4], u8), dp: Option<PortRange>, proto| RuleMatch {
            family: Some(IpFamily::V4),
            src: vec![Prefix::v4(s.0, s.1)],
            dst: vec![Prefix::v4(d.0, d.1)],
            dst_port: dp.into_iter().collect(),
            proto,
            ..RuleMatch::any()
        };
        vec![
            rule(
                ([10, 1, 2, 0], 24),
                ([192, 0, 2, 7], 32),
                Some(PortRange::single(80)),
                Some(6),
            ),
            rule(
                ([10, 0, 0, 0], 8),
                ([0, 0, 0, 0], 0),
                Some(PortRange { lo: 1024, hi: 65535 }),
                Some(17),
            ),
            rule(([172, 16, 0, 0], 12), ([198, 51, 100, 0], 24), None, None),
            rule(([0, 0, 0, 0], 0), ([0, 0, 0, 0], 0), None, None),
        ]
    }

    #[test]
    fn the_shape_of_the_seed_is_kept() {
        let seed = seed();
        let rules = synthesize(&seed, 3_000, 1);
        assert_eq!(rules.len(), 3_000);
        let lens = |r: &RuleMatch| (r.src[0].len, r.dst[0].len);
        let seed_lens: Vec<(u8, u8)> = seed.iter().map(lens).collect();
        for r in &rules {
            assert!(seed_lens.contains(&lens(r)), "{r:?}");
            // The last 8 bits of the prefix at most are new.
            let t = seed.iter().find(|t| lens(t) == lens(r)).unwrap();
            let keep = r.src[0].len.saturating_sub(FRESH_BITS);
            assert_eq!(
                r.src[0].addr & Prefix::mask_of(IpFamily::V4, keep),
                t.src[0].addr & Prefix::mask_of(IpFamily::V4, keep)
            );
        }
        // Every seed rule's shape shows up: often, or as often as it has
        // variations (a /8 with 8 fresh bits has 256, the catch-all one).
        for (l, least) in seed_lens.iter().zip([500, 200, 500, 1]) {
            let count = rules.iter().filter(|r| lens(r) == *l).count();
            assert!(count >= least, "{l:?}: {count}");
        }
        // Ranges are kept, exact ports come from the seed.
        assert!(rules
            .iter()
            .any(|r| r.dst_port == vec![PortRange { lo: 1024, hi: 65535 }]));
        assert!(rules
            .iter()
            .flat_map(|r| &r.dst_port)
            .all(|p| p.lo != p.hi || p.lo == 80));
        assert_ne!(synthesize(&seed, 100, 2), synthesize(&seed, 100, 1));
    }

    #[test]
    fn a_small_seed_stops_when_variations_run_out() {
        let one = vec![RuleMatch {
            src: vec![Prefix::v4([10, 0, 0, 0], 2)],
            ..RuleMatch::any()
        }];
        // /2 has four variations at most.
        assert!(synthesize(&one, 100, 1).len() <= 4);
        assert!(synthesize(&[], 100, 1).is_empty());
    }

    #[test]
    fn trace_headers_are_corners_of_rules() {
        let rules = synthesize(&seed(), 200, 3);
        let trace = synthesize_trace(&rules, 5_000, 3);
        assert_eq!(trace.len(), 5_000);
        for k in &trace {
            assert!(rules.iter().any(|r| r.matches(k)), "{k:?}");
        }
        assert_eq!(trace, synthesize_trace(&rules, 5_000, 3));
    }
}
