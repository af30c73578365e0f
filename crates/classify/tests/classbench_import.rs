//! ClassBench import on hand-written lines, well-formed and malformed.

use palisade_classify::classbench::{
    format_trace_line, parse_filters, parse_trace, FilterOptions, FlagsMode, TraceFormat,
};
use palisade_classify::{PortRange, Prefix, TcpFlagsMatch};

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
        palisade_classify::RuleMatch::any(),
        "the catch-all matches everything"
    );
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
