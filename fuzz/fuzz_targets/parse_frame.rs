//! Fuzz `palisade_packet::parse`: any bytes, no panic, and the key's
//! invariants hold (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run parse_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packet::{parse, parse_general, FragmentState, Layer, ParseStatus, Present};

fuzz_target!(|data: &[u8]| {
    let k = parse(data);
    // The fast path for common shapes never changes the general walker's answer.
    assert_eq!(k, parse_general(data));
    let p = k.present;
    // Non-first fragments never carry L4 fields.
    if k.fragment == FragmentState::NonFirst {
        assert!(!p.has(Present::PORTS) && !p.has(Present::ICMP) && !p.has(Present::TCP_FLAGS));
    }
    // A tiny first fragment is never ok.
    if p.has(Present::TINY_FIRST_FRAGMENT) {
        assert_eq!(k.status, ParseStatus::Malformed(Layer::Fragment));
        assert_eq!(k.fragment, FragmentState::First);
    }
    // An ok TCP/UDP/ICMP key that is not a non-first fragment has its L4 fields.
    if k.status.is_ok() && p.has(Present::L4_PROTO) && k.fragment != FragmentState::NonFirst {
        match k.l4_proto {
            6 => assert!(p.has(Present::PORTS | Present::TCP_FLAGS)),
            17 => assert!(p.has(Present::PORTS)),
            1 | 58 => assert!(p.has(Present::ICMP)),
            _ => {}
        }
    }
    // Absent fields are zero.
    if !p.has(Present::PORTS) {
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }
    if !p.has(Present::ICMP) {
        assert_eq!((k.icmp_type, k.icmp_code), (0, 0));
    }
    if !p.has(Present::ADDRS) {
        assert_eq!((k.src_ip, k.dst_ip), (0, 0));
    }
    assert!(k.tcp_flags <= 0x0fff);
    assert!(usize::from(k.vlan_count) * 4 + 14 <= data.len().max(14));
});
