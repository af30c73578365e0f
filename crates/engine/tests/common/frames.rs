//! Frames for flow tests, written by etherparse's `PacketBuilder` from a
//! small description ([`Spec`]), so a test and a model can share one input.

use etherparse::{IpNumber, PacketBuilder, TcpHeader};
use palisade_packet::FlowKey;

/// An endpoint address: IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    /// The address in `FlowKey` encoding.
    pub fn value(self) -> u128 {
        match self {
            Addr::V4(a) => u32::from_be_bytes(a) as u128,
            Addr::V6(a) => u128::from_be_bytes(a),
        }
    }
    pub fn is_v6(self) -> bool {
        matches!(self, Addr::V6(_))
    }
}

/// TCP flag bits as in `FlowKey::tcp_flags`.
pub const FIN: u16 = 0x001;
pub const SYN: u16 = 0x002;
pub const RST: u16 = 0x004;
pub const PSH: u16 = 0x008;
pub const ACK: u16 = 0x010;

/// A frame, described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Tcp {
        from: Addr,
        to: Addr,
        sport: u16,
        dport: u16,
        flags: u16,
    },
    Udp {
        from: Addr,
        to: Addr,
        sport: u16,
        dport: u16,
    },
    /// ICMP / ICMPv6 echo request or reply.
    Echo {
        from: Addr,
        to: Addr,
        id: u16,
        request: bool,
    },
    /// ICMP port unreachable (ICMPv6 type 1 code 4) from `from` to `to`, quoting `quoted` as sent.
    Unreachable { from: Addr, to: Addr, quoted: Box<Spec> },
    /// GRE (protocol 47): an "other" protocol.
    Gre { from: Addr, to: Addr },
    /// ARP: not IP.
    Arp,
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

impl Spec {
    /// The Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        if let Spec::Arp = self {
            let mut f = vec![0u8; 42];
            f[..6].copy_from_slice(&[0xff; 6]);
            f[6..12].copy_from_slice(&MAC_A);
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            return f;
        }
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        let ip = self.ip_packet();
        let ty: [u8; 2] = if ip[0] >> 4 == 6 {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        f.extend_from_slice(&ty);
        f.extend_from_slice(&ip);
        f
    }

    /// The frame's key, as the data path parses it.
    pub fn key(&self) -> FlowKey {
        palisade_packet::parse(&self.frame())
    }

    /// The IP packet (no Ethernet header).
    pub fn ip_packet(&self) -> Vec<u8> {
        let ip = |from: Addr, to: Addr| match (from, to) {
            (Addr::V4(s), Addr::V4(d)) => PacketBuilder::ipv4(s, d, 64),
            (Addr::V6(s), Addr::V6(d)) => PacketBuilder::ipv6(s, d, 64),
            _ => panic!("mixed families in {from:?} -> {to:?}"),
        };
        let mut out = Vec::new();
        match self {
            Spec::Tcp {
                from,
                to,
                sport,
                dport,
                flags,
            } => {
                let mut h = TcpHeader::new(*sport, *dport, 1000, 64240);
                h.fin = flags & FIN != 0;
                h.syn = flags & SYN != 0;
                h.rst = flags & RST != 0;
                h.psh = flags & PSH != 0;
                h.ack = flags & ACK != 0;
                ip(*from, *to).tcp_header(h).write(&mut out, &[0u8; 10]).unwrap();
            }
            Spec::Udp {
                from,
                to,
                sport,
                dport,
            } => {
                ip(*from, *to)
                    .udp(*sport, *dport)
                    .write(&mut out, &[0u8; 12])
                    .unwrap();
            }
            Spec::Echo {
                from,
                to,
                id,
                request,
            } => {
                let b = ip(*from, *to);
                let payload = [0u8; 16];
                match (from.is_v6(), request) {
                    (false, true) => b.icmpv4_echo_request(*id, 1).write(&mut out, &payload),
                    (false, false) => b.icmpv4_echo_reply(*id, 1).write(&mut out, &payload),
                    (true, true) => b.icmpv6_echo_request(*id, 1).write(&mut out, &payload),
                    (true, false) => b.icmpv6_echo_reply(*id, 1).write(&mut out, &payload),
                }
                .unwrap();
            }
            Spec::Unreachable { from, to, quoted } => {
                let inner = quoted.ip_packet();
                let b = ip(*from, *to);
                match from.is_v6() {
                    false => b.icmpv4_raw(3, 3, [0; 4]).write(&mut out, &inner),
                    true => b.icmpv6_raw(1, 4, [0; 4]).write(&mut out, &inner),
                }
                .unwrap();
            }
            Spec::Gre { from, to } => {
                ip(*from, *to).write(&mut out, IpNumber::GRE, &[0u8; 8]).unwrap();
            }
            Spec::Arp => unreachable!(),
        }
        out
    }
}

/// A TCP segment from `from:sport` to `to:dport` with `flags`.
pub fn tcp(from: Addr, to: Addr, sport: u16, dport: u16, flags: u16) -> Spec {
    Spec::Tcp {
        from,
        to,
        sport,
        dport,
        flags,
    }
}

/// A UDP datagram from `from:sport` to `to:dport`.
pub fn udp(from: Addr, to: Addr, sport: u16, dport: u16) -> Spec {
    Spec::Udp {
        from,
        to,
        sport,
        dport,
    }
}
