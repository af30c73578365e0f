//! The flow-state keys of the rule language: `state`, `keep_state`,
//! `[flows]`, and `state` in `[[expect]]` packets and the packet syntax,
//! each error at its exact `file:line:col`.

use palisade_packet::{FlowState, FlowStates};
use palisade_rules::{parse, parse_packet_spec, Diagnostic, FlowTimeouts, Severity, DEFAULT_MAX_FLOWS};

/// A valid preamble every case appends to (lines 1-8).
const BASE: &str = r#"version = 1
[[port]]
name = "lan1"
vlan = 10
[[acl]]
name = "a"
[[bind]]
acl = "a"
"#;

fn text(extra: &str) -> String {
    // `port` of the binding comes after the ACL's rules would, so rules are appended as [[acl.rule]]
    // of the last [[acl]] only when `extra` starts with them: keep the binding complete here.
    format!("{BASE}port = \"lan1\"\n{extra}")
}

fn errors(extra: &str) -> Vec<Diagnostic> {
    match parse("t.toml", text(extra).as_bytes()) {
        Ok(_) => panic!("expected errors for:\n{extra}"),
        Err(e) => e,
    }
}

/// Exactly one error, at `line:col` (lines counted in BASE + the bind line + `extra`).
fn one(extra: &str, line: u32, col: u32, needle: &str) {
    let errs = errors(extra);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.severity, Severity::Error);
    assert_eq!((e.span.line, e.span.col), (line, col), "{e}");
    assert!(e.message.contains(needle), "{e} does not contain {needle:?}");
}

fn ok(extra: &str) -> palisade_rules::Loaded {
    parse("t.toml", text(extra).as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// The rules of ACL "a" (appended after the binding, as a second [[acl]] would be awkward).
fn acl(rules: &str) -> String {
    format!("[[acl]]\nname = \"b\"\n{rules}[[bind]]\nacl = \"b\"\nvlan = 10\n")
}

#[test]
fn state_and_keep_state_parse() {
    let l = ok(&acl(
        "[[acl.rule]]\naction = \"permit\"\nstate = [\"established\", \"related\"]\n\
         [[acl.rule]]\naction = \"permit\"\nkeep_state = true\nsrc = \"10.0.0.0/8\"\n\
         [[acl.rule]]\naction = \"deny\"\nstate = \"invalid\"\n",
    ));
    let rules = &l.ruleset.acls[1].rules;
    assert_eq!(
        rules[0].matcher.state,
        Some(FlowStates::of(&[FlowState::Established, FlowState::Related]))
    );
    assert!(!rules[0].keep_state);
    assert!(rules[1].keep_state);
    assert_eq!(rules[1].matcher.state, None);
    assert_eq!(
        rules[2].matcher.state,
        Some(FlowStates::of(&[FlowState::Invalid]))
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.ruleset.flows.max, DEFAULT_MAX_FLOWS);
    assert_eq!(l.ruleset.flows.timeouts, FlowTimeouts::default());
}

#[test]
fn keep_state_on_a_deny_rule_is_an_error() {
    one(
        &acl("[[acl.rule]]\naction = \"deny\"\nkeep_state = true\n"),
        14,
        14,
        "keep_state applies only to permit rules",
    );
}

#[test]
fn keep_state_must_be_a_boolean() {
    one(
        &acl("[[acl.rule]]\naction = \"permit\"\nkeep_state = \"yes\"\n"),
        14,
        14,
        "keep_state must be true or false, found string",
    );
}

#[test]
fn an_unknown_state_name_is_an_error_with_a_suggestion() {
    one(
        &acl("[[acl.rule]]\naction = \"permit\"\nstate = [\"new\", \"establised\"]\n"),
        14,
        17,
        "state \"establised\" is not one of new, established, related, invalid (did you mean \"established\"?)",
    );
    one(
        &acl("[[acl.rule]]\naction = \"permit\"\nstate = \"untracked\"\n"),
        14,
        9,
        "state \"untracked\" is not one of",
    );
    one(
        &acl("[[acl.rule]]\naction = \"permit\"\nstate = []\n"),
        14,
        9,
        "empty list",
    );
}

#[test]
fn a_related_rule_with_ports_can_never_match() {
    one(
        &acl("[[acl.rule]]\naction = \"permit\"\nproto = \"tcp\"\nstate = \"related\"\n"),
        15,
        9,
        "a related frame is an ICMP/ICMPv6 error",
    );
}

#[test]
fn flows_table_sizes_and_timeouts() {
    let l = ok(&format!(
        "{}[flows]\nmax = 5000\ntcp_established = 7200\nudp = 30\n",
        acl("[[acl.rule]]\naction = \"permit\"\nkeep_state = true\n")
    ));
    let f = &l.ruleset.flows;
    assert_eq!(f.max, 5000);
    assert_eq!(f.timeouts.tcp_established, 7200);
    assert_eq!(f.timeouts.udp, 30);
    assert_eq!(f.timeouts.tcp_handshake, 30);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn a_zero_or_absurd_max_is_an_error() {
    one(
        "[flows]\nmax = 0\n",
        11,
        7,
        "max 0: a flow table needs at least one entry",
    );
    one(
        "[flows]\nmax = 100000000\n",
        11,
        7,
        "max 100000000 is more than the limit of 16777216",
    );
    one("[flows]\nmax = -3\n", 11, 7, "max -3");
    one(
        "[flows]\nmax = \"lots\"\n",
        11,
        7,
        "max must be an integer, found string",
    );
}

#[test]
fn bad_timeouts_and_keys_are_errors() {
    one(
        "[flows]\nudp = 0\n",
        11,
        7,
        "udp 0: an idle timeout of 0 s would expire every udp flow at once",
    );
    one(
        "[flows]\ntcp_established = 9999999\n",
        11,
        19,
        "tcp_established 9999999 is more than the limit of 2592000",
    );
    one(
        "[flows]\ntcp_establised = 10\n",
        11,
        1,
        "did you mean \"tcp_established\"",
    );
}

#[test]
fn an_unused_flows_table_is_a_warning() {
    let l = ok("[flows]\nmax = 10\n");
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].message.contains("no rule has keep_state"));
    assert_eq!((l.warnings[0].span.line, l.warnings[0].span.col), (10, 1));
}

#[test]
fn keep_state_that_can_never_open_a_flow_is_a_warning() {
    let l = ok(&acl(
        "[[acl.rule]]\naction = \"permit\"\nstate = \"established\"\nkeep_state = true\n",
    ));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].message.contains("never opens a flow"));
}

#[test]
fn rescue_rules_match_state_and_cannot_keep_it() {
    let l = ok("[[rescue]]\nproto = \"tcp\"\ndst_port = 22\nstate = [\"new\", \"established\"]\n");
    assert_eq!(
        l.ruleset.rescue[0].matcher.state,
        Some(FlowStates::of(&[FlowState::New, FlowState::Established]))
    );
    one(
        "[[rescue]]\nproto = \"tcp\"\nkeep_state = true\n",
        12,
        1,
        "unknown key \"keep_state\" in [[rescue]]",
    );
}

#[test]
fn expect_packets_take_one_possible_state() {
    let l = ok(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"tcp\", src = \"192.0.2.1\", dst = \"10.0.10.5\", tcp_flags = \"ack\", state = \"established\" }\nverdict = \"deny\"\n",
    );
    assert_eq!(l.ruleset.expects[0].packet.flow_state, FlowState::Established);
    // Without a state: the state with no flow entry (an ACK cannot open one).
    let l = ok("[[expect]]\nport = \"lan1\"\npacket = { proto = \"tcp\", tcp_flags = \"ack\" }\nverdict = \"deny\"\n");
    assert_eq!(l.ruleset.expects[0].packet.flow_state, FlowState::Invalid);
    let l = ok("[[expect]]\nport = \"lan1\"\npacket = { proto = \"udp\" }\nverdict = \"deny\"\n");
    assert_eq!(l.ruleset.expects[0].packet.flow_state, FlowState::New);
    one(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"tcp\", tcp_flags = \"ack\", state = \"new\" }\nverdict = \"deny\"\n",
        12,
        10,
        "a packet in state new: such a packet can only be established or invalid",
    );
    one(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"udp\", state = [\"new\"] }\nverdict = \"deny\"\n",
        12,
        35,
        "a packet is in one state, not a list",
    );
    one(
        "[[expect]]\nport = \"lan1\"\npacket = { proto = \"udp\", state = \"related\" }\nverdict = \"deny\"\n",
        12,
        10,
        "such a packet can only be new or established",
    );
}

#[test]
fn the_packet_syntax_takes_a_state() {
    let k = parse_packet_spec("udp 198.51.100.7:443 -> 10.0.10.5:40000 state established").unwrap();
    assert_eq!(k.flow_state, FlowState::Established);
    let k = parse_packet_spec("icmp 198.51.100.1 -> 10.0.10.5 type 3 code 3 state related").unwrap();
    assert_eq!(k.flow_state, FlowState::Related);
    let k = parse_packet_spec("icmp 198.51.100.1 -> 10.0.10.5 type 3 code 3").unwrap();
    assert_eq!(k.flow_state, FlowState::Invalid);
    let e = parse_packet_spec("tcp 10.0.0.1:1 -> 10.0.0.2:2 state estab").unwrap_err();
    assert!(e.contains("state \"estab\" is not one of"), "{e}");
    let e = parse_packet_spec("tcp 10.0.0.1:1 -> 10.0.0.2:2 state invalid").unwrap_err();
    assert!(e.contains("such a packet can only be new or established"), "{e}");
}

/// `../shared/DESIGN.md`'s `[flows]` example gives this engine's defaults.
#[test]
fn design_flows_table_is_the_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/DESIGN.md");
    let Ok(design) = std::fs::read_to_string(path) else {
        println!("SKIPPED: ../shared/DESIGN.md not present");
        return;
    };
    let start = design.find("[flows]").expect("DESIGN.md has a [flows] table");
    let end = start + design[start..].find("\n\n").expect("the table ends");
    let table = &design[start..end];
    let l = parse("DESIGN.md", format!("version = 1\n{table}\n").as_bytes()).unwrap();
    assert_eq!(l.ruleset.flows.max, DEFAULT_MAX_FLOWS);
    assert_eq!(l.ruleset.flows.timeouts, FlowTimeouts::default());
}
