//! Arbitrary frame sequences through one flow table: nothing panics, the
//! table never holds more than `max` entries, its counters add up, every
//! entry it lists is one it counts, a flow just opened is established, and
//! a stale flow's opening frame is a `new` frame (unless an earlier frame of
//! the batch had the flow cut).
//!
//! Input layout: byte 0 = max - 1 (mod 64), bytes 1-6 = the six timeouts
//! (1-8 s); then operations until the bytes run out, each a byte and its
//! arguments: a batch of frames (built from fields, or raw bytes, each with a
//! keep-state bit), a clock step, a sweep, a new generation (stale flows are
//! then kept or cut as the next byte says). Every read past the end yields
//! zero, so any input is a valid case.
//!
//! Shared by the fuzz target `flows` and the replay test
//! crates/engine/tests/fuzz_corpus_flows.rs, so both check the same things.

use palisade_engine::flow::{Clock, FlowTable, ManualClock, Moment, Origin, Seen, Timeouts};
use palisade_packet::{FlowKey, FlowState};
use palisade_rules::FlowTimeouts;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const V4: [[u8; 4]; 3] = [[198, 18, 0, 1], [198, 18, 0, 2], [198, 19, 0, 3]];
const V6: [[u8; 16]; 2] = [
    [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
];

/// An IPv4 or IPv6 packet from `a` to `b` (indices into the address tables) carrying `l4`.
fn ip(v6: bool, a: usize, b: usize, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&V6[a % 2]);
        p.extend_from_slice(&V6[b % 2]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&V4[a % 3]);
        p.extend_from_slice(&V4[b % 3]);
    }
    p.extend_from_slice(l4);
    p
}

fn ether(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if ip.first().is_some_and(|b| b >> 4 == 6) {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(ip);
    f
}

/// A frame built from fields (a small space, so flows meet), or raw bytes.
fn frame(inp: &mut Input<'_>) -> Vec<u8> {
    let what = inp.u8();
    if what & 0x80 != 0 {
        let n = inp.u8() as usize % 96;
        return inp.bytes(n);
    }
    let v6 = what & 0x40 != 0;
    let hosts = inp.u8();
    let (a, b) = (hosts as usize & 3, (hosts >> 2) as usize & 3);
    let ports = inp.u8();
    let (sp, dp) = (u16::from(ports & 3) + 1, u16::from(ports >> 2 & 3) + 1);
    let packet = |proto: u8, l4: &[u8]| ip(v6, a, b, proto, l4);
    let icmp = if v6 { 58 } else { 1 };
    let l4 = match what & 7 {
        0 | 1 => {
            let flags = inp.u8();
            let mut t = vec![0u8; 20];
            t[..2].copy_from_slice(&sp.to_be_bytes());
            t[2..4].copy_from_slice(&dp.to_be_bytes());
            t[12] = 0x50;
            t[13] = flags;
            packet(6, &t)
        }
        2 => {
            let mut u = vec![0u8; 8];
            u[..2].copy_from_slice(&sp.to_be_bytes());
            u[2..4].copy_from_slice(&dp.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            packet(17, &u)
        }
        3 => {
            // Echo request or reply, identifier 1-4.
            let t = match (v6, ports & 0x10 != 0) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            packet(icmp, &[t, 0, 0, 0, 0, (ports & 3) + 1, 0, 1])
        }
        4 => {
            // An error quoting a UDP datagram b -> a (so it goes back to its sender).
            let mut u = vec![0u8; 8];
            u[..2].copy_from_slice(&dp.to_be_bytes());
            u[2..4].copy_from_slice(&sp.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            let quoted = ip(v6, b, a, 17, &u);
            let mut e = vec![if v6 { 1 } else { 3 }, 3, 0, 0, 0, 0, 0, 0];
            e.extend_from_slice(&quoted);
            packet(icmp, &e)
        }
        _ => packet(47, &[0; 4]),
    };
    ether(&l4)
}

pub fn run(data: &[u8]) {
    let mut inp = Input(data);
    let max = u32::from(inp.u8() % 64) + 1;
    let mut t = || u32::from(inp.u8() % 8) + 1;
    let timeouts = FlowTimeouts {
        tcp_handshake: t(),
        tcp_established: t(),
        tcp_closing: t(),
        udp: t(),
        icmp: t(),
        other: t(),
    };
    let timeouts = Timeouts::from(&timeouts);
    let table = FlowTable::new(max);
    let clock = ManualClock::new();
    let mut generation = 1u32;
    while !inp.is_empty() {
        let m = Moment::new(clock.tick(), generation, &timeouts);
        match inp.u8() % 8 {
            0..=4 => {
                let n = inp.u8() as usize % 16 + 1;
                let frames: Vec<Vec<u8>> = (0..n).map(|_| frame(&mut inp)).collect();
                let keep: Vec<bool> = (0..n).map(|_| inp.u8() & 1 != 0).collect();
                let keys: Vec<FlowKey> = frames.iter().map(|f| palisade_packet::parse(f)).collect();
                let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                let mut seen = vec![Seen::default(); n];
                table.lookup_batch(&keys, &slices, &m, &mut seen);
                let cut_stale = inp.u8();
                for (i, s) in seen.iter().enumerate() {
                    if s.is_stale() {
                        // None: an earlier frame of the same flow in this batch had it cut.
                        let Some(opening) = table.opening(s) else {
                            continue;
                        };
                        assert_eq!(opening.key.flow_state, FlowState::New);
                        assert!(opening.key.status.is_ok());
                        if cut_stale >> (i % 8) & 1 != 0 {
                            table.cut(s);
                        } else {
                            table.mark_checked(s, generation);
                        }
                    }
                }
                for (i, ((s, k), keep)) in seen.iter().zip(&keys).zip(&keep).enumerate() {
                    if !*keep || s.state != FlowState::New {
                        continue;
                    }
                    if table.create(s, k, &Origin::default(), &m).is_ok() {
                        // A flow just opened is established (nothing expires without time passing).
                        let mut again = [Seen::default()];
                        table.lookup_batch(&keys[i..=i], &slices[i..=i], &m, &mut again);
                        assert_eq!(again[0].state, FlowState::Established, "{s:?}");
                    }
                }
            }
            5 => clock.advance_ms(u64::from(inp.u16()) * 4),
            6 => {
                table.sweep(&m, inp.u8() as usize);
            }
            _ => generation = generation.wrapping_add(1),
        }
        let st = table.stats();
        assert!(st.active <= u64::from(max), "{st:?}");
        assert_eq!(st.max, u64::from(max));
        assert_eq!(st.created, st.active + st.expired + st.cut);
        assert_eq!(table.entries(clock.tick()).len() as u64, st.active);
    }
}
