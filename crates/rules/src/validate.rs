//! Semantic checks on rules: rules that can never match, and shadowed rules.

use palisade_classify::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch};
use palisade_packet::{FlowState, FlowStates};

use crate::model::AclDef;
use crate::names::{self, proto_label};
use crate::packet::family_name;
use crate::parse::{families, Cx};

/// Why a rule can never match, with the key to point at; `None` when it can.
pub(crate) fn never_matches(m: &RuleMatch) -> Option<(&'static str, String)> {
    let fams = families(m);
    if fams.is_empty() {
        let fam_of = |ps: &[Prefix]| -> Vec<IpFamily> {
            [IpFamily::V4, IpFamily::V6]
                .into_iter()
                .filter(|f| ps.is_empty() || ps.iter().any(|p| p.family == *f))
                .collect()
        };
        let (s, d) = (fam_of(&m.src), fam_of(&m.dst));
        if !s.iter().any(|f| d.contains(f)) {
            return Some((
                "dst",
                format!("src is {} but dst is {}", names_of(&s), names_of(&d)),
            ));
        }
        let f = m.family.map_or("", |f| family_name(f));
        return Some(("family", format!("family is {f} but the addresses are not")));
    }
    if let Some(et) = m.ethertype {
        if m.needs_ip() {
            let ok = match et {
                0x0800 => fams.contains(&IpFamily::V4),
                0x86dd => fams.contains(&IpFamily::V6),
                _ => false,
            };
            if !ok {
                return Some((
                    "ethertype",
                    format!("ethertype 0x{et:04x} does not carry the IP fields the rule matches"),
                ));
            }
        }
    }
    let ports = !m.src_port.is_empty() || !m.dst_port.is_empty() || m.sets.needs_ports;
    let port_key = if m.dst_port.is_empty() {
        "src_port"
    } else {
        "dst_port"
    };
    let icmp = m.matches_icmp();
    let icmp_key = if m.icmp_type.is_some() || !m.icmp_types.is_empty() {
        "icmp_type"
    } else {
        "icmp_code"
    };
    // One protocol or a list: the rule can match only if one of them carries what it asks for.
    if let Some(protos) = protos_of(m) {
        let shown = protos_label(&protos);
        if ports && !protos.iter().any(|&p| names::has_ports(p)) {
            return Some((
                port_key,
                format!("{port_key} needs proto tcp or udp (the only ports the parser reads), but proto is {shown}"),
            ));
        }
        if icmp && !protos.iter().any(|&p| names::is_icmp(p)) {
            return Some((
                icmp_key,
                format!("{icmp_key} needs proto icmp or icmpv6, but proto is {shown}"),
            ));
        }
        if m.tcp_flags.is_some() && !protos.contains(&6) {
            return Some((
                "tcp_flags",
                format!("tcp_flags needs proto tcp, but proto is {shown}"),
            ));
        }
    }
    if ports && icmp {
        return Some((icmp_key, format!("a packet carries either ports or an ICMP type, but the rule asks for both {port_key} and {icmp_key}")));
    }
    if icmp && m.tcp_flags.is_some() {
        return Some((
            "tcp_flags",
            "tcp_flags and an ICMP type exclude each other".into(),
        ));
    }
    if let Some(states) = m.state {
        // A related frame is an ICMP/ICMPv6 error: no ports, no TCP flags, another protocol.
        let only_related = states == FlowStates::of(&[FlowState::Related]);
        let not_icmp = m.proto.is_some_and(|p| !names::is_icmp(p));
        if only_related && (not_icmp || ports || m.tcp_flags.is_some()) {
            return Some((
                "state",
                "a related frame is an ICMP/ICMPv6 error, which carries no ports or TCP flags".into(),
            ));
        }
    }
    if m.fragment == Some(FragmentMatch::NonFirst) && (ports || icmp || m.tcp_flags.is_some()) {
        return Some((
            "fragment",
            "non-first fragments carry no ports, ICMP type or TCP flags".into(),
        ));
    }
    None
}

/// The protocols a rule is limited to (`None`: any).
pub(crate) fn protos_of(m: &RuleMatch) -> Option<Vec<u8>> {
    match (m.proto, m.protos.is_empty()) {
        (Some(p), _) => Some(vec![p]),
        (None, false) => Some(m.protos.clone()),
        (None, true) => None,
    }
}

/// `tcp`, or `[tcp, udp]` for a list.
fn protos_label(protos: &[u8]) -> String {
    match protos {
        [one] => proto_label(*one),
        many => format!(
            "[{}]",
            many.iter()
                .map(|&p| proto_label(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A protocol of a list that can never match what the rest of the rule asks
/// for (`proto = ["tcp", "icmp"]` with `dst_port`): the rule still matches
/// through the others, so this is a warning, with the key it concerns.
pub(crate) fn dead_list_members(m: &RuleMatch) -> Option<(&'static str, String)> {
    if m.protos.is_empty() {
        return None;
    }
    let ports = !m.src_port.is_empty() || !m.dst_port.is_empty();
    let dead: Vec<u8> = m
        .protos
        .iter()
        .copied()
        .filter(|&p| {
            (ports && !names::has_ports(p))
                || (m.matches_icmp() && !names::is_icmp(p))
                || (m.tcp_flags.is_some() && p != 6)
        })
        .collect();
    if dead.is_empty() {
        return None;
    }
    Some((
        "proto",
        format!(
            "proto {} in the list can never match what the rule also asks for (ports, ICMP type/code or TCP flags)",
            protos_label(&dead)
        ),
    ))
}

/// The values a rule is limited to for one field given as a scalar or a list (`None`: any).
fn values_of(one: Option<u8>, many: &[u8]) -> Option<Vec<u8>> {
    match (one, many.is_empty()) {
        (Some(v), _) => Some(vec![v]),
        (None, false) => Some(many.to_vec()),
        (None, true) => None,
    }
}

/// Whether `a`'s constraint (scalar or list) admits every value `b`'s admits.
fn values_cover(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|x| a.contains(x)),
    }
}

fn names_of(fams: &[IpFamily]) -> String {
    fams.iter()
        .map(|f| family_name(*f))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Warns about every rule that an earlier rule of the same ACL fully covers,
/// naming the first such rule (found through [`crate::shadow::Index`], not
/// by comparing every pair).
pub(crate) fn shadowing(cx: &mut Cx, acl: &AclDef, locs: &[(usize, Option<usize>)]) {
    let all: Vec<&RuleMatch> = acl.rules.iter().map(|r| &r.matcher).collect();
    let mut index = crate::shadow::Index::default();
    for (j, later) in acl.rules.iter().enumerate() {
        let first = index.first_cover(&later.matcher, &all);
        index.insert(j, &later.matcher);
        let Some(i) = first else {
            continue;
        };
        let label = |n: usize| match &acl.rules[n].id {
            Some(id) => format!("rule {} (\"{id}\")", n + 1),
            None => format!("rule {}", n + 1),
        };
        let why = if acl.rules[i].action == later.action {
            "it is redundant"
        } else {
            "its action never applies"
        };
        let off = locs.get(j).map_or(0, |l| l.0);
        cx.warn(
            off,
            format!(
                "acl \"{}\" {} is shadowed by {}: it can never match ({why})",
                acl.name,
                label(j),
                label(i)
            ),
        );
    }
}

/// Whether every key `b` matches is also matched by `a` (conservative: `false` when unsure).
pub(crate) fn covers(a: &RuleMatch, b: &RuleMatch) -> bool {
    if a.needs_ip() && !b.needs_ip() {
        return false;
    }
    if a.ethertype.is_some() && a.ethertype != b.ethertype {
        return false;
    }
    if let Some(sa) = a.state {
        if !b.state.is_some_and(|sb| sa.includes(sb)) {
            return false;
        }
    }
    if !list_covers(&a.vlan, &b.vlan) || !list_covers(&a.dscp, &b.dscp) {
        return false;
    }
    if !values_cover(protos_of(a), protos_of(b)) {
        return false;
    }
    if !ranges_cover(&a.src_port, &b.src_port) || !ranges_cover(&a.dst_port, &b.dst_port) {
        return false;
    }
    // A set test of `a` covers `b` only when `b` makes the same test (the
    // sets' contents change without a reload, so nothing else is known).
    if a.sets.member & !b.sets.member != 0 || a.sets.non_member & !b.sets.non_member != 0 {
        return false;
    }
    if !values_cover(
        values_of(a.icmp_type, &a.icmp_types),
        values_of(b.icmp_type, &b.icmp_types),
    ) || !values_cover(
        values_of(a.icmp_code, &a.icmp_codes),
        values_of(b.icmp_code, &b.icmp_codes),
    ) {
        return false;
    }
    if let Some(fa) = a.tcp_flags {
        match b.tcp_flags {
            Some(fb) if fb.mask & fa.mask == fa.mask && fb.value & fa.mask == fa.value => {}
            _ => return false,
        }
    }
    match (a.fragment, b.fragment) {
        (None, _) => {}
        (
            Some(FragmentMatch::Any),
            Some(FragmentMatch::First | FragmentMatch::NonFirst | FragmentMatch::Any),
        ) => {}
        (Some(x), Some(y)) if x == y => {}
        _ => return false,
    }
    if b.needs_ip() {
        for f in families(b) {
            let a_allows = a.family.is_none_or(|af| af == f);
            if !a_allows || !prefixes_cover(&a.src, &b.src, f) || !prefixes_cover(&a.dst, &b.dst, f) {
                return false;
            }
        }
    }
    true
}

fn list_covers<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.contains(x)))
}

fn ranges_cover(a: &[PortRange], b: &[PortRange]) -> bool {
    if a.is_empty() || a.iter().any(PortRange::is_full) {
        return true;
    }
    if b.is_empty() {
        return false;
    }
    // Merge a's ranges, then each of b's must sit inside one merged range.
    let mut merged: Vec<(u32, u32)> = a.iter().map(|r| (r.lo as u32, r.hi as u32)).collect();
    merged.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in merged {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    b.iter()
        .all(|r| out.iter().any(|&(lo, hi)| lo <= r.lo as u32 && r.hi as u32 <= hi))
}

/// Whether `a`'s prefixes of family `f` cover `b`'s (empty = any address).
fn prefixes_cover(a: &[Prefix], b: &[Prefix], f: IpFamily) -> bool {
    let a_f = || a.iter().filter(|p| p.family == f);
    if a.is_empty() || a_f().any(|p| p.len == 0) {
        return true;
    }
    if b.is_empty() {
        return false;
    }
    b.iter()
        .filter(|p| p.family == f)
        .all(|pb| a_f().any(|pa| pa.len <= pb.len && pb.addr & pa.mask() == pa.addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_classify::TcpFlagsMatch;

    fn tcp(ports: &[(u16, u16)]) -> RuleMatch {
        let mut m = RuleMatch::any();
        m.proto = Some(6);
        m.dst_port = ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect();
        m
    }

    #[test]
    fn coverage() {
        assert!(covers(&RuleMatch::any(), &tcp(&[(80, 80)])));
        assert!(!covers(&tcp(&[(80, 80)]), &RuleMatch::any()));
        assert!(covers(&tcp(&[(1, 100), (101, 200)]), &tcp(&[(50, 150)])));
        assert!(!covers(&tcp(&[(1, 100), (102, 200)]), &tcp(&[(50, 150)])));
        let mut a = tcp(&[]);
        a.src = vec![Prefix::v4([10, 0, 0, 0], 8)];
        let mut b = tcp(&[(22, 22)]);
        b.src = vec![Prefix::v4([10, 1, 0, 0], 16)];
        assert!(covers(&a, &b));
        b.src.push(Prefix::v6(0, 0));
        assert!(!covers(&a, &b), "b also matches IPv6 sources");
        let mut f = tcp(&[]);
        f.tcp_flags = Some(TcpFlagsMatch { value: 2, mask: 2 });
        let mut g = tcp(&[]);
        g.tcp_flags = Some(TcpFlagsMatch { value: 2, mask: 0x12 });
        assert!(covers(&f, &g));
        assert!(!covers(&g, &f));
        let est = FlowStates::of(&[FlowState::Established]);
        let est_rel = FlowStates::of(&[FlowState::Established, FlowState::Related]);
        let with_state = |s: FlowStates| RuleMatch {
            state: Some(s),
            ..tcp(&[])
        };
        assert!(covers(&with_state(est_rel), &with_state(est)));
        assert!(!covers(&with_state(est), &with_state(est_rel)));
        assert!(
            !covers(&with_state(est), &tcp(&[])),
            "a state rule covers no stateless one"
        );
        assert!(covers(&tcp(&[]), &with_state(est)));
    }

    #[test]
    fn impossible_rules() {
        let mut m = RuleMatch::any();
        m.src = vec![Prefix::v4([10, 0, 0, 0], 8)];
        m.dst = vec![Prefix::v6(0, 0)];
        assert_eq!(never_matches(&m).unwrap().0, "dst");
        let mut m = tcp(&[(1, 2)]);
        m.proto = Some(1);
        assert_eq!(never_matches(&m).unwrap().0, "dst_port");
        let mut m = RuleMatch::any();
        m.proto = Some(6);
        m.icmp_type = Some(8);
        assert_eq!(never_matches(&m).unwrap().0, "icmp_type");
        let mut m = tcp(&[(1, 2)]);
        m.fragment = Some(FragmentMatch::NonFirst);
        assert_eq!(never_matches(&m).unwrap().0, "fragment");
        assert!(never_matches(&tcp(&[(1, 2)])).is_none());
        let related_tcp = RuleMatch {
            state: Some(FlowStates::of(&[FlowState::Related])),
            ..tcp(&[])
        };
        assert_eq!(never_matches(&related_tcp).unwrap().0, "state");
    }
}
