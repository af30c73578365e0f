//! What a flow tracker needs from an ICMP or ICMPv6 message beyond the
//! [`FlowKey`](crate::FlowKey): the query identifier that keys an echo
//! flow, and the addresses, protocol and ports of the datagram an error
//! quotes.
//!
//! [`crate::parse`] never reads inside an ICMP message (an error's quoted
//! header must never leak into the key rules match), so this is a separate
//! walk, asked for only when a tracker needs it. Like the parser it is
//! zero-copy, never allocates and never panics: every read goes through the
//! parser's total read helpers and every offset is checked against the
//! bounds of the enclosing header before it is used.

use crate::parse::{addr, be16, byte};

const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TPID_QINQ_LEGACY: u16 = 0x9100;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// What kind of ICMP/ICMPv6 message a frame carries, for flow tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpKind {
    /// A query that expects a reply with the same identifier: echo request
    /// (ICMP 8, ICMPv6 128), timestamp (13), information (15) or address
    /// mask (17) request.
    Query {
        /// The identifier, which keys the flow in place of ports.
        id: u16,
    },
    /// The reply to such a query: echo reply (0, 129), 14, 16, 18.
    Reply {
        /// The identifier of the query it answers.
        id: u16,
    },
    /// An error quoting the start of the datagram that caused it: ICMP
    /// destination unreachable (3), source quench (4), redirect (5), time
    /// exceeded (11), parameter problem (12); ICMPv6 1 to 4.
    Error(Quoted),
    /// An error whose quoted datagram is cut before its addresses, or is not
    /// an IP header of the outer family.
    BadError,
    /// Anything else (router and neighbour discovery, ...): no identifier.
    Other,
}

/// The start of the datagram an ICMP error quotes, as it was sent (so a
/// tracker looks it up in the sender's direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quoted {
    /// 4 or 6 (always the outer family).
    pub ip_version: u8,
    /// The quoted protocol (after walking IPv6 extension headers).
    pub proto: u8,
    /// Source address, encoded as in [`crate::FlowKey::src_ip`].
    pub src_ip: u128,
    /// Destination address.
    pub dst_ip: u128,
    /// The ports a flow of the quoted datagram is keyed by: TCP/UDP ports;
    /// for a quoted ICMP query or reply its identifier twice, for another
    /// informational ICMP message (0, 0); for any other protocol (0, 0).
    /// `None` when the quote is cut before them, the datagram was a
    /// non-first fragment, or it was itself an ICMP error.
    pub ports: Option<(u16, u16)>,
    /// For a quoted ICMP/ICMPv6 message: its type.
    pub icmp_type: Option<u8>,
}

/// An ICMP or ICMPv6 message found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcmpMessage {
    /// 4 (ICMP) or 6 (ICMPv6).
    pub ip_version: u8,
    /// The message type.
    pub icmp_type: u8,
    /// The message code.
    pub icmp_code: u8,
    /// What it means for flow tracking.
    pub kind: IcmpKind,
}

/// The ICMP/ICMPv6 message of an Ethernet frame, if it carries a complete
/// header of one (8 bytes) in an unfragmented or first-fragment IPv4 or
/// IPv6 packet (IPv6 extension headers are walked as [`crate::parse`]
/// walks them). `None` for anything else.
///
/// ```
/// use palisade_packet::{icmp_message, IcmpKind};
/// // IPv4 10.0.0.2 -> 10.0.0.1, ICMP port unreachable quoting UDP 10.0.0.1:40000 -> 10.0.0.2:53.
/// let mut f = vec![0u8; 12];
/// f.extend_from_slice(&[0x08, 0x00]);
/// f.extend_from_slice(&[0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
/// f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
/// f.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
/// f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 16, 0, 0]);
/// let m = icmp_message(&f).unwrap();
/// let IcmpKind::Error(q) = m.kind else { panic!("{m:?}") };
/// assert_eq!((q.proto, q.src_ip, q.ports), (17, 0x0a00_0001, Some((40000, 53))));
/// ```
pub fn icmp_message(frame: &[u8]) -> Option<IcmpMessage> {
    let (ty, mut s) = ethertype(frame)?;
    let (version, start, end) = match ty {
        0x0800 => {
            let (proto, l4, end) = ipv4(frame, s, frame.len())?;
            if proto != PROTO_ICMP {
                return None;
            }
            (4, l4, end)
        }
        0x86dd => {
            let (proto, l4, end) = ipv6(frame, s, frame.len())?;
            if proto != PROTO_ICMPV6 {
                return None;
            }
            (6, l4, end)
        }
        _ => return None,
    };
    if end < start + 8 {
        return None;
    }
    s = start;
    let (t, code) = (byte(frame, s), byte(frame, s + 1));
    let id = be16(frame, s + 4);
    let kind = match IcmpRole::of(version, t) {
        IcmpRole::Query => IcmpKind::Query { id },
        IcmpRole::Reply => IcmpKind::Reply { id },
        IcmpRole::Error => match quoted(frame, s + 8, end, version) {
            Some(q) => IcmpKind::Error(q),
            None => IcmpKind::BadError,
        },
        IcmpRole::Other => IcmpKind::Other,
    };
    Some(IcmpMessage {
        ip_version: version,
        icmp_type: t,
        icmp_code: code,
        kind,
    })
}

/// What an ICMP type is for flow tracking (the one table of types both
/// [`icmp_message`] and [`crate::FlowState::without_entry`] use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IcmpRole {
    Query,
    Reply,
    Error,
    Other,
}

impl IcmpRole {
    /// The role of type `t` in ICMP (`version` 4) or ICMPv6 (6).
    pub(crate) const fn of(version: u8, t: u8) -> IcmpRole {
        match (version, t) {
            (4, 8 | 13 | 15 | 17) | (6, 128) => IcmpRole::Query,
            (4, 0 | 14 | 16 | 18) | (6, 129) => IcmpRole::Reply,
            (4, 3 | 4 | 5 | 11 | 12) | (6, 1..=4) => IcmpRole::Error,
            _ => IcmpRole::Other,
        }
    }
}

/// The ethertype after the VLAN tags and where the L3 header starts.
fn ethertype(f: &[u8]) -> Option<(u16, usize)> {
    if f.len() < 14 {
        return None;
    }
    let mut ty = be16(f, 12);
    let mut off = 14;
    while ty == TPID_8021Q || ty == TPID_8021AD || ty == TPID_QINQ_LEGACY {
        if f.len() < off + 4 {
            return None;
        }
        ty = be16(f, off + 2);
        off += 4;
    }
    Some((ty, off))
}

/// An IPv4 header at `s` inside `f[..limit]`: its protocol, where its payload
/// starts and where it ends (the total length, or `limit` if that is shorter,
/// as in a quoted datagram). `None` for a bad header or a non-first fragment.
fn ipv4(f: &[u8], s: usize, limit: usize) -> Option<(u8, usize, usize)> {
    let b0 = byte(f, s);
    let ihl = (b0 & 0x0f) as usize * 4;
    if b0 >> 4 != 4 || ihl < 20 || limit < s + ihl {
        return None;
    }
    let total = be16(f, s + 2) as usize;
    if total < ihl || be16(f, s + 6) & 0x1fff != 0 {
        return None;
    }
    Some((byte(f, s + 9), s + ihl, (s + total).min(limit)))
}

/// An IPv6 header at `s` inside `f[..limit]`, extension headers walked:
/// the final next header, where it starts, where the payload ends.
fn ipv6(f: &[u8], s: usize, limit: usize) -> Option<(u8, usize, usize)> {
    if byte(f, s) >> 4 != 6 || limit < s + 40 {
        return None;
    }
    let plen = be16(f, s + 4) as usize;
    let end = match plen {
        0 => limit, // a jumbogram, or a quote whose length does not matter
        n => (s + 40 + n).min(limit),
    };
    let mut nh = byte(f, s + 6);
    let mut off = s + 40;
    // Offsets only grow and are bounded by `end`, so the walk ends.
    loop {
        match nh {
            0 | 43 | 60 | 51 => {
                if end < off + 8 {
                    return None;
                }
                let units = byte(f, off + 1) as usize;
                let len = if nh == 51 {
                    (units + 2) * 4
                } else {
                    (units + 1) * 8
                };
                nh = byte(f, off);
                off += len;
                if end < off {
                    return None;
                }
            }
            44 => {
                if end < off + 8 || be16(f, off + 2) & 0xfff8 != 0 {
                    return None; // a non-first fragment has no L4 header
                }
                nh = byte(f, off);
                off += 8;
            }
            _ => return Some((nh, off, end)),
        }
    }
}

/// The datagram quoted from `s` to `end`, of the outer family `version`.
fn quoted(f: &[u8], s: usize, end: usize, version: u8) -> Option<Quoted> {
    let (src_ip, dst_ip, proto, l4, l4_end) = if version == 4 {
        let (proto, l4, _) = match ipv4(f, s, end) {
            Some(h) => h,
            // A quoted non-first fragment still has addresses, but no ports.
            None if byte(f, s) == 0x45 && end >= s + 20 => (byte(f, s + 9), end, end),
            None => return None,
        };
        let src = u32::from_be_bytes(addr(f, s + 12)) as u128;
        let dst = u32::from_be_bytes(addr(f, s + 16)) as u128;
        (src, dst, proto, l4, end)
    } else {
        if byte(f, s) >> 4 != 6 || end < s + 40 {
            return None;
        }
        let src = u128::from_be_bytes(addr(f, s + 8));
        let dst = u128::from_be_bytes(addr(f, s + 24));
        match ipv6(f, s, end) {
            Some((proto, l4, _)) => (src, dst, proto, l4, end),
            None => (src, dst, byte(f, s + 6), end, end),
        }
    };
    let avail = l4_end.saturating_sub(l4);
    let mut q = Quoted {
        ip_version: version,
        proto,
        src_ip,
        dst_ip,
        ports: None,
        icmp_type: None,
    };
    let fragment = l4 == l4_end;
    match proto {
        6 | 17 if avail >= 4 => q.ports = Some((be16(f, l4), be16(f, l4 + 2))),
        6 | 17 => {}
        PROTO_ICMP | PROTO_ICMPV6 if avail >= 6 => {
            let id = be16(f, l4 + 4);
            let t = byte(f, l4);
            q.icmp_type = Some(t);
            let icmp_version = if proto == PROTO_ICMP { 4 } else { 6 };
            q.ports = match IcmpRole::of(icmp_version, t) {
                IcmpRole::Query | IcmpRole::Reply => Some((id, id)),
                IcmpRole::Other => Some((0, 0)),
                IcmpRole::Error => None,
            };
        }
        PROTO_ICMP | PROTO_ICMPV6 => {}
        _ if !fragment => q.ports = Some((0, 0)),
        _ => {}
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ty: u16) -> [u8; 14] {
        let mut e = [0u8; 14];
        e[12..].copy_from_slice(&ty.to_be_bytes());
        e
    }

    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> [u8; 20] {
        let total = (20 + payload.len()) as u16;
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h
    }

    fn frame(parts: &[&[u8]]) -> [u8; 256] {
        let mut f = [0u8; 256];
        let mut n = 0;
        for p in parts {
            f[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        f
    }

    #[test]
    fn echo_request_and_reply_carry_the_identifier() {
        let icmp = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let f = frame(&[&eth(0x0800), &v4(1, [10, 0, 0, 1], [10, 0, 0, 2], &icmp), &icmp]);
        let m = icmp_message(&f[..42]).unwrap();
        assert_eq!(m.kind, IcmpKind::Query { id: 0x1234 });
        let icmp = [0, 0, 0, 0, 0x12, 0x34, 0, 1];
        let f = frame(&[&eth(0x0800), &v4(1, [10, 0, 0, 2], [10, 0, 0, 1], &icmp), &icmp]);
        assert_eq!(
            icmp_message(&f[..42]).unwrap().kind,
            IcmpKind::Reply { id: 0x1234 }
        );
        // Cut inside the ICMP header: nothing.
        assert_eq!(icmp_message(&f[..40]), None);
    }

    #[test]
    fn quoted_icmp_query_and_cut_quotes() {
        let inner_icmp = [8, 0, 0, 0, 0xab, 0xcd, 0, 1];
        let inner = v4(1, [10, 0, 0, 1], [192, 0, 2, 1], &inner_icmp);
        let err = [11, 0, 0, 0, 0, 0, 0, 0];
        let outer = v4(1, [198, 51, 100, 1], [10, 0, 0, 1], &[0u8; 36]);
        let f = frame(&[&eth(0x0800), &outer, &err, &inner, &inner_icmp]);
        let m = icmp_message(&f[..70]).unwrap();
        let IcmpKind::Error(q) = m.kind else {
            panic!("{m:?}")
        };
        assert_eq!(
            (q.proto, q.ports, q.icmp_type),
            (1, Some((0xabcd, 0xabcd)), Some(8))
        );
        assert_eq!((q.src_ip, q.dst_ip), (0x0a00_0001, 0xc000_0201));
        // The quote cut inside the inner IP header: a bad error.
        let outer = v4(1, [198, 51, 100, 1], [10, 0, 0, 1], &[0u8; 18]);
        let f = frame(&[&eth(0x0800), &outer, &err, &inner]);
        assert_eq!(icmp_message(&f[..52]).unwrap().kind, IcmpKind::BadError);
    }

    #[test]
    fn icmpv6_error_quoting_udp() {
        let mut ip6 = [0u8; 40];
        ip6[0] = 0x60;
        ip6[5] = 8 + 48;
        ip6[6] = 58;
        ip6[8] = 0x20;
        ip6[24] = 0x20;
        ip6[39] = 1;
        let mut inner = [0u8; 40];
        inner[0] = 0x60;
        inner[5] = 8;
        inner[6] = 17;
        inner[8] = 0x20;
        inner[23] = 1;
        inner[24] = 0x20;
        let udp = [0x9c, 0x40, 0x01, 0xbb, 0, 8, 0, 0];
        let err = [1, 4, 0, 0, 0, 0, 0, 0];
        let f = frame(&[&eth(0x86dd), &ip6, &err, &inner, &udp]);
        let m = icmp_message(&f[..14 + 40 + 8 + 48]).unwrap();
        let IcmpKind::Error(q) = m.kind else {
            panic!("{m:?}")
        };
        assert_eq!((q.ip_version, q.proto, q.ports), (6, 17, Some((40000, 443))));
        assert_eq!(q.src_ip, 0x2000_0000_0000_0000_0000_0000_0000_0001);
    }

    #[test]
    fn never_panics_on_prefixes_of_a_frame() {
        let inner_icmp = [8, 0, 0, 0, 0xab, 0xcd, 0, 1];
        let inner = v4(1, [10, 0, 0, 1], [192, 0, 2, 1], &inner_icmp);
        let err = [3, 1, 0, 0, 0, 0, 0, 0];
        let outer = v4(1, [198, 51, 100, 1], [10, 0, 0, 1], &[0u8; 36]);
        let f = frame(&[&eth(0x8100), &[0, 10, 0x08, 0], &outer, &err, &inner, &inner_icmp]);
        for n in 0..f.len() {
            let _ = icmp_message(&f[..n]);
        }
        assert!(matches!(icmp_message(&f[..74]).unwrap().kind, IcmpKind::Error(_)));
    }
}
