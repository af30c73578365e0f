//! Golden-bytes tests: hand-written frames for every header kind and edge.
//!
//! Each header is a literal byte array with its fields commented; checksums
//! are zero because the parser does not verify them.

use palisade_packet::{parse, FlowKey, FragmentState, Layer, ParseStatus, Present};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
const T_IPV4: [u8; 2] = [0x08, 0x00];
const T_IPV6: [u8; 2] = [0x86, 0xdd];
const T_ARP: [u8; 2] = [0x08, 0x06];

/// 802.1Q tag, PCP 3, VID 20, then IPv4.
const TAG_20_V4: [u8; 6] = [0x81, 0x00, 0x60, 0x14, 0x08, 0x00];

/// IPv4, IHL 5, DSCP 46 (EF), total 40, DF, TTL 64, TCP, 10.0.10.5 -> 198.51.100.7.
const V4_TCP_40: [u8; 20] = [
    0x45, 0xb8, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 10, 5, 198, 51, 100, 7,
];
/// TCP 40000 -> 443, data offset 5, flags SYN.
const TCP_SYN: [u8; 20] = [
    0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
];

/// IPv4, total 28, UDP, 192.168.20.7 -> 10.0.10.1.
const V4_UDP_28: [u8; 20] = [
    0x45, 0x00, 0x00, 0x1c, 0, 1, 0, 0, 64, 17, 0, 0, 192, 168, 20, 7, 10, 0, 10, 1,
];
/// UDP 5353 -> 53, length 8.
const UDP_8: [u8; 8] = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x08, 0, 0];

fn assert_status(k: &FlowKey, st: ParseStatus) {
    assert_eq!(k.status, st, "{k:?}");
}

#[test]
fn empty_and_short_ethernet() {
    assert_status(&parse(&[]), ParseStatus::Truncated(Layer::Ethernet));
    let k = parse(&cat(&[&MACS, &[0x08]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ethernet));
    assert_eq!(k.present.0, 0);
}

#[test]
fn untagged_ipv4_tcp_syn() {
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_TCP_40, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.vlan_count, 0);
    assert_eq!(k.ethertype, 0x0800);
    assert_eq!(k.ip_version, 4);
    assert_eq!(k.src_ip, 0x0a00_0a05);
    assert_eq!(k.dst_ip, 0xc633_6407);
    assert_eq!(k.dscp, 46);
    assert_eq!(k.l4_proto, 6);
    assert_eq!(k.ports(), Some((40000, 443)));
    assert_eq!(k.tcp_flags, 0x002);
    assert_eq!(k.fragment, FragmentState::None);
    assert!(!k.more_fragments);
    assert!(k.present.has(
        Present::ETHERTYPE
            | Present::IP_VERSION
            | Present::ADDRS
            | Present::L4_PROTO
            | Present::PORTS
            | Present::TCP_FLAGS
            | Present::DSCP
    ));
    assert!(!k.present.has(Present::ICMP));
}

#[test]
fn tcp_flags_use_all_twelve_bits() {
    // Data offset 5, reserved bits 111, NS 1, then CWR..FIN all set.
    let mut tcp = TCP_SYN;
    tcp[12] = 0x5f;
    tcp[13] = 0xff;
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_TCP_40, &tcp]));
    assert_eq!(k.tcp_flags, 0xfff);
    assert_status(&k, ParseStatus::Ok);
}

#[test]
fn one_8021q_tag() {
    let k = parse(&cat(&[&MACS, &TAG_20_V4, &V4_UDP_28, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan, k.inner_vlan), (1, 20, 0));
    assert_eq!(k.ethertype, 0x0800);
    assert_eq!(k.ports(), Some((5353, 53)));
    assert_eq!(k.src_ip, 0xc0a8_1407);
}

#[test]
fn qinq_88a8_then_8100() {
    // S-tag 0x88a8 VID 200, C-tag 0x8100 VID 2001 (0x7d1), then IPv4.
    let tags = [0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x07, 0xd1, 0x08, 0x00];
    let k = parse(&cat(&[&MACS, &tags, &V4_UDP_28, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan, k.inner_vlan), (2, 200, 2001));
    assert_eq!(k.ports(), Some((5353, 53)));
}

#[test]
fn qinq_9100_then_8100_with_ipv6() {
    let tags = [0x91, 0x00, 0x0f, 0xff, 0x81, 0x00, 0x00, 0x01, 0x86, 0xdd];
    let k = parse(&cat(&[&MACS, &tags, &V6_HDR_TCP, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan, k.inner_vlan), (2, 4095, 1));
    assert_eq!(k.ethertype, 0x86dd);
    assert_eq!(k.l4_proto, 6);
}

#[test]
fn priority_tag_counts_as_a_tag() {
    // PCP 5, VID 0.
    let tag = [0x81, 0x00, 0xa0, 0x00, 0x08, 0x00];
    let k = parse(&cat(&[&MACS, &tag, &V4_UDP_28, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan), (1, 0));
    assert_eq!(k.ports(), Some((5353, 53)));
}

#[test]
fn three_tags_are_counted_two_reported() {
    let tags = [
        0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x81, 0x00, 0, 30, 0x08, 0x06,
    ];
    let k = parse(&cat(&[&MACS, &tags, &[0u8; 28]]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan, k.inner_vlan), (3, 10, 20));
    assert_eq!(k.ethertype, 0x0806);
}

#[test]
fn tag_cut_by_frame_end() {
    let k = parse(&cat(&[&MACS, &[0x81, 0x00, 0x00]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Vlan));
    assert!(!k.present.has(Present::ETHERTYPE));
    // A tag whose inner type is missing.
    let k = parse(&cat(&[&MACS, &[0x81, 0x00, 0x00, 0x14, 0x81, 0x00]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Vlan));
    assert_eq!((k.vlan_count, k.outer_vlan), (1, 20));
}

#[test]
fn ieee_8023_length_frame_has_no_ethertype() {
    // Length 38, then LLC DSAP/SSAP 0x42 (STP).
    let k = parse(&cat(&[&MACS, &[0x00, 0x26, 0x42, 0x42, 0x03], &[0u8; 35]]));
    assert_status(&k, ParseStatus::Ok);
    assert!(!k.present.has(Present::ETHERTYPE));
    // Also behind a VLAN tag.
    let k = parse(&cat(&[
        &MACS,
        &[0x81, 0x00, 0x00, 0x76, 0x01, 0x00, 0x42, 0x42, 0x03],
    ]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!((k.vlan_count, k.outer_vlan), (1, 118));
    assert!(!k.present.has(Present::ETHERTYPE));
}

#[test]
fn length_type_boundary_is_1500() {
    // 0x05dc = 1500: a length. 0x05dd: shown as a type, as tshark does.
    let k = parse(&cat(&[&MACS, &[0x05, 0xdc], &[0u8; 46]]));
    assert!(!k.present.has(Present::ETHERTYPE));
    let k = parse(&cat(&[&MACS, &[0x05, 0xdd], &[0u8; 46]]));
    assert_eq!(k.ethertype, 0x05dd);
    assert!(k.present.has(Present::ETHERTYPE));
}

#[test]
fn arp_is_recorded_not_parsed() {
    let k = parse(&cat(&[
        &MACS,
        &T_ARP,
        &[0x00, 0x01, 0x08, 0x00, 6, 4, 0, 1],
        &[0u8; 20],
    ]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.ethertype, 0x0806);
    assert_eq!(k.present.0, Present::ETHERTYPE);
}

#[test]
fn ipv4_wrong_version() {
    let mut ip = V4_UDP_28;
    ip[0] = 0x65;
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv4));
    assert_eq!(k.ip_version, 6);
    assert!(k.present.has(Present::IP_VERSION));
    assert!(!k.present.has(Present::ADDRS));
}

#[test]
fn ipv4_ihl_below_five_and_total_length_zero() {
    let mut ip = V4_UDP_28;
    ip[0] = 0x44;
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv4));
    assert!(!k.present.has(Present::ADDRS));
    let mut ip = V4_UDP_28;
    ip[2] = 0;
    ip[3] = 0; // TSO capture
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv4));
}

#[test]
fn ipv4_header_cut() {
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_UDP_28[..19]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv4));
    assert_eq!(k.ip_version, 4);
    assert!(!k.present.has(Present::ADDRS));
    let k = parse(&cat(&[&MACS, &T_IPV4]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv4));
    assert!(!k.present.has(Present::IP_VERSION));
}

#[test]
fn ipv4_options_are_skipped() {
    // IHL 6: Router Alert option (0x94, len 4, value 0), total 32, UDP.
    let ip = [
        0x46, 0, 0, 32, 0, 0, 0, 0, 1, 17, 0, 0, 10, 0, 0, 1, 224, 0, 0, 22, 0x94, 0x04, 0, 0,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.ports(), Some((5353, 53)));
    // NOP, NOP, End of list, then padding: fine.
    let ip = [
        0x46, 0, 0, 32, 0, 0, 0, 0, 1, 17, 0, 0, 10, 0, 0, 1, 224, 0, 0, 22, 1, 1, 0, 0xee,
    ];
    assert_status(&parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8])), ParseStatus::Ok);
}

#[test]
fn ipv4_option_with_bad_length() {
    // An option claiming 9 bytes in a 4-byte option area, and one of length 1.
    for opt in [[0x83, 0x09, 0, 0], [0x07, 0x01, 0, 0]] {
        let mut ip = vec![0x46, 0, 0, 32, 0, 0, 0, 0, 1, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip.extend_from_slice(&opt);
        let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8]));
        assert_status(&k, ParseStatus::Malformed(Layer::Ipv4));
        assert!(k.ports().is_none());
    }
}

#[test]
fn ipv4_options_cut_by_frame() {
    // IHL 15 (60 bytes) but the frame ends after 24.
    let ip = [
        0x4f, 0, 0, 60, 0, 0, 0, 0, 1, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 1,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv4));
    assert!(k.present.has(Present::ADDRS));
    assert!(k.ports().is_none());
}

#[test]
fn ethernet_padding_is_not_read_as_l4() {
    // IPv4 total 28 + UDP 8 = 42 bytes; pad to 60 with 0xff: UDP length stays valid.
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_UDP_28, &UDP_8, &[0xff; 18]]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.ports(), Some((5353, 53)));
    // IPv4 total 20 (no payload) + TCP-looking padding: the TCP header is outside the packet.
    let mut ip = V4_TCP_40;
    ip[3] = 20;
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &TCP_SYN]));
    assert_status(&k, ParseStatus::Malformed(Layer::Tcp));
    assert!(k.ports().is_none());
}

#[test]
fn ip_length_beyond_frame_end() {
    // Total 1500 but only the TCP header present (a snaplen-cut record).
    let mut ip = V4_TCP_40;
    ip[2] = 0x05;
    ip[3] = 0xdc;
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &TCP_SYN]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv4));
    assert_eq!(k.ports(), Some((40000, 443)));
    // Same, and the TCP header itself cut: the deeper layer is named.
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &TCP_SYN[..12]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Tcp));
    assert_eq!(k.ports(), Some((40000, 443)));
    assert!(!k.present.has(Present::TCP_FLAGS));
}

#[test]
fn ipv4_non_first_fragment_has_no_ports() {
    // Offset 185 units = 1480 bytes, MF 0, protocol TCP; payload looks like TCP.
    let ip = [
        0x45, 0, 0, 40, 0, 7, 0x00, 0xb9, 64, 6, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.fragment, FragmentState::NonFirst);
    assert_eq!(k.frag_offset, 1480);
    assert!(!k.more_fragments);
    assert_eq!(k.l4_proto, 6);
    assert!(k.ports().is_none());
    assert!(!k.present.has(Present::TCP_FLAGS));
    // A middle fragment: offset 8 bytes and MF.
    let ip = [
        0x45, 0, 0, 40, 0, 7, 0x20, 0x01, 64, 17, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &[0u8; 20]]));
    assert_eq!(
        (k.fragment, k.frag_offset, k.more_fragments),
        (FragmentState::NonFirst, 8, true)
    );
    assert!(k.ports().is_none());
}

#[test]
fn ipv4_first_fragment_with_whole_udp_header() {
    // MF, offset 0, total 28: the 8-byte UDP header is all there (length says 1480).
    let ip = [
        0x45, 0, 0, 28, 0, 7, 0x20, 0x00, 64, 17, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let udp = [0x14, 0xe9, 0x00, 0x35, 0x05, 0xc8, 0, 0];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &udp]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(
        (k.fragment, k.frag_offset, k.more_fragments),
        (FragmentState::First, 0, true)
    );
    assert_eq!(k.ports(), Some((5353, 53)));
}

#[test]
fn ipv4_tiny_first_fragment() {
    // MF, offset 0, total 28: only 8 bytes of a TCP header (ports but no flags).
    let ip = [
        0x45, 0, 0, 28, 0, 7, 0x20, 0x00, 64, 6, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &TCP_SYN[..8], &[0u8; 12]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.present.has(Present::TINY_FIRST_FRAGMENT));
    assert_eq!(k.fragment, FragmentState::First);
    assert!(!k.present.has(Present::TCP_FLAGS));
    // Too short even for the ports: 2 bytes of UDP.
    let ip = [
        0x45, 0, 0, 22, 0, 7, 0x20, 0x00, 64, 17, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8[..2]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.present.has(Present::TINY_FIRST_FRAGMENT));
    assert!(k.ports().is_none());
    // A 4-byte ICMP first fragment.
    let ip = [
        0x45, 0, 0, 24, 0, 7, 0x20, 0x00, 64, 1, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &[8, 0, 0, 0]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.present.has(Present::TINY_FIRST_FRAGMENT));
}

#[test]
fn icmp_echo_and_error() {
    let ip = [
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 10, 5, 198, 51, 100, 7,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &[8, 0, 0, 0, 0, 1, 0, 1]]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.icmp(), Some((8, 0)));
    assert!(k.ports().is_none());
    // Port unreachable quoting IPv4/UDP: type 3 code 3, the quoted ports never leak.
    let ip = [
        0x45, 0, 0, 56, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 10, 1, 10, 0, 10, 5,
    ];
    let k = parse(&cat(&[
        &MACS,
        &T_IPV4,
        &ip,
        &[3, 3, 0, 0, 0, 0, 0, 0],
        &V4_UDP_28,
        &UDP_8,
    ]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.icmp(), Some((3, 3)));
    assert!(k.ports().is_none());
    assert_eq!(k.src_ip, 0x0a00_0a01);
}

#[test]
fn tcp_bad_data_offset_and_cut_header() {
    let mut tcp = TCP_SYN;
    tcp[12] = 0x40; // 16-byte header: impossible
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_TCP_40, &tcp]));
    assert_status(&k, ParseStatus::Malformed(Layer::Tcp));
    let mut tcp = TCP_SYN;
    tcp[12] = 0x60; // 24-byte header in a 20-byte segment
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_TCP_40, &tcp]));
    assert_status(&k, ParseStatus::Malformed(Layer::Tcp));
    // IP length 40 but the frame ends 12 bytes into TCP.
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_TCP_40, &TCP_SYN[..12]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Tcp));
}

#[test]
fn udp_bad_lengths() {
    let udp = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x05, 0, 0];
    let k = parse(&cat(&[&MACS, &T_IPV4, &V4_UDP_28, &udp]));
    assert_status(&k, ParseStatus::Malformed(Layer::Udp));
    // UDP length 100 in a 28-byte IP packet.
    let udp = [0x14, 0xe9, 0x00, 0x35, 0x00, 100, 0, 0];
    assert_status(
        &parse(&cat(&[&MACS, &T_IPV4, &V4_UDP_28, &udp])),
        ParseStatus::Malformed(Layer::Udp),
    );
    // UDP length shorter than the IP payload (trailing bytes): fine.
    let mut ip = V4_UDP_28;
    ip[3] = 40;
    let k = parse(&cat(&[&MACS, &T_IPV4, &ip, &UDP_8, &[0u8; 12]]));
    assert_status(&k, ParseStatus::Ok);
}

#[test]
fn ip_in_ip_is_only_the_outer_header() {
    let outer = [
        0x45, 0, 0, 48, 0, 1, 0, 0, 64, 4, 0, 0, 203, 0, 113, 1, 203, 0, 113, 2,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV4, &outer, &V4_UDP_28, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 4);
    assert_eq!(k.src_ip, 0xcb00_7101);
    assert!(k.ports().is_none());
}

/// IPv6, traffic class 0xb8 (DSCP 46), payload 20, next header TCP, hop limit 64,
/// 2001:db8:10::5 -> 2001:db8:ffff::7.
const V6_HDR_TCP: [u8; 40] = [
    0x6b, 0x80, 0x00, 0x00, 0x00, 0x14, 0x06, 0x40, //
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05, //
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
];
const V6_SRC: u128 = 0x2001_0db8_0010_0000_0000_0000_0000_0005;

fn v6(next: u8, plen: u16) -> [u8; 40] {
    let mut h = V6_HDR_TCP;
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    h[6] = next;
    h
}

#[test]
fn ipv6_tcp() {
    let k = parse(&cat(&[&MACS, &T_IPV6, &V6_HDR_TCP, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.ip_version, 6);
    assert_eq!(k.src_ip, V6_SRC);
    assert_eq!(k.dst_ip, 0x2001_0db8_ffff_0000_0000_0000_0000_0007);
    assert_eq!(k.dscp, 46);
    assert_eq!(k.ports(), Some((40000, 443)));
    assert_eq!(k.tcp_flags, 0x002);
}

#[test]
fn ipv6_extension_chain_hbh_routing_dstopts() {
    let hbh = [43, 0, 1, 4, 0, 0, 0, 0]; // -> Routing; PadN
    let rt = [
        60, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ]; // type 0, 1 addr
    let dst = [17, 0, 1, 4, 0, 0, 0, 0]; // -> UDP
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(0, 48), &hbh, &rt, &dst, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 17);
    assert_eq!(k.ports(), Some((5353, 53)));
}

#[test]
fn ipv6_authentication_header_is_walked() {
    // AH: next TCP, payload length 4 -> (4+2)*4 = 24 bytes.
    let ah = [
        6, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(51, 44), &ah, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 6);
    assert_eq!(k.ports(), Some((40000, 443)));
}

#[test]
fn ipv6_esp_and_no_next_header_end_the_chain() {
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(50, 16), &[0u8; 16]]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 50);
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(59, 0)]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 59);
    assert!(k.ports().is_none());
}

#[test]
fn ipv6_fragments() {
    // First fragment: offset 0, M 1, then UDP.
    let frag_first = [17, 0, 0x00, 0x01, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 16), &frag_first, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(
        (k.fragment, k.frag_offset, k.more_fragments),
        (FragmentState::First, 0, true)
    );
    assert_eq!(k.ports(), Some((5353, 53)));
    // Non-first: offset 1448 bytes (181 units << 3 = 0x05a8), M 0; payload looks like UDP.
    let frag_last = [17, 0, 0x05, 0xa8, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 16), &frag_last, &UDP_8]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(
        (k.fragment, k.frag_offset, k.more_fragments),
        (FragmentState::NonFirst, 1448, false)
    );
    assert_eq!(k.l4_proto, 17);
    assert!(k.ports().is_none());
    // Atomic fragment: offset 0, M 0: not a fragment, the walk goes on.
    let atomic = [6, 0, 0, 0, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 28), &atomic, &TCP_SYN]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.fragment, FragmentState::None);
    assert_eq!(k.ports(), Some((40000, 443)));
}

#[test]
fn ipv6_tiny_first_fragment() {
    // Fragment header (first) then only 4 bytes of TCP.
    let frag_first = [6, 0, 0x00, 0x01, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 12), &frag_first, &TCP_SYN[..4]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.present.has(Present::TINY_FIRST_FRAGMENT));
    // First fragment that ends inside a Destination Options header (RFC 7112).
    let frag_first = [60, 0, 0x00, 0x01, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 12), &frag_first, &[6, 1, 0, 0]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.present.has(Present::TINY_FIRST_FRAGMENT));
}

#[test]
fn ipv6_nested_non_first_fragment_is_malformed() {
    let first = [44, 0, 0x00, 0x01, 0, 0, 0, 9];
    let second = [17, 0, 0x00, 0x08, 0, 0, 0, 9];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 24), &first, &second, &UDP_8]));
    assert_status(&k, ParseStatus::Malformed(Layer::Fragment));
    assert!(k.ports().is_none());
}

#[test]
fn ipv6_extension_cut() {
    // Hop-by-Hop claims 16 bytes, the frame has 8 (payload length agrees with 16).
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(0, 16), &[6, 1, 0, 0, 0, 0, 0, 0]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv6Extension));
    assert!(!k.present.has(Present::L4_PROTO));
    // ... and the payload length says 8: malformed, not truncated.
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(0, 8), &[6, 1, 0, 0, 0, 0, 0, 0]]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv6Extension));
    // Fragment header cut.
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, 8), &[17, 0, 0]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Fragment));
}

#[test]
fn ipv6_bad_version_and_cut_header() {
    let mut h = V6_HDR_TCP;
    h[0] = 0x45;
    let k = parse(&cat(&[&MACS, &T_IPV6, &h, &TCP_SYN]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv6));
    assert_eq!(k.ip_version, 4);
    assert!(!k.present.has(Present::ADDRS));
    let k = parse(&cat(&[&MACS, &T_IPV6, &V6_HDR_TCP[..39]]));
    assert_status(&k, ParseStatus::Truncated(Layer::Ipv6));
    assert_eq!(k.ip_version, 6);
}

#[test]
fn icmpv6_echo() {
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(58, 8), &[128, 0, 0, 0, 0, 1, 0, 1]]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.icmp(), Some((128, 0)));
    assert!(k.ports().is_none());
}

#[test]
fn ipv6_jumbogram() {
    // Payload length 0, Hop-by-Hop with Jumbo Payload (0xc2) = 8 + 8 bytes, then UDP.
    let hbh = [17, 0, 0xc2, 4, 0, 0, 0, 16];
    let udp = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x00, 0, 0]; // UDP length 0 (RFC 2675)
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(0, 0), &hbh, &udp]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.ports(), Some((5353, 53)));
    // Payload length 0 without a Jumbo option: the Hop-by-Hop header is outside the packet.
    let hbh = [17, 0, 1, 4, 0, 0, 0, 0];
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(0, 0), &hbh, &udp]));
    assert_status(&k, ParseStatus::Malformed(Layer::Ipv6Extension));
}

#[test]
fn ipv6_long_fragment_header_chain_terminates() {
    // 137 atomic Fragment headers, then ICMPv6 echo (as in suricata's frag-11).
    let mut payload = Vec::new();
    for i in 0..137 {
        payload.extend_from_slice(&[if i == 136 { 58 } else { 44 }, 0, 0, 0, 0, 0, 0, 1]);
    }
    payload.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    let k = parse(&cat(&[&MACS, &T_IPV6, &v6(44, payload.len() as u16), &payload]));
    assert_status(&k, ParseStatus::Ok);
    assert_eq!(k.l4_proto, 58);
    assert_eq!(k.icmp(), Some((128, 0)));
}
