//! Table-driven tests of each stage and of their order.

use palisade_packet::{FlowKey, FragmentState, Layer, ParseStatus};

use super::*;

/// One port of each kind, one ACL per stage, each ACL denying exactly one
/// destination port so every row of the tables can pick the stage that decides.
const RULES: &str = r#"
version = 1
[defaults]
malformed = "deny"
[[port]]
name = "lan1"
vlan = 10
trunk = [10, 20]
[[port]]
name = "wan0"
[[port]]
name = "bare"
[[interface]]
name = "lan"
vlan = 10
[[interface]]
name = "guest"
vlan = 20
[[interface]]
name = "wan"
port = "wan0"

[[acl]]
name = "pacl"
default = "permit"
  [[acl.rule]]
  id = "p-deny"
  action = "deny"
  proto = "tcp"
  dst_port = 1001
  [[acl.rule]]
  id = "p-allow"
  action = "permit"
  proto = "tcp"
  dst_port = 1000

[[acl]]
name = "vacl10"
default = "permit"
  [[acl.rule]]
  action = "deny"
  proto = "tcp"
  dst_port = 1002

[[acl]]
name = "vacl20"
default = "permit"
  [[acl.rule]]
  id = "v20-deny"
  action = "deny"
  proto = "tcp"
  dst_port = 1003
  [[acl.rule]]
  id = "only-egress-20"
  action = "deny"
  proto = "tcp"
  dst_port = 1007
  vlan = 20

[[acl]]
name = "racl-in"
default = "permit"
  [[acl.rule]]
  id = "ri-deny"
  action = "deny"
  proto = "tcp"
  dst_port = 1004

[[acl]]
name = "racl-out"
default = "permit"
  [[acl.rule]]
  id = "ro-deny"
  action = "deny"
  proto = "tcp"
  dst_port = 1005

[[acl]]
name = "wan-in"
default = "deny"
  [[acl.rule]]
  id = "web"
  action = "permit"
  proto = "tcp"
  dst_port = 443

[[bind]]
acl = "pacl"
port = "lan1"
[[bind]]
acl = "vacl10"
vlan = 10
[[bind]]
acl = "vacl20"
vlan = 20
[[bind]]
acl = "racl-in"
interface = "lan"
direction = "in"
[[bind]]
acl = "racl-out"
interface = "guest"
direction = "out"
[[bind]]
acl = "wan-in"
interface = "wan"
direction = "in"

[[rescue]]
id = "mgmt"
proto = "tcp"
src = "192.0.2.0/28"
dst_port = 22
"#;

fn policy() -> Policy {
    let loaded = palisade_rules::parse("t.toml", RULES.as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"));
    Policy::compile(&loaded.ruleset).unwrap()
}

fn tcp(dport: u16) -> FlowKey {
    FlowKey::new()
        .with_ipv4([10, 0, 10, 5], [10, 0, 20, 7])
        .with_proto(6)
        .with_ports(40000, dport)
        .with_tcp_flags(0x002)
}

struct Row {
    port: &'static str,
    route: Option<(&'static str, &'static str)>,
    key: FlowKey,
    verdict: Verdict,
    stage: &'static str,
    acl: Option<&'static str>,
    rule: &'static str,
}

fn run(rows: &[Row]) {
    let p = policy();
    for (i, r) in rows.iter().enumerate() {
        let route = r.route.map(|(f, t)| Route {
            from: p.interface(f).unwrap(),
            to: p.interface(t).unwrap(),
        });
        let ctx = Context {
            port: p.port(r.port).unwrap(),
            route,
        };
        let d = p.evaluate(&r.key, &ctx);
        let got = (d.verdict, d.stage.as_str(), p.acl_name(d.acl), p.rule_name(&d));
        assert_eq!(
            got,
            (r.verdict, r.stage, r.acl, r.rule),
            "row {i}: {}",
            palisade_rules::format_packet(&r.key)
        );
    }
}

use Verdict::{Deny, Permit};

#[test]
fn each_stage_decides() {
    let lan = Some(("lan", "guest"));
    run(&[
        Row {
            port: "lan1",
            route: None,
            key: tcp(1001),
            verdict: Deny,
            stage: "pacl",
            acl: Some("pacl"),
            rule: "p-deny",
        },
        Row {
            port: "lan1",
            route: None,
            key: tcp(1002),
            verdict: Deny,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "#1",
        },
        Row {
            port: "lan1",
            route: lan,
            key: tcp(1004),
            verdict: Deny,
            stage: "racl-in",
            acl: Some("racl-in"),
            rule: "ri-deny",
        },
        Row {
            port: "lan1",
            route: lan,
            key: tcp(1005),
            verdict: Deny,
            stage: "racl-out",
            acl: Some("racl-out"),
            rule: "ro-deny",
        },
        Row {
            port: "lan1",
            route: lan,
            key: tcp(1003),
            verdict: Deny,
            stage: "vacl-out",
            acl: Some("vacl20"),
            rule: "v20-deny",
        },
        // Not routed: the egress VLAN ACL never runs, RACLs neither.
        Row {
            port: "lan1",
            route: None,
            key: tcp(1003),
            verdict: Permit,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "default",
        },
        Row {
            port: "lan1",
            route: None,
            key: tcp(1004),
            verdict: Permit,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "default",
        },
        // A permit names the last ACL that permitted.
        Row {
            port: "lan1",
            route: lan,
            key: tcp(1000),
            verdict: Permit,
            stage: "vacl-out",
            acl: Some("vacl20"),
            rule: "default",
        },
        // Routed port: no VLAN, so no VACL in; the RACL default decides.
        Row {
            port: "wan0",
            route: Some(("wan", "lan")),
            key: tcp(443),
            verdict: Permit,
            stage: "vacl-out",
            acl: Some("vacl10"),
            rule: "default",
        },
        Row {
            port: "wan0",
            route: Some(("wan", "lan")),
            key: tcp(80),
            verdict: Deny,
            stage: "racl-in",
            acl: Some("wan-in"),
            rule: "default",
        },
        // Nothing bound on the path at all.
        Row {
            port: "bare",
            route: None,
            key: tcp(1001),
            verdict: Permit,
            stage: "none",
            acl: None,
            rule: "",
        },
        Row {
            port: "wan0",
            route: Some(("guest", "wan")),
            key: tcp(1003),
            verdict: Permit,
            stage: "none",
            acl: None,
            rule: "",
        },
    ]);
}

#[test]
fn first_deny_ends_evaluation_in_stage_order() {
    // A key that every stage would deny: each earlier stage wins once the ones before it pass.
    let p = policy();
    let ctx = Context {
        port: p.port("lan1").unwrap(),
        route: Some(Route {
            from: p.interface("lan").unwrap(),
            to: p.interface("guest").unwrap(),
        }),
    };
    let mut seen = Vec::new();
    let d = p.evaluate_traced(&tcp(1001), &ctx, |e| seen.push(e.stage));
    assert_eq!((d.stage, seen), (Stage::PortAcl, vec![Stage::PortAcl]));
    let mut seen = Vec::new();
    let d = p.evaluate_traced(&tcp(1000), &ctx, |e| seen.push((e.stage, e.verdict)));
    assert_eq!(d.verdict, Permit);
    assert_eq!(
        seen,
        vec![
            (Stage::PortAcl, Permit),
            (Stage::VlanAclIn, Permit),
            (Stage::RoutedAclIn, Permit),
            (Stage::RoutedAclOut, Permit),
            (Stage::VlanAclOut, Permit)
        ]
    );
    let mut seen = Vec::new();
    let d = p.evaluate_traced(&tcp(1005), &ctx, |e| seen.push(e.stage));
    assert_eq!(d.stage, Stage::RoutedAclOut);
    assert_eq!(
        seen,
        vec![
            Stage::PortAcl,
            Stage::VlanAclIn,
            Stage::RoutedAclIn,
            Stage::RoutedAclOut
        ]
    );
}

#[test]
fn vlan_stamping_and_membership() {
    run(&[
        // Untagged: the port's access VLAN 10.
        Row {
            port: "lan1",
            route: None,
            key: tcp(1002),
            verdict: Deny,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "#1",
        },
        // Priority-tagged (VID 0) counts as untagged.
        Row {
            port: "lan1",
            route: None,
            key: tcp(1002).with_vlan(0),
            verdict: Deny,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "#1",
        },
        // Tagged 20 (in the trunk list): VLAN 20's ACL, not VLAN 10's.
        Row {
            port: "lan1",
            route: None,
            key: tcp(1002).with_vlan(20),
            verdict: Permit,
            stage: "vacl-in",
            acl: Some("vacl20"),
            rule: "default",
        },
        Row {
            port: "lan1",
            route: None,
            key: tcp(1003).with_vlan(20),
            verdict: Deny,
            stage: "vacl-in",
            acl: Some("vacl20"),
            rule: "v20-deny",
        },
        // Tagged with a VLAN the port does not carry: dropped before any ACL.
        Row {
            port: "lan1",
            route: None,
            key: tcp(1000).with_vlan(30),
            verdict: Deny,
            stage: "vlan-filter",
            acl: None,
            rule: "",
        },
        Row {
            port: "wan0",
            route: None,
            key: tcp(443).with_vlan(10),
            verdict: Deny,
            stage: "vlan-filter",
            acl: None,
            rule: "",
        },
        // The egress VLAN is stamped for the egress VLAN ACL: a `vlan = 20` rule matches there.
        Row {
            port: "lan1",
            route: Some(("lan", "guest")),
            key: tcp(1007),
            verdict: Deny,
            stage: "vacl-out",
            acl: Some("vacl20"),
            rule: "only-egress-20",
        },
    ]);
}

#[test]
fn rescue_comes_first_and_malformed_next() {
    let ssh = FlowKey::new()
        .with_ipv4([192, 0, 2, 3], [10, 0, 10, 5])
        .with_proto(6)
        .with_ports(5000, 22);
    let mut truncated = tcp(1000);
    truncated.status = ParseStatus::Truncated(Layer::Tcp);
    let mut bad_ssh = ssh;
    bad_ssh.status = ParseStatus::Malformed(Layer::Ipv4);
    run(&[
        // Rescue beats a tagged frame on a port without that VLAN, and a deny-all RACL.
        Row {
            port: "wan0",
            route: Some(("wan", "lan")),
            key: ssh,
            verdict: Permit,
            stage: "rescue",
            acl: None,
            rule: "mgmt",
        },
        Row {
            port: "lan1",
            route: None,
            key: ssh.with_vlan(99),
            verdict: Permit,
            stage: "rescue",
            acl: None,
            rule: "mgmt",
        },
        Row {
            port: "lan1",
            route: None,
            key: truncated,
            verdict: Deny,
            stage: "malformed",
            acl: None,
            rule: "",
        },
        Row {
            port: "lan1",
            route: None,
            key: bad_ssh,
            verdict: Permit,
            stage: "rescue",
            acl: None,
            rule: "mgmt",
        },
    ]);
    // defaults.malformed = "permit" is honoured.
    let text = RULES.replace("malformed = \"deny\"", "malformed = \"permit\"");
    let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
    let p = Policy::compile(&loaded.ruleset).unwrap();
    let d = p.evaluate(
        &truncated,
        &Context {
            port: p.port("lan1").unwrap(),
            route: None,
        },
    );
    assert_eq!((d.verdict, d.stage), (Permit, Stage::Malformed));
}

#[test]
fn fragments_and_non_ip() {
    let nonfirst = tcp(1001).with_fragment(FragmentState::NonFirst, 1480, false);
    let mut nonfirst = nonfirst;
    nonfirst.present.0 &= !(palisade_packet::Present::PORTS | palisade_packet::Present::TCP_FLAGS);
    let mut arp = FlowKey::new();
    arp.ethertype = 0x0806;
    arp.present.0 |= palisade_packet::Present::ETHERTYPE;
    run(&[
        // A non-first fragment has no ports: the port-specific deny cannot match it.
        Row {
            port: "lan1",
            route: None,
            key: nonfirst,
            verdict: Permit,
            stage: "vacl-in",
            acl: Some("vacl10"),
            rule: "default",
        },
        // Routed ACLs are for IP: ARP skips wan-in (which denies everything
        // else by default) and meets only the egress VLAN's ACL.
        Row {
            port: "wan0",
            route: Some(("wan", "lan")),
            key: arp,
            verdict: Permit,
            stage: "vacl-out",
            acl: Some("vacl10"),
            rule: "default",
        },
    ]);
}

#[test]
fn bad_context_fails_closed() {
    let p = policy();
    let d = p.evaluate(
        &tcp(443),
        &Context {
            port: 99,
            route: None,
        },
    );
    assert_eq!((d.verdict, d.stage), (Deny, Stage::Context));
    let route = Some(Route { from: 0, to: 77 });
    let d = p.evaluate(&tcp(443), &Context { port: 0, route });
    assert_eq!((d.verdict, d.stage), (Deny, Stage::Context));
}

#[test]
fn batch_equals_single() {
    let p = policy();
    let ctx = Context {
        port: p.port("lan1").unwrap(),
        route: Some(Route {
            from: p.interface("lan").unwrap(),
            to: p.interface("guest").unwrap(),
        }),
    };
    let keys: Vec<FlowKey> = (995..1010)
        .map(tcp)
        .chain([tcp(1003).with_vlan(20), tcp(1).with_vlan(30)])
        .collect();
    let mut out = vec![Decision::default(); keys.len()];
    p.evaluate_batch(&keys, &ctx, &mut out);
    for (k, d) in keys.iter().zip(&out) {
        assert_eq!(*d, p.evaluate(k, &ctx));
    }
}

#[test]
fn introspection() {
    let p = policy();
    assert_eq!(p.acls().len(), 6);
    assert_eq!(
        p.acls()[0].rule_ids,
        vec!["p-deny".to_owned(), "p-allow".to_owned()]
    );
    assert_eq!(p.acls()[1].rule_ids, vec!["#1".to_owned()]);
    assert_eq!(p.bindings().len(), 6);
    let b = &p.bindings()[3];
    assert_eq!(
        (b.kind.as_str(), b.target.as_str(), b.direction),
        ("routed", "lan", Some(Direction::In))
    );
    assert_eq!(p.acls()[2].bindings[0].target, "20");
    assert_eq!(p.rescue_count(), 1);
    assert_eq!(p.rule_count(), 8);
    assert_eq!(
        p.interface_info(p.interface("guest").unwrap()).unwrap().vlan,
        Some(20)
    );
}

#[test]
fn compile_refuses_what_validation_would() {
    let loaded = palisade_rules::parse("t.toml", RULES.as_bytes()).unwrap();
    let mut rs = loaded.ruleset.clone();
    rs.bindings[0].acl = "nope".into();
    assert!(Policy::compile(&rs)
        .unwrap_err()
        .to_string()
        .contains("missing acl \"nope\""));
    let mut rs = loaded.ruleset.clone();
    let dup = rs.bindings[1].clone();
    rs.bindings.push(dup);
    let e = Policy::compile(&rs).unwrap_err();
    assert_eq!(e.acl.as_deref(), Some("vacl10"));
    assert!(
        e.to_string().contains("vlan 10 already has acl \"vacl10\" bound"),
        "{e}"
    );
}

#[test]
fn check_expects_reports_each_failure_at_its_line() {
    let text = format!(
        "{RULES}[[expect]]\nport = \"lan1\"\npacket = {{ proto = \"tcp\", src = \"10.0.10.5\", dst = \"10.0.20.7\", dst_port = 1001 }}\nverdict = \"deny\"\nstage = \"pacl\"\nrule = \"p-deny\"\n[[expect]]\nport = \"lan1\"\npacket = {{ proto = \"tcp\", src = \"10.0.10.5\", dst = \"10.0.20.7\", dst_port = 1002 }}\nverdict = \"permit\"\n"
    );
    let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
    let p = Policy::compile(&loaded.ruleset).unwrap();
    let errs = p.check_expects(&loaded);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let line = RULES.lines().count() as u32 + 7;
    assert_eq!(
        errs[0].to_string(),
        format!("t.toml:{line}:1: expect 2: tcp 10.0.10.5:49152 -> 10.0.20.7:1002: expected permit, got deny (stage vacl-in, acl \"vacl10\", rule #1)")
    );
}

#[test]
fn states_given_beside_the_keys_decide_as_stamped_keys() {
    use palisade_packet::FlowState;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/office.toml");
    let loaded = palisade_rules::load(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    let p = Policy::compile(&loaded.ruleset).unwrap();
    let states = [
        FlowState::New,
        FlowState::Established,
        FlowState::Related,
        FlowState::Invalid,
        FlowState::Untracked,
    ];
    let lan = p.resolve("lan1", Some(("lan", "wan"))).unwrap();
    let wan = p.resolve("wan0", Some(("wan", "lan"))).unwrap();
    let out_of_lan = FlowKey::new()
        .with_ipv4([10, 0, 10, 5], [198, 51, 100, 7])
        .with_proto(6)
        .with_ports(40000, 443);
    let into_lan = FlowKey::new()
        .with_ipv4([198, 51, 100, 7], [10, 0, 10, 5])
        .with_proto(17)
        .with_ports(443, 40000);
    for (ctx, key) in [(lan, out_of_lan), (wan, into_lan)] {
        // Every state once per key, the keys themselves stamped with none (70 keys: two chunks).
        let keys = vec![key; 70];
        let given: Vec<FlowState> = (0..keys.len()).map(|i| states[i % states.len()]).collect();
        let mut out = vec![Decision::default(); keys.len()];
        let mut events = vec![Vec::new(); keys.len()];
        p.evaluate_batch_in_states(&keys, &given, &ctx, &mut out, |i, e| events[i].push(*e));
        for (i, &state) in given.iter().enumerate() {
            let mut want_events = Vec::new();
            let want = p.evaluate_traced(&key.with_flow_state(state), &ctx, |e| want_events.push(*e));
            assert_eq!((out[i], &events[i]), (want, &want_events), "{state:?}");
        }
        // States that end inside the second chunk, or before it: the keys past
        // their end are evaluated in their own state (here established).
        for short in [66, 10] {
            let own = vec![key.with_flow_state(FlowState::Established); 70];
            let mut got = vec![Decision::default(); own.len()];
            p.evaluate_batch_in_states(&own, &given[..short], &ctx, &mut got, |_, _| {});
            for (i, d) in got.iter().enumerate() {
                let state = given[..short].get(i).copied().unwrap_or(FlowState::Established);
                let want = p.evaluate(&key.with_flow_state(state), &ctx);
                assert_eq!(*d, want, "frame {i} of {short} states");
            }
        }
        // The states mattered: the reply is permitted only as established.
        let verdicts: Vec<Verdict> = out[..states.len()].iter().map(|d| d.verdict).collect();
        if ctx == wan {
            assert_eq!(
                verdicts,
                [
                    Verdict::Deny,
                    Verdict::Permit,
                    Verdict::Permit,
                    Verdict::Deny,
                    Verdict::Deny
                ]
            );
        }
    }
}
