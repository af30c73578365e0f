//! Property tests: no input panics; frames built with etherparse's
//! `PacketBuilder` parse back to exactly the fields they were built from;
//! where etherparse's own `SlicedPacket` and our parser both succeed, they
//! agree on the fields both know.

use etherparse::{NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TransportSlice};
use palisade_packet::{parse, parse_general, FlowKey, FragmentState, Present};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Vlan {
    None,
    Single(u16, u16),
    Double(u16, u16, u16),
}

#[derive(Clone, Copy, Debug)]
enum Ip {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp(u16, u16, u16),
    Udp(u16, u16),
    IcmpEcho(u16, u16),
}

const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn vlan() -> impl Strategy<Value = Vlan> {
    prop_oneof![
        Just(Vlan::None),
        (0..3u16, 0..4096u16).prop_map(|(t, v)| Vlan::Single(TPIDS[t as usize], v)),
        (0..3u16, 0..4096u16, 0..4096u16).prop_map(|(t, o, i)| Vlan::Double(TPIDS[t as usize], o, i)),
    ]
}

fn ip() -> impl Strategy<Value = Ip> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| Ip::V4(s, d)),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| Ip::V6(s, d)),
    ]
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), 0..0x200u16).prop_map(|(s, d, f)| L4::Tcp(s, d, f)),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| L4::Udp(s, d)),
        (any::<u16>(), any::<u16>()).prop_map(|(i, s)| L4::IcmpEcho(i, s)),
    ]
}

fn vid(v: u16) -> etherparse::VlanId {
    etherparse::VlanId::try_new(v).unwrap()
}

fn finish(step: PacketBuilderStep<etherparse::IpHeaders>, is_v6: bool, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Tcp(s, d, flags) => {
            let mut t = step.tcp(s, d, 1, 1024);
            // Bits as in FlowKey::tcp_flags: FIN SYN RST PSH ACK URG ECE CWR NS.
            if flags & 0x001 != 0 {
                t = t.fin();
            }
            if flags & 0x002 != 0 {
                t = t.syn();
            }
            if flags & 0x004 != 0 {
                t = t.rst();
            }
            if flags & 0x008 != 0 {
                t = t.psh();
            }
            if flags & 0x010 != 0 {
                t = t.ack(7);
            }
            if flags & 0x020 != 0 {
                t = t.urg(1);
            }
            if flags & 0x040 != 0 {
                t = t.ece();
            }
            if flags & 0x080 != 0 {
                t = t.cwr();
            }
            if flags & 0x100 != 0 {
                t = t.ns();
            }
            t.write(&mut out, payload).unwrap();
        }
        L4::Udp(s, d) => step.udp(s, d).write(&mut out, payload).unwrap(),
        L4::IcmpEcho(id, seq) if is_v6 => step
            .icmpv6_echo_request(id, seq)
            .write(&mut out, payload)
            .unwrap(),
        L4::IcmpEcho(id, seq) => step
            .icmpv4_echo_request(id, seq)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// Builds the frame and the key it must parse to.
fn build(vlan: Vlan, ip: Ip, l4: L4, dscp: u8, payload: &[u8], padding: &[u8]) -> (Vec<u8>, FlowKey) {
    let (src, dst) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let eth = PacketBuilder::ethernet2(src, dst);
    let is_v6 = matches!(ip, Ip::V6(..));
    let step = match (vlan, ip) {
        (Vlan::None, Ip::V4(s, d)) => eth.ipv4(s, d, 64),
        (Vlan::None, Ip::V6(s, d)) => eth.ipv6(s, d, 64),
        (Vlan::Single(_, v), Ip::V4(s, d)) => eth.single_vlan(vid(v)).ipv4(s, d, 64),
        (Vlan::Single(_, v), Ip::V6(s, d)) => eth.single_vlan(vid(v)).ipv6(s, d, 64),
        (Vlan::Double(_, o, i), Ip::V4(s, d)) => eth.double_vlan(vid(o), vid(i)).ipv4(s, d, 64),
        (Vlan::Double(_, o, i), Ip::V6(s, d)) => eth.double_vlan(vid(o), vid(i)).ipv6(s, d, 64),
    };
    let mut frame = finish(step, is_v6, l4, payload);
    // Outer TPID as chosen (the builder writes 0x8100 / 0x88a8), DSCP patched in.
    let l2 = match vlan {
        Vlan::None => 14,
        Vlan::Single(t, _) | Vlan::Double(t, _, _) => {
            frame[12..14].copy_from_slice(&t.to_be_bytes());
            if matches!(vlan, Vlan::Single(..)) {
                18
            } else {
                22
            }
        }
    };
    if is_v6 {
        let tc = dscp << 2;
        frame[l2] = 0x60 | (tc >> 4);
        frame[l2 + 1] = (frame[l2 + 1] & 0x0f) | (tc << 4);
    } else {
        frame[l2 + 1] = dscp << 2;
    }
    frame.extend_from_slice(padding);

    let mut k = match ip {
        Ip::V4(s, d) => FlowKey::new().with_ipv4(s, d),
        Ip::V6(s, d) => FlowKey::new().with_ipv6(u128::from_be_bytes(s), u128::from_be_bytes(d)),
    }
    .with_dscp(dscp);
    match vlan {
        Vlan::None => {}
        Vlan::Single(_, v) => k = k.with_vlan(v),
        Vlan::Double(_, o, i) => {
            k = k.with_vlan(o);
            k.inner_vlan = i;
            k.vlan_count = 2;
        }
    }
    k = match l4 {
        L4::Tcp(s, d, f) => k.with_proto(6).with_ports(s, d).with_tcp_flags(f),
        L4::Udp(s, d) => k.with_proto(17).with_ports(s, d),
        L4::IcmpEcho(..) if is_v6 => k.with_proto(58).with_icmp(128, 0),
        L4::IcmpEcho(..) => k.with_proto(1).with_icmp(8, 0),
    };
    (frame, k)
}

/// Where etherparse's `SlicedPacket` and our parser both accept a frame,
/// they must agree on VLAN ids, addresses and the L4 fields.
fn agree_with_etherparse(frame: &[u8]) -> Result<(), TestCaseError> {
    let ours = parse(frame);
    // The fast path never changes the answer of the general walker.
    prop_assert_eq!(ours, parse_general(frame));
    let Ok(theirs) = SlicedPacket::from_ethernet(frame) else {
        return Ok(());
    };
    if !ours.status.is_ok() {
        return Ok(());
    }
    let vids: Vec<u16> = theirs
        .link_exts
        .iter()
        .filter_map(|e| match e {
            etherparse::LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
            _ => None,
        })
        .collect();
    if vids.len() == usize::from(ours.vlan_count) && vids.len() < 3 {
        if let Some(&o) = vids.first() {
            prop_assert_eq!(o, ours.outer_vlan);
        }
        if let Some(&i) = vids.get(1) {
            prop_assert_eq!(i, ours.inner_vlan);
        }
    } else {
        // Different tag counts: etherparse stopped elsewhere; nothing else to compare.
        return Ok(());
    }
    let is_frag = match &theirs.net {
        Some(NetSlice::Ipv4(v4)) => {
            prop_assert_eq!(ours.ip_version, 4);
            prop_assert_eq!(ours.src_ip, u32::from_be_bytes(v4.header().source()) as u128);
            prop_assert_eq!(ours.dst_ip, u32::from_be_bytes(v4.header().destination()) as u128);
            prop_assert_eq!(ours.l4_proto, v4.payload().ip_number.0);
            v4.payload().fragmented
        }
        Some(NetSlice::Ipv6(v6)) => {
            prop_assert_eq!(ours.ip_version, 6);
            prop_assert_eq!(ours.src_ip, u128::from_be_bytes(v6.header().source()));
            prop_assert_eq!(ours.dst_ip, u128::from_be_bytes(v6.header().destination()));
            v6.payload().fragmented
        }
        _ => return Ok(()),
    };
    prop_assert_eq!(is_frag, ours.fragment != FragmentState::None);
    match &theirs.transport {
        Some(TransportSlice::Tcp(t)) => {
            prop_assert_eq!(ours.l4_proto, 6);
            prop_assert_eq!(ours.ports(), Some((t.source_port(), t.destination_port())));
        }
        Some(TransportSlice::Udp(u)) => {
            prop_assert_eq!(ours.l4_proto, 17);
            prop_assert_eq!(ours.ports(), Some((u.source_port(), u.destination_port())));
        }
        Some(TransportSlice::Icmpv4(i)) => {
            prop_assert_eq!(ours.icmp(), Some((i.type_u8(), i.code_u8())));
        }
        Some(TransportSlice::Icmpv6(i)) => {
            prop_assert_eq!(ours.icmp(), Some((i.type_u8(), i.code_u8())));
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let k = parse(&bytes);
        prop_assert_eq!(k, parse_general(&bytes));
        // Absent fields are zero, as the key's docs promise.
        if !k.present.has(Present::PORTS) {
            prop_assert_eq!((k.src_port, k.dst_port), (0, 0));
        }
        if k.fragment == FragmentState::NonFirst {
            prop_assert!(k.ports().is_none());
        }
    }

    #[test]
    fn ethernet_prefixed_bytes_never_panic(
        tags in proptest::collection::vec((0..3usize, any::<u16>()), 0..3),
        ty in prop_oneof![Just(0x0800u16), Just(0x86dd), any::<u16>()],
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut f = vec![0u8; 12];
        for (t, tci) in &tags {
            f.extend_from_slice(&TPIDS[*t].to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(&rest);
        let k = parse(&f);
        prop_assert_eq!(usize::from(k.vlan_count), tags.len());
        agree_with_etherparse(&f)?;
    }

    #[test]
    fn built_frames_parse_back_exactly(
        vlan in vlan(), ip in ip(), l4 in l4(), dscp in 0..64u8,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        padding in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let (frame, want) = build(vlan, ip, l4, dscp, &payload, &padding);
        prop_assert_eq!(parse(&frame), want);
        agree_with_etherparse(&frame)?;
    }

    #[test]
    fn mutated_built_frames_never_panic_and_agree(
        vlan in vlan(), ip in ip(), l4 in l4(),
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut frame, _) = build(vlan, ip, l4, 0, &payload, &[]);
        for (i, b) in &edits {
            let i = i.index(frame.len());
            frame[i] = *b;
        }
        agree_with_etherparse(&frame)?;
        let n = cut.index(frame.len() + 1);
        agree_with_etherparse(&frame[..n])?;
    }
}

/// The same cross-check over every frame of the shared captures.
#[test]
fn shared_captures_agree_with_etherparse() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/pcaps"));
    if !dir.is_dir() {
        println!("SKIPPED: ../shared/pcaps not present");
        return;
    }
    let mut frames = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let (mut rem, parser) = pcap_file::pcap::PcapParser::new(&data).unwrap();
        let mut n = 0;
        while !rem.is_empty() {
            let (r, pkt) = parser.next_raw_packet(rem).unwrap();
            n += 1;
            if let Err(e) = agree_with_etherparse(&pkt.data) {
                panic!("{} frame {n}: {e}", path.display());
            }
            frames += 1;
            rem = r;
        }
    }
    assert!(frames > 0);
}
