//! Set semantics, end to end: random rule files with named sets (IPv4 and
//! IPv6 together, in the rule file and in a set file), negated references,
//! port sets, and rules' own long lists (compiled as anonymous sets), parsed
//! and compiled into a policy, give on random packets exactly the verdict of
//! an independent model that scans the sets' elements for every packet.

use palisade_classify::{IpFamily, Prefix};
use palisade_engine::policy::{Context, Decision, Policy, RuleRef, Verdict, ANONYMOUS_MIN};
use palisade_packet::FlowKey;
use palisade_rules::KeptFiles;
use proptest::prelude::*;

/// Addresses cluster so packets hit set elements and prefixes nest.
const V4_BASES: [u32; 3] = [0x0a00_0000, 0xc633_6400, 0xcb00_7100];
const V6_BASE: u128 = 0x2001_0db8 << 96;

fn v4() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0..V4_BASES.len(), 0u32..0x1_0000).prop_map(|(b, o)| V4_BASES[b] + o),
        1 => any::<u32>(),
    ]
}

fn v6() -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => (0u128..4, any::<u64>()).prop_map(|(b, o)| V6_BASE | b << 80 | u128::from(o) >> 10),
        1 => any::<u128>(),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        4 => (v4(), prop_oneof![16u8..=32, Just(24u8), Just(32u8), 0u8..=15]).prop_map(|(a, l)| Prefix::v4(a.to_be_bytes(), l)),
        1 => (v6(), prop_oneof![32u8..=64, Just(128u8), 1u8..=128]).prop_map(|(a, l)| Prefix::v6(a, l)),
    ]
}

fn text(p: &Prefix) -> String {
    match p.family {
        IpFamily::V4 => format!("{}/{}", std::net::Ipv4Addr::from(p.addr as u32), p.len),
        IpFamily::V6 => format!("{}/{}", std::net::Ipv6Addr::from(p.addr), p.len),
    }
}

/// An address constraint of a rule.
#[derive(Clone, Debug)]
enum Addr {
    Any,
    /// `"@set"` or `"!@set"`.
    Set(usize, bool),
    /// A list (long ones become anonymous sets).
    List(Vec<Prefix>),
}

/// A port constraint.
#[derive(Clone, Debug)]
enum Ports {
    Any,
    /// `"@ports"` or `"!@ports"`.
    Set(bool),
    Range(u16, u16),
}

#[derive(Clone, Debug)]
struct Rule {
    permit: bool,
    src: Addr,
    dst: Addr,
    /// 0 any, 6 tcp, 17 udp.
    proto: u8,
    dst_port: Ports,
}

#[derive(Clone, Debug)]
struct Spec {
    /// Address sets: (inline elements, file elements).
    sets: Vec<(Vec<Prefix>, Vec<Prefix>)>,
    ports: Vec<(u16, u16)>,
    rules: Vec<Rule>,
    default_permit: bool,
}

fn addr_constraint(sets: usize) -> impl Strategy<Value = Addr> {
    prop_oneof![
        3 => Just(Addr::Any),
        4 => (0..sets, any::<bool>()).prop_map(|(s, neg)| Addr::Set(s, neg)),
        1 => prop::collection::vec(prefix(), 1..4).prop_map(Addr::List),
        1 => prop::collection::vec(prefix(), ANONYMOUS_MIN + 1..60).prop_map(Addr::List),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..4).prop_flat_map(|n| {
        (
            prop::collection::vec(
                (prop::collection::vec(prefix(), 0..6), prop::collection::vec(prefix(), 0..300)),
                n,
            ),
            prop::collection::vec((any::<u16>(), 0u16..500).prop_map(|(a, w)| (a, a.saturating_add(w))), 1..6),
            prop::collection::vec(
                (
                    any::<bool>(),
                    addr_constraint(n),
                    addr_constraint(n),
                    prop_oneof![Just(0u8), Just(6), Just(17)],
                    prop_oneof![
                        2 => Just(Ports::Any),
                        2 => any::<bool>().prop_map(Ports::Set),
                        1 => (any::<u16>(), 0u16..2000).prop_map(|(a, w)| Ports::Range(a, a.saturating_add(w))),
                    ],
                )
                    .prop_map(|(permit, src, dst, proto, dst_port)| Rule {
                        permit,
                        src,
                        dst,
                        proto,
                        dst_port,
                    }),
                1..12,
            ),
            any::<bool>(),
        )
            .prop_map(|(sets, ports, rules, default_permit)| Spec {
                sets,
                ports,
                rules,
                default_permit,
            })
    })
}

impl Spec {
    /// The rule file and its set files.
    fn render(&self) -> (String, Vec<(String, Vec<u8>)>) {
        let mut t =
            String::from("version = 1\n[[port]]\nname = \"p\"\n[[bind]]\nacl = \"a\"\nport = \"p\"\n");
        let mut files = Vec::new();
        for (i, (inline, file)) in self.sets.iter().enumerate() {
            let list: Vec<String> = inline.iter().map(|p| format!("\"{}\"", text(p))).collect();
            t.push_str(&format!(
                "[[set]]\nname = \"s{i}\"\nkind = \"address\"\nelements = [{}]\nfile = \"s{i}.txt\"\n",
                list.join(", ")
            ));
            let body: String = file.iter().map(|p| format!("{}  # e\n", text(p))).collect();
            files.push((format!("s{i}.txt"), format!("# set {i}\n{body}").into_bytes()));
        }
        let ports: Vec<String> = self.ports.iter().map(|(a, b)| format!("\"{a}-{b}\"")).collect();
        t.push_str(&format!(
            "[[set]]\nname = \"ports\"\nelements = [{}]\n",
            ports.join(", ")
        ));
        t.push_str(&format!(
            "[[acl]]\nname = \"a\"\ndefault = \"{}\"\n",
            if self.default_permit { "permit" } else { "deny" }
        ));
        for r in &self.rules {
            t.push_str(&format!(
                "[[acl.rule]]\naction = \"{}\"\n",
                if r.permit { "permit" } else { "deny" }
            ));
            for (key, a) in [("src", &r.src), ("dst", &r.dst)] {
                match a {
                    Addr::Any => {}
                    Addr::Set(s, neg) => {
                        t.push_str(&format!("{key} = \"{}@s{s}\"\n", if *neg { "!" } else { "" }))
                    }
                    Addr::List(l) => {
                        let l: Vec<String> = l.iter().map(|p| format!("\"{}\"", text(p))).collect();
                        t.push_str(&format!("{key} = [{}]\n", l.join(", ")));
                    }
                }
            }
            let proto = match (r.proto, &r.dst_port) {
                (0, Ports::Any) => None,
                (0, _) => Some("tcp"), // ports need tcp or udp
                (6, _) => Some("tcp"),
                _ => Some("udp"),
            };
            if let Some(p) = proto {
                t.push_str(&format!("proto = \"{p}\"\n"));
            }
            match r.dst_port {
                Ports::Any => {}
                Ports::Set(neg) => {
                    t.push_str(&format!("dst_port = \"{}@ports\"\n", if neg { "!" } else { "" }))
                }
                Ports::Range(a, b) => t.push_str(&format!("dst_port = \"{a}-{b}\"\n")),
            }
        }
        (t, files)
    }

    /// Whether every rule can match (a rule whose lists share no family is
    /// refused by the rule language, rightly; such specs are not generated).
    fn valid(&self) -> bool {
        let fams = |a: &Addr| match a {
            Addr::List(l) => l.iter().map(|p| p.family).collect::<Vec<_>>(),
            _ => vec![IpFamily::V4, IpFamily::V6],
        };
        self.rules
            .iter()
            .all(|r| fams(&r.src).iter().any(|f| fams(&r.dst).contains(f)))
    }

    /// The model: first matching rule, membership by scanning the elements.
    fn decide(&self, k: &FlowKey) -> (Verdict, Option<usize>) {
        let fam = match k.ip_family() {
            Some(4) => Some(IpFamily::V4),
            Some(6) => Some(IpFamily::V6),
            _ => None,
        };
        let scan = |list: &[Prefix], a: u128| fam.is_some_and(|f| list.iter().any(|p| p.contains(f, a)));
        let addr_ok = |c: &Addr, a: u128| match c {
            Addr::Any => true,
            Addr::Set(s, neg) => {
                let (inline, file) = &self.sets[*s];
                fam.is_some() && (scan(inline, a) || scan(file, a)) != *neg
            }
            Addr::List(l) => scan(l, a),
        };
        for (i, r) in self.rules.iter().enumerate() {
            let needs_ip = !matches!(r.src, Addr::Any)
                || !matches!(r.dst, Addr::Any)
                || r.proto != 0
                || !matches!(r.dst_port, Ports::Any);
            if needs_ip && fam.is_none() {
                continue;
            }
            if !addr_ok(&r.src, k.src_ip) || !addr_ok(&r.dst, k.dst_ip) {
                continue;
            }
            let proto = match (r.proto, &r.dst_port) {
                (0, Ports::Any) => None,
                (0, _) | (6, _) => Some(6),
                _ => Some(17),
            };
            if proto.is_some_and(|p| k.l4_proto != p) {
                continue;
            }
            let port_ok = match r.dst_port {
                Ports::Any => true,
                Ports::Set(neg) => k
                    .ports()
                    .is_some_and(|(_, d)| self.ports.iter().any(|&(a, b)| a <= d && d <= b) != neg),
                Ports::Range(a, b) => k.ports().is_some_and(|(_, d)| a <= d && d <= b),
            };
            if !port_ok {
                continue;
            }
            return (if r.permit { Verdict::Permit } else { Verdict::Deny }, Some(i));
        }
        (
            if self.default_permit {
                Verdict::Permit
            } else {
                Verdict::Deny
            },
            None,
        )
    }
}

fn key() -> impl Strategy<Value = FlowKey> {
    (
        0u8..10,
        v4(),
        v4(),
        v6(),
        v6(),
        prop_oneof![Just(6u8), Just(17), Just(1)],
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(f, s4, d4, s6, d6, proto, sp, dp)| {
            let k = match f {
                0..=6 => FlowKey::new().with_ipv4(s4.to_be_bytes(), d4.to_be_bytes()),
                7..=8 => FlowKey::new().with_ipv6(s6, d6),
                _ => return FlowKey::new(),
            };
            let k = k.with_proto(proto);
            if proto == 1 {
                k.with_icmp(8, 0)
            } else {
                k.with_ports(sp, dp)
            }
        })
}

/// Keys whose addresses are the edges of the spec's elements (where a wrong structure errs).
fn edge_keys(spec: &Spec) -> Vec<FlowKey> {
    let mut out = Vec::new();
    let all: Vec<&Prefix> = spec.sets.iter().flat_map(|(a, b)| a.iter().chain(b)).collect();
    for (i, p) in all.iter().enumerate() {
        let (lo, hi) = p.range();
        for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
            let k = match p.family {
                IpFamily::V4 => FlowKey::new().with_ipv4((a as u32).to_be_bytes(), (a as u32).to_be_bytes()),
                IpFamily::V6 => FlowKey::new().with_ipv6(a, a),
            };
            let port = spec.ports[i % spec.ports.len()].0;
            out.push(k.with_proto(6).with_ports(port, port));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn policy_with_sets_equals_a_scan_of_the_elements(spec in spec(), keys in prop::collection::vec(key(), 1..200)) {
        prop_assume!(spec.valid());
        let (rules, files) = spec.render();
        let loaded = palisade_rules::parse_with("t.toml", rules.as_bytes(), &KeptFiles::new(files))
            .map_err(|e| TestCaseError::fail(format!("{e:?}\n{rules}")))?;
        let policy = Policy::compile(&loaded.ruleset).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ctx = Context { port: policy.port("p").unwrap(), route: None };
        let mut keys = keys;
        keys.extend(edge_keys(&spec));
        let mut batch = vec![Decision::default(); keys.len()];
        policy.evaluate_batch(&keys, &ctx, &mut batch);
        for (k, b) in keys.iter().zip(&batch) {
            let d = policy.evaluate(k, &ctx);
            prop_assert_eq!(*b, d, "batch and single differ on {:?}", k);
            let (verdict, rule) = spec.decide(k);
            let got_rule = match d.rule {
                RuleRef::Rule(i) => Some(i as usize),
                _ => None,
            };
            prop_assert_eq!((d.verdict, got_rule), (verdict, rule), "key {:?}\n{}", k, rules);
        }
    }
}

/// Long lists become anonymous sets, and a rule set with more of them than
/// bits left keeps the rest as lists, with the same answers.
#[test]
fn long_lists_become_sets_until_the_bits_run_out() {
    let mut text = String::from(
        "version = 1\n[[port]]\nname = \"p\"\n[[bind]]\nacl = \"a\"\nport = \"p\"\n[[acl]]\nname = \"a\"\n",
    );
    for r in 0..40u32 {
        let list: Vec<String> = (0..20u32).map(|i| format!("\"10.{r}.{i}.0/24\"")).collect();
        text.push_str(&format!(
            "[[acl.rule]]\naction = \"deny\"\nsrc = [{}]\n",
            list.join(", ")
        ));
    }
    text.push_str("[[acl.rule]]\naction = \"permit\"\n");
    let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
    let policy = Policy::compile(&loaded.ruleset).unwrap();
    assert_eq!(policy.set_tests().len(), 32, "every bit used");
    assert!(policy.set_tests().iter().all(|t| t.anonymous && t.elements == 20));
    assert_eq!(policy.set_tests()[0].set, "acl \"a\" rule #1");
    let ctx = Context {
        port: policy.port("p").unwrap(),
        route: None,
    };
    for r in 0..41u32 {
        let k = FlowKey::new().with_ipv4([10, r as u8, 19, 7], [1, 1, 1, 1]);
        let d = policy.evaluate(&k, &ctx);
        if r < 40 {
            assert_eq!((d.verdict, d.rule), (Verdict::Deny, RuleRef::Rule(r)), "rule {r}");
        } else {
            assert_eq!((d.verdict, d.rule), (Verdict::Permit, RuleRef::Rule(40)));
        }
        let miss = FlowKey::new().with_ipv4([10, r as u8, 20, 7], [1, 1, 1, 1]);
        assert_eq!(policy.evaluate(&miss, &ctx).rule, RuleRef::Rule(40));
    }
    // The deciding set is named.
    let k = FlowKey::new().with_ipv4([10, 3, 1, 1], [1, 1, 1, 1]);
    let d = policy.evaluate(&k, &ctx);
    assert_eq!(
        policy.set_reasons(d.acl, d.rule, &k),
        ["src 10.3.1.1 in its src list (20 elements)"]
    );
}
