//! The flow table, scenario by scenario, with frames written by etherparse
//! and an injected clock: TCP phases and their timeouts, UDP, ICMP echo and
//! errors, the table full, adaptive timeouts, re-checks, several workers.

#[allow(dead_code)]
#[path = "common/frames.rs"]
mod frames;

use std::sync::Arc;

use frames::{tcp, udp, Addr, Spec, ACK, FIN, PSH, RST, SYN};
use palisade_engine::flow::{Clock, FlowTable, ManualClock, Moment, Origin, Seen, TcpPhase, Timeouts};
use palisade_packet::FlowState::{self, Established, Invalid, New, Related, Untracked};
use palisade_rules::FlowTimeouts;

const LAN: Addr = Addr::V4([198, 18, 0, 5]);
const WAN: Addr = Addr::V4([198, 19, 0, 7]);
const ROUTER: Addr = Addr::V4([198, 19, 0, 1]);
const LAN6: Addr = Addr::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
const WAN6: Addr = Addr::V6([0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);

/// A table, a clock and the default timeouts, frame by frame.
struct Harness {
    table: FlowTable,
    clock: ManualClock,
    timeouts: Timeouts,
    generation: u32,
}

impl Harness {
    fn new(max: u32) -> Self {
        Harness::with(max, FlowTimeouts::default())
    }

    fn with(max: u32, t: FlowTimeouts) -> Self {
        Harness {
            table: FlowTable::new(max),
            clock: ManualClock::new(),
            timeouts: Timeouts::from(&t),
            generation: 1,
        }
    }

    fn moment(&self) -> Moment<'_> {
        Moment::new(self.clock.tick(), self.generation, &self.timeouts)
    }

    /// Looks a frame up; `keep` opens its flow when it is new (a keep_state rule permitted it).
    fn frame(&self, spec: &Spec, keep: bool) -> Seen {
        let bytes = spec.frame();
        let key = palisade_packet::parse(&bytes);
        let mut out = [Seen::default()];
        self.table
            .lookup_batch(&[key], &[&bytes], &self.moment(), &mut out);
        if keep && out[0].state == New {
            let _ = self
                .table
                .create(&out[0], &key, &Origin::default(), &self.moment());
        }
        out[0]
    }

    fn state(&self, spec: &Spec, keep: bool) -> FlowState {
        self.frame(spec, keep).state
    }
}

#[test]
fn tcp_handshake_data_and_close_with_the_timeout_of_each_phase() {
    let h = Harness::new(100);
    let out = |f| tcp(LAN, WAN, 40000, 443, f);
    let back = |f| tcp(WAN, LAN, 443, 40000, f);
    // Before any entry: an ACK cannot open a flow, a SYN can.
    assert_eq!(h.state(&back(ACK), true), Invalid);
    assert_eq!(h.state(&back(SYN | ACK), true), Invalid);
    assert_eq!(h.state(&out(SYN), true), New);
    let phase = || h.table.entries(h.clock.tick())[0].phase;
    assert_eq!(phase(), TcpPhase::SynSent);
    let reply = h.frame(&back(SYN | ACK), false);
    assert_eq!(reply.state, Established);
    assert!(reply.is_reply());
    assert_eq!(phase(), TcpPhase::SynReceived);
    // Half-open: tcp_handshake (30 s) applies; 29 s idle is fine.
    h.clock.advance_secs(29);
    assert_eq!(h.state(&out(ACK), false), Established);
    assert_eq!(phase(), TcpPhase::Established);
    // Established: 86400 s.
    h.clock.advance_secs(3600);
    let data = h.frame(&back(PSH | ACK), false);
    assert_eq!(data.state, Established);
    h.clock.advance_secs(80_000);
    assert_eq!(h.state(&out(PSH | ACK), false), Established);
    // Close: FIN one way, then the other; tcp_closing (60 s) applies.
    assert_eq!(h.state(&out(FIN | ACK), false), Established);
    assert_eq!(phase(), TcpPhase::Closing);
    assert_eq!(h.state(&back(FIN | ACK), false), Established);
    assert_eq!(phase(), TcpPhase::Closed);
    assert_eq!(h.state(&out(ACK), false), Established);
    h.clock.advance_secs(61);
    assert_eq!(
        h.state(&back(ACK), false),
        Invalid,
        "closed and idle past tcp_closing"
    );
    let s = h.table.stats();
    assert_eq!((s.created, s.expired, s.active), (1, 1, 0));
    // Counted both ways.
    let counts = {
        let h2 = Harness::new(10);
        h2.state(&out(SYN), true);
        h2.state(&back(SYN | ACK), false);
        h2.state(&back(ACK), false);
        h2.table.entries(h2.clock.tick())[0].clone()
    };
    assert_eq!((counts.original.0, counts.reply.0), (1, 2));
    assert_eq!(counts.original.1 as usize, out(SYN).frame().len());
}

#[test]
fn a_half_open_flow_expires_after_tcp_handshake() {
    let h = Harness::new(100);
    assert_eq!(h.state(&tcp(LAN, WAN, 1, 2, SYN), true), New);
    h.clock.advance_secs(31);
    assert_eq!(h.state(&tcp(WAN, LAN, 2, 1, SYN | ACK), false), Invalid);
}

#[test]
fn reset_closes_and_a_new_syn_reopens_the_ports() {
    let h = Harness::new(100);
    assert_eq!(h.state(&tcp(LAN, WAN, 5, 80, SYN), true), New);
    assert_eq!(h.state(&tcp(WAN, LAN, 80, 5, SYN | ACK), false), Established);
    assert_eq!(h.state(&tcp(WAN, LAN, 80, 5, RST), false), Established);
    assert_eq!(h.table.entries(h.clock.tick())[0].phase, TcpPhase::Closed);
    // The same ports again: a new connection, a new entry.
    assert_eq!(h.state(&tcp(LAN, WAN, 5, 80, SYN), true), New);
    assert_eq!(h.table.entries(h.clock.tick())[0].phase, TcpPhase::SynSent);
    assert_eq!(h.table.stats().created, 2);
    // The reverse direction's SYN on a live flow is part of it (simultaneous open).
    assert_eq!(h.state(&tcp(WAN, LAN, 80, 5, SYN), true), Established);
}

#[test]
fn udp_flows_live_for_their_idle_timeout() {
    let h = Harness::with(
        100,
        FlowTimeouts {
            udp: 30,
            ..FlowTimeouts::default()
        },
    );
    let query = udp(LAN, WAN, 5353, 53);
    let answer = udp(WAN, LAN, 53, 5353);
    assert_eq!(h.state(&answer, false), New, "any UDP datagram may open a flow");
    assert_eq!(h.state(&query, true), New);
    h.clock.advance_secs(30);
    assert_eq!(
        h.state(&answer, false),
        Established,
        "idle exactly the timeout: alive"
    );
    h.clock.advance_secs(30);
    h.clock.advance_ms(20);
    assert_eq!(h.state(&answer, false), New, "idle past the timeout: gone");
    assert_eq!(h.table.stats().expired, 1);
    // Another port pair is another flow.
    assert_eq!(h.state(&query, true), New);
    assert_eq!(h.state(&udp(WAN, LAN, 53, 5354), false), New);
}

#[test]
fn icmp_echo_is_keyed_by_identifier_both_families() {
    for (lan, wan) in [(LAN, WAN), (LAN6, WAN6)] {
        let h = Harness::new(100);
        let req = |id| Spec::Echo {
            from: lan,
            to: wan,
            id,
            request: true,
        };
        let rep = |id| Spec::Echo {
            from: wan,
            to: lan,
            id,
            request: false,
        };
        assert_eq!(h.state(&rep(7), true), Invalid, "a reply with no request");
        assert_eq!(h.state(&req(7), true), New);
        assert_eq!(h.state(&rep(7), false), Established);
        assert_eq!(h.state(&rep(8), false), Invalid, "another identifier");
        h.clock.advance_secs(11);
        assert_eq!(h.state(&rep(7), false), Invalid, "past icmp (10 s)");
    }
}

#[test]
fn icmp_errors_quoting_a_known_flow_are_related() {
    for (lan, wan, router) in [(LAN, WAN, ROUTER), (LAN6, WAN6, WAN6)] {
        let h = Harness::new(100);
        let sent = udp(lan, wan, 40000, 443);
        let error = |quoted: Spec, to: Addr| Spec::Unreachable {
            from: router,
            to,
            quoted: Box::new(quoted),
        };
        assert_eq!(h.state(&error(sent.clone(), lan), false), Invalid, "no flow yet");
        assert_eq!(h.state(&sent, true), New);
        assert_eq!(h.state(&error(sent.clone(), lan), false), Related);
        // Quoting the reply direction (an error about the server's datagram, sent to the server).
        assert_eq!(h.state(&error(udp(wan, lan, 443, 40000), wan), false), Related);
        // Not to the quoted datagram's sender, or quoting another flow: invalid.
        assert_eq!(h.state(&error(sent.clone(), wan), false), Invalid);
        assert_eq!(h.state(&error(udp(lan, wan, 40001, 443), lan), false), Invalid);
        // Errors about an echo and a TCP flow.
        assert_eq!(
            h.state(
                &Spec::Echo {
                    from: lan,
                    to: wan,
                    id: 9,
                    request: true
                },
                true
            ),
            New
        );
        let echo = Spec::Echo {
            from: lan,
            to: wan,
            id: 9,
            request: true,
        };
        assert_eq!(h.state(&error(echo, lan), false), Related);
        assert_eq!(h.state(&tcp(lan, wan, 3, 4, SYN), true), New);
        assert_eq!(h.state(&error(tcp(lan, wan, 3, 4, SYN), lan), false), Related);
        // A related error refreshes nothing: the UDP flow still expires on time.
        h.clock.advance_secs(59);
        assert_eq!(h.state(&error(sent.clone(), lan), false), Related);
        h.clock.advance_secs(2);
        assert_eq!(h.state(&error(sent, lan), false), Invalid);
    }
}

#[test]
fn other_protocols_and_non_ip() {
    let h = Harness::new(100);
    assert_eq!(h.state(&Spec::Arp, true), Untracked);
    assert_eq!(h.state(&Spec::Gre { from: LAN, to: WAN }, true), New);
    assert_eq!(h.state(&Spec::Gre { from: WAN, to: LAN }, false), Established);
    h.clock.advance_secs(61);
    assert_eq!(h.state(&Spec::Gre { from: WAN, to: LAN }, false), New);
    // A non-first fragment has no ports to find its flow by.
    let mut frag = udp(LAN, WAN, 1, 2).key();
    frag.fragment = palisade_packet::FragmentState::NonFirst;
    frag.present.0 &= !palisade_packet::Present::PORTS;
    let mut out = [Seen::default()];
    h.table.lookup_batch(&[frag], &[], &h.moment(), &mut out);
    assert_eq!(out[0].state, Invalid);
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_the_old_ones() {
    let h = Harness::new(4);
    for p in 0..4 {
        assert_eq!(h.state(&udp(LAN, WAN, 1000 + p, 53), true), New);
    }
    assert_eq!(h.table.stats().active, 4);
    // A fifth is refused (its frame stays new: the engine denies it at stage flows-full).
    let fifth = h.frame(&udp(LAN, WAN, 2000, 53), false);
    let key = udp(LAN, WAN, 2000, 53).key();
    assert!(h
        .table
        .create(&fifth, &key, &Origin::default(), &h.moment())
        .is_err());
    assert_eq!(h.table.stats().refused, 1);
    assert_eq!(h.state(&udp(WAN, LAN, 53, 2000), false), New, "no entry was made");
    for p in 0..4 {
        assert_eq!(h.state(&udp(WAN, LAN, 53, 1000 + p), false), Established);
    }
    assert_eq!(h.table.stats().active, 4);
    // Once one has expired, its room goes to a new flow.
    h.clock.advance_secs(20);
    for p in 1..4 {
        h.state(&udp(WAN, LAN, 53, 1000 + p), false);
    }
    h.clock.advance_secs(25); // 1000 idle 45 s: expired with the full table's halved timeout (30 s)
    assert!(h
        .table
        .create(&fifth, &key, &Origin::default(), &h.moment())
        .is_ok());
    assert_eq!(h.table.stats().active, 4);
    assert_eq!(h.state(&udp(WAN, LAN, 53, 1000), false), New);
    assert_eq!(h.state(&udp(WAN, LAN, 53, 2000), false), Established);
}

#[test]
fn past_two_thirds_full_timeouts_shrink_in_proportion() {
    // max 30: up to 20 entries a UDP flow lives 60 s idle; then 60 s x (40 - n) / 20.
    fn filled(n: u16) -> Harness {
        let h = Harness::new(30);
        for p in 0..n {
            assert_eq!(h.state(&udp(LAN, WAN, p, 53), true), New);
        }
        h
    }
    let alive = |h: &Harness, p: u16| h.state(&udp(WAN, LAN, 53, p), false) == Established;
    let h = filled(20);
    h.clock.advance_secs(59);
    assert!(alive(&h, 0), "20 of 30 (two thirds): the full 60 s");
    let h = filled(25);
    h.clock.advance_secs(46);
    assert!(!alive(&h, 0), "25 of 30: 60 s x 15/20 = 45 s");
    assert!(
        alive(&h, 1),
        "24 of 30 once that one is gone: 60 s x 16/20 = 48 s"
    );
    let h = filled(30);
    h.clock.advance_secs(31);
    assert!(!alive(&h, 0), "30 of 30: half, 30 s");
    let h = filled(30);
    h.clock.advance_secs(29);
    assert!(alive(&h, 0), "30 of 30: half, 30 s");
}

#[test]
fn a_stale_flow_is_rechecked_through_its_opening_frame() {
    let mut h = Harness::new(10);
    let syn = tcp(LAN6, WAN6, 40000, 22, SYN);
    let origin = Origin {
        generation: 1,
        rule: 42,
        context: [3, 4, u32::MAX],
    };
    let key = syn.key();
    let mut out = [Seen::default()];
    h.table.lookup_batch(&[key], &[], &h.moment(), &mut out);
    h.table.create(&out[0], &key, &origin, &h.moment()).unwrap();
    let seen = h.frame(&tcp(WAN6, LAN6, 22, 40000, SYN | ACK), false);
    assert!(!seen.is_stale());
    h.generation = 2;
    let seen = h.frame(&tcp(WAN6, LAN6, 22, 40000, ACK), false);
    assert!(seen.is_stale());
    let opening = h.table.opening(&seen).unwrap();
    assert_eq!(opening.origin, origin);
    assert_eq!(opening.key.flow_state, New);
    assert_eq!(
        palisade_rules::format_packet(&opening.key),
        palisade_rules::format_packet(&key.with_flow_state(New))
    );
    assert_eq!(
        (opening.key.src_ip, opening.key.ports()),
        (key.src_ip, Some((40000, 22)))
    );
    h.table.mark_checked(&seen, 2);
    assert!(!h.frame(&tcp(LAN6, WAN6, 40000, 22, ACK), false).is_stale());
    h.generation = 3;
    let seen = h.frame(&tcp(LAN6, WAN6, 40000, 22, ACK), false);
    assert!(h.table.cut(&seen));
    assert!(!h.table.cut(&seen), "cut once");
    assert_eq!(h.state(&tcp(WAN6, LAN6, 22, 40000, ACK), false), Invalid);
    assert_eq!(h.table.stats().cut, 1);
}

#[test]
fn sweeps_remove_expired_flows() {
    let h = Harness::new(1000);
    for n in 0..500 {
        h.state(&udp(LAN, WAN, n, 53), true);
    }
    h.clock.advance_secs(30);
    for n in 0..100 {
        h.state(&udp(WAN, LAN, 53, n), false);
    }
    h.clock.advance_secs(31);
    let removed = h.table.sweep(&h.moment(), usize::MAX); // one full round

    assert_eq!(removed, 400);
    assert_eq!(h.table.stats().active, 100);
    assert_eq!(h.table.entries(h.clock.tick()).len(), 100);
}

/// Both directions of every flow on different threads at once, tables filling
/// and emptying: nothing panics, the table never holds more than max, and
/// every flow opened is established both ways while it lives.
#[test]
fn several_workers_share_one_table() {
    let table = Arc::new(FlowTable::new(2_000));
    let timeouts = Arc::new(Timeouts::default());
    let clock = ManualClock::new();
    let workers: Vec<_> = (0..4u16)
        .map(|w| {
            let (table, timeouts, clock) = (Arc::clone(&table), Arc::clone(&timeouts), clock.clone());
            std::thread::spawn(move || {
                let mut established = 0;
                for round in 0..50u16 {
                    // Workers 0 and 1 open flows; 2 and 3 send the replies of the other's.
                    let base = 1000 + (w % 2) * 500;
                    let specs: Vec<Spec> = (0..64)
                        .map(|i| match w {
                            0 | 1 => udp(LAN, WAN, base + i, 53 + round % 3),
                            _ => udp(WAN, LAN, 53 + round % 3, base + i),
                        })
                        .collect();
                    let frames: Vec<Vec<u8>> = specs.iter().map(Spec::frame).collect();
                    let keys: Vec<_> = frames.iter().map(|f| palisade_packet::parse(f)).collect();
                    let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                    let mut out = vec![Seen::default(); keys.len()];
                    let m = Moment::new(clock.tick(), 1, &timeouts);
                    table.lookup_batch(&keys, &slices, &m, &mut out);
                    for (s, k) in out.iter().zip(&keys) {
                        match s.state {
                            New if w < 2 => {
                                let _ = table.create(s, k, &Origin::default(), &m);
                            }
                            Established => established += 1,
                            _ => {}
                        }
                    }
                    assert!(table.stats().active <= 2_000);
                }
                established
            })
        })
        .collect();
    let established: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let s = table.stats();
    assert!(s.active <= s.max);
    assert_eq!(s.active, 3 * 128, "3 destination ports x 2 x 64 source ports");
    assert!(established > 0);
    let listed = table.entries(clock.tick());
    assert_eq!(listed.len() as u64, s.active);
}
