//! What the compiled classifier indexes of a rule, and what it leaves to the
//! reference: the ONE place that decides which rules need the exact check.
//!
//! A rule is looked up in the *part* of each address family it can match
//! (IPv4 keys and keys without an IP header in one, IPv6 keys in the other),
//! projected there onto a box of the five point dimensions (source and
//! destination address, or their ranks for IPv6, source and destination
//! port, protocol) and the requirement bits a key must carry. The box holds
//! every key of that family the rule matches. Whether "point in box and
//! requirements carried" is the rule's *whole* match, so that a leaf may
//! answer without asking [`RuleMatch::matches`], is decided by
//! [`needs_reference_check`] alone, from the rule itself:
//!
//! * the *indexed* fields (`family`, `src`, `dst`, `proto`, `src_port`,
//!   `dst_port`) are exact when each address has at most one prefix of the
//!   part's family and each port at most one range;
//! * every other field must be as in [`RuleMatch::any()`]. That test is
//!   written as "the rule with its indexed fields cleared equals `any()`",
//!   so a field added to [`RuleMatch`] later is covered without a change
//!   here: a rule that constrains it is verified by the reference, which
//!   knows the field. (This relies on what `matcher.rs` promises: every
//!   field is one more condition, and `any()` leaves each unconstrained.)

use alloc::vec::Vec;

use super::ranks::Ranks;
use super::{DIMS, REQ_DST_IN, REQ_IP, REQ_PORTS, REQ_PROTO, REQ_SRC_IN, REQ_V4};
use crate::leaf::{LeafRule, NEVER, VERIFY};
use crate::{IpFamily, PortRange, Prefix, RuleMatch};

/// The families of the parts, by part number: IPv4 (which also takes every
/// key without an IP header) and IPv6.
pub(super) const PART_FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

/// Whether `rule` constrains anything besides the indexed fields; if so,
/// every candidate of it is verified with [`RuleMatch::matches`]. See the
/// module docs: a field added to [`RuleMatch`] is non-indexed by default.
///
/// The test compares the rule, its indexed fields cleared, with `any()`.
pub(crate) fn constrains_unindexed_fields(rule: &RuleMatch) -> bool {
    let unindexed = RuleMatch {
        family: None,
        src: Vec::new(),
        dst: Vec::new(),
        proto: None,
        src_port: Vec::new(),
        dst_port: Vec::new(),
        ..rule.clone()
    };
    unindexed != RuleMatch::any()
}

/// Whether the leaves must ask [`RuleMatch::matches`] about `rule` for keys
/// of `family` whose point lies in its box: THE decision. True when the rule
/// has more than one prefix of `family` on an address or more than one
/// range on a port (its box is their hull), or constrains a field the
/// point does not carry ([`constrains_unindexed_fields`]).
pub(crate) fn needs_reference_check(rule: &RuleMatch, family: IpFamily) -> bool {
    let of_family = |list: &[Prefix]| list.iter().filter(|p| p.family == family).count();
    of_family(&rule.src) > 1
        || of_family(&rule.dst) > 1
        || rule.src_port.len() > 1
        || rule.dst_port.len() > 1
        || constrains_unindexed_fields(rule)
}

/// A rule's box in one part (inclusive bounds per dimension), its
/// requirement bits, whether the box check is the whole match, and how
/// specific it is on each dimension.
#[derive(Clone, Copy, Debug)]
pub(super) struct RuleBox {
    pub lo: [u32; DIMS],
    pub hi: [u32; DIMS],
    pub req: u8,
    /// The box and requirements are the rule's whole match (no reference check).
    pub plain: bool,
    /// Log2 of the rule's width on each dimension, on the scale of the
    /// field (for IPv6 addresses, below the rule set's common prefix), which
    /// is what splitting rules into groups by their most specific field compares.
    pub width_bits: [u32; DIMS],
}

impl RuleBox {
    /// A box that no point reaches (for rules outside the part).
    pub(super) const NONE: RuleBox = RuleBox {
        lo: [0; DIMS],
        hi: [0; DIMS],
        req: NEVER,
        plain: false,
        width_bits: [0; DIMS],
    };

    /// The projection of `rule` into the part of `family`, or `None` when
    /// the rule can match no key of that part. `ranks` are the parts' rank
    /// indexes, `common` the bits every IPv6 prefix of each address shares.
    pub(super) fn project(
        rule: &RuleMatch,
        family: IpFamily,
        ranks: &Ranks,
        common: [u8; 2],
    ) -> Option<RuleBox> {
        let dim_max = ranks.dim_max(family);
        if rule.family.is_some_and(|f| f != family) {
            return None;
        }
        let mut lo = [0u32; DIMS];
        let mut hi = dim_max;
        let mut width_bits = [32, 32, 16, 16, 8];
        let mut inside = 0u8;
        for (d, list) in [&rule.src, &rule.dst].into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut hull = (u32::MAX, 0u32);
            let mut bits = 0u32;
            // Every prefix of the list requires the key inside the common prefix (a window).
            let mut all_inside = true;
            for p in list.iter().filter(|p| p.family == family) {
                let (l, h) = match family {
                    IpFamily::V4 => {
                        let (l, h) = p.range();
                        let (l, h) = (l as u32, h as u32);
                        match (&ranks.v4, d) {
                            (Some(v4), 0) => (v4.src.rank(l), v4.src.rank(h)),
                            (Some(v4), _) => (v4.dst.rank(l), v4.dst.rank(h)),
                            (None, _) => (l, h),
                        }
                    }
                    IpFamily::V6 if p.len == 0 => {
                        all_inside = false;
                        (0, dim_max[d])
                    }
                    IpFamily::V6 => {
                        let (l, h, inside) = if d == 0 {
                            ranks.src.range_of(p)
                        } else {
                            ranks.dst.range_of(p)
                        };
                        all_inside &= inside;
                        (l, h)
                    }
                };
                hull = (hull.0.min(l), hull.1.max(h));
                let len = match family {
                    IpFamily::V4 => p.len as u32,
                    IpFamily::V6 => p.len.saturating_sub(common[d]) as u32,
                };
                bits = bits.max(32u32.saturating_sub(len));
            }
            if hull.0 > hull.1 {
                // No prefix of this family: no key of the part matches the list.
                return None;
            }
            (lo[d], hi[d]) = hull;
            width_bits[d] = bits;
            if family == IpFamily::V6 && all_inside {
                inside |= [REQ_SRC_IN, REQ_DST_IN][d];
            }
        }
        let port_bounds = |list: &[PortRange]| -> (u32, u32) {
            list.iter()
                .fold((u32::MAX, 0), |b, r| (b.0.min(r.lo as u32), b.1.max(r.hi as u32)))
        };
        if !rule.src_port.is_empty() {
            (lo[2], hi[2]) = port_bounds(&rule.src_port);
        }
        if !rule.dst_port.is_empty() {
            (lo[3], hi[3]) = port_bounds(&rule.dst_port);
        }
        if let Some(p) = rule.proto {
            lo[4] = p as u32;
            hi[4] = p as u32;
        }
        if let (Some(&min), Some(&max)) = (rule.protos.iter().min(), rule.protos.iter().max()) {
            // A list of protocols: its hull narrows the box; the listed values
            // themselves are checked by the reference (`protos` is not indexed).
            lo[4] = min as u32;
            hi[4] = max as u32;
        }
        for d in 2..DIMS {
            let w = hi[d] as u64 - lo[d] as u64 + 1;
            width_bits[d] = 63 - w.leading_zeros();
        }
        // What a key must carry for the rule to match (implied by the rule).
        let mut req = 0;
        if rule.needs_ip() {
            req |= REQ_IP;
        }
        // In the IPv4 part, an address constraint or the family can only be
        // met by an IPv4 key (keys without an IP header share the part).
        if family == IpFamily::V4 && (rule.family.is_some() || !rule.src.is_empty() || !rule.dst.is_empty()) {
            req |= REQ_V4;
        }
        if rule.proto.is_some() || !rule.protos.is_empty() {
            req |= REQ_PROTO;
        }
        req |= inside;
        if !rule.src_port.is_empty() || !rule.dst_port.is_empty() {
            req |= REQ_PORTS;
        }
        Some(RuleBox {
            lo,
            hi,
            req,
            plain: !needs_reference_check(rule, family),
            width_bits,
        })
    }

    /// The rule as a leaf stores it.
    pub(super) fn leaf_rule(&self, idx: u32) -> LeafRule {
        let span: [u32; DIMS] = core::array::from_fn(|d| self.hi[d].wrapping_sub(self.lo[d]));
        LeafRule {
            lo: self.lo,
            span,
            need: self.req | if self.plain { 0 } else { VERIFY },
            idx,
        }
    }
}

/// The number of leading bits that every IPv6 prefix of `list` (not `/0`) shares, at most their shortest length.
pub(super) fn common_bits<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> u8 {
    let mut first: Option<Prefix> = None;
    let mut bits = 128u8;
    for p in prefixes.filter(|p| p.family == IpFamily::V6 && p.len > 0) {
        let f = *first.get_or_insert(*p);
        bits = bits.min(p.len).min((f.addr ^ p.addr).leading_zeros() as u8);
    }
    if first.is_none() {
        0
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FragmentMatch, TcpFlagsMatch};

    fn v4_web() -> RuleMatch {
        RuleMatch {
            family: Some(IpFamily::V4),
            src: alloc::vec![Prefix::v4([10, 0, 0, 0], 8)],
            dst: alloc::vec![Prefix::v4([192, 0, 2, 0], 24)],
            proto: Some(6),
            src_port: alloc::vec![PortRange { lo: 1024, hi: 65535 }],
            dst_port: alloc::vec![PortRange::single(443)],
            ..RuleMatch::any()
        }
    }

    #[test]
    fn indexed_fields_alone_need_no_reference_check() {
        assert!(!needs_reference_check(&v4_web(), IpFamily::V4));
        assert!(!needs_reference_check(&RuleMatch::any(), IpFamily::V6));
        let v6 = RuleMatch {
            src: alloc::vec![Prefix::v6(0x2001_0db8 << 96, 32)],
            ..v4_web()
        };
        // One IPv6 prefix on the source, as seen by the IPv6 part.
        let mixed = RuleMatch { family: None, ..v6 };
        assert!(!needs_reference_check(&mixed, IpFamily::V6));
    }

    #[test]
    fn every_other_field_needs_the_reference_check() {
        let mut cases: Vec<(&str, RuleMatch)> = Vec::new();
        let base = v4_web();
        cases.push((
            "icmp_type",
            RuleMatch {
                icmp_type: Some(8),
                ..base.clone()
            },
        ));
        cases.push((
            "icmp_code",
            RuleMatch {
                icmp_code: Some(0),
                ..base.clone()
            },
        ));
        cases.push((
            "a list of protocols",
            RuleMatch {
                proto: None,
                protos: alloc::vec![6, 17],
                ..base.clone()
            },
        ));
        cases.push((
            "a list of ICMP types",
            RuleMatch {
                icmp_types: alloc::vec![0, 8],
                ..base.clone()
            },
        ));
        cases.push((
            "a list of ICMP codes",
            RuleMatch {
                icmp_codes: alloc::vec![0, 1],
                ..base.clone()
            },
        ));
        let flags = TcpFlagsMatch { value: 2, mask: 0x12 };
        cases.push((
            "tcp_flags",
            RuleMatch {
                tcp_flags: Some(flags),
                ..base.clone()
            },
        ));
        cases.push((
            "vlan",
            RuleMatch {
                vlan: alloc::vec![10],
                ..base.clone()
            },
        ));
        cases.push((
            "fragment",
            RuleMatch {
                fragment: Some(FragmentMatch::None),
                ..base.clone()
            },
        ));
        cases.push((
            "dscp",
            RuleMatch {
                dscp: alloc::vec![46],
                ..base.clone()
            },
        ));
        cases.push((
            "ethertype",
            RuleMatch {
                ethertype: Some(0x0800),
                ..base.clone()
            },
        ));
        let two = alloc::vec![Prefix::v4([10, 0, 0, 0], 8), Prefix::v4([11, 0, 0, 0], 8)];
        cases.push((
            "two sources",
            RuleMatch {
                src: two.clone(),
                ..base.clone()
            },
        ));
        cases.push((
            "two destinations",
            RuleMatch {
                dst: two,
                ..base.clone()
            },
        ));
        let ports = alloc::vec![PortRange::single(1), PortRange::single(3)];
        cases.push((
            "two source ports",
            RuleMatch {
                src_port: ports.clone(),
                ..base.clone()
            },
        ));
        cases.push((
            "two destination ports",
            RuleMatch {
                dst_port: ports,
                ..base.clone()
            },
        ));
        for (what, rule) in cases {
            assert!(needs_reference_check(&rule, IpFamily::V4), "{what}");
            let b = RuleBox::project(&rule, IpFamily::V4, &Ranks::default(), [0; 2]).unwrap();
            assert!(!b.plain, "{what}");
            assert_ne!(b.leaf_rule(0).need & VERIFY, 0, "{what}");
        }
    }

    #[test]
    fn a_rule_is_in_the_parts_of_the_families_it_can_match() {
        let none = Ranks::default();
        let in_part = |r: &RuleMatch, f| RuleBox::project(r, f, &none, [0; 2]).is_some();
        let v4 = v4_web();
        assert!(in_part(&v4, IpFamily::V4) && !in_part(&v4, IpFamily::V6));
        let any_family = RuleMatch {
            proto: Some(17),
            ..RuleMatch::any()
        };
        assert!(in_part(&any_family, IpFamily::V4) && in_part(&any_family, IpFamily::V6));
        let v6_src = RuleMatch {
            src: alloc::vec![Prefix::v6(1, 128)],
            ..RuleMatch::any()
        };
        assert!(!in_part(&v6_src, IpFamily::V4) && in_part(&v6_src, IpFamily::V6));
        let both = RuleMatch {
            src: alloc::vec![Prefix::v6(1, 128), Prefix::v4([1, 2, 3, 4], 32)],
            ..RuleMatch::any()
        };
        assert!(in_part(&both, IpFamily::V4) && in_part(&both, IpFamily::V6));
    }

    #[test]
    fn common_bits_of_a_site() {
        let site = 0x2001_0db8_0001u128 << 80;
        let list = [
            Prefix::v6(site, 48),
            Prefix::v6(site | 1 << 70, 56),
            Prefix::v6(0, 0),
        ];
        assert_eq!(common_bits(list.iter()), 48);
        assert_eq!(common_bits([Prefix::v6(site, 48), Prefix::v6(1, 128)].iter()), 2);
        assert_eq!(common_bits([Prefix::v4([1, 2, 3, 4], 32)].iter()), 0);
    }
}
