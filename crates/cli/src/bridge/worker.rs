//! One data-path worker: read a batch from an interface, classify it in one
//! call, send the permitted frames out of the other interface.
//!
//! A frame whose outer VLAN tag the interface stripped gets it back before it
//! is classified (the policy sees the frame as it was on the wire), and leaves
//! with the tagging the filter decided for the egress port; its virtio-net
//! header (offload super-frame, partial checksum) goes with it, its offsets
//! moved by the tag. Nothing else in a frame is changed, but for a partial
//! SCTP checksum, which only the bridge can complete ([`checksum`]).
//!
//! Every buffer is allocated once when the worker starts; the loop itself
//! never allocates. Errors of an interface (down, removed) are logged once per
//! change of state and never stop the worker: the other direction carries on,
//! and a removed interface is reopened when it comes back.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_dataplane::vlan::{self, HEADROOM};
use palisade_dataplane::{Forward, Frame, FrameFilter, SideCounters};

use super::checksum;
use super::sys::{self, Fanout, Port, RxFrame};

/// Frames classified in one call.
pub const BATCH: usize = sys::MAX_BATCH;
/// Largest frame forwarded: a 64 KiB GSO/GRO super-frame with its Ethernet header and two
/// VLAN tags (jumbo frames included); longer ones are counted as oversize.
pub const FRAME_MAX: usize = 65536 + 14 + 8;
/// How long a worker waits for frames before looking at the stop flag again.
const WAIT: Duration = Duration::from_millis(100);
/// How often the kernel's count of frames dropped on a full ring is read.
const STATS_EVERY: Duration = Duration::from_millis(200);
/// How often a vanished interface is looked for again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Single-writer increment (see [`SideCounters::add`]).
#[inline]
fn add(c: &std::sync::atomic::AtomicU64, n: u64) {
    SideCounters::add(c, n);
}

/// What one worker serves.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// The interfaces: two for a bridge, one for a monitor.
    pub ifaces: Vec<String>,
    /// Forward permitted frames to the other interface (false: monitor).
    pub forward: bool,
    /// Fanout group per interface, shared by every worker.
    pub fanout: Vec<Option<Fanout>>,
    /// Size of each receive ring, in MiB blocks.
    pub ring_blocks: usize,
    /// Worker number, for log lines.
    pub id: usize,
}

/// Per-side state of a worker.
struct Side {
    name: String,
    fanout: Option<Fanout>,
    port: Option<Port>,
    /// Last logged problem, so each state change is logged once.
    logged: Option<Logged>,
}

/// What went wrong on one side; with the error's kind and errno it says
/// whether a problem is new, without formatting a message on every batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Problem {
    CannotSend,
    FrameRefused,
    Unreadable,
    StillWaiting,
    Gone,
}

/// The last problem logged for a side.
#[derive(PartialEq, Eq)]
enum Logged {
    /// An I/O error on an open socket.
    Io(Problem, io::ErrorKind, Option<i32>),
    /// Opening the interface failed with this message.
    Open(String),
}

impl Side {
    fn event(&mut self, worker: usize, problem: Problem, e: &io::Error) {
        let key = Logged::Io(problem, e.kind(), e.raw_os_error());
        if self.logged.as_ref() == Some(&key) {
            return;
        }
        let name = &self.name;
        match problem {
            Problem::CannotSend => {
                eprintln!("palisade run: worker {worker}: interface {name}: cannot send: {e}")
            }
            Problem::FrameRefused => eprintln!(
                "palisade run: worker {worker}: interface {name}: a frame was refused by the kernel ({e}); \
                 counted in tx_errors, the others are sent"
            ),
            Problem::Unreadable => eprintln!(
                "palisade run: worker {worker}: interface {name}: a frame the packet socket cannot describe \
                 was dropped by the kernel ({e}; e.g. an SCTP or tunnel offload super-frame); counted in rx_errors"
            ),
            Problem::StillWaiting => {
                eprintln!("palisade run: worker {worker}: interface {name}: {e} (still waiting for frames)")
            }
            Problem::Gone => eprintln!(
                "palisade run: worker {worker}: interface {name}: gone ({e}); will reopen when it returns"
            ),
        }
        self.logged = Some(key);
    }

    fn clear(&mut self, worker: usize) {
        if self.logged.take().is_some() {
            eprintln!(
                "palisade run: worker {worker}: interface {}: working again",
                self.name
            );
        }
    }
}

/// The ingress side, mutably, and the other side (none on a monitor).
fn split_sides(sides: &mut [Side], ingress: usize) -> (Option<&mut Side>, Option<&mut Side>) {
    let (first, rest) = sides.split_at_mut(1.min(sides.len()));
    match ingress {
        0 => (first.first_mut(), rest.first_mut()),
        _ => (rest.first_mut(), first.first_mut()),
    }
}

/// Runs one worker until `stop` is set. `first` are the ports opened by the caller
/// (so that start-up errors reach the user); missing ones are reopened by the loop.
pub fn run(
    spec: WorkerSpec,
    first: Vec<Option<Port>>,
    mut filter: Box<dyn FrameFilter>,
    stop: Arc<AtomicBool>,
    counters: Arc<[SideCounters; 2]>,
) {
    let mut sides: Vec<Side> = spec
        .ifaces
        .iter()
        .zip(spec.fanout.iter())
        .zip(first)
        .map(|((name, fanout), port)| Side {
            name: name.clone(),
            fanout: *fanout,
            port,
            logged: None,
        })
        .collect();
    // Frames too long for a ring slot (super-frames) are read into these.
    let mut big: Vec<Box<[u8]>> = (0..BATCH)
        .map(|_| vec![0u8; HEADROOM + FRAME_MAX].into_boxed_slice())
        .collect();
    let mut forward = [Forward::Drop; BATCH];
    let mut next_stats = Instant::now();
    let mut next_reopen = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        if sides.iter().any(|s| s.port.is_none()) && Instant::now() >= next_reopen {
            next_reopen = Instant::now() + REOPEN_EVERY;
            for side in sides.iter_mut().filter(|s| s.port.is_none()) {
                match sys::open(&side.name, side.fanout, spec.ring_blocks) {
                    Ok(p) => {
                        side.port = Some(p);
                        side.clear(spec.id);
                    }
                    Err(msg) => {
                        if side.logged.as_ref() != Some(&Logged::Open(msg.clone())) {
                            eprintln!("palisade run: worker {}: {msg}", spec.id);
                            side.logged = Some(Logged::Open(msg));
                        }
                    }
                }
            }
        }
        if Instant::now() >= next_stats {
            // Frames the kernel dropped because a ring was full: the worker fell behind.
            next_stats = Instant::now() + STATS_EVERY;
            for (side, c) in sides.iter().zip(counters.iter()) {
                if let Some(p) = side.port.as_ref() {
                    add(&c.rx_dropped, p.drops());
                }
            }
        }
        let mut ready = [false; 2];
        let waited = sys::wait_any(
            [
                sides.first().and_then(|s| s.port.as_ref()),
                sides.get(1).and_then(|s| s.port.as_ref()),
            ],
            WAIT,
            &mut ready,
        );
        if !waited {
            if sides.iter().all(|s| s.port.is_none()) {
                std::thread::sleep(WAIT);
            }
            continue;
        }
        for ingress in 0..sides.len() {
            if !ready[ingress] {
                continue;
            }
            let c = &counters[ingress];
            let (inside, egress_side) = split_sides(&mut sides, ingress);
            let Some(port) = inside.and_then(|s| s.port.as_mut()) else {
                continue;
            };
            // Take what the ring holds: no system call but for super-frames.
            let mut frames: [RxFrame; BATCH] = std::array::from_fn(|_| RxFrame::default());
            let got = port.receive(&mut big, HEADROOM, &mut frames);
            let n = got.frames;
            add(&c.oversize, got.oversize);
            add(&c.rx_errors, got.rx_errors);
            if n > 0 {
                // The frames as they were on the wire: stripped tags back in place.
                let mut super_frames = 0;
                for f in frames.iter_mut().take(n) {
                    if let Some(tag) = f.tag {
                        if let Some(tagged) = vlan::reinsert(f.buf, f.span, tag) {
                            f.span = tagged;
                            f.vnet.shift(vlan::TAG_LEN as isize);
                        }
                    }
                    super_frames += u64::from(f.vnet.gso_type != 0);
                }
                // Decide the batch in one call.
                {
                    let mut batch = [Frame::default(); BATCH];
                    for (b, f) in batch.iter_mut().zip(&frames).take(n) {
                        let gso_size = if f.vnet.gso_type != 0 { f.vnet.gso_size } else { 0 };
                        *b = Frame::super_frame(f.span.of(f.buf), gso_size);
                    }
                    filter.decide(ingress, &batch[..n], &mut forward[..n]);
                }
                let permitted = forward[..n].iter().filter(|f| f.is_sent()).count() as u64;
                add(&c.rx, n as u64);
                add(&c.super_frames, super_frames);
                add(&c.permitted, permitted);
                add(&c.denied, n as u64 - permitted);
                if spec.forward {
                    let mut which = [0usize; BATCH];
                    let mut m = 0;
                    for (i, f) in frames.iter_mut().enumerate().take(n) {
                        if !forward[i].is_sent() {
                            continue;
                        }
                        // The egress port's tagging; the header's offsets follow the tag.
                        let before = f.span.len as isize;
                        if let Some(span) = vlan::retag(f.buf, f.span, forward[i]) {
                            f.vnet.shift(span.len as isize - before);
                            f.span = span;
                            if f.vnet.flags & sys::NEEDS_CSUM != 0 {
                                if let Some(bytes) = f.buf.get_mut(span.start..span.start + span.len) {
                                    checksum::complete_sctp(bytes, &mut f.vnet);
                                }
                            }
                            which[m] = i;
                            m += 1;
                        }
                    }
                    let (sent, tx_error) = match egress_side.as_ref().and_then(|s| s.port.as_ref()) {
                        Some(out) => out.send_batch(&frames, &which[..m]),
                        None => (0, None),
                    };
                    let (sent, failed) = (sent as u64, permitted - sent as u64);
                    add(&c.forwarded, sent);
                    add(&c.tx_errors, failed);
                    if let Some(side) = egress_side {
                        match tx_error {
                            Some(e) if e.per_frame => side.event(spec.id, Problem::FrameRefused, &e.error),
                            Some(e) => side.event(spec.id, Problem::CannotSend, &e.error),
                            None if sent > 0 => side.clear(spec.id),
                            None => {}
                        }
                    }
                }
            }
            // The frames' borrows of the ring end here (last use above): the slots go back.
            port.release(got.slots);
            // Ready but nothing taken: the socket has an error to report (ENETDOWN, ...).
            let rx_error = if got.slots == 0 { port.take_error() } else { None };
            if got.rx_errors > 0 {
                let e = io::Error::from_raw_os_error(libc::EINVAL);
                sides[ingress].event(spec.id, Problem::Unreadable, &e);
            }
            if let Some(e) = rx_error {
                let side = &mut sides[ingress];
                let still_there = side
                    .port
                    .as_ref()
                    .is_some_and(|p| sys::index_of(&side.name) == Some(p.index));
                if still_there {
                    side.event(spec.id, Problem::StillWaiting, &e);
                } else {
                    side.event(spec.id, Problem::Gone, &e);
                    side.port = None;
                }
            } else if n > 0 {
                sides[ingress].clear(spec.id);
            }
        }
    }
}
