//! Zero-copy Ethernet frame parsing into a fixed-size, `Copy` [`FlowKey`].
//!
//! Every verdict Palisade gives starts here, so this crate is written to be
//! trusted: it is `#![no_std]`, never allocates, and never panics on any
//! input. A frame that cannot be parsed far enough still yields a key whose
//! [`ParseStatus`] says which layer stopped the parse; the policy gives every
//! key that is not [`ParseStatus::Ok`] the configured `malformed` verdict.
//!
//! ```
//! use palisade_packet::{parse, FragmentState, ParseStatus};
//! // Ethernet, one 802.1Q tag (VID 20), IPv4 192.168.20.7 -> 198.51.100.7, TCP 40000 -> 443 SYN.
//! let frame: [u8; 58] = [
//!     0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00, // eth + tag
//!     0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 168, 20, 7, 198, 51, 100, 7, // IPv4
//!     0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
//! ];
//! let key = parse(&frame);
//! assert_eq!(key.status, ParseStatus::Ok);
//! assert_eq!((key.vlan_count, key.outer_vlan), (1, 20));
//! assert_eq!(key.ports(), Some((40000, 443)));
//! assert_eq!(key.tcp_flags, 0x002);
//! assert_eq!(key.fragment, FragmentState::None);
//! ```
//!
//! # What [`parse`] walks
//!
//! 1. **Ethernet.** Fewer than 14 bytes: `Truncated(Ethernet)`.
//! 2. **VLAN tags.** While the type is 0x8100, 0x88a8 or 0x9100 a 4-byte tag
//!    is read; the first VID is `outer_vlan`, the second `inner_vlan`, all are
//!    counted in `vlan_count`. A priority tag (VID 0) is a tag. A tag cut by
//!    the frame end: `Truncated(Vlan)`.
//! 3. **Type.** A value up to 1500 is an 802.3 length: no ethertype, parse
//!    ends `Ok`. Any ethertype other than IPv4/IPv6 (ARP, MPLS, PPPoE, ...)
//!    is recorded and the parse ends `Ok`; nothing is looked up inside it.
//! 4. **IPv4.** The version nibble is always recorded; a version other than 4
//!    is `Malformed(Ipv4)`. Fewer than 20 bytes: `Truncated(Ipv4)`. IHL < 5 or
//!    a total length smaller than the header (e.g. 0 from TSO captures):
//!    `Malformed(Ipv4)` with no addresses. Options must form a well-built
//!    type-length list (else `Malformed(Ipv4)`, no L4); their values are not
//!    interpreted. Options cut by the frame end: `Truncated(Ipv4)`.
//! 5. **IPv6.** Same for the version and the 40-byte header
//!    (`Malformed(Ipv6)` / `Truncated(Ipv6)`). Extension headers are walked:
//!    Hop-by-Hop (0), Routing (43), Destination Options (60), Authentication
//!    Header (51, length in 4-byte units) and Fragment (44). Any other next
//!    header (ESP 50, No Next Header 59, Mobility 135, IPv4/IPv6 tunnels ...)
//!    ends the chain and is `l4_proto`. (The tshark truth files stop at AH
//!    and report 51; the key walks it so rules see the protected protocol.)
//!    The walk is bounded by the payload, so a chain of hundreds of headers
//!    ends; a header cut short: `Truncated`/`Malformed(Ipv6Extension)`.
//! 6. **Length bounds.** L4 is bounded by the IP length field (IPv4 Total
//!    Length, IPv6 Payload Length), so Ethernet padding and trailers are never
//!    read as headers. An IPv6 payload length of 0 with a Hop-by-Hop header
//!    (jumbogram) is bounded by the frame. If the length field claims more
//!    bytes than the frame holds, the headers that are present are still
//!    read, and the status is `Truncated(Ipv4/Ipv6)` unless a header was cut,
//!    which is then named instead.
//! 7. **Fragments.** IPv4 MF/offset or the first IPv6 Fragment header give
//!    `fragment` (offset > 0: non-first, else MF: first, else none),
//!    `frag_offset` in bytes and `more_fragments`. An IPv6 atomic fragment
//!    (offset 0, M 0) is not a fragment and the walk continues. A non-first
//!    fragment ends the parse `Ok` with `l4_proto` but never ports, ICMP or
//!    flags. A first fragment whose header chain or L4 header is cut by the
//!    fragment's end (a tiny-fragment attack) is `Malformed(Fragment)` with
//!    [`Present::TINY_FIRST_FRAGMENT`]. A later Fragment header with offset
//!    > 0 inside a first/atomic fragment is `Malformed(Fragment)`.
//! 8. **L4** (only right after the outer IP header chain, so tunnels and
//!    ICMP errors never leak inner values): TCP ports (4 bytes) and flags
//!    (14 bytes) are recorded as soon as they are present; the header needs
//!    20 bytes and a data offset 5..=available. UDP needs 8 bytes and a
//!    length field >= 8 (0 allowed for IPv6 jumbograms) that fits the IP
//!    payload unless the packet is a fragment. ICMP needs 8 bytes, ICMPv6 4;
//!    type and code are recorded from 2 bytes on. Other protocols are
//!    recorded in `l4_proto` only.
//!
//! A straight-line fast path handles the common shapes first (untagged or one
//! 802.1Q tag, IPv4 without options or fragmentation or IPv6 without
//! extension headers, then a complete TCP or UDP header) and hands anything
//! else to the general walker above; [`parse_general`] is the walker alone,
//! and the tests and fuzz target check that both always give the same key.
//!
//! A header that needs more bytes than are present is `Truncated(layer)` when
//! the frame ended early, and `Malformed(layer)` when the IP length field
//! ended it. Fields read before the stop stay in the key (useful for
//! `palisade inspect`), but only an `Ok` key is ever classified by rules.
//! Checksums are not verified.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod display;
mod flow_state;
mod icmp;
mod key;
mod parse;

pub use display::{CsvRow, CSV_HEADER};
pub use flow_state::{FlowState, FlowStates};
pub use icmp::{icmp_message, IcmpKind, IcmpMessage, Quoted};
pub use key::{FlowKey, FragmentState, Layer, ParseStatus, Present};
pub use parse::{parse, parse_general};
