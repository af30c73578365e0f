//! Keys at the corners of rules: the test vectors where classifiers disagree.
//!
//! A compiled classifier cuts the key space at rule boundaries, so its bugs
//! live at those boundaries: the lowest and highest address of a prefix, the
//! ends of a port range and their neighbours, the exact protocol, ICMP, flag,
//! VLAN, fragment, DSCP and flow-state values, and the set bits a rule tests. [`corner_keys`] produces such keys for a
//! rule list, plus a few just outside each rule, for self-tests (compiled
//! against reference) and for generating benchmark traces.

use alloc::vec::Vec;

use palisade_packet::{FlowKey, FlowState, FragmentState, Present};

use crate::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch};

/// How many keys [`corner_keys`] derives from one rule.
const PER_RULE: usize = 12;

/// Keys at the corners of every rule's ranges, plus a few just outside them.
///
/// For each rule: keys at the low and the high corner of all its ranges
/// (prefix first/last address, port range ends, exact protocol, ICMP type and
/// code, TCP flags value, VLAN, fragment state, DSCP), mixed corners, and keys
/// with one field moved just outside (address ±1, port ±1, other protocol,
/// flags bit flipped, missing ports). A few generic keys (non-IP, IPv6,
/// no ports, fragments) are added once, and IPv6 keys at the edges of the
/// rules' IPv6 address space (see [`ipv6_edge_keys`]). At most `max` keys are returned; when
/// the rules would give more, rules are sampled evenly (first and last
/// included) so every part of the list is represented. Deterministic.
///
/// ```
/// use palisade_classify::{corner_keys, Classifier, LinearClassifier, PortRange, RuleMatch};
/// let mut r = RuleMatch::any();
/// r.proto = Some(6);
/// r.dst_port = vec![PortRange { lo: 1000, hi: 2000 }];
/// let keys = corner_keys(&[r.clone()], 100);
/// assert!(keys.iter().any(|k| r.matches(k)));
/// assert!(keys.iter().any(|k| !r.matches(k)));
/// assert!(keys.len() <= 100);
/// ```
pub fn corner_keys(rules: &[RuleMatch], max: usize) -> Vec<FlowKey> {
    let mut out = Vec::new();
    if max == 0 {
        return out;
    }
    // Generic keys once: they exercise the presence rules of the semantics.
    let generic = [
        FlowKey::new(),
        FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]),
        FlowKey::new()
            .with_ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .with_proto(6)
            .with_ports(1234, 80),
        FlowKey::new().with_ipv6(1, 2).with_proto(17).with_ports(53, 53),
        FlowKey::new()
            .with_ipv4([0, 0, 0, 0], [255, 255, 255, 255])
            .with_proto(1)
            .with_icmp(8, 0),
        FlowKey::new()
            .with_ipv4([1, 2, 3, 4], [5, 6, 7, 8])
            .with_proto(6)
            .with_fragment(FragmentState::NonFirst, 1480, false),
    ];
    let mut generic = generic.to_vec();
    generic.extend(ipv6_edge_keys(rules));
    let budget_rules = max.saturating_sub(generic.len());
    let n = rules.len();
    // Less than one rule's worth of budget: one low corner per sampled rule.
    let per = if budget_rules >= PER_RULE { PER_RULE } else { 1 };
    let take = n.min(budget_rules / per);
    for j in 0..take {
        // Evenly spaced, first and last included.
        let i = if take == 1 { 0 } else { j * (n - 1) / (take - 1) };
        for v in 0..per {
            out.push(rule_corner(&rules[i], v, i));
        }
    }
    for g in generic {
        if out.len() < max {
            out.push(g);
        }
    }
    out.truncate(max);
    out
}

/// IPv6 keys where an IPv6 lookup goes wrong if it is wrong: just below
/// and above the lowest and highest IPv6 prefix of the rules (outside every
/// prefix, and outside the prefix they all share), the unspecified, the
/// loopback and the all-ones address, and IPv4-mapped (`::ffff:a.b.c.d`)
/// addresses of the first IPv4 prefixes (an IPv6 key must never match an
/// IPv4 rule). Each with TCP port 80 and the first rule's protocol and
/// ports where it has them. Deterministic; at most 16 keys.
///
/// ```
/// use palisade_classify::{corner_keys, ipv6_edge_keys, Prefix, RuleMatch};
/// let site = 0x2001_0db8_05a1u128 << 80;
/// let r = RuleMatch { src: vec![Prefix::v6(site, 48)], ..RuleMatch::any() };
/// let keys = ipv6_edge_keys(&[r.clone()]);
/// assert!(keys.iter().any(|k| k.src_ip == site - 1));
/// assert!(keys.iter().any(|k| k.src_ip == site + (1 << 80)));
/// assert!(corner_keys(&[r], 1000).iter().any(|k| k.src_ip == site - 1 && k.dst_ip == site - 1));
/// ```
pub fn ipv6_edge_keys(rules: &[RuleMatch]) -> Vec<FlowKey> {
    let first = rules.first();
    let proto = first.and_then(|r| r.proto).unwrap_or(6);
    let port = |list: Option<&Vec<PortRange>>| list.and_then(|l| l.first()).map_or(80, |r| r.lo);
    let (sp, dp) = (port(first.map(|r| &r.src_port)), port(first.map(|r| &r.dst_port)));
    let key = |s: u128, d: u128| {
        let k = FlowKey::new().with_ipv6(s, d).with_proto(proto);
        if matches!(proto, 6 | 17) {
            k.with_ports(sp, dp)
        } else {
            k
        }
    };
    let mut out = Vec::new();
    let v6 = rules
        .iter()
        .flat_map(|r| r.src.iter().chain(&r.dst))
        .filter(|p| p.family == IpFamily::V6 && p.len > 0);
    let hull = v6.fold(None, |h: Option<(u128, u128)>, p| {
        let (lo, hi) = p.range();
        Some(h.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))))
    });
    if let Some((lo, hi)) = hull {
        for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
            out.push(key(a, a));
        }
    }
    for a in [0u128, 1, u128::MAX] {
        out.push(key(a, a));
    }
    let v4 = rules
        .iter()
        .flat_map(|r| r.src.iter().chain(&r.dst))
        .filter(|p| p.family == IpFamily::V4)
        .take(4);
    for p in v4 {
        let mapped = 0xffff_0000_0000u128 | p.addr;
        out.push(key(mapped, mapped));
    }
    out.truncate(16);
    out
}

/// Variant `v` of the corner keys of `rule` (`salt` varies the choices between rules).
fn rule_corner(rule: &RuleMatch, v: usize, salt: usize) -> FlowKey {
    // Which corner: low (false) or high (true) per field, and which field
    // (if any) is pushed just outside its range.
    let (high_bits, outside): (u32, Option<usize>) = match v {
        0 => (0, None),
        1 => (u32::MAX, None),
        2 => (0b0101_0101 ^ salt as u32, None),
        3 => (0b1010_1010 ^ (salt as u32).rotate_left(3), None),
        4 => (0, Some(0)),                             // src address below
        5 => (u32::MAX, Some(1)),                      // dst address above
        6 => (0, Some(2)),                             // src port below
        7 => (u32::MAX, Some(3)),                      // dst port above
        8 => (salt as u32, Some(4)),                   // other protocol
        9 => (!(salt as u32), Some(5)),                // flags / icmp / dscp / vlan off by one
        10 => (salt as u32, Some(6)),                  // no ports / no proto present
        _ => (!(salt as u32).rotate_left(5), Some(7)), // other family
    };
    let hi = |bit: u32| high_bits & (1 << bit) != 0;
    let family = rule
        .family
        .or_else(|| rule.src.first().map(|p| p.family))
        .or_else(|| rule.dst.first().map(|p| p.family))
        .unwrap_or(IpFamily::V4);
    let family = if outside == Some(7) {
        match family {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    } else {
        family
    };
    let addr = |list: &[Prefix], high: bool, nudge: i8| -> u128 {
        let pick = list.iter().find(|p| p.family == family).or(list.first());
        let (lo, hi_addr, width) = match pick {
            Some(p) => {
                let (lo, h) = p.range();
                (lo, h, p.family.bits())
            }
            None => (
                0,
                if family == IpFamily::V4 {
                    u32::MAX as u128
                } else {
                    u128::MAX
                },
                family.bits(),
            ),
        };
        let full = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        let base = if high { hi_addr } else { lo };
        let a = match nudge {
            -1 => base.wrapping_sub(1),
            1 => base.wrapping_add(1),
            _ => base,
        };
        let a = a & full;
        if family == IpFamily::V4 {
            a & 0xffff_ffff
        } else {
            a
        }
    };
    let src = addr(&rule.src, hi(0), if outside == Some(0) { -1 } else { 0 });
    let dst = addr(&rule.dst, hi(1), if outside == Some(1) { 1 } else { 0 });
    let mut key = match family {
        IpFamily::V4 => {
            let s = (src as u32).to_be_bytes();
            let d = (dst as u32).to_be_bytes();
            FlowKey::new().with_ipv4(s, d)
        }
        IpFamily::V6 => FlowKey::new().with_ipv6(src, dst),
    };
    // Protocol: the rule's, or a plausible one that carries what the rule needs.
    // A listed protocol (one of them, by salt) is a corner too.
    let listed = rule
        .proto
        .or_else(|| rule.protos.get(salt % rule.protos.len().max(1)).copied());
    let proto = match listed {
        Some(p) if outside == Some(4) => p.wrapping_add(1),
        Some(p) => p,
        None if rule.matches_icmp() => {
            if family == IpFamily::V6 {
                58
            } else {
                1
            }
        }
        None if rule.tcp_flags.is_some() => 6,
        None => [6, 17, 1, 0, 255][salt % 5],
    };
    if outside != Some(6) || salt.is_multiple_of(2) {
        key = key.with_proto(proto);
    }
    let port = |list: &[PortRange], high: bool, nudge: i8| -> u16 {
        let r = list
            .get(salt % list.len().max(1))
            .copied()
            .unwrap_or(PortRange { lo: 0, hi: u16::MAX });
        let base = if high { r.hi } else { r.lo };
        match nudge {
            -1 => base.wrapping_sub(1),
            1 => base.wrapping_add(1),
            _ => base,
        }
    };
    let carries_ports = matches!(proto, 6 | 17 | 132 | 33)
        || !rule.src_port.is_empty()
        || !rule.dst_port.is_empty()
        || rule.sets.needs_ports;
    if outside != Some(6) && carries_ports {
        let sp = port(&rule.src_port, hi(2), if outside == Some(2) { -1 } else { 0 });
        let dp = port(&rule.dst_port, hi(3), if outside == Some(3) { 1 } else { 0 });
        key = key.with_ports(sp, dp);
    }
    let off = outside == Some(5);
    if rule.matches_icmp() || matches!(proto, 1 | 58) {
        let pick = |one: Option<u8>, list: &[u8], high: bool| {
            one.or_else(|| list.get(salt % list.len().max(1)).copied())
                .unwrap_or(if high { 255 } else { 0 })
        };
        let t = pick(rule.icmp_type, &rule.icmp_types, hi(4));
        let c = pick(rule.icmp_code, &rule.icmp_codes, hi(5));
        key = key.with_icmp(if off { t.wrapping_add(1) } else { t }, c);
    }
    if let Some(f) = rule.tcp_flags {
        let mut flags = f.value | if hi(6) { !f.mask & 0x0fff } else { 0 };
        if off {
            // Flip the lowest checked bit.
            flags ^= f.mask & f.mask.wrapping_neg();
        }
        key = key.with_tcp_flags(flags);
    } else if proto == 6 && hi(6) {
        key = key.with_tcp_flags(0x012);
    }
    if let Some(&vid) = rule.vlan.get(salt % rule.vlan.len().max(1)) {
        key = key.with_vlan(if off { vid.wrapping_add(1) & 0x0fff } else { vid });
    } else if hi(7) {
        key = key.with_vlan(4094);
    }
    if let Some(&d) = rule.dscp.get(salt % rule.dscp.len().max(1)) {
        key = key.with_dscp(if off { d.wrapping_add(1) } else { d });
    } else if hi(8) {
        key = key.with_dscp(46);
    }
    if let Some(frag) = rule.fragment {
        let state = match (frag, off) {
            (FragmentMatch::None, false) | (FragmentMatch::First, true) => FragmentState::None,
            (FragmentMatch::First, false) | (FragmentMatch::Any, false) | (FragmentMatch::NonFirst, true) => {
                FragmentState::First
            }
            (FragmentMatch::NonFirst, false) | (FragmentMatch::None, true) => FragmentState::NonFirst,
            (FragmentMatch::Any, true) => FragmentState::None,
        };
        key = key.with_fragment(
            state,
            if state == FragmentState::NonFirst { 1480 } else { 0 },
            true,
        );
        if state == FragmentState::NonFirst {
            // Non-first fragments never carry ports.
            key.present.0 &= !(Present::PORTS | Present::TCP_FLAGS | Present::ICMP);
        }
    }
    // Set tests: the bits the rule asks for, one of them flipped when pushed outside.
    let tested = rule.sets.member | rule.sets.non_member;
    key.set_bits = rule.sets.member ^ if off { tested & tested.wrapping_neg() } else { 0 };
    if let Some(et) = rule.ethertype {
        let is_ip = matches!(et, 0x0800 | 0x86dd);
        if !is_ip && !rule.needs_ip() {
            // A non-IP frame of that ethertype.
            key = FlowKey::new();
            if let Some(&vid) = rule.vlan.first() {
                key = key.with_vlan(vid);
            }
            key.present.0 |= Present::ETHERTYPE;
        }
        key.ethertype = if off { et.wrapping_add(1) } else { et };
    }
    // Flow state: one the rule accepts, or (off by one) one it does not.
    key.flow_state = match rule.state {
        Some(states) => {
            let (inside, outside): (Vec<FlowState>, Vec<FlowState>) =
                FlowState::NAMED.into_iter().partition(|s| states.contains(*s));
            let pick = |l: &[FlowState]| l.get(salt % l.len().max(1)).copied();
            match off {
                false => pick(&inside).unwrap_or_default(),
                true => pick(&outside).unwrap_or_default(),
            }
        }
        None if hi(9) => FlowState::NAMED[salt % FlowState::NAMED.len()],
        None => FlowState::Untracked,
    };
    key
}
