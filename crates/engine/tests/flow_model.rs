//! The flow table against a small independent model.
//!
//! The model is a map from a flow's two endpoints (sorted) to its opener,
//! TCP phase and last-seen time, written from DESIGN.md's definitions
//! (established, related, new, invalid; a reply is the reversed key; TCP
//! SYN / SYN-ACK / ACK, FIN both ways, RST; idle timeouts per protocol and
//! phase; a full table refuses; past two thirds full, timeouts shrink in
//! proportion). It reads the frame descriptions, not the frames: the table
//! gets the bytes etherparse writes, parsed by the data path's parser.
//! Random sequences of batches, clock steps and sweeps must give the same
//! state for every frame, the same counters after every step, and the same
//! entries at the end.

#[allow(dead_code)]
#[path = "common/frames.rs"]
mod frames;

use std::collections::HashMap;

use frames::{Addr, Spec, ACK, FIN, PSH, RST, SYN};
use palisade_engine::flow::{Clock, FlowTable, ManualClock, Moment, Origin, Seen, TcpPhase, Tick, Timeouts};
use palisade_packet::FlowState;
use palisade_rules::FlowTimeouts;
use proptest::prelude::*;

const V4: [Addr; 3] = [
    Addr::V4([198, 18, 0, 1]),
    Addr::V4([198, 18, 0, 2]),
    Addr::V4([198, 19, 0, 3]),
];
const V6: [Addr; 2] = [
    Addr::V6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    Addr::V6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
];

/// Short timeouts, so that a few clock steps cross them.
const TIMEOUTS: FlowTimeouts = FlowTimeouts {
    tcp_handshake: 3,
    tcp_established: 20,
    tcp_closing: 2,
    udp: 5,
    icmp: 2,
    other: 4,
};

// ---------------------------------------------------------------- the model

type Endpoint = (u128, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MKey {
    v6: bool,
    proto: u8,
    lo: Endpoint,
    hi: Endpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NotTcp,
    SynSent,
    SynReceived,
    Established,
    Closing,
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct MFlow {
    opener: Endpoint,
    phase: Phase,
    fin_opener: bool,
    fin_responder: bool,
    last: u32,
}

/// What a frame is to the model.
enum MFrame {
    Fixed(FlowState),
    Flow {
        key: MKey,
        from: Endpoint,
        opens: bool,
        tcp_flags: Option<u16>,
    },
    Error {
        quoted: MKey,
        sender_ok: bool,
    },
}

fn endpoint(a: Addr, port: u16) -> Endpoint {
    (a.value(), port)
}

fn mkey(v6: bool, proto: u8, x: Endpoint, y: Endpoint) -> MKey {
    MKey {
        v6,
        proto,
        lo: x.min(y),
        hi: x.max(y),
    }
}

/// The flow a keyable description belongs to and the endpoint it comes from.
fn flow_of(spec: &Spec) -> Option<(MKey, Endpoint)> {
    let icmp = |v6: bool| if v6 { 58 } else { 1 };
    Some(match *spec {
        Spec::Tcp {
            from,
            to,
            sport,
            dport,
            ..
        } => {
            let f = endpoint(from, sport);
            (mkey(from.is_v6(), 6, f, endpoint(to, dport)), f)
        }
        Spec::Udp {
            from,
            to,
            sport,
            dport,
        } => {
            let f = endpoint(from, sport);
            (mkey(from.is_v6(), 17, f, endpoint(to, dport)), f)
        }
        Spec::Echo { from, to, id, .. } => {
            let f = endpoint(from, id);
            (mkey(from.is_v6(), icmp(from.is_v6()), f, endpoint(to, id)), f)
        }
        Spec::Gre { from, to } => {
            let f = endpoint(from, 0);
            (mkey(from.is_v6(), 47, f, endpoint(to, 0)), f)
        }
        Spec::Unreachable { .. } | Spec::Arp => return None,
    })
}

fn describe(spec: &Spec) -> MFrame {
    match spec {
        Spec::Arp => MFrame::Fixed(FlowState::Untracked),
        Spec::Unreachable { to, quoted, .. } => match (flow_of(quoted), quoted.as_ref()) {
            (Some((key, from)), _) => MFrame::Error {
                quoted: key,
                sender_ok: from.0 == to.value(),
            },
            _ => MFrame::Fixed(FlowState::Invalid),
        },
        _ => {
            let (key, from) = flow_of(spec).unwrap();
            let (opens, tcp_flags) = match *spec {
                Spec::Tcp { flags, .. } => (flags & SYN != 0 && flags & (ACK | RST | FIN) == 0, Some(flags)),
                Spec::Echo { request, .. } => (request, None),
                _ => (true, None),
            };
            MFrame::Flow {
                key,
                from,
                opens,
                tcp_flags,
            }
        }
    }
}

struct Model {
    max: usize,
    flows: HashMap<MKey, MFlow>,
    t: Timeouts16,
    created: u64,
    expired: u64,
    refused: u64,
}

/// The timeouts in ticks, by the definition of a tick.
struct Timeouts16 {
    handshake: u32,
    established: u32,
    closing: u32,
    udp: u32,
    icmp: u32,
    other: u32,
}

impl Model {
    fn new(max: usize) -> Self {
        let s = Tick::span_of_secs;
        Model {
            max,
            flows: HashMap::new(),
            t: Timeouts16 {
                handshake: s(TIMEOUTS.tcp_handshake),
                established: s(TIMEOUTS.tcp_established),
                closing: s(TIMEOUTS.tcp_closing),
                udp: s(TIMEOUTS.udp),
                icmp: s(TIMEOUTS.icmp),
                other: s(TIMEOUTS.other),
            },
            created: 0,
            expired: 0,
            refused: 0,
        }
    }

    /// The fraction of its timeout a flow may idle, in 1/65536: all of it up
    /// to two thirds of max, then linearly less, half at max.
    fn scale(&self) -> u64 {
        let (n, max) = (self.flows.len() as f64, self.max as f64);
        let (start, end) = ((self.max * 2 / 3) as f64, (self.max * 4 / 3) as f64);
        if n <= start || end <= start {
            1 << 16
        } else {
            (((end - n) / (end - start)) * 65536.0).floor().max(0.0) as u64
        }
        .min(if max > 0.0 { 1 << 16 } else { 0 })
    }

    fn timeout(&self, key: &MKey, f: &MFlow) -> u32 {
        match key.proto {
            6 => match f.phase {
                Phase::Established => self.t.established,
                Phase::Closing | Phase::Closed => self.t.closing,
                _ => self.t.handshake,
            },
            17 => self.t.udp,
            1 | 58 => self.t.icmp,
            _ => self.t.other,
        }
    }

    fn is_expired(&self, key: &MKey, f: &MFlow, now: u32, scale: u64) -> bool {
        (now - f.last) as u64 > (self.timeout(key, f) as u64 * scale) >> 16
    }

    /// One batch: every frame's state (and for established ones, whether it
    /// is a reply), then the flows opened by the new frames marked `keep`.
    fn batch(&mut self, frames: &[(Spec, bool)], now: u32) -> Vec<(FlowState, bool)> {
        let scale = self.scale();
        let mut out = Vec::new();
        let mut to_open = Vec::new();
        for (spec, keep) in frames {
            let r = match describe(spec) {
                MFrame::Fixed(s) => (s, false),
                MFrame::Error { quoted, sender_ok } => {
                    let live = self
                        .flows
                        .get(&quoted)
                        .is_some_and(|f| !self.is_expired(&quoted, f, now, scale));
                    (
                        if live && sender_ok {
                            FlowState::Related
                        } else {
                            FlowState::Invalid
                        },
                        false,
                    )
                }
                MFrame::Flow {
                    key,
                    from,
                    opens,
                    tcp_flags,
                } => {
                    let mut gone = false;
                    if let Some(f) = self.flows.get(&key).copied() {
                        let reopen = f.phase == Phase::Closed
                            && tcp_flags.is_some_and(|x| x & SYN != 0 && x & (ACK | RST | FIN) == 0);
                        if self.is_expired(&key, &f, now, scale) || reopen {
                            self.flows.remove(&key);
                            self.expired += 1;
                            gone = true;
                        }
                    }
                    match self.flows.get_mut(&key) {
                        Some(f) if !gone => {
                            let reply = from != f.opener;
                            if let Some(flags) = tcp_flags {
                                tcp_step(f, flags, reply);
                            }
                            f.last = now;
                            (FlowState::Established, reply)
                        }
                        _ => {
                            if opens && *keep {
                                to_open.push((key, from, tcp_flags.is_some()));
                            }
                            (if opens { FlowState::New } else { FlowState::Invalid }, false)
                        }
                    }
                }
            };
            out.push(r);
        }
        for (key, from, tcp) in to_open {
            if self.flows.contains_key(&key) {
                continue;
            }
            if self.flows.len() >= self.max {
                self.sweep(now);
            }
            if self.flows.len() >= self.max {
                self.refused += 1;
                continue;
            }
            let phase = if tcp { Phase::SynSent } else { Phase::NotTcp };
            self.flows.insert(
                key,
                MFlow {
                    opener: from,
                    phase,
                    fin_opener: false,
                    fin_responder: false,
                    last: now,
                },
            );
            self.created += 1;
        }
        out
    }

    fn sweep(&mut self, now: u32) {
        let scale = self.scale();
        let dead: Vec<MKey> = self
            .flows
            .iter()
            .filter(|(k, f)| self.is_expired(k, f, now, scale))
            .map(|(k, _)| *k)
            .collect();
        self.expired += dead.len() as u64;
        for k in dead {
            self.flows.remove(&k);
        }
    }
}

/// TCP, from DESIGN.md: SYN, SYN-ACK, ACK; FIN both ways; RST.
fn tcp_step(f: &mut MFlow, flags: u16, reply: bool) {
    if flags & RST != 0 {
        f.phase = Phase::Closed;
    } else if flags & FIN != 0 {
        if reply {
            f.fin_responder = true;
        } else {
            f.fin_opener = true;
        }
        f.phase = if (f.fin_opener && f.fin_responder) || f.phase == Phase::Closed {
            Phase::Closed
        } else {
            Phase::Closing
        };
    } else if f.phase == Phase::SynSent && reply && flags & SYN != 0 {
        f.phase = Phase::SynReceived;
    } else if f.phase == Phase::SynReceived && !reply && flags & ACK != 0 && flags & SYN == 0 {
        f.phase = Phase::Established;
    }
}

// ---------------------------------------------------------------- inputs

fn pair() -> impl Strategy<Value = (Addr, Addr)> {
    prop_oneof![
        4 => (0..3usize, 1..3usize).prop_map(|(a, d)| (V4[a], V4[(a + d) % 3])),
        1 => prop::bool::ANY.prop_map(|s| if s { (V6[0], V6[1]) } else { (V6[1], V6[0]) }),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![1u16, 2, 53])
}

fn flags() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![
        SYN,
        SYN,
        SYN | ACK,
        ACK,
        ACK,
        PSH | ACK,
        FIN | ACK,
        RST,
        RST | ACK,
        SYN | FIN,
    ])
}

fn flow_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        4 => (pair(), port(), port(), flags()).prop_map(|((from, to), sport, dport, flags)| Spec::Tcp { from, to, sport, dport, flags }),
        3 => (pair(), port(), port()).prop_map(|((from, to), sport, dport)| Spec::Udp { from, to, sport, dport }),
        2 => (pair(), 1u16..3, prop::bool::ANY).prop_map(|((from, to), id, request)| Spec::Echo { from, to, id, request }),
        1 => pair().prop_map(|(from, to)| Spec::Gre { from, to }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        12 => flow_spec(),
        // An error about a datagram, sent to its sender (mostly) or to someone else.
        3 => (flow_spec(), prop::bool::weighted(0.8)).prop_map(|(q, to_sender)| {
            let (qfrom, qto) = match &q {
                Spec::Tcp { from, to, .. } | Spec::Udp { from, to, .. } | Spec::Echo { from, to, .. } | Spec::Gre { from, to } => (*from, *to),
                _ => unreachable!(),
            };
            let to = if to_sender { qfrom } else { qto };
            Spec::Unreachable { from: qto, to, quoted: Box::new(q) }
        }),
        1 => Just(Spec::Arp),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<(Spec, bool)>),
    Advance(u64),
    Sweep,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec((spec(), prop::bool::weighted(0.7)), 1..12).prop_map(Step::Batch),
        3 => prop_oneof![0u64..300, 300u64..4000, Just(2_000), Just(3_000)].prop_map(Step::Advance),
        1 => Just(Step::Sweep),
    ]
}

// ---------------------------------------------------------------- the check

fn phase_of(p: Phase) -> TcpPhase {
    match p {
        Phase::NotTcp => TcpPhase::None,
        Phase::SynSent => TcpPhase::SynSent,
        Phase::SynReceived => TcpPhase::SynReceived,
        Phase::Established => TcpPhase::Established,
        Phase::Closing => TcpPhase::Closing,
        Phase::Closed => TcpPhase::Closed,
    }
}

fn run(max: u32, steps: &[Step]) -> Result<(), TestCaseError> {
    let table = FlowTable::new(max);
    let timeouts = Timeouts::from(&TIMEOUTS);
    let clock = ManualClock::new();
    let mut model = Model::new(max as usize);
    for (n, step) in steps.iter().enumerate() {
        let now = clock.tick();
        let m = Moment::new(now, 1, &timeouts);
        match step {
            Step::Advance(ms) => clock.advance_ms(*ms),
            Step::Sweep => {
                table.sweep(&m, usize::MAX);
                model.sweep(now.0);
            }
            Step::Batch(frames) => {
                let bytes: Vec<Vec<u8>> = frames.iter().map(|(s, _)| s.frame()).collect();
                let keys: Vec<_> = bytes.iter().map(|b| palisade_packet::parse(b)).collect();
                let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                let mut seen = vec![Seen::default(); keys.len()];
                table.lookup_batch(&keys, &slices, &m, &mut seen);
                for ((s, k), (_, keep)) in seen.iter().zip(&keys).zip(frames) {
                    if *keep && s.state == FlowState::New {
                        let _ = table.create(s, k, &Origin::default(), &m);
                    }
                }
                let want = model.batch(frames, now.0);
                for (i, ((s, w), (spec, _))) in seen.iter().zip(&want).zip(frames).enumerate() {
                    prop_assert_eq!(s.state, w.0, "step {} frame {}: {:?}", n, i, spec);
                    prop_assert_eq!(s.is_reply(), w.1, "step {} frame {} reply: {:?}", n, i, spec);
                }
            }
        }
        let st = table.stats();
        prop_assert_eq!(
            (st.active, st.created, st.expired, st.refused),
            (
                model.flows.len() as u64,
                model.created,
                model.expired,
                model.refused
            ),
            "counters after step {}: {:?}",
            n,
            step
        );
        prop_assert!(st.active <= max as u64);
    }
    // The same entries, with the same phases.
    let mut listed: Vec<(u8, u128, u16, u128, u16, &str)> = table
        .entries(clock.tick())
        .iter()
        .map(|e| {
            let k = &e.opening.key;
            let (sp, dp) = k.ports().or(k.icmp().map(|_| (0, 0))).unwrap_or((0, 0));
            (k.l4_proto, k.src_ip, sp, k.dst_ip, dp, e.phase.name())
        })
        .collect();
    let mut want: Vec<_> = model
        .flows
        .iter()
        .map(|(k, f)| {
            let other = if f.opener == k.lo { k.hi } else { k.lo };
            let ports = match k.proto {
                6 | 17 => (f.opener.1, other.1),
                _ => (0, 0),
            };
            (
                k.proto,
                f.opener.0,
                ports.0,
                other.0,
                ports.1,
                phase_of(f.phase).name(),
            )
        })
        .collect();
    listed.sort();
    want.sort();
    prop_assert_eq!(listed, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_table_behaves_as_the_model(max in 1u32..40, steps in prop::collection::vec(step(), 1..60)) {
        run(max, &steps)?;
    }
}

/// The model's own sanity: a LAN-opened TCP flow is established both ways, a reply alone is not.
#[test]
fn model_sanity() {
    let mut m = Model::new(10);
    let syn = Spec::Tcp {
        from: V4[0],
        to: V4[1],
        sport: 1,
        dport: 2,
        flags: SYN,
    };
    let syn_ack = Spec::Tcp {
        from: V4[1],
        to: V4[0],
        sport: 2,
        dport: 1,
        flags: SYN | ACK,
    };
    assert_eq!(
        m.batch(&[(syn_ack.clone(), true)], 0),
        [(FlowState::Invalid, false)]
    );
    assert_eq!(m.batch(&[(syn, true)], 0), [(FlowState::New, false)]);
    assert_eq!(m.batch(&[(syn_ack, false)], 1), [(FlowState::Established, true)]);
    run(
        2,
        &[
            Step::Batch(vec![(
                Spec::Udp {
                    from: V6[0],
                    to: V6[1],
                    sport: 1,
                    dport: 53,
                },
                true,
            )]),
            Step::Advance(6000),
            Step::Sweep,
        ],
    )
    .unwrap();
}
