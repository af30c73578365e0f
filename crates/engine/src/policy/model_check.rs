//! The policy's decision equals a small, independently written model on
//! random rule sets and packets (IPv4 and IPv6, overlapping ranges, wildcards).

use palisade_classify::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch, TcpFlagsMatch};
use palisade_packet::{FlowKey, FragmentState, Layer, ParseStatus, Present};
use palisade_rules::{
    AclDef, AclRule, Action, BindTarget, BindingDef, Defaults, Direction, InterfaceDef, InterfaceTarget,
    PortDef, RescueDef, RuleSet, Span,
};
use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------- the model

/// Whether `m` matches `k`, written from the documented semantics without
/// looking at `RuleMatch::matches`.
fn model_matches(m: &RuleMatch, k: &FlowKey) -> bool {
    let has = |bit: u16| k.present.0 & bit != 0;
    if let Some(et) = m.ethertype {
        if !has(Present::ETHERTYPE) || k.ethertype != et {
            return false;
        }
    }
    if !m.vlan.is_empty() && !m.vlan.contains(&k.outer_vlan) {
        return false;
    }
    let l3 = m.family.is_some()
        || !m.src.is_empty()
        || !m.dst.is_empty()
        || m.proto.is_some()
        || !m.protos.is_empty()
        || !m.src_port.is_empty()
        || !m.dst_port.is_empty()
        || m.icmp_type.is_some()
        || m.icmp_code.is_some()
        || !m.icmp_types.is_empty()
        || !m.icmp_codes.is_empty()
        || m.tcp_flags.is_some()
        || m.fragment.is_some()
        || !m.dscp.is_empty();
    if !l3 {
        return true;
    }
    if !has(Present::ADDRS) || (k.ip_version != 4 && k.ip_version != 6) {
        return false;
    }
    let fam = if k.ip_version == 4 {
        IpFamily::V4
    } else {
        IpFamily::V6
    };
    if m.family.is_some_and(|f| f != fam) {
        return false;
    }
    let inside = |p: &Prefix, a: u128| {
        let width: u32 = if p.family == IpFamily::V4 { 32 } else { 128 };
        p.family == fam && (p.len == 0 || (a >> (width - p.len as u32)) == (p.addr >> (width - p.len as u32)))
    };
    if !m.src.is_empty() && !m.src.iter().any(|p| inside(p, k.src_ip)) {
        return false;
    }
    if !m.dst.is_empty() && !m.dst.iter().any(|p| inside(p, k.dst_ip)) {
        return false;
    }
    if m.proto.is_some() && (!has(Present::L4_PROTO) || m.proto != Some(k.l4_proto)) {
        return false;
    }
    if !m.protos.is_empty() && (!has(Present::L4_PROTO) || !m.protos.contains(&k.l4_proto)) {
        return false;
    }
    let in_ranges = |rs: &[PortRange], p: u16| rs.is_empty() || rs.iter().any(|r| r.lo <= p && p <= r.hi);
    if (!m.src_port.is_empty() || !m.dst_port.is_empty())
        && (!has(Present::PORTS)
            || !in_ranges(&m.src_port, k.src_port)
            || !in_ranges(&m.dst_port, k.dst_port))
    {
        return false;
    }
    let icmp_lists = !m.icmp_types.is_empty() || !m.icmp_codes.is_empty();
    if (m.icmp_type.is_some() || m.icmp_code.is_some() || icmp_lists)
        && (!has(Present::ICMP)
            || m.icmp_type.is_some_and(|t| t != k.icmp_type)
            || m.icmp_code.is_some_and(|c| c != k.icmp_code)
            || (!m.icmp_types.is_empty() && !m.icmp_types.contains(&k.icmp_type))
            || (!m.icmp_codes.is_empty() && !m.icmp_codes.contains(&k.icmp_code)))
    {
        return false;
    }
    if let Some(f) = m.tcp_flags {
        if !has(Present::TCP_FLAGS) || (k.tcp_flags & f.mask) != f.value {
            return false;
        }
    }
    let frag_ok = match m.fragment {
        None => true,
        Some(FragmentMatch::None) => k.fragment == FragmentState::None,
        Some(FragmentMatch::First) => k.fragment == FragmentState::First,
        Some(FragmentMatch::NonFirst) => k.fragment == FragmentState::NonFirst,
        Some(FragmentMatch::Any) => k.fragment != FragmentState::None,
    };
    frag_ok && (m.dscp.is_empty() || (has(Present::DSCP) && m.dscp.contains(&k.dscp)))
}

/// (verdict, stage, acl name, rule label) as the model sees it.
type Outcome = (Verdict, &'static str, Option<String>, String);

fn model(rs: &RuleSet, key: &FlowKey, port: &str, route: Option<(&str, &str)>) -> Outcome {
    let p = rs.ports.iter().find(|p| p.name == port).unwrap();
    let mut k = *key;
    let vid = k.outer_vlan & 0xfff;
    let tagged = k.vlan_count > 0 && vid != 0;
    k.outer_vlan = if tagged { vid } else { p.vlan.unwrap_or(0) };
    for (i, r) in rs.rescue.iter().enumerate() {
        if model_matches(&r.matcher, &k) {
            let id = r.id.clone().unwrap_or(format!("rescue#{}", i + 1));
            return (Verdict::Permit, "rescue", None, id);
        }
    }
    if k.status != ParseStatus::Ok {
        return (rs.defaults.malformed.into(), "malformed", None, String::new());
    }
    if tagged && !p.trunk.contains(&vid) && p.vlan != Some(vid) {
        return (Verdict::Deny, "vlan-filter", None, String::new());
    }
    let acl_for = |t: &BindTarget| rs.bindings.iter().find(|b| &b.target == t).map(|b| b.acl.clone());
    let mut stages: Vec<(&'static str, Option<String>, u16)> =
        vec![("pacl", acl_for(&BindTarget::Port(port.into())), k.outer_vlan)];
    if k.outer_vlan != 0 {
        stages.push(("vacl-in", acl_for(&BindTarget::Vlan(k.outer_vlan)), k.outer_vlan));
    }
    if let Some((from, to)) = route {
        // Routed ACLs are for IP frames only.
        let ip = k.present.has(Present::ETHERTYPE) && (k.ethertype == 0x0800 || k.ethertype == 0x86dd);
        stages.extend(
            [
                (
                    "racl-in",
                    acl_for(&BindTarget::Interface {
                        name: from.into(),
                        direction: Direction::In,
                    }),
                    k.outer_vlan,
                ),
                (
                    "racl-out",
                    acl_for(&BindTarget::Interface {
                        name: to.into(),
                        direction: Direction::Out,
                    }),
                    k.outer_vlan,
                ),
            ]
            .into_iter()
            .filter(|_| ip),
        );
        let to_if = rs.interfaces.iter().find(|i| i.name == to).unwrap();
        if let InterfaceTarget::Vlan(v) = to_if.target {
            stages.push(("vacl-out", acl_for(&BindTarget::Vlan(v)), v));
        }
    }
    let mut last: Outcome = (Verdict::Permit, "none", None, String::new());
    for (stage, acl, vlan) in stages {
        let Some(acl) = acl else { continue };
        let a = rs.acls.iter().find(|a| a.name == acl).unwrap();
        let mut kk = k;
        kk.outer_vlan = vlan;
        let (verdict, rule) = match a.rules.iter().position(|r| model_matches(&r.matcher, &kk)) {
            Some(i) => (Verdict::from(a.rules[i].action), a.rule_identity(i)),
            None => (Verdict::from(a.default), "default".to_owned()),
        };
        let out = (verdict, stage, Some(acl), rule);
        if verdict == Verdict::Deny {
            return out;
        }
        last = out;
    }
    last
}

// ---------------------------------------------------------------- generators

fn v4(a: [u8; 4]) -> u128 {
    u32::from_be_bytes(a) as u128
}

const V6_BASE: u128 = 0x2001_0db8 << 96;

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        Just(Prefix::v4([10, 0, 0, 0], 8)),
        Just(Prefix::v4([10, 1, 0, 0], 16)),
        Just(Prefix::v4([10, 1, 2, 0], 24)),
        Just(Prefix::v4([10, 1, 2, 3], 32)),
        Just(Prefix::v4([192, 0, 2, 0], 28)),
        Just(Prefix::v4([0, 0, 0, 0], 0)),
        Just(Prefix::v6(V6_BASE, 32)),
        Just(Prefix::v6(V6_BASE | 1 << 80, 48)),
        Just(Prefix::v6(V6_BASE | 1 << 80 | 5, 128)),
        Just(Prefix::v6(0, 0)),
    ]
}

fn addr(fam: IpFamily) -> BoxedStrategy<u128> {
    match fam {
        IpFamily::V4 => prop_oneof![
            Just(v4([10, 1, 2, 3])),
            Just(v4([10, 1, 2, 200])),
            Just(v4([10, 1, 9, 9])),
            Just(v4([10, 200, 0, 1])),
            Just(v4([192, 0, 2, 5])),
            Just(v4([198, 51, 100, 7])),
        ]
        .boxed(),
        IpFamily::V6 => prop_oneof![
            Just(V6_BASE | 1 << 80 | 5),
            Just(V6_BASE | 1 << 80 | 6),
            Just(V6_BASE | 2 << 80 | 1),
            Just(0xfe80_u128 << 112 | 1),
        ]
        .boxed(),
    }
}

fn ports() -> impl Strategy<Value = Vec<PortRange>> {
    prop::collection::vec(
        (0u16..120, 0u16..40).prop_map(|(lo, w)| PortRange { lo, hi: lo + w }),
        0..3,
    )
}

fn rule_match() -> impl Strategy<Value = RuleMatch> {
    (
        (
            prop::option::weighted(0.1, prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)]),
            prop::collection::vec(prefix(), 0..3),
            prop::collection::vec(prefix(), 0..3),
            prop::option::weighted(0.6, prop_oneof![Just(6u8), Just(17), Just(1), Just(58)]),
            ports(),
            ports(),
        ),
        (
            prop::option::weighted(0.15, 0u8..4),
            prop::option::weighted(0.1, 0u8..2),
            prop::option::weighted(
                0.15,
                (0u16..0x20, 0u16..0x20).prop_map(|(v, m)| TcpFlagsMatch {
                    value: v & m,
                    mask: m,
                }),
            ),
            prop::collection::vec(prop_oneof![Just(10u16), Just(20), Just(30)], 0..2),
            prop::option::weighted(
                0.15,
                prop_oneof![
                    Just(FragmentMatch::None),
                    Just(FragmentMatch::First),
                    Just(FragmentMatch::NonFirst),
                    Just(FragmentMatch::Any)
                ],
            ),
            prop::collection::vec(prop_oneof![Just(0u8), Just(46)], 0..2),
            prop::option::weighted(0.05, Just(0x0806u16)),
        ),
        // Lists of protocols / ICMP types / codes (replacing the single value when drawn).
        (
            prop::option::weighted(
                0.2,
                prop::collection::vec(prop_oneof![Just(6u8), Just(17), Just(1), Just(58)], 2..4),
            ),
            prop::option::weighted(0.15, prop::collection::vec(0u8..4, 2..4)),
            prop::option::weighted(0.1, prop::collection::vec(0u8..2, 2..3)),
        ),
    )
        .prop_map(
            |((family, src, dst, proto, sp, dp), (it, ic, flags, vlan, fragment, dscp, ethertype), lists)| {
                let list = |v: Option<Vec<u8>>| {
                    let mut v = v.unwrap_or_default();
                    v.sort_unstable();
                    v.dedup();
                    if v.len() < 2 {
                        v.clear();
                    }
                    v
                };
                let (protos, icmp_types, icmp_codes) = (list(lists.0), list(lists.1), list(lists.2));
                let proto = if protos.is_empty() { proto } else { None };
                let it = if icmp_types.is_empty() { it } else { None };
                let ic = if icmp_codes.is_empty() { ic } else { None };
                RuleMatch {
                    protos,
                    icmp_types,
                    icmp_codes,
                    family,
                    src,
                    dst,
                    proto,
                    src_port: sp,
                    dst_port: dp,
                    icmp_type: it,
                    icmp_code: ic,
                    tcp_flags: flags,
                    vlan,
                    fragment,
                    dscp,
                    ethertype,
                    sets: Default::default(),
                    state: None,
                }
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Permit), Just(Action::Deny)]
}

/// Fixed topology, random ACLs, random bindings, random rescue rules.
fn ruleset() -> impl Strategy<Value = RuleSet> {
    let acl = (
        action(),
        prop::collection::vec((action(), rule_match(), any::<bool>()), 0..6),
    );
    (
        prop::collection::vec(acl, 1..5),
        // For each binding slot: which ACL (if any).
        prop::collection::vec(prop::option::weighted(0.6, 0usize..8), 9),
        prop::collection::vec(rule_match(), 0..2),
        action(),
    )
        .prop_map(|(acls, slots, rescue, malformed)| {
            let span = Span::default();
            let acls: Vec<AclDef> = acls
                .into_iter()
                .enumerate()
                .map(|(i, (default, rules))| AclDef {
                    name: format!("acl{i}"),
                    default,
                    rules: rules
                        .into_iter()
                        .enumerate()
                        .map(|(j, (action, matcher, named))| AclRule {
                            id: named.then(|| format!("r{i}.{j}")),
                            action,
                            matcher,
                            log: false,
                            keep_state: false,
                            span,
                        })
                        .collect(),
                    log_default: false,
                    span,
                })
                .collect();
            let targets = [
                BindTarget::Port("p0".into()),
                BindTarget::Port("p1".into()),
                BindTarget::Vlan(10),
                BindTarget::Vlan(20),
                BindTarget::Vlan(30),
                BindTarget::Interface {
                    name: "a".into(),
                    direction: Direction::In,
                },
                BindTarget::Interface {
                    name: "b".into(),
                    direction: Direction::Out,
                },
                BindTarget::Interface {
                    name: "c".into(),
                    direction: Direction::In,
                },
                BindTarget::Interface {
                    name: "c".into(),
                    direction: Direction::Out,
                },
            ];
            let bindings = targets
                .into_iter()
                .zip(slots)
                .filter_map(|(target, slot)| {
                    slot.map(|s| BindingDef {
                        acl: acls[s % acls.len()].name.clone(),
                        target,
                        span,
                    })
                })
                .collect();
            RuleSet {
                version: 1,
                requires: None,
                defaults: Defaults { malformed },
                logging: Default::default(),
                ports: vec![
                    PortDef {
                        name: "p0".into(),
                        vlan: Some(10),
                        trunk: vec![20, 30],
                        device: None,
                        span,
                    },
                    PortDef {
                        name: "p1".into(),
                        vlan: None,
                        trunk: vec![],
                        device: None,
                        span,
                    },
                ],
                interfaces: vec![
                    InterfaceDef {
                        name: "a".into(),
                        target: InterfaceTarget::Vlan(10),
                        span,
                    },
                    InterfaceDef {
                        name: "b".into(),
                        target: InterfaceTarget::Vlan(20),
                        span,
                    },
                    InterfaceDef {
                        name: "c".into(),
                        target: InterfaceTarget::Port("p1".into()),
                        span,
                    },
                ],
                acls,
                bindings,
                rescue: rescue
                    .into_iter()
                    .enumerate()
                    .map(|(i, matcher)| RescueDef {
                        id: (i == 0).then(|| "resc".into()),
                        matcher,
                        span,
                    })
                    .collect(),
                expects: vec![],
                sets: vec![],
                set_tests: vec![],
                flows: Default::default(),
            }
        })
}

fn packet() -> impl Strategy<Value = FlowKey> {
    let fam = prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)];
    (
        fam.prop_flat_map(|f| (Just(f), addr(f), addr(f))),
        prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)],
        (0u16..160, 0u16..160, 0u8..4, 0u8..2, 0u16..0x20),
        prop_oneof![
            Just(None),
            Just(Some(0u16)),
            Just(Some(10)),
            Just(Some(20)),
            Just(Some(30)),
            Just(Some(40))
        ],
        prop_oneof![
            4 => Just(FragmentState::None),
            1 => Just(FragmentState::First),
            1 => Just(FragmentState::NonFirst)
        ],
        prop_oneof![Just(0u8), Just(46)],
        prop_oneof![8 => Just(false), 1 => Just(true)],
        prop_oneof![12 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |((f, s, d), proto, (sp, dp, it, ic, flags), vlan, frag, dscp, broken, arp)| {
                let mut k = FlowKey::new();
                if arp {
                    k.ethertype = 0x0806;
                    k.present.0 |= Present::ETHERTYPE;
                } else {
                    k = match f {
                        IpFamily::V4 => k.with_ipv4((s as u32).to_be_bytes(), (d as u32).to_be_bytes()),
                        IpFamily::V6 => k.with_ipv6(s, d),
                    };
                    k = k.with_proto(proto).with_dscp(dscp);
                    if frag != FragmentState::NonFirst {
                        match proto {
                            6 => k = k.with_ports(sp, dp).with_tcp_flags(flags),
                            17 => k = k.with_ports(sp, dp),
                            1 | 58 => k = k.with_icmp(it, ic),
                            _ => {}
                        }
                    }
                    k = k.with_fragment(
                        frag,
                        if frag == FragmentState::NonFirst { 1480 } else { 0 },
                        frag == FragmentState::First,
                    );
                }
                if let Some(v) = vlan {
                    k = k.with_vlan(v);
                }
                if broken {
                    k.status = ParseStatus::Truncated(Layer::Tcp);
                }
                k
            },
        )
}

fn context() -> impl Strategy<Value = (&'static str, Option<(&'static str, &'static str)>)> {
    let iface = prop_oneof![Just("a"), Just("b"), Just("c")];
    (
        prop_oneof![Just("p0"), Just("p1")],
        prop::option::of((iface.clone(), iface)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn policy_equals_model(rs in ruleset(), keys in prop::collection::vec(packet(), 1..150), (port, route) in context()) {
        let policy = Policy::compile(&rs).unwrap();
        let ctx = Context {
            port: policy.port(port).unwrap(),
            route: route.map(|(f, t)| Route { from: policy.interface(f).unwrap(), to: policy.interface(t).unwrap() }),
        };
        let mut batch = vec![Decision::default(); keys.len()];
        policy.evaluate_batch(&keys, &ctx, &mut batch);
        // The staged batch reports, per key, the events of the key-by-key walk.
        let mut staged = vec![Decision::default(); keys.len()];
        let mut batch_events = vec![Vec::new(); keys.len()];
        policy.evaluate_batch_traced(&keys, &ctx, &mut staged, |i, e| batch_events[i].push(*e));
        prop_assert_eq!(&staged, &batch);
        for ((k, b), staged_events) in keys.iter().zip(&batch).zip(&batch_events) {
            let d = policy.evaluate(k, &ctx);
            prop_assert_eq!(*b, d);
            let got: Outcome = (d.verdict, d.stage.as_str(), policy.acl_name(d.acl).map(str::to_owned), policy.rule_name(&d).to_owned());
            let want = model(&rs, k, port, route);
            prop_assert_eq!(got, want, "key {:?}", k);
            // One trace event per ACL evaluated, ending with the deciding one for an ACL decision.
            let mut events = Vec::new();
            let traced = policy.evaluate_traced(k, &ctx, |e| events.push(*e));
            prop_assert_eq!(traced, d);
            prop_assert_eq!(staged_events, &events);
            if let Some(last) = events.last() {
                if d.acl.is_some() {
                    prop_assert_eq!((last.stage, Some(last.acl), last.rule, last.verdict), (d.stage, d.acl, d.rule, d.verdict));
                }
            }
            prop_assert!(events.iter().rev().skip(1).all(|e| e.verdict == Verdict::Permit));
        }
    }

    #[test]
    fn model_matcher_agrees_with_reference(m in rule_match(), k in packet()) {
        // The model's matcher is independent; keep it honest against the oracle too.
        prop_assert_eq!(model_matches(&m, &k), m.matches(&k));
    }
}
