//! Writes `rules/demo/office.pcap`, the small capture the README's main
//! command classifies: an office gateway's LAN (VLAN 10, untagged) and guest
//! VLAN 20, with the edge cases a filter must survive.
//!
//! ```text
//! cargo run -p palisade --example make_demo_capture -- rules/demo/office.pcap
//! ```
//!
//! Deterministic: fixed MACs, timestamps and sequence numbers, so the file is
//! byte-identical on every run (a test checks the committed copy).
//!
//! | # | frame |
//! |---|---|
//! | 1 | LAN 10.0.10.5:50000 -> 198.51.100.7:443 TCP SYN (untagged) |
//! | 2 | LAN 10.0.10.5:50001 -> 198.51.100.7:22 TCP SYN |
//! | 3 | LAN 10.0.10.5:53000 -> 10.0.10.1:53 UDP (DNS query) |
//! | 4 | LAN 10.0.10.5 -> 198.51.100.7 ICMP echo request |
//! | 5 | LAN 10.0.10.5:50000 -> 198.51.100.7:443 TCP ACK+PSH with data |
//! | 6 | VLAN 20 guest 192.168.20.7:40000 -> 198.51.100.7:443 TCP SYN |
//! | 7 | VLAN 20 guest 192.168.20.7:40001 -> 10.0.10.5:22 TCP SYN |
//! | 8 | VLAN 20 guest 192.168.20.7:40002 -> 10.0.10.1:53 UDP (DNS query) |
//! | 9 | IPv6 2001:db8:10::5:50002 -> 2001:db8:ffff::7:443 TCP SYN (untagged) |
//! | 10 | LAN 10.0.10.5 -> 198.51.100.7 UDP, non-first IPv4 fragment (offset 1480) |
//! | 11 | LAN 10.0.10.5 -> 198.51.100.7 TCP, first fragment with 2 bytes: too short for ports |
//! | 12 | LAN 10.0.10.5:50003 -> 198.51.100.7:443 TCP SYN cut after 10 TCP bytes (capture length 44 of 60) |
//! | 13 | ARP request: who has 10.0.10.1? tell 10.0.10.5 |

use std::time::Duration;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header,
    PacketBuilder,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

const GW_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const LAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x10, 0x05];
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x20, 0x07];
const LAN: [u8; 4] = [10, 0, 10, 5];
const LAN_GW: [u8; 4] = [10, 0, 10, 1];
const GUEST: [u8; 4] = [192, 168, 20, 7];
const SERVER: [u8; 4] = [198, 51, 100, 7];
const LAN6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05];
const SERVER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
];
/// 2026-01-05 09:00:00 UTC.
const START_SECS: u64 = 1_767_603_600;

/// A DNS query for `www.example.com` A, id 0x1234.
const DNS_QUERY: [u8; 33] = [
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 3, b'w', b'w', b'w', 7, b'e',
    b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
];

/// One capture record: the captured bytes and the length on the wire.
struct Record {
    data: Vec<u8>,
    orig_len: usize,
}

/// Pads to the 60-byte Ethernet minimum (without FCS), as a NIC would.
fn padded(mut v: Vec<u8>) -> Record {
    if v.len() < 60 {
        v.resize(60, 0);
    }
    Record {
        orig_len: v.len(),
        data: v,
    }
}

fn vid(v: u16) -> etherparse::VlanId {
    etherparse::VlanId::try_new(v).expect("valid VLAN id")
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, GW_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut v, &[])
        .expect("write to Vec");
    v
}

fn guest_tcp_syn(dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(GUEST_MAC, GW_MAC)
        .single_vlan(vid(20))
        .ipv4(GUEST, dst, 64)
        .tcp(sport, dport, 2000, 64240)
        .syn()
        .write(&mut v, &[])
        .expect("write to Vec");
    v
}

/// An IPv4 fragment written header by header (PacketBuilder does not fragment).
fn fragment(protocol: IpNumber, offset_units: u16, more: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header::new(payload.len() as u16, 64, protocol, LAN, SERVER).expect("small payload");
    ip.identification = id;
    ip.more_fragments = more;
    ip.fragment_offset = IpFragOffset::try_new(offset_units).expect("13-bit offset");
    let eth = Ethernet2Header {
        source: LAN_MAC,
        destination: GW_MAC,
        ether_type: EtherType::IPV4,
    };
    let mut v = Vec::new();
    eth.write(&mut v).expect("write to Vec");
    ip.write(&mut v).expect("write to Vec");
    v.extend_from_slice(payload);
    v
}

/// The demo frames, in capture order.
fn records() -> Vec<Record> {
    let mut out = Vec::new();
    // 1-2: LAN TCP SYNs to the server, HTTPS and SSH.
    out.push(padded(tcp_syn(LAN, SERVER, 50000, 443)));
    out.push(padded(tcp_syn(LAN, SERVER, 50001, 22)));
    // 3: LAN DNS query to the gateway.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, GW_MAC)
        .ipv4(LAN, LAN_GW, 64)
        .udp(53000, 53)
        .write(&mut v, &DNS_QUERY)
        .expect("write to Vec");
    out.push(padded(v));
    // 4: LAN ping.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, GW_MAC)
        .ipv4(LAN, SERVER, 64)
        .icmpv4_echo_request(0x0101, 1)
        .write(&mut v, b"palisade-demo-ping")
        .expect("write to Vec");
    out.push(padded(v));
    // 5: LAN HTTPS data on the established flow.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, GW_MAC)
        .ipv4(LAN, SERVER, 64)
        .tcp(50000, 443, 1001, 64240)
        .ack(7001)
        .psh()
        .write(
            &mut v,
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00],
        )
        .expect("write to Vec");
    out.push(padded(v));
    // 6-8: guest VLAN 20: HTTPS out, SSH to the LAN host, DNS to the gateway.
    out.push(padded(guest_tcp_syn(SERVER, 40000, 443)));
    out.push(padded(guest_tcp_syn(LAN, 40001, 22)));
    let mut v = Vec::new();
    PacketBuilder::ethernet2(GUEST_MAC, GW_MAC)
        .single_vlan(vid(20))
        .ipv4(GUEST, LAN_GW, 64)
        .udp(40002, 53)
        .write(&mut v, &DNS_QUERY)
        .expect("write to Vec");
    out.push(padded(v));
    // 9: IPv6 HTTPS SYN.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, GW_MAC)
        .ipv6(LAN6, SERVER6, 64)
        .tcp(50002, 443, 3000, 64800)
        .syn()
        .write(&mut v, &[])
        .expect("write to Vec");
    out.push(padded(v));
    // 10: the last fragment of a UDP datagram: offset 185 units = 1480 bytes, no ports.
    out.push(padded(fragment(IpNumber::UDP, 185, false, 0x0a0a, &[0x5a; 24])));
    // 11: a first TCP fragment carrying only 2 bytes (half the source port).
    out.push(padded(fragment(IpNumber::TCP, 0, true, 0x0b0b, &[0xc3, 0x53])));
    // 12: a TCP SYN whose record was cut by the capture length inside the TCP header.
    let full = padded(tcp_syn(LAN, SERVER, 50003, 443));
    out.push(Record {
        data: full.data[..14 + 20 + 10].to_vec(),
        orig_len: full.orig_len,
    });
    // 13: ARP request from the LAN host for its gateway.
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &LAN_MAC,
        &LAN,
        &[0; 6],
        &LAN_GW,
    )
    .expect("valid ARP");
    let mut v = Vec::new();
    PacketBuilder::ethernet2(LAN_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut v)
        .expect("write to Vec");
    out.push(padded(v));
    out
}

/// The complete pcap file (little-endian, microseconds, Ethernet).
pub fn demo_capture() -> Vec<u8> {
    let header = PcapHeader {
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("write to Vec");
    for (i, r) in records().iter().enumerate() {
        let ts = Duration::from_secs(START_SECS) + Duration::from_millis(250 * i as u64);
        w.write_packet(&PcapPacket::new(ts, r.orig_len as u32, &r.data))
            .expect("record fits");
    }
    w.into_writer()
}

#[allow(dead_code)] // the test includes this file and calls only demo_capture()
fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_demo_capture OUT.pcap");
        return std::process::ExitCode::from(2);
    };
    let bytes = demo_capture();
    if let Err(e) = std::fs::write(&path, &bytes) {
        eprintln!("{}: {e}", std::path::Path::new(&path).display());
        return std::process::ExitCode::from(2);
    }
    println!(
        "wrote {} ({} bytes)",
        std::path::Path::new(&path).display(),
        bytes.len()
    );
    std::process::ExitCode::SUCCESS
}
