//! Random rules written as TOML parse back into exactly the matcher they
//! were written from; random packets written in the explain syntax parse
//! back into the same key.

use palisade_classify::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch, TcpFlagsMatch};
use proptest::prelude::*;

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| Prefix::v4(a, l)),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Prefix::v6(a, l)),
    ]
}

fn show(p: &Prefix) -> String {
    match p.family {
        IpFamily::V4 => format!("{}/{}", std::net::Ipv4Addr::from(p.addr as u32), p.len),
        IpFamily::V6 => format!("{}/{}", std::net::Ipv6Addr::from(p.addr), p.len),
    }
}

fn ranges() -> impl Strategy<Value = Vec<PortRange>> {
    prop::collection::vec(
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange {
            lo: a.min(b),
            hi: a.max(b),
        }),
        0..4,
    )
}

fn toml_ranges(rs: &[PortRange]) -> String {
    let items: Vec<String> = rs
        .iter()
        .map(|r| {
            if r.lo == r.hi {
                r.lo.to_string()
            } else {
                format!("\"{}-{}\"", r.lo, r.hi)
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

const FLAGS: [&str; 9] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"];

/// A rule that can match something: the L4 keys agree with the protocol.
fn rule() -> impl Strategy<Value = RuleMatch> {
    (
        any::<bool>(),
        prop::collection::vec(prefix(), 0..3),
        prop::collection::vec(prefix(), 0..3),
        0u8..4,
        (ranges(), ranges()),
        (prop::option::of(any::<u8>()), prop::option::of(any::<u8>())),
        prop::option::of((any::<u16>(), 1u16..0x200)),
        prop::collection::btree_set(1u16..=4094, 0..4),
        prop::option::of(0u8..4),
        prop::collection::btree_set(0u8..64, 0..3),
    )
        .prop_map(
            |(v6, src, dst, kind, (sp, dp), (it, ic), flags, vlan, frag, dscp)| {
                let fam = if v6 { IpFamily::V6 } else { IpFamily::V4 };
                let mut m = RuleMatch::any();
                // Addresses of one family, so the rule can match.
                m.src = src.into_iter().filter(|p| p.family == fam).collect();
                m.dst = dst.into_iter().filter(|p| p.family == fam).collect();
                match kind {
                    0 => {
                        m.proto = Some(6);
                        m.src_port = sp;
                        m.dst_port = dp;
                        m.tcp_flags = flags.map(|(v, mask)| TcpFlagsMatch {
                            value: v & mask & 0x1ff,
                            mask: mask & 0x1ff,
                        });
                    }
                    1 => {
                        m.proto = Some(17);
                        m.src_port = sp;
                        m.dst_port = dp;
                    }
                    2 => {
                        m.proto = Some(if v6 { 58 } else { 1 });
                        m.icmp_type = it;
                        m.icmp_code = ic;
                    }
                    _ => {}
                }
                m.vlan = vlan.into_iter().collect();
                let has_l4 = !m.src_port.is_empty()
                    || !m.dst_port.is_empty()
                    || m.tcp_flags.is_some()
                    || m.icmp_type.is_some()
                    || m.icmp_code.is_some();
                m.fragment = frag.map(|f| match f {
                    0 => FragmentMatch::None,
                    1 => FragmentMatch::First,
                    2 if !has_l4 => FragmentMatch::NonFirst,
                    _ => FragmentMatch::Any,
                });
                m.dscp = dscp.into_iter().collect();
                m
            },
        )
}

fn to_toml(m: &RuleMatch) -> String {
    let mut t = String::from("  [[acl.rule]]\n  action = \"permit\"\n");
    let list = |ps: &[Prefix]| {
        format!(
            "[{}]",
            ps.iter()
                .map(|p| format!("\"{}\"", show(p)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !m.src.is_empty() {
        t += &format!("  src = {}\n", list(&m.src));
    }
    if !m.dst.is_empty() {
        t += &format!("  dst = {}\n", list(&m.dst));
    }
    if let Some(p) = m.proto {
        t += &format!("  proto = {p}\n");
    }
    if !m.src_port.is_empty() {
        t += &format!("  src_port = {}\n", toml_ranges(&m.src_port));
    }
    if !m.dst_port.is_empty() {
        t += &format!("  dst_port = {}\n", toml_ranges(&m.dst_port));
    }
    if let Some(x) = m.icmp_type {
        t += &format!("  icmp_type = {x}\n");
    }
    if let Some(x) = m.icmp_code {
        t += &format!("  icmp_code = {x}\n");
    }
    if let Some(f) = m.tcp_flags {
        if f.mask != 0 {
            let names: Vec<String> = (0..9)
                .filter(|b| f.mask & (1 << b) != 0)
                .map(|b| format!("{}{}", if f.value & (1 << b) != 0 { "" } else { "!" }, FLAGS[b]))
                .collect();
            t += &format!("  tcp_flags = \"{}\"\n", names.join(","));
        }
    }
    if !m.vlan.is_empty() {
        t += &format!("  vlan = {:?}\n", m.vlan);
    }
    if let Some(f) = m.fragment {
        let s = match f {
            FragmentMatch::None => "none",
            FragmentMatch::First => "first",
            FragmentMatch::NonFirst => "non-first",
            FragmentMatch::Any => "any",
        };
        t += &format!("  fragment = \"{s}\"\n");
    }
    if !m.dscp.is_empty() {
        t += &format!("  dscp = {:?}\n", m.dscp);
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn rules_round_trip(rules in prop::collection::vec(rule(), 1..5)) {
        let mut text = String::from("version = 1\n[[port]]\nname = \"p\"\nvlan = 1\n[[acl]]\nname = \"a\"\n");
        for r in &rules {
            text += &to_toml(r);
        }
        text += "[[bind]]\nacl = \"a\"\nport = \"p\"\n";
        let loaded = palisade_rules::parse("r.toml", text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{}\n{text}", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))))?;
        let got: Vec<RuleMatch> = loaded.ruleset.acls[0].rules.iter().map(|r| r.matcher.clone()).collect();
        let want: Vec<RuleMatch> = rules
            .into_iter()
            .map(|mut r| {
                if r.tcp_flags.is_some_and(|f| f.mask == 0) {
                    r.tcp_flags = None;
                }
                r
            })
            .collect();
        prop_assert_eq!(got, want, "{}", text);
    }

    #[test]
    fn packets_round_trip(
        v6 in any::<bool>(),
        (s, d) in (any::<u128>(), any::<u128>()),
        proto in prop_oneof![Just(6u8), Just(17), Just(1), Just(47)],
        (sp, dp) in (any::<u16>(), any::<u16>()),
        (t, c) in (any::<u8>(), any::<u8>()),
        flags in 0u16..0x200,
        vlan in prop::option::of(0u16..=4094),
    ) {
        let fam_addr = |a: u128| if v6 { format!("{}", std::net::Ipv6Addr::from(a)) } else { format!("{}", std::net::Ipv4Addr::from(a as u32)) };
        let ep = |a: u128, p: u16| if v6 { format!("[{}]:{p}", fam_addr(a)) } else { format!("{}:{p}", fam_addr(a)) };
        let mut spec = match proto {
            6 => format!("tcp {} -> {} flags {}", ep(s, sp), ep(d, dp), if flags == 0 { "syn".to_owned() } else {
                (0..9).filter(|b| flags & (1 << b) != 0).map(|b| FLAGS[b]).collect::<Vec<_>>().join(",")
            }),
            17 => format!("udp {} -> {}", ep(s, sp), ep(d, dp)),
            1 => format!("icmp {} -> {} type {t} code {c}", fam_addr(s), fam_addr(d)),
            _ => format!("gre {} -> {}", fam_addr(s), fam_addr(d)),
        };
        if let Some(v) = vlan {
            spec += &format!(" vlan {v}");
        }
        let k = palisade_rules::parse_packet_spec(&spec).map_err(TestCaseError::fail)?;
        prop_assert_eq!(k.ip_version, if v6 { 6 } else { 4 });
        prop_assert_eq!(k.l4_proto, if proto == 1 && v6 { 58 } else { proto });
        prop_assert_eq!(palisade_rules::parse_packet_spec(&palisade_rules::format_packet(&k)), Ok(k));
        if proto == 6 || proto == 17 {
            prop_assert_eq!(k.ports(), Some((sp, dp)));
        }
    }
}
