//! VLAN tags on the wire.
//!
//! Interfaces strip the outer VLAN tag of a received frame (rx VLAN offload,
//! on by default on veth and most NICs) and report it beside the frame
//! (`PACKET_AUXDATA`: `tp_vlan_tci`, `tp_vlan_tpid`). A data path puts it back
//! with [`reinsert`] before the frame is parsed, so the policy sees the frame
//! as it was on the wire and VLAN ACLs apply to its real VLAN. When the frame
//! leaves, [`retag`] gives it the tags the egress port must carry (the
//! decision itself is the topology's, see [`crate::Topology::path`]).
//!
//! These are the only changes a data path makes to a frame's bytes. They work
//! in place on a buffer with [`HEADROOM`] free bytes in front of the frame:
//! moving the two MAC addresses (12 bytes) is all a tag costs. Nothing here
//! allocates or panics; a frame too short to hold its MAC addresses is left
//! as it is.
//!
//! ```
//! use palisade_dataplane::vlan::{self, Span, Tag, HEADROOM};
//! use palisade_dataplane::Forward;
//! // An untagged frame received behind HEADROOM free bytes, its VLAN 20 tag stripped by the interface.
//! let mut buf = [0u8; HEADROOM + 18];
//! buf[HEADROOM..HEADROOM + 14].copy_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x06]);
//! let span = vlan::reinsert(&mut buf, Span { start: HEADROOM, len: 18 }, Tag { tpid: 0x8100, tci: 20 }).unwrap();
//! assert_eq!(vlan::outer_tag(span.of(&buf)), Some(Tag { tpid: 0x8100, tci: 20 }));
//! // It leaves an access port untagged again...
//! let out = vlan::retag(&mut buf, span, Forward::Untagged).unwrap();
//! assert_eq!(out.of(&buf)[12..14], [0x08, 0x06]);
//! // ...or a trunk tagged with its VLAN.
//! let out = vlan::retag(&mut buf, out, Forward::Tagged(20)).unwrap();
//! assert_eq!(out.of(&buf)[12..16], [0x81, 0x00, 0x00, 20]);
//! ```

use crate::filter::Forward;

/// 802.1Q (C-tag) TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (S-tag) TPID.
pub const TPID_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ TPID some switches still send.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;
/// Length of one VLAN tag (TPID + TCI).
pub const TAG_LEN: usize = 4;
/// Free bytes a receive buffer keeps in front of the frame: room for one
/// tag, re-inserted on receive or pushed on egress (a frame needs at most
/// one of the two: a pushed tag goes on a frame that arrived untagged).
pub const HEADROOM: usize = TAG_LEN;

/// Offset of the first TPID/ethertype: after destination and source MAC.
const MACS: usize = 12;

/// A VLAN tag: its TPID and TCI (priority, drop eligibility, VLAN id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Tag protocol identifier (0x8100, 0x88a8, ...).
    pub tpid: u16,
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub tci: u16,
}

impl Tag {
    /// The VLAN id (0 for a priority tag).
    ///
    /// ```
    /// assert_eq!(palisade_dataplane::vlan::Tag { tpid: 0x8100, tci: 0xa014 }.vid(), 20);
    /// ```
    pub const fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
}

/// Where a frame sits in its buffer: `buf[start..start + len]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Offset of the frame's first byte.
    pub start: usize,
    /// Frame length in bytes.
    pub len: usize,
}

impl Span {
    /// The frame's bytes in `buf` (empty when the span does not fit: never panics).
    ///
    /// ```
    /// use palisade_dataplane::vlan::Span;
    /// assert_eq!(Span { start: 1, len: 2 }.of(&[0, 1, 2, 3]), &[1, 2]);
    /// assert!(Span { start: 3, len: 2 }.of(&[0, 1, 2, 3]).is_empty());
    /// ```
    pub fn of(self, buf: &[u8]) -> &[u8] {
        self.start
            .checked_add(self.len)
            .and_then(|end| buf.get(self.start..end))
            .unwrap_or_default()
    }
}

fn is_tpid(v: u16) -> bool {
    matches!(v, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

/// The frame's outer VLAN tag, if it carries one in its bytes.
///
/// ```
/// use palisade_dataplane::vlan::{outer_tag, Tag};
/// let mut f = [0u8; 18];
/// f[12..16].copy_from_slice(&[0x88, 0xa8, 0x00, 100]);
/// assert_eq!(outer_tag(&f), Some(Tag { tpid: 0x88a8, tci: 100 }));
/// assert_eq!(outer_tag(&[0u8; 14]), None);
/// ```
pub fn outer_tag(frame: &[u8]) -> Option<Tag> {
    let tpid = u16::from_be_bytes([*frame.get(MACS)?, *frame.get(MACS + 1)?]);
    if !is_tpid(tpid) {
        return None;
    }
    let tci = u16::from_be_bytes([*frame.get(MACS + 2)?, *frame.get(MACS + 3)?]);
    Some(Tag { tpid, tci })
}

/// Puts `tag`, which the receiving interface stripped, back in front of the
/// frame's own ethertype (or inner tag): the frame as it was on the wire.
///
/// Needs [`TAG_LEN`] free bytes before `span.start`; returns the frame's new
/// span, or `None` (buffer unchanged) without that room or when the frame is
/// shorter than its MAC addresses.
pub fn reinsert(buf: &mut [u8], span: Span, tag: Tag) -> Option<Span> {
    let start = span.start.checked_sub(TAG_LEN)?;
    if span.len < MACS || span.of(buf).len() != span.len {
        return None;
    }
    buf.copy_within(span.start..span.start + MACS, start);
    buf[start + MACS..start + MACS + 2].copy_from_slice(&tag.tpid.to_be_bytes());
    buf[start + MACS + 2..start + MACS + 4].copy_from_slice(&tag.tci.to_be_bytes());
    Some(Span {
        start,
        len: span.len + TAG_LEN,
    })
}

/// Gives the frame at `span` the outer tagging `forward` asks for, in place:
///
/// * as received ([`Forward::AsReceived`]): unchanged;
/// * untagged ([`Forward::Untagged`]): its outer tag removed (a QinQ frame keeps its inner tag);
/// * tagged ([`Forward::Tagged`]): its outer tag's VLAN id set (priority, DEI
///   and TPID kept), or an 802.1Q tag pushed onto an untagged frame (needs
///   [`TAG_LEN`] free bytes before it);
/// * dropped ([`Forward::Drop`]): `None`.
///
/// Returns the span to send, or `None` when the frame is not to be sent or a
/// tag cannot be pushed for lack of room in front. A frame shorter than its
/// MAC addresses has no place for a tag and is returned unchanged.
pub fn retag(buf: &mut [u8], span: Span, forward: Forward) -> Option<Span> {
    if span.of(buf).len() != span.len {
        return None;
    }
    let frame_tag = outer_tag(span.of(buf));
    match forward {
        Forward::Drop => None,
        Forward::AsReceived => Some(span),
        _ if span.len < MACS => Some(span),
        Forward::Untagged => match frame_tag {
            None => Some(span),
            Some(_) => {
                buf.copy_within(span.start..span.start + MACS, span.start + TAG_LEN);
                Some(Span {
                    start: span.start + TAG_LEN,
                    len: span.len - TAG_LEN,
                })
            }
        },
        Forward::Tagged(vid) => match frame_tag {
            Some(tag) => {
                let tci = (tag.tci & 0xf000) | (vid & 0x0fff);
                let at = span.start + MACS + 2;
                buf[at..at + 2].copy_from_slice(&tci.to_be_bytes());
                Some(span)
            }
            None => reinsert(
                buf,
                span,
                Tag {
                    tpid: TPID_8021Q,
                    tci: vid & 0x0fff,
                },
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    /// `buf` = HEADROOM spare bytes (0xee) + the frame DST SRC `tags...` 0x0800 payload.
    fn framed(tags: &[(u16, u16)], payload: &[u8]) -> (Vec<u8>, Span) {
        let mut buf = vec![0xee; HEADROOM];
        buf.extend_from_slice(&DST);
        buf.extend_from_slice(&SRC);
        for (tpid, tci) in tags {
            buf.extend_from_slice(&tpid.to_be_bytes());
            buf.extend_from_slice(&tci.to_be_bytes());
        }
        buf.extend_from_slice(&[0x08, 0x00]);
        buf.extend_from_slice(payload);
        let len = buf.len() - HEADROOM;
        (buf, Span { start: HEADROOM, len })
    }

    fn bytes(tags: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
        let (buf, span) = framed(tags, payload);
        span.of(&buf).to_vec()
    }

    #[test]
    fn reinsert_restores_the_wire_frame() {
        // A QinQ frame whose S-tag the interface stripped: the C-tag is still in the bytes.
        let (mut buf, span) = framed(&[(TPID_8021Q, 20)], b"payload");
        let span = reinsert(
            &mut buf,
            span,
            Tag {
                tpid: TPID_8021AD,
                tci: 0x2064,
            },
        )
        .unwrap();
        assert_eq!(span.start, 0);
        assert_eq!(
            span.of(&buf),
            bytes(&[(TPID_8021AD, 0x2064), (TPID_8021Q, 20)], b"payload")
        );
        // No room in front, or a runt: refused, nothing written.
        let (mut buf, span) = framed(&[], b"x");
        let before = buf.clone();
        let tight = Span {
            start: 2,
            len: span.len + 2,
        };
        assert_eq!(
            reinsert(
                &mut buf,
                tight,
                Tag {
                    tpid: TPID_8021Q,
                    tci: 1
                }
            ),
            None
        );
        assert_eq!(
            reinsert(
                &mut buf,
                Span {
                    start: HEADROOM,
                    len: 11
                },
                Tag {
                    tpid: TPID_8021Q,
                    tci: 1
                }
            ),
            None
        );
        assert_eq!(
            reinsert(
                &mut buf,
                Span {
                    start: HEADROOM,
                    len: 999
                },
                Tag {
                    tpid: TPID_8021Q,
                    tci: 1
                }
            ),
            None
        );
        assert_eq!(buf, before);
    }

    #[test]
    fn retag_strips_pushes_rewrites_or_keeps() {
        let payload = b"0123456789";
        // Untagged stays untagged; tagged loses its outer tag only.
        let (mut buf, span) = framed(&[], payload);
        let out = retag(&mut buf, span, Forward::Untagged).unwrap();
        assert_eq!(out.of(&buf), bytes(&[], payload));
        let (mut buf, span) = framed(&[(TPID_8021AD, 100), (TPID_8021Q, 20)], payload);
        let out = retag(&mut buf, span, Forward::Untagged).unwrap();
        assert_eq!(out.of(&buf), bytes(&[(TPID_8021Q, 20)], payload));
        // Tagged: pushed onto an untagged frame, set on a tagged one (priority kept), QinQ inner kept.
        let (mut buf, span) = framed(&[], payload);
        let out = retag(&mut buf, span, Forward::Tagged(10)).unwrap();
        assert_eq!(out.of(&buf), bytes(&[(TPID_8021Q, 10)], payload));
        let (mut buf, span) = framed(&[(TPID_8021Q, 0xa000)], payload);
        let out = retag(&mut buf, span, Forward::Tagged(10)).unwrap();
        assert_eq!(out.of(&buf), bytes(&[(TPID_8021Q, 0xa00a)], payload));
        let (mut buf, span) = framed(&[(TPID_8021AD, 100), (TPID_8021Q, 20)], payload);
        let out = retag(&mut buf, span, Forward::Tagged(100)).unwrap();
        assert_eq!(
            out.of(&buf),
            bytes(&[(TPID_8021AD, 100), (TPID_8021Q, 20)], payload)
        );
        // As received: untouched; drop: nothing to send.
        let (mut buf, span) = framed(&[(TPID_8021Q, 7)], payload);
        assert_eq!(retag(&mut buf, span, Forward::AsReceived), Some(span));
        assert_eq!(retag(&mut buf, span, Forward::Drop), None);
        assert_eq!(span.of(&buf), bytes(&[(TPID_8021Q, 7)], payload));
    }

    #[test]
    fn retag_never_panics_on_short_or_misplaced_frames() {
        for len in 0..20 {
            for start in 0..6 {
                for fwd in [
                    Forward::Untagged,
                    Forward::Tagged(5),
                    Forward::AsReceived,
                    Forward::Drop,
                ] {
                    let mut buf = vec![0x81; 24];
                    buf[start.min(23)..].fill(0x81);
                    let _ = retag(&mut buf, Span { start, len }, fwd);
                    let _ = reinsert(&mut buf, Span { start, len }, Tag { tpid: 1, tci: 2 });
                }
            }
        }
        // No room in front of an untagged frame: the tag cannot be pushed.
        let (mut buf, span) = framed(&[], b"x");
        let flush = Span {
            start: 0,
            len: span.len,
        };
        buf.drain(..HEADROOM);
        assert_eq!(retag(&mut buf, flush, Forward::Tagged(3)), None);
    }
}
