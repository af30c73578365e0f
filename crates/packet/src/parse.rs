//! The hand-written frame walker behind [`parse`].
//!
//! Every read goes through [`be16`] / [`byte`] / [`addr`], which return 0 (or
//! `None`) instead of panicking, and every length check happens before the
//! fields it guards are used, so no input can make this module panic. Offsets
//! only grow and are bounded by the frame length, so every loop terminates.

use crate::key::{FlowKey, FragmentState, Layer, ParseStatus, Present};

const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TPID_QINQ_LEGACY: u16 = 0x9100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Type/length values up to this are 802.3 lengths, not ethertypes (as tshark
/// decides; 1501-1535 are undefined and are shown as types).
const IEEE_8023_MAX_LEN: u16 = 1500;

const PROTO_HOPOPT: u8 = 0;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_AH: u8 = 51;
const PROTO_ICMPV6: u8 = 58;
const PROTO_DSTOPTS: u8 = 60;

#[inline(always)]
pub(crate) fn byte(b: &[u8], i: usize) -> u8 {
    match b.get(i) {
        Some(&v) => v,
        None => 0,
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], i: usize) -> u16 {
    match b.get(i..i + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

#[inline(always)]
pub(crate) fn addr<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
    match b.get(i..i + N) {
        Some(s) => {
            let mut out = [0u8; N];
            out.copy_from_slice(s);
            out
        }
        None => [0u8; N],
    }
}

/// Parses one Ethernet frame into a [`FlowKey`].
///
/// Zero-copy, no allocation, no panics: any byte slice gives a key. Fields
/// that could not be reached are absent (their [`Present`] bit clear) and
/// [`FlowKey::status`] names the layer that stopped the parse. See the crate
/// documentation for the exact rules.
///
/// ```
/// use palisade_packet::{parse, ParseStatus};
/// // Ethernet + IPv4 (20 bytes) + UDP 5353 -> 53, no payload.
/// let mut f = vec![0u8; 12];
/// f.extend_from_slice(&[0x08, 0x00]);
/// f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
/// f.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 8, 0, 0]);
/// let k = parse(&f);
/// assert_eq!(k.status, ParseStatus::Ok);
/// assert_eq!(k.l4_proto, 17);
/// assert_eq!(k.ports(), Some((5353, 53)));
/// assert_eq!(k.src_ip, 0x0a00_0001);
/// ```
#[inline]
pub fn parse(frame: &[u8]) -> FlowKey {
    let mut k = FlowKey::new();
    if !fast_path(frame, &mut k) {
        k = FlowKey::new();
        k.status = ethernet(frame, &mut k);
    }
    k
}

/// [`parse`] without the fast path: the general walker alone. Exposed so
/// tests can check that both give the same key; not part of the API.
#[doc(hidden)]
#[inline]
pub fn parse_general(frame: &[u8]) -> FlowKey {
    let mut k = FlowKey::new();
    k.status = ethernet(frame, &mut k);
    k
}

/// The common shapes in one straight line: untagged or one 802.1Q tag, then
/// IPv4 without options or fragmentation, or IPv6 without extension headers,
/// then a complete TCP or UDP header inside the IP length. Anything else
/// (or any doubt) returns `false`, and the general walker decides on a fresh key.
#[inline(always)]
fn fast_path(f: &[u8], k: &mut FlowKey) -> bool {
    let mut ty = be16(f, 12);
    let mut s = 14;
    if ty == TPID_8021Q {
        k.outer_vlan = be16(f, 14) & 0x0fff;
        k.vlan_count = 1;
        ty = be16(f, 16);
        s = 18;
    }
    let l4;
    let end;
    if ty == ETHERTYPE_IPV4 {
        let Some(ip) = f.get(s..s + 20) else { return false };
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        // Version 4, IHL 5, MF 0, offset 0 (DF and the reserved bit are ignored).
        if ip[0] != 0x45 || ip[6] & 0x3f != 0 || ip[7] != 0 || total < 20 || s + total > f.len() {
            return false;
        }
        k.ip_version = 4;
        k.dscp = ip[1] >> 2;
        k.l4_proto = ip[9];
        k.src_ip = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]) as u128;
        k.dst_ip = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]) as u128;
        l4 = s + 20;
        end = s + total;
    } else if ty == ETHERTYPE_IPV6 {
        let Some(ip) = f.get(s..s + 40) else { return false };
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if ip[0] >> 4 != 6 || s + 40 + plen > f.len() {
            return false;
        }
        k.ip_version = 6;
        k.dscp = ((ip[0] & 0x0f) << 2) | (ip[1] >> 6);
        k.l4_proto = ip[6];
        k.src_ip = u128::from_be_bytes(addr(ip, 8));
        k.dst_ip = u128::from_be_bytes(addr(ip, 24));
        l4 = s + 40;
        end = s + 40 + plen;
    } else {
        return false;
    }
    let avail = end - l4;
    let Some(h) = f.get(l4..l4 + 20.min(avail)) else {
        return false;
    };
    k.present.0 =
        Present::ETHERTYPE | Present::IP_VERSION | Present::ADDRS | Present::DSCP | Present::L4_PROTO;
    match k.l4_proto {
        PROTO_TCP if avail >= 20 => {
            let doff = (h[12] >> 4) as usize * 4;
            if doff < 20 || doff > avail {
                return false;
            }
            k.tcp_flags = u16::from_be_bytes([h[12], h[13]]) & 0x0fff;
            k.present.0 |= Present::TCP_FLAGS;
        }
        PROTO_UDP if avail >= 8 => {
            let ulen = u16::from_be_bytes([h[4], h[5]]) as usize;
            if ulen < 8 || ulen > avail {
                return false;
            }
        }
        _ => return false,
    }
    k.src_port = u16::from_be_bytes([h[0], h[1]]);
    k.dst_port = u16::from_be_bytes([h[2], h[3]]);
    k.present.0 |= Present::PORTS;
    k.ethertype = ty;
    true
}

/// Ethernet header and the VLAN tags directly after it.
#[inline(always)]
fn ethernet(f: &[u8], k: &mut FlowKey) -> ParseStatus {
    if f.len() < 14 {
        return ParseStatus::Truncated(Layer::Ethernet);
    }
    let mut ty = be16(f, 12);
    let mut off = 14;
    let mut tags: usize = 0;
    while ty == TPID_8021Q || ty == TPID_8021AD || ty == TPID_QINQ_LEGACY {
        if f.len() < off + 4 {
            k.vlan_count = tags.min(u8::MAX as usize) as u8;
            return ParseStatus::Truncated(Layer::Vlan);
        }
        let vid = be16(f, off) & 0x0fff;
        if tags == 0 {
            k.outer_vlan = vid;
        } else if tags == 1 {
            k.inner_vlan = vid;
        }
        tags += 1;
        ty = be16(f, off + 2);
        off += 4;
    }
    k.vlan_count = tags.min(u8::MAX as usize) as u8;
    if ty <= IEEE_8023_MAX_LEN {
        // 802.3 length + LLC: there is no ethertype to report.
        return ParseStatus::Ok;
    }
    k.ethertype = ty;
    k.present.0 |= Present::ETHERTYPE;
    match ty {
        ETHERTYPE_IPV4 => ipv4(f, off, k),
        ETHERTYPE_IPV6 => ipv6(f, off, k),
        _ => ParseStatus::Ok,
    }
}

/// The IP payload bounds: `end` is where L4 bytes stop (the IP length field,
/// or the frame end if the frame is shorter), `cut` says the frame was shorter.
#[derive(Clone, Copy)]
struct Payload {
    end: usize,
    cut: bool,
}

impl Payload {
    #[inline(always)]
    fn new(frame_len: usize, declared_end: usize) -> Self {
        if declared_end > frame_len {
            Payload {
                end: frame_len,
                cut: true,
            }
        } else {
            Payload {
                end: declared_end,
                cut: false,
            }
        }
    }

    /// Status for a header of `layer` that needs more bytes than the payload has.
    #[inline(always)]
    fn short(self, layer: Layer, k: &mut FlowKey) -> ParseStatus {
        if self.cut {
            ParseStatus::Truncated(layer)
        } else if k.fragment == FragmentState::First {
            // The fragment boundary cuts the header chain: a tiny-fragment attack.
            k.present.0 |= Present::TINY_FIRST_FRAGMENT;
            ParseStatus::Malformed(Layer::Fragment)
        } else {
            ParseStatus::Malformed(layer)
        }
    }

    /// Final status once the walk itself found nothing wrong.
    #[inline(always)]
    fn finish(self, st: ParseStatus, ip: Layer) -> ParseStatus {
        if st.is_ok() && self.cut {
            ParseStatus::Truncated(ip)
        } else {
            st
        }
    }
}

#[inline(always)]
fn ipv4(f: &[u8], s: usize, k: &mut FlowKey) -> ParseStatus {
    let Some(&b0) = f.get(s) else {
        return ParseStatus::Truncated(Layer::Ipv4);
    };
    k.ip_version = b0 >> 4;
    k.present.0 |= Present::IP_VERSION;
    if k.ip_version != 4 {
        return ParseStatus::Malformed(Layer::Ipv4);
    }
    if f.len() < s + 20 {
        return ParseStatus::Truncated(Layer::Ipv4);
    }
    let ihl = (b0 & 0x0f) as usize * 4;
    let total = be16(f, s + 2) as usize;
    if ihl < 20 || total < ihl {
        // IHL < 5, or a total length (0 in TSO captures) that cannot even hold the header.
        return ParseStatus::Malformed(Layer::Ipv4);
    }
    k.dscp = byte(f, s + 1) >> 2;
    k.src_ip = u32::from_be_bytes(addr(f, s + 12)) as u128;
    k.dst_ip = u32::from_be_bytes(addr(f, s + 16)) as u128;
    k.l4_proto = byte(f, s + 9);
    let ff = be16(f, s + 6);
    let more = ff & 0x2000 != 0;
    let offset = (ff & 0x1fff) << 3;
    k.more_fragments = more;
    k.frag_offset = offset;
    k.fragment = if offset != 0 {
        FragmentState::NonFirst
    } else if more {
        FragmentState::First
    } else {
        FragmentState::None
    };
    k.present.0 |= Present::ADDRS | Present::DSCP | Present::L4_PROTO;
    if f.len() < s + ihl {
        // Options cut by the end of the frame.
        return ParseStatus::Truncated(Layer::Ipv4);
    }
    if ihl > 20 && !ipv4_options_ok(f.get(s + 20..s + ihl).unwrap_or(&[])) {
        return ParseStatus::Malformed(Layer::Ipv4);
    }
    let pl = Payload::new(f.len(), s + total);
    if k.fragment == FragmentState::NonFirst {
        // Payload of a non-first fragment is not an L4 header: no ports.
        return pl.finish(ParseStatus::Ok, Layer::Ipv4);
    }
    let st = l4(f, s + ihl, pl, k);
    pl.finish(st, Layer::Ipv4)
}

/// Whether the IPv4 options form a well-built type-length list: End of
/// List (0) ends it, No-Op (1) is one byte, every other option has a length
/// of at least 2 that stays inside the header. Values are not interpreted.
#[cold]
fn ipv4_options_ok(opts: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&ty) = opts.get(i) {
        match ty {
            0 => return true,
            1 => i += 1,
            _ => {
                let len = byte(opts, i + 1) as usize;
                if len < 2 || i + len > opts.len() {
                    return false;
                }
                i += len;
            }
        }
    }
    true
}

/// The Jumbo Payload length (option 0xC2) of the Hop-by-Hop header at `h`.
#[cold]
fn jumbo_len(f: &[u8], h: usize) -> Option<usize> {
    let len = (byte(f, h + 1) as usize + 1) * 8;
    let opts = f.get(h + 2..h + len)?;
    let mut i = 0;
    while let Some(&ty) = opts.get(i) {
        if ty == 0 {
            i += 1; // Pad1
            continue;
        }
        let olen = byte(opts, i + 1) as usize;
        if ty == 0xc2 && olen == 4 && i + 6 <= opts.len() {
            return Some(u32::from_be_bytes(addr(opts, i + 2)) as usize);
        }
        i += 2 + olen;
    }
    None
}

#[inline(always)]
fn ipv6(f: &[u8], s: usize, k: &mut FlowKey) -> ParseStatus {
    let Some(&b0) = f.get(s) else {
        return ParseStatus::Truncated(Layer::Ipv6);
    };
    k.ip_version = b0 >> 4;
    k.present.0 |= Present::IP_VERSION;
    if k.ip_version != 6 {
        return ParseStatus::Malformed(Layer::Ipv6);
    }
    if f.len() < s + 40 {
        return ParseStatus::Truncated(Layer::Ipv6);
    }
    let tc = ((b0 & 0x0f) << 4) | (byte(f, s + 1) >> 4);
    k.dscp = tc >> 2;
    k.src_ip = u128::from_be_bytes(addr(f, s + 8));
    k.dst_ip = u128::from_be_bytes(addr(f, s + 24));
    k.present.0 |= Present::ADDRS | Present::DSCP;
    let plen = be16(f, s + 4) as usize;
    let mut nh = byte(f, s + 6);
    // Payload length 0 with a Hop-by-Hop header may be a jumbogram (RFC 2675):
    // the real length is then in the Jumbo Payload option.
    let declared_end = if plen == 0 && nh == PROTO_HOPOPT {
        (s + 40).saturating_add(jumbo_len(f, s + 40).unwrap_or(0))
    } else {
        s + 40 + plen
    };
    let pl = Payload::new(f.len(), declared_end);
    let mut off = s + 40;
    let mut seen_fragment = false;
    loop {
        match nh {
            PROTO_HOPOPT | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_AH => {
                if pl.end < off + 8 {
                    return pl.short(Layer::Ipv6Extension, k);
                }
                let units = byte(f, off + 1) as usize;
                let len = if nh == PROTO_AH {
                    (units + 2) * 4
                } else {
                    (units + 1) * 8
                };
                if pl.end < off + len {
                    return pl.short(Layer::Ipv6Extension, k);
                }
                nh = byte(f, off);
                off += len;
            }
            PROTO_FRAGMENT => {
                if pl.end < off + 8 {
                    return pl.short(Layer::Fragment, k);
                }
                let next = byte(f, off);
                let fo = be16(f, off + 2);
                let offset = fo & 0xfff8;
                let more = fo & 1 != 0;
                off += 8;
                if !seen_fragment {
                    // With several Fragment headers the first one describes the packet.
                    seen_fragment = true;
                    k.frag_offset = offset;
                    k.more_fragments = more;
                    k.fragment = if offset != 0 {
                        FragmentState::NonFirst
                    } else if more {
                        FragmentState::First
                    } else {
                        // Atomic fragment (RFC 6946): a whole packet.
                        FragmentState::None
                    };
                }
                if offset != 0 {
                    // What follows is fragment data, not headers: no L4.
                    k.l4_proto = next;
                    k.present.0 |= Present::L4_PROTO;
                    let st = if k.fragment == FragmentState::NonFirst {
                        ParseStatus::Ok
                    } else {
                        // A nested non-first fragment inside a first/atomic one.
                        ParseStatus::Malformed(Layer::Fragment)
                    };
                    return pl.finish(st, Layer::Ipv6);
                }
                nh = next;
            }
            _ => break,
        }
    }
    k.l4_proto = nh;
    k.present.0 |= Present::L4_PROTO;
    let st = l4(f, off, pl, k);
    pl.finish(st, Layer::Ipv6)
}

/// TCP / UDP / ICMP / ICMPv6 right after the IP header chain, bounded by `pl`.
#[inline(always)]
fn l4(f: &[u8], s: usize, pl: Payload, k: &mut FlowKey) -> ParseStatus {
    let avail = pl.end.saturating_sub(s);
    match k.l4_proto {
        PROTO_TCP => {
            if avail >= 4 {
                k.src_port = be16(f, s);
                k.dst_port = be16(f, s + 2);
                k.present.0 |= Present::PORTS;
            }
            if avail >= 14 {
                k.tcp_flags = be16(f, s + 12) & 0x0fff;
                k.present.0 |= Present::TCP_FLAGS;
            }
            if avail < 20 {
                return pl.short(Layer::Tcp, k);
            }
            let doff = (byte(f, s + 12) >> 4) as usize * 4;
            if doff < 20 {
                ParseStatus::Malformed(Layer::Tcp)
            } else if doff > avail {
                pl.short(Layer::Tcp, k)
            } else {
                ParseStatus::Ok
            }
        }
        PROTO_UDP => {
            if avail >= 4 {
                k.src_port = be16(f, s);
                k.dst_port = be16(f, s + 2);
                k.present.0 |= Present::PORTS;
            }
            if avail < 8 {
                return pl.short(Layer::Udp, k);
            }
            let ulen = be16(f, s + 4) as usize;
            // Length 0 is legal only for an IPv6 jumbogram (RFC 2675).
            let jumbo_zero = ulen == 0 && k.ip_version == 6;
            if !jumbo_zero && ulen < 8 {
                return ParseStatus::Malformed(Layer::Udp);
            }
            // A first fragment carries only part of the datagram; otherwise the
            // UDP length must fit the IP payload (a cut frame is reported as such).
            if ulen > avail && !pl.cut && k.fragment == FragmentState::None {
                return ParseStatus::Malformed(Layer::Udp);
            }
            ParseStatus::Ok
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let (layer, min) = if k.l4_proto == PROTO_ICMP {
                (Layer::Icmp, 8)
            } else {
                (Layer::Icmpv6, 4)
            };
            if avail >= 2 {
                k.icmp_type = byte(f, s);
                k.icmp_code = byte(f, s + 1);
                k.present.0 |= Present::ICMP;
            }
            if avail < min {
                return pl.short(layer, k);
            }
            ParseStatus::Ok
        }
        _ => ParseStatus::Ok,
    }
}
