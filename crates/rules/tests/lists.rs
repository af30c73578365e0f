//! Lists for `proto`, `icmp_type` and `icmp_code`, as for ports: what they
//! match, how one value is kept, and the never-matches checks applied to lists.

use palisade_packet::FlowKey;
use palisade_rules::{parse, Severity};

const HEAD: &str = "version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\n";
const TAIL: &str = "[[bind]]\nacl = \"a\"\nport = \"p\"\n";

fn file(rules: &str) -> String {
    format!("{HEAD}{rules}{TAIL}")
}

fn rule(body: &str) -> String {
    file(&format!("  [[acl.rule]]\n  action = \"permit\"\n{body}"))
}

fn tcp() -> FlowKey {
    FlowKey::new()
        .with_ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .with_proto(6)
        .with_ports(1000, 53)
}

fn icmp(t: u8, c: u8) -> FlowKey {
    FlowKey::new()
        .with_ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .with_proto(1)
        .with_icmp(t, c)
}

#[test]
fn a_protocol_list_matches_each_listed_protocol_and_nothing_else() {
    let text = rule("  proto = [\"tcp\", \"udp\", 17]\n  dst_port = 53\n");
    let loaded = parse("l.toml", text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    let m = &loaded.ruleset.acls[0].rules[0].matcher;
    assert_eq!(
        (m.proto, m.protos.as_slice()),
        (None, &[6u8, 17][..]),
        "sorted, duplicates dropped"
    );
    assert!(m.matches(&tcp()));
    assert!(m.matches(&tcp().with_proto(17)));
    assert!(!m.matches(&tcp().with_proto(132)));
    assert!(!m.matches(&icmp(8, 0)));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn icmp_type_and_code_lists() {
    let text = rule("  proto = \"icmp\"\n  icmp_type = [0, 8]\n  icmp_code = [0, 1]\n");
    let m = parse("l.toml", text.as_bytes()).unwrap().ruleset.acls[0].rules[0]
        .matcher
        .clone();
    assert_eq!(m.icmp_types, vec![0, 8]);
    assert_eq!(m.icmp_codes, vec![0, 1]);
    assert!(m.matches(&icmp(8, 0)) && m.matches(&icmp(0, 1)));
    assert!(!m.matches(&icmp(3, 0)) && !m.matches(&icmp(8, 2)));
    assert!(
        !m.matches(&tcp()),
        "a key without ICMP never matches an ICMP list"
    );
    // Both families' ICMP in one rule.
    let text = rule("  proto = [\"icmp\", \"icmpv6\"]\n  icmp_type = [8, 128]\n");
    let m = &parse("l.toml", text.as_bytes()).unwrap().ruleset.acls[0].rules[0].matcher;
    let v6 = FlowKey::new().with_ipv6(1, 2).with_proto(58).with_icmp(128, 0);
    assert!(m.matches(&v6) && m.matches(&icmp(8, 0)));
}

#[test]
fn one_value_in_a_list_is_the_value() {
    let a = rule("  proto = [\"tcp\"]\n  icmp_type = []\n");
    assert!(
        parse("l.toml", a.as_bytes()).is_err(),
        "an empty list matches nothing: refused"
    );
    let a = rule("  proto = [\"tcp\"]\n");
    let b = rule("  proto = \"tcp\"\n");
    let ma = &parse("a.toml", a.as_bytes()).unwrap().ruleset.acls[0].rules[0].matcher;
    let mb = &parse("b.toml", b.as_bytes()).unwrap().ruleset.acls[0].rules[0].matcher;
    assert_eq!(ma, mb);
}

fn errors(text: &str) -> Vec<String> {
    parse("l.toml", text.as_bytes())
        .err()
        .unwrap_or_default()
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn lists_get_the_same_never_matches_checks() {
    // No listed protocol carries ports: error, at the port key.
    let e = errors(&rule("  proto = [\"icmp\", \"gre\"]\n  dst_port = 53\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("l.toml:9:14: ")
            && e[0].contains("dst_port needs proto tcp or udp")
            && e[0].contains("but proto is [icmp, gre]")
            && e[0].contains("can never match"),
        "{e:?}"
    );
    // No listed protocol is ICMP: error.
    let e = errors(&rule("  proto = [\"tcp\", \"udp\"]\n  icmp_type = [0, 8]\n"));
    assert!(
        e[0].contains("icmp_type needs proto icmp or icmpv6, but proto is [tcp, udp]"),
        "{e:?}"
    );
    // TCP flags need tcp in the list.
    let e = errors(&rule("  proto = [\"udp\", \"icmp\"]\n  tcp_flags = \"syn\"\n"));
    assert!(
        e[0].contains("tcp_flags needs proto tcp, but proto is [icmp, udp]"),
        "{e:?}"
    );
    // An ICMP list with ports can never match (a packet has one or the other).
    let e = errors(&rule("  dst_port = 53\n  icmp_code = [0, 1]\n"));
    assert!(e[0].contains("carries either ports or an ICMP type"), "{e:?}");
    // Bad elements are located; "any" cannot be in a list.
    let e = errors(&rule("  proto = [\"tcp\", \"nonsense\"]\n"));
    assert!(
        e[0].starts_with("l.toml:8:19: ") && e[0].contains("unknown protocol \"nonsense\""),
        "{e:?}"
    );
    let e = errors(&rule("  proto = [\"tcp\", \"any\"]\n"));
    assert!(e[0].contains("\"any\" cannot be part of a list"), "{e:?}");
    let e = errors(&rule("  proto = \"icmp\"\n  icmp_type = [8, 256]\n"));
    assert!(
        e[0].starts_with("l.toml:9:19: ") && e[0].contains("icmp_type 256 is outside 0-255"),
        "{e:?}"
    );
}

#[test]
fn a_listed_protocol_that_can_never_match_is_a_warning() {
    let loaded = parse(
        "l.toml",
        rule("  proto = [\"tcp\", \"icmp\"]\n  dst_port = 53\n").as_bytes(),
    )
    .unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(loaded.warnings.len(), 1, "{w:?}");
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
    assert!(
        w[0].starts_with("l.toml:8:") && w[0].contains("proto icmp in the list can never match"),
        "{w:?}"
    );
}

#[test]
fn shadowing_understands_lists() {
    let shadowed = |first: &str, second: &str| -> bool {
        let text = file(&format!(
            "  [[acl.rule]]\n  action = \"deny\"\n{first}  [[acl.rule]]\n  action = \"permit\"\n{second}"
        ));
        parse("s.toml", text.as_bytes())
            .unwrap()
            .warnings
            .iter()
            .any(|d| d.message.contains("shadowed"))
    };
    assert!(shadowed("  proto = [\"tcp\", \"udp\"]\n", "  proto = \"tcp\"\n"));
    assert!(shadowed(
        "  proto = [\"tcp\", \"udp\", \"icmp\"]\n",
        "  proto = [\"udp\", \"tcp\"]\n"
    ));
    assert!(
        !shadowed("  proto = \"tcp\"\n", "  proto = [\"tcp\", \"udp\"]\n"),
        "udp gets through"
    );
    assert!(
        !shadowed("  proto = [\"tcp\", \"udp\"]\n", "  dst_port = 53\n"),
        "any protocol is not covered"
    );
    assert!(shadowed(
        "  proto = \"icmp\"\n  icmp_type = [0, 3, 8]\n",
        "  proto = \"icmp\"\n  icmp_type = [8, 0]\n"
    ));
    assert!(!shadowed(
        "  proto = \"icmp\"\n  icmp_type = [0, 3]\n",
        "  proto = \"icmp\"\n  icmp_type = [8, 0]\n"
    ));
}
