//! Completes TCP and UDP checksums of a frame about to be sent.
//!
//! A frame read from a packet socket may carry only a partial checksum: a
//! sender on a virtual interface (veth, tap) leaves the TCP/UDP checksum to
//! "the hardware", which for a software bridge never comes. Sent on as is,
//! the receiver drops it. So every forwarded TCP/UDP segment that is not a
//! fragment gets its checksum computed over the whole segment. For a frame
//! whose checksum was already right this writes the same value again.
//!
//! Bounds are checked once up front; nothing here can panic or allocate.

/// Ones'-complement sum of `bytes` (big-endian 16-bit words, odd tail padded), unfolded.
#[inline]
fn sum(bytes: &[u8], mut acc: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        acc += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

#[inline]
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Rewrites the TCP or UDP checksum of an Ethernet frame (up to two VLAN tags,
/// IPv4 or IPv6 without extension headers) so that it is complete.
///
/// Returns whether a checksum was written. Fragments, IPv4 UDP with checksum 0
/// (no checksum), other protocols and inconsistent lengths are left alone.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let mut off = 12;
    let mut ethertype = match frame.get(off..off + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => return false,
    };
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            off += 4;
            ethertype = match frame.get(off..off + 2) {
                Some(b) => u16::from_be_bytes([b[0], b[1]]),
                None => return false,
            };
        }
    }
    let l3 = off + 2;
    let (proto, l4, l4_len, pseudo) = match ethertype {
        0x0800 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return false;
            };
            if ip[0] >> 4 != 4 {
                return false;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if ihl < 20 || total < ihl || frag & 0x3fff != 0 || l3 + total > frame.len() {
                return false;
            }
            let proto = ip[9];
            let l4_len = total - ihl;
            let pseudo = sum(&ip[12..20], u64::from(proto) + l4_len as u64);
            (proto, l3 + ihl, l4_len, pseudo)
        }
        0x86dd => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return false;
            };
            if ip[0] >> 4 != 6 {
                return false;
            }
            let l4_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if l3 + 40 + l4_len > frame.len() {
                return false;
            }
            let proto = ip[6];
            let pseudo = sum(&ip[8..40], u64::from(proto) + l4_len as u64);
            (proto, l3 + 40, l4_len, pseudo)
        }
        _ => return false,
    };
    let csum_at = match proto {
        6 if l4_len >= 20 => l4 + 16,
        17 if l4_len >= 8 => l4 + 6,
        _ => return false,
    };
    let Some(stored) = frame.get(csum_at..csum_at + 2) else {
        return false;
    };
    if proto == 17 && ethertype == 0x0800 && stored == [0, 0] {
        return false;
    }
    frame[csum_at] = 0;
    frame[csum_at + 1] = 0;
    let Some(segment) = frame.get(l4..l4 + l4_len) else {
        return false;
    };
    let mut c = !fold(sum(segment, pseudo));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete IPv4/UDP frame (10.0.0.1:1234 -> 10.0.0.2:53, payload "hello"),
    /// checksum computed independently by etherparse.
    fn udp4() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 53);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    fn tcp6_vlan() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(10.try_into().unwrap())
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(40000, 443, 7, 1024);
        let mut out = Vec::new();
        b.write(&mut out, b"odd payload").unwrap();
        out
    }

    #[test]
    fn completes_a_partial_udp_checksum() {
        let good = udp4();
        let mut partial = good.clone();
        // What a veth sender leaves: some other value in the checksum field.
        partial[14 + 20 + 6] = 0x12;
        partial[14 + 20 + 7] = 0x34;
        assert!(complete_l4_checksum(&mut partial));
        assert_eq!(partial, good);
    }

    #[test]
    fn completes_tcp_over_ipv6_behind_a_vlan_tag() {
        let good = tcp6_vlan();
        let at = 14 + 4 + 40 + 16;
        let mut partial = good.clone();
        partial[at] ^= 0xff;
        assert!(complete_l4_checksum(&mut partial));
        assert_eq!(partial, good);
        // A correct checksum is rewritten to itself.
        let mut again = good.clone();
        assert!(complete_l4_checksum(&mut again));
        assert_eq!(again, good);
    }

    #[test]
    fn leaves_no_checksum_udp_fragments_and_junk_alone() {
        let mut zero = udp4();
        zero[14 + 20 + 6] = 0;
        zero[14 + 20 + 7] = 0;
        let copy = zero.clone();
        assert!(!complete_l4_checksum(&mut zero));
        assert_eq!(zero, copy);
        let mut frag = udp4();
        frag[14 + 6] = 0x20; // MF set
        assert!(!complete_l4_checksum(&mut frag));
        for len in 0..udp4().len() {
            let mut cut = udp4()[..len].to_vec();
            let _ = complete_l4_checksum(&mut cut);
        }
        // A total length beyond the frame is refused, not read past.
        let mut long = udp4();
        long[14 + 2] = 0xff;
        assert!(!complete_l4_checksum(&mut long));
    }
}
