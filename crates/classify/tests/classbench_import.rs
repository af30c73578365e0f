//! ClassBench import on hand-written lines, well-formed and malformed.

use palisade_classify::classbench::{
    format_filter_line, format_trace_line, parse_filters, parse_trace, FilterOptions, FlagsMode, TraceFormat,
};
use palisade_classify::{
    Classifier, IpFamily, LinearClassifier, PortRange, Prefix, RuleMatch, TcpFlagsMatch,
};

#[test]
fn cb12_filter_line_maps_every_field() {
    let text = "@237.73.3.4/32\t67.236.63.0/24\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n";
    let rules = parse_filters(text, &FilterOptions::default()).unwrap();
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.src, vec![Prefix::v4([237, 73, 3, 4], 32)]);
    assert_eq!(r.dst, vec![Prefix::v4([67, 236, 63, 0], 24)]);
    assert!(r.src_port.is_empty(), "wildcard port range becomes an empty list");
    assert_eq!(r.dst_port, vec![PortRange::single(1711)]);
    assert_eq!(r.proto, Some(6));
    assert_eq!(r.tcp_flags, None, "flags are ignored by default");
}

#[test]
fn wustl_filter_line_and_wildcards() {
    let text = "@175.77.88.155/32 119.106.158.230/32 1024 : 65535 6888 : 6888 0x2f/0xFF\n\
                @0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n";
    let rules = parse_filters(text, &FilterOptions::default()).unwrap();
    assert_eq!(rules[0].proto, Some(0x2f));
    assert_eq!(rules[0].src_port, vec![PortRange { lo: 1024, hi: 65535 }]);
    assert_eq!(
        rules[1],
        RuleMatch {
            family: Some(IpFamily::V4),
            ..RuleMatch::any()
        },
        "the catch-all matches every IPv4 packet"
    );
}

#[test]
fn ipv6_filter_lines_in_the_classbench_ng_dialect() {
    let text = "@2001:db8:5a1:a0b::/64\t2001:db8::/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
                @::/0\t::/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n\
                @10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x11/0xFF\t0x0000/0x0000\t\n\
                @2001:db8::1/128 ::/0 0 : 65535 53 : 53 0x11/0xFF\n";
    let rules = parse_filters(text, &FilterOptions::default()).unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].family, Some(IpFamily::V6));
    assert_eq!(rules[0].src, vec![Prefix::v6(0x2001_0db8_05a1_0a0b << 64, 64)]);
    assert_eq!(rules[0].dst, vec![Prefix::v6(0x2001_0db8 << 96, 32)]);
    assert_eq!(rules[0].dst_port, vec![PortRange::single(80)]);
    assert_eq!(
        rules[1],
        RuleMatch {
            family: Some(IpFamily::V6),
            ..RuleMatch::any()
        },
        "::/0 is any IPv6 address"
    );
    assert_eq!(rules[2].family, Some(IpFamily::V4), "families mix in one set");
    assert_eq!(rules[3].src, vec![Prefix::v6(0x2001_0db8 << 96 | 1, 128)]);
    // Each line writes back as itself.
    for (rule, line) in rules.iter().zip(text.lines()) {
        let written = format_filter_line(rule).unwrap();
        assert_eq!(
            parse_filters(&written, &FilterOptions::default()).unwrap()[0],
            *rule,
            "{line}"
        );
    }
    // The families do not match each other's packets.
    let linear = LinearClassifier::new(rules);
    let trace = parse_trace(
        "2001:db8:5a1:a0b::9\t2001:db8:ffff::1\t1000\t80\t6\t0\t0\n\
         2001:db8:5a1:a0c::9 2001:db8:ffff::1 1000 80 6 2\n\
         10.1.2.3\t192.0.2.1\t1000\t53\t17\t0\t2\n\
         167838211 3221225985 1000 53 17 3\n\
         2001:db8::1 1:2:3:4:5:6:7:8 4 53 17 -1\n",
    )
    .unwrap();
    let got: Vec<u32> = trace.iter().map(|e| linear.classify(&e.key)).collect();
    assert_eq!(got, [0, 1, 2, 2, 1]);
    assert_eq!(trace[1].format, TraceFormat::Wustl);
    assert_eq!(trace[1].tag_index(), Some(1));
    assert_eq!(trace[4].tag_index(), None, "-1: no rule");
    assert_eq!(trace[2].key, trace[3].key, "a dotted quad is the decimal address");
    for e in &trace {
        let back = parse_trace(&format_trace_line(&e.key, e.tag)).unwrap();
        assert_eq!((back[0].key, back[0].tag), (e.key, e.tag));
    }
}

#[test]
fn malformed_ipv6_lines_name_line_and_cause() {
    let filters = [
        (
            "@2001:db8::/129\t::/0\t0 : 1\t0 : 1\t0x06/0xFF",
            "prefix length `129` is not 0..128",
        ),
        (
            "@2001:db8:::/64\t::/0\t0 : 1\t0 : 1\t0x06/0xFF",
            "not an IPv6 address",
        ),
        (
            "@2001:db8::/64\t10.0.0.0/8\t0 : 1\t0 : 1\t0x06/0xFF",
            "a line has one address family",
        ),
        ("@2001:db8::\t::/0\t0 : 1\t0 : 1\t0x06/0xFF", "not address/length"),
    ];
    for (line, cause) in filters {
        let text = format!("@::/0 ::/0 0 : 65535 0 : 65535 0x00/0x00\n{line}\n");
        let err = parse_filters(&text, &FilterOptions::default()).unwrap_err();
        assert_eq!(err.line, 2, "{line}");
        assert!(err.to_string().contains(cause), "{line}: {err}");
    }
    let traces = [
        ("2001:db8::1 10.0.0.1 1 2 6 1", "different families"),
        (
            "2001:db8::g ::1 1 2 6 1",
            "source address `2001:db8::g` in column 1 is not an IPv6 address",
        ),
        ("::1 1.2.3 1 2 6 1", "column 2 is not an IPv4 address"),
        ("::1 ::2 1 2 6 -2", "column 6"),
    ];
    for (line, cause) in traces {
        let text = format!("::1 ::2 3 4 6 1\n{line}\n");
        let err = parse_trace(&text).unwrap_err();
        assert_eq!(err.line, 2, "{line}");
        assert!(err.to_string().contains(cause), "{line}: {err}");
    }
}

#[test]
fn flags_can_be_matched_as_tcp_flags_and_icmp() {
    let text = "@1.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\t0x1000/0x1000\t\n\
                @1.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0800/0xff00\t\n\
                @1.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0303/0xffff\t\n";
    let opts = FilterOptions {
        flags: FlagsMode::Match,
    };
    let rules = parse_filters(text, &opts).unwrap();
    assert_eq!(
        rules[0].tcp_flags,
        Some(TcpFlagsMatch {
            value: 0x10,
            mask: 0x10
        })
    );
    assert_eq!((rules[1].icmp_type, rules[1].icmp_code), (Some(8), None));
    assert_eq!((rules[2].icmp_type, rules[2].icmp_code), (Some(3), Some(3)));
}

#[test]
fn malformed_filter_lines_name_line_and_cause() {
    let cases = [
        (
            "10.0.0.0/8 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF",
            "must start with '@'",
        ),
        ("@10.0.0.0/33 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF", "prefix length"),
        ("@10.0.0/8 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF", "fewer than 4 octets"),
        ("@10.0.0.256/8 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF", "not 0..255"),
        ("@10.0.0.0/8 0.0.0.0/0 5 : 1 0 : 1 0x06/0xFF", "reversed"),
        ("@10.0.0.0/8 0.0.0.0/0 0 : 70000 0 : 1 0x06/0xFF", "not a port"),
        ("@10.0.0.0/8 0.0.0.0/0 0 - 1 0 : 1 0x06/0xFF", "expected `:`"),
        ("@10.0.0.0/8 0.0.0.0/0 0 : 1 0 : 1 0x06/0x0F", "protocol mask"),
        ("@10.0.0.0/8 0.0.0.0/0 0 : 1 0 : 1 6/0xFF", "0x-prefixed"),
        ("@10.0.0.0/8 0.0.0.0/0 0 : 1 0 : 1", "missing protocol"),
        (
            "@10.0.0.0/8 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF 0x0000/0x0000 extra",
            "unexpected extra field",
        ),
        ("@", "missing source prefix"),
    ];
    for (line, cause) in cases {
        let text = format!("@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n\n{line}\n");
        let err = parse_filters(&text, &FilterOptions::default()).unwrap_err();
        assert_eq!(err.line, 3, "{line}");
        let msg = err.to_string();
        assert!(msg.starts_with("line 3: "), "{msg}");
        assert!(msg.contains(cause), "{line}: {msg}");
    }
}

#[test]
fn trace_lines_of_both_dialects() {
    let text = "1923697128\t2273746465\t0\t1221\t6\t4294967295\t261\n0 1504865172 0 21 6 219\n\n";
    let t = parse_trace(text).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].format, TraceFormat::Cb12);
    assert_eq!(t[0].key.src_ip, 1923697128);
    assert_eq!(t[0].key.dst_ip, 2273746465);
    assert_eq!(t[0].key.ports(), Some((0, 1221)));
    assert_eq!(t[0].key.l4_proto, 6);
    assert_eq!(t[0].key.ip_family(), Some(4));
    assert_eq!(t[0].tag_index(), Some(261));
    assert_eq!(t[1].format, TraceFormat::Wustl);
    assert_eq!(t[1].tag_index(), Some(218), "wustl rule numbers are 1-based");
    // A written line reads back to the same key.
    let back = parse_trace(&format_trace_line(&t[0].key, 7)).unwrap();
    assert_eq!(back[0].key, t[0].key);
}

#[test]
fn malformed_trace_lines_name_line_and_cause() {
    let cases = [
        ("1 2 3 4 6", "5 columns"),
        ("1 2 3 4 6 7 8 9", "too many columns"),
        ("1 2 3 70000 6 1", "destination port"),
        ("1 2 3 4 300 1", "protocol"),
        ("4294967296 2 3 4 6 1", "source address"),
        ("1 2 x 4 6 1", "column 3"),
        ("1 2 -3 4 6 1", "column 3"),
    ];
    for (line, cause) in cases {
        let text = format!("1 2 3 4 6 1\n{line}\n");
        let err = parse_trace(&text).unwrap_err();
        assert_eq!(err.line, 2, "{line}");
        assert!(err.to_string().contains(cause), "{line}: {err}");
    }
}
