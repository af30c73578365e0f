//! One test per error kind: the exact `file:line:col` and cause.

use palisade_rules::{parse, Diagnostic, Severity};

/// A valid preamble every case appends to (lines 1-23).
const BASE: &str = r#"version = 1
[[port]]
name = "lan1"
vlan = 10
trunk = [10, 20]
[[port]]
name = "wan0"
[[interface]]
name = "lan"
vlan = 10
[[interface]]
name = "wan"
port = "wan0"
[[acl]]
name = "a"
  [[acl.rule]]
  id = "web"
  action = "permit"
  proto = "tcp"
  dst_port = 443
[[bind]]
acl = "a"
port = "lan1"
"#;

/// Parses BASE + `extra`; returns the errors (panics when it parsed).
fn errors(extra: &str) -> Vec<Diagnostic> {
    let text = format!("{BASE}{extra}");
    match parse("t.toml", text.as_bytes()) {
        Ok(_) => panic!("expected errors for:\n{extra}"),
        Err(e) => e,
    }
}

/// Asserts exactly one error, at `line:col`, whose message contains `needle`.
fn one(extra: &str, line: u32, col: u32, needle: &str) {
    let errs = errors(extra);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.severity, Severity::Error);
    assert_eq!((e.span.line, e.span.col), (line, col), "{e}");
    assert!(e.message.contains(needle), "{e} does not contain {needle:?}");
    assert!(
        e.to_string().starts_with(&format!("t.toml:{line}:{col}: ")),
        "{e}"
    );
}

#[test]
fn base_is_valid() {
    let l = parse("t.toml", BASE.as_bytes()).unwrap();
    assert_eq!(l.ruleset.acls[0].rules.len(), 1);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn toml_syntax() {
    one("[[acl]\n", 24, 7, "TOML syntax: unclosed array table");
}

#[test]
fn unknown_version() {
    let errs = parse(
        "t.toml",
        BASE.replacen("version = 1", "version = 2", 1).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "t.toml:1:11: unknown rule-language version 2 (this engine reads version 1)"
    );
}

#[test]
fn missing_version() {
    let errs = parse("t.toml", BASE.replacen("version = 1\n", "\n", 1).as_bytes()).unwrap_err();
    assert_eq!((errs[0].span.line, errs[0].span.col), (1, 1));
    assert!(errs[0].message.contains("missing `version = 1`"));
}

/// Errors for BASE with `requires = REQ` put on line 2.
fn with_requires(req: &str) -> Vec<Diagnostic> {
    let text = BASE.replacen(
        "version = 1\n",
        &format!("version = 1\nrequires = \"{req}\"\n"),
        1,
    );
    parse("t.toml", text.as_bytes()).err().unwrap_or_default()
}

#[test]
fn requires_not_met() {
    let errs = with_requires(">=0.2");
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "t.toml:2:12: requires \">=0.2\" is not met by this engine (version 0.1.0)"
    );
    assert!(with_requires(">=0.1, <0.2").is_empty());
}

#[test]
fn requires_unreadable() {
    let errs = with_requires("newest");
    assert_eq!((errs[0].span.line, errs[0].span.col), (2, 12));
    assert!(errs[0].message.contains("is not a semver requirement"));
}

#[test]
fn unknown_key() {
    one(
        "[[acl]]\nname = \"b\"\n  [[acl.rule]]\n  action = \"deny\"\n  dst_prot = 22\n",
        28,
        3,
        "unknown key \"dst_prot\" in [[acl.rule]] (did you mean \"dst_port\"?)",
    );
}

#[test]
fn unknown_protocol() {
    one(
        "[[rescue]]\nproto = \"tcpp\"\n",
        25,
        9,
        "unknown protocol \"tcpp\"",
    );
}

#[test]
fn vlan_out_of_range() {
    one(
        "[[port]]\nname = \"p3\"\nvlan = 4095\n",
        26,
        8,
        "vlan 4095 is outside 1-4094",
    );
}

#[test]
fn vlan_zero_only_for_priority_tagged_packets() {
    one(
        "[[bind]]\nacl = \"a\"\nvlan = 0\n",
        26,
        8,
        "vlan 0 is outside 1-4094",
    );
    // In a packet, VLAN 0 is a priority-tagged frame: accepted.
    let ok = format!(
        "{BASE}[[expect]]\nport = \"lan1\"\npacket = {{ proto = \"tcp\", src = \"10.0.10.5\", dst = \"10.0.10.6\", dst_port = 443, vlan = 0 }}\nverdict = \"permit\"\n"
    );
    let l = parse("t.toml", ok.as_bytes()).unwrap();
    assert_eq!(l.ruleset.expects[0].packet.vlan_count, 1);
}

#[test]
fn trunk_vlan_out_of_range() {
    one(
        "[[port]]\nname = \"p3\"\ntrunk = [10, \"100-5000\"]\n",
        26,
        14,
        "trunk \"5000\" is not a number 0-4094",
    );
}

#[test]
fn port_out_of_range() {
    one(
        "[[rescue]]\nproto = \"tcp\"\ndst_port = 70000\n",
        26,
        12,
        "dst_port 70000 is outside 0-65535",
    );
}

#[test]
fn reversed_port_range() {
    one(
        "[[acl]]\nname = \"web-in\"\n  [[acl.rule]]\n  action = \"permit\"\n  proto = \"tcp\"\n  dst_port = [22, \"443-80\"]\n",
        29,
        19,
        "acl \"web-in\" rule 1: dst_port range 443-80 is reversed",
    );
}

#[test]
fn prefix_host_bits() {
    one(
        "[[rescue]]\nsrc = \"192.0.2.1/28\"\n",
        25,
        7,
        "has host bits set (did you mean 192.0.2.0/28?)",
    );
}

#[test]
fn prefix_too_long_v4() {
    one(
        "[[rescue]]\nsrc = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
        25,
        22,
        "length 33 is beyond 32",
    );
}

#[test]
fn prefix_too_long_v6() {
    one(
        "[[rescue]]\ndst = \"2001:db8::/129\"\n",
        25,
        7,
        "length 129 is beyond 128",
    );
}

#[test]
fn duplicate_acl() {
    one(
        "[[acl]]\nname = \"a\"\n",
        25,
        8,
        "duplicate acl \"a\" (first defined at 15:8)",
    );
}

#[test]
fn duplicate_port() {
    one(
        "[[port]]\nname = \"lan1\"\n",
        25,
        8,
        "duplicate port \"lan1\" (first defined at 3:8)",
    );
}

#[test]
fn duplicate_interface() {
    one(
        "[[interface]]\nname = \"wan\"\nvlan = 20\n",
        25,
        8,
        "duplicate interface \"wan\" (first defined at 12:8)",
    );
}

#[test]
fn duplicate_rule_id() {
    one(
        "[[acl]]\nname = \"b\"\n  [[acl.rule]]\n  id = \"x\"\n  action = \"deny\"\n  [[acl.rule]]\n  id = \"x\"\n  action = \"permit\"\n  proto = \"udp\"\n",
        30,
        8,
        "acl \"b\": duplicate rule id \"x\" (first used at 27:8)",
    );
}

#[test]
fn binding_missing_acl() {
    one(
        "[[bind]]\nacl = \"nope\"\nport = \"wan0\"\n",
        25,
        7,
        "bind 2 names missing acl \"nope\"",
    );
}

#[test]
fn binding_missing_port() {
    one(
        "[[bind]]\nacl = \"a\"\nport = \"lan9\"\n",
        26,
        8,
        "bind 2 names missing port \"lan9\"",
    );
}

#[test]
fn binding_missing_interface() {
    one(
        "[[bind]]\nacl = \"a\"\ninterface = \"dmz\"\ndirection = \"in\"\n",
        26,
        13,
        "bind 2 names missing interface \"dmz\"",
    );
}

#[test]
fn binding_missing_vlan() {
    one(
        "[[bind]]\nacl = \"a\"\nvlan = 30\n",
        26,
        8,
        "bind 2 names VLAN 30, which no port or interface carries",
    );
}

#[test]
fn routed_binding_without_direction() {
    one(
        "[[bind]]\nacl = \"a\"\ninterface = \"wan\"\n",
        26,
        13,
        "needs `direction = \"in\"` or `\"out\"`",
    );
}

#[test]
fn binding_with_two_targets() {
    one(
        "[[bind]]\nacl = \"a\"\nport = \"wan0\"\nvlan = 20\n",
        27,
        8,
        "a binding has exactly one target, but names both `port` and `vlan`",
    );
}

#[test]
fn binding_without_target() {
    one("[[bind]]\nacl = \"a\"\n", 24, 1, "missing target");
}

#[test]
fn direction_on_port_binding() {
    one(
        "[[bind]]\nacl = \"a\"\nport = \"wan0\"\ndirection = \"in\"\n",
        27,
        13,
        "`direction` applies only to a Routed ACL",
    );
}

#[test]
fn two_acls_on_one_port() {
    one(
        "[[acl]]\nname = \"b\"\n[[bind]]\nacl = \"b\"\nport = \"lan1\"\n",
        28,
        8,
        "port \"lan1\" already has an ACL bound (at 23:8)",
    );
}

#[test]
fn rule_never_matches_families() {
    one(
        "[[rescue]]\nsrc = \"10.0.0.0/8\"\ndst = \"2001:db8::/32\"\n",
        26,
        7,
        "src is IPv4 but dst is IPv6: the rule can never match",
    );
}

#[test]
fn rule_never_matches_ports_with_icmp() {
    one(
        "[[rescue]]\nproto = \"icmp\"\ndst_port = 22\n",
        26,
        12,
        "dst_port needs proto tcp or udp (the only ports the parser reads), but proto is icmp",
    );
}

/// The parser reads TCP and UDP ports only: an SCTP port rule would never
/// match a frame, while `explain` and `[[expect]]` would say it does.
#[test]
fn rule_never_matches_ports_with_sctp() {
    one(
        "[[rescue]]\nproto = \"sctp\"\ndst_port = 22\n",
        26,
        12,
        "dst_port needs proto tcp or udp (the only ports the parser reads), but proto is sctp",
    );
}

#[test]
fn rule_never_matches_icmp_type_with_tcp() {
    one(
        "[[rescue]]\nproto = \"tcp\"\nicmp_type = 8\n",
        26,
        13,
        "icmp_type needs proto icmp or icmpv6",
    );
}

#[test]
fn rule_never_matches_nonfirst_fragment_ports() {
    one(
        "[[rescue]]\nproto = \"udp\"\ndst_port = 53\nfragment = \"non-first\"\n",
        27,
        12,
        "non-first fragments carry no ports",
    );
}

#[test]
fn bad_tcp_flags() {
    one(
        "[[rescue]]\nproto = \"tcp\"\ntcp_flags = \"syn,!syn\"\n",
        26,
        13,
        "names syn twice",
    );
}

#[test]
fn expect_names_missing_port() {
    one(
        "[[expect]]\nport = \"lan7\"\npacket = { proto = \"tcp\", src = \"10.0.10.5\", dst = \"1.1.1.1\", dst_port = 443 }\nverdict = \"permit\"\n",
        25,
        8,
        "expect 1 names missing port \"lan7\"",
    );
}

#[test]
fn expect_packet_inconsistent() {
    one(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"udp\", src = \"10.0.10.5\", dst = \"2001:db8::1\" }\nverdict = \"permit\"\n",
        26,
        10,
        "src is IPv4 but dst is IPv6",
    );
}

#[test]
fn every_error_in_one_run() {
    let errs = errors(
        "[[acl]]\nname = \"a\"\n  [[acl.rule]]\n  action = \"maybe\"\n  src = \"10.0.0.1/8\"\n[[bind]]\nacl = \"zzz\"\nport = \"nowhere\"\n",
    );
    let at: Vec<(u32, u32)> = errs.iter().map(|e| (e.span.line, e.span.col)).collect();
    assert_eq!(
        at,
        vec![(25, 8), (27, 12), (28, 9), (30, 7), (31, 8)],
        "{errs:#?}"
    );
}

#[test]
fn warnings_shadowed_and_unbound() {
    let text = format!(
        "{BASE}[[acl]]\nname = \"lonely\"\n  [[acl.rule]]\n  action = \"permit\"\n  proto = \"tcp\"\n  [[acl.rule]]\n  id = \"ssh\"\n  action = \"deny\"\n  proto = \"tcp\"\n  dst_port = 22\n"
    );
    let l = parse("t.toml", text.as_bytes()).unwrap();
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "t.toml:25:8: warning: acl \"lonely\" is bound nowhere".to_owned(),
            "t.toml:29:3: warning: acl \"lonely\" rule 2 (\"ssh\") is shadowed by rule 1: it can never match (its action never applies)".to_owned(),
        ]
    );
}

#[test]
fn not_utf8() {
    let mut bytes = BASE.as_bytes().to_vec();
    bytes.extend_from_slice(b"# caf\xff\n");
    let errs = parse("t.toml", &bytes).unwrap_err();
    assert_eq!((errs[0].span.line, errs[0].span.col), (24, 6));
}

#[test]
fn digest_is_sha256_of_bytes() {
    let l = parse("t.toml", BASE.as_bytes()).unwrap();
    assert_eq!(l.digest, palisade_rules::Digest::of(BASE.as_bytes()));
    let l2 = parse("t.toml", format!("{BASE}\n").as_bytes()).unwrap();
    assert_ne!(l.digest, l2.digest);
}

#[test]
fn expect_unknown_stage() {
    one(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"udp\", src = \"10.0.10.5\", dst = \"10.0.10.1\" }\nverdict = \"permit\"\nstage = \"port-acl\"\n",
        28,
        9,
        "stage \"port-acl\" is not one of rescue, malformed, vlan-filter, pacl",
    );
}

#[test]
fn rescue_matching_everything() {
    one(
        "[[rescue]]\nid = \"all\"\n",
        24,
        1,
        "a rescue rule that matches everything would disable every ACL",
    );
}

#[test]
fn acl_rule_not_an_array_of_tables() {
    one(
        "[[acl]]\nname = \"b\"\n[acl.rule]\naction = \"deny\"\n",
        26,
        1,
        "`rule` must be an array of tables",
    );
}

#[test]
fn syntax_error_cascades_are_cut_short() {
    // An unclosed array swallows the rest of the file: one error per line, ten lines, then a count.
    let mut text = String::from("version = 1\ntrunk = [1,\n");
    for i in 0..40 {
        text += &format!("name{i} = \"x\"\n");
    }
    let errs = parse("t.toml", text.as_bytes()).unwrap_err();
    assert_eq!(errs.len(), 11, "{errs:#?}");
    assert!(errs[0].message.starts_with("TOML syntax: "));
    assert!(
        errs[10].message.ends_with("more lines with errors not shown"),
        "{}",
        errs[10]
    );
    let lines: Vec<u32> = errs.iter().map(|e| e.span.line).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
}
