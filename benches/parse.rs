//! Frame parsing: `palisade_packet::parse` against etherparse's
//! `SlicedPacket::from_ethernet` on the same realistic mix of frames.
//!
//! The mix (64 frames, fixed): 50% IPv4/TCP, 20% IPv4/UDP, 15% IPv6/TCP,
//! 10% 802.1Q IPv4/TCP, 5% QinQ IPv6/UDP, payloads 0-512 bytes. Each
//! iteration parses all 64 frames; criterion's throughput line gives frames
//! per second, and median / 64 is the time per frame.
//!
//! Two groups time the same work: `parse_mix64` with criterion's wall
//! clock, and `parse_mix64_cpu` with the bench thread's own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which does not count the time the thread
//! waits for a core on a shared, loaded machine.
//!
//! Run: `cargo bench -p palisade-benches --bench parse`.

use std::hint::black_box;

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};
use palisade_benches::ThreadCpuTime;

fn frames() -> Vec<Vec<u8>> {
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let v4 = |i: u8| ([10, 0, i, 5], [198, 51, 100, i]);
    let v6 = |i: u8| {
        let mut s = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut d = s;
        s[15] = i;
        d[14] = 0xff;
        d[15] = i;
        (s, d)
    };
    let mut out = Vec::new();
    for i in 0..64u8 {
        let payload = vec![0xa5u8; (usize::from(i) * 37) % 513];
        let port = 40000 + u16::from(i);
        let mut f = Vec::new();
        let b = PacketBuilder::ethernet2(mac.0, mac.1);
        match i % 20 {
            0..=9 => b
                .ipv4(v4(i).0, v4(i).1, 64)
                .tcp(port, 443, 1, 1024)
                .ack(1)
                .write(&mut f, &payload),
            10..=13 => b.ipv4(v4(i).0, v4(i).1, 64).udp(port, 53).write(&mut f, &payload),
            14..=16 => b
                .ipv6(v6(i).0, v6(i).1, 64)
                .tcp(port, 443, 1, 1024)
                .syn()
                .write(&mut f, &payload),
            17 | 18 => b
                .single_vlan(VlanId::try_new(20).unwrap())
                .ipv4(v4(i).0, v4(i).1, 64)
                .tcp(port, 22, 1, 1024)
                .write(&mut f, &payload),
            _ => b
                .double_vlan(VlanId::try_new(100).unwrap(), VlanId::try_new(20).unwrap())
                .ipv6(v6(i).0, v6(i).1, 64)
                .udp(port, 4789)
                .write(&mut f, &payload),
        }
        .unwrap();
        out.push(f);
    }
    out
}

/// The fields our key has, pulled out of etherparse's slices, so both sides
/// do comparable work.
fn etherparse_key(frame: &[u8]) -> (u128, u128, u16, u16, u8) {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return (0, 0, 0, 0, 0);
    };
    let (src, dst, proto) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => (
            u32::from_be_bytes(v4.header().source()) as u128,
            u32::from_be_bytes(v4.header().destination()) as u128,
            v4.payload().ip_number.0,
        ),
        Some(NetSlice::Ipv6(v6)) => (
            u128::from_be_bytes(v6.header().source()),
            u128::from_be_bytes(v6.header().destination()),
            v6.payload().ip_number.0,
        ),
        _ => (0, 0, 0),
    };
    let (sp, dp) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    (src, dst, sp, dp, proto)
}

fn bench_parse(c: &mut Criterion) {
    run_group(c, "parse_mix64");
}

fn bench_parse_cpu(c: &mut Criterion<ThreadCpuTime>) {
    run_group(c, "parse_mix64_cpu");
}

fn run_group<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let frames = frames();
    // Both parsers must see the same packets before we time them.
    for f in &frames {
        let k = palisade_packet::parse(f);
        assert!(k.status.is_ok());
        let (src, dst, sp, dp, proto) = etherparse_key(f);
        assert_eq!(
            (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.l4_proto),
            (src, dst, sp, dp, proto)
        );
    }
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("palisade_parse", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(palisade_packet::parse(black_box(f)));
            }
        })
    });
    // The same walker without the fast path for common shapes: does it pay?
    g.bench_function("palisade_general_only", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(palisade_packet::parse_general(black_box(f)));
            }
        })
    });
    g.bench_function("etherparse_sliced", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(etherparse_key(black_box(f)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_parse_cpu
}
criterion_main!(benches, benches_cpu);
