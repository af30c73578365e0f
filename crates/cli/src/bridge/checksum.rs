//! The one checksum the bridge completes itself: SCTP's, left partial.
//!
//! A sender may leave a frame's L4 checksum to the hardware; the virtio-net
//! header marks it (`NEEDS_CSUM`, where it starts and where it goes) and the
//! egress device or the kernel completes it. That completion is always an
//! Internet checksum: the header cannot say that SCTP's is a CRC32c
//! (`csum_not_inet` in the kernel is not carried over), so a partial SCTP
//! frame sent on as it is would leave with a wrong checksum. The bridge
//! completes those itself, the only bytes it writes besides a VLAN tag, and
//! clears the mark. Every other checksum is left exactly as it arrived.
//!
//! Nothing here allocates or panics: every offset is checked.

use super::sys::{VnetHdr, NEEDS_CSUM};

/// IP protocol number of SCTP.
const PROTO_SCTP: u8 = 132;
/// Offset of the checksum in the SCTP common header.
const SCTP_CHECKSUM_AT: u16 = 8;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32c of `bytes` (initial value and final XOR all ones), as SCTP computes it.
fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8)
    })
}

/// The IP protocol of the L4 header starting at `l4` in an Ethernet frame (up to two VLAN
/// tags, IPv4 or IPv6 without extension headers), when the IP header ends exactly there.
fn protocol_at(frame: &[u8], l4: usize) -> Option<u8> {
    let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut at = 12;
    let mut ethertype = be16(at)?;
    for _ in 0..2 {
        if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            at += 4;
            ethertype = be16(at)?;
        }
    }
    let l3 = at + 2;
    match ethertype {
        0x0800 => {
            let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
            (l3 + ihl == l4).then_some(*frame.get(l3 + 9)?)
        }
        0x86dd => (l3 + 40 == l4).then_some(*frame.get(l3 + 6)?),
        _ => None,
    }
}

/// Completes a partial SCTP checksum in `frame` (CRC32c over the SCTP packet, stored as
/// SCTP does) and clears the header's mark; returns whether it did. Frames without a
/// partial checksum, or whose partial checksum is not SCTP's, are left alone.
pub fn complete_sctp(frame: &mut [u8], vnet: &mut VnetHdr) -> bool {
    if vnet.flags & NEEDS_CSUM == 0 || vnet.csum_offset != SCTP_CHECKSUM_AT || vnet.gso_type != 0 {
        return false;
    }
    let start = usize::from(vnet.csum_start);
    if protocol_at(frame, start) != Some(PROTO_SCTP) {
        return false;
    }
    let Some(packet) = frame.get_mut(start..).filter(|p| p.len() >= 12) else {
        return false;
    };
    packet[8..12].fill(0);
    let crc = crc32c(packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    vnet.flags &= !NEEDS_CSUM;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value for CRC-32C, and RFC 3720's 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    /// Ethernet + VLAN 10 + IPv4 (proto `proto`) + a 12-byte SCTP common header + one chunk.
    fn frame(proto: u8) -> Vec<u8> {
        let mut f = vec![
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00,
        ];
        let total = 20 + 12 + 16;
        f.extend_from_slice(&[0x45, 0, 0, total, 0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        // ports 5000 -> 6000, verification tag, checksum (partial: junk), a DATA-ish chunk.
        f.extend_from_slice(&[
            0x13, 0x88, 0x17, 0x70, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x78,
        ]);
        f.extend_from_slice(b"chunk of sctp...");
        f
    }

    fn partial() -> VnetHdr {
        VnetHdr {
            flags: NEEDS_CSUM,
            csum_start: 18 + 20,
            csum_offset: 8,
            ..VnetHdr::default()
        }
    }

    #[test]
    fn a_partial_sctp_checksum_is_completed() {
        let mut f = frame(PROTO_SCTP);
        let mut vnet = partial();
        assert!(complete_sctp(&mut f, &mut vnet));
        assert_eq!(vnet.flags & NEEDS_CSUM, 0, "no longer left to the device");
        // The receiver's check: CRC32c over the packet with the field zeroed equals the field.
        let packet = &mut f[38..];
        let stored = u32::from_le_bytes([packet[8], packet[9], packet[10], packet[11]]);
        packet[8..12].fill(0);
        assert_eq!(crc32c(packet), stored);
        assert_eq!(
            &f[..38],
            &frame(PROTO_SCTP)[..38],
            "nothing before the SCTP header changes"
        );
    }

    #[test]
    fn everything_else_is_left_alone() {
        // Not SCTP (UDP with the same offsets), not partial, GSO, misplaced start, runts.
        for (proto, vnet) in [
            (17, partial()),
            (PROTO_SCTP, VnetHdr::default()),
            (
                PROTO_SCTP,
                VnetHdr {
                    gso_type: 5,
                    ..partial()
                },
            ),
            (
                PROTO_SCTP,
                VnetHdr {
                    csum_start: 40,
                    ..partial()
                },
            ),
            (
                PROTO_SCTP,
                VnetHdr {
                    csum_offset: 6,
                    ..partial()
                },
            ),
        ] {
            let mut f = frame(proto);
            let mut v = vnet;
            assert!(!complete_sctp(&mut f, &mut v), "{proto} {vnet:?}");
            assert_eq!((f, v), (frame(proto), vnet));
        }
        for len in 0..frame(PROTO_SCTP).len() {
            let mut cut = frame(PROTO_SCTP)[..len].to_vec();
            let _ = complete_sctp(&mut cut, &mut partial());
        }
    }
}
