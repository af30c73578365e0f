//! Stateful flows: the flow table that finds each frame's flow state before
//! any ACL runs, and keeps the flows that `keep_state` rules open.
//!
//! A flow is keyed by family, protocol, both addresses and both ports (the
//! query identifier for ICMP and ICMPv6; 0 for other protocols), and a reply
//! is the same key reversed, so one entry serves both directions. For every
//! frame [`FlowTable::lookup_batch`] answers a [`FlowState`]:
//!
//! * `established`: the frame's flow has an entry (either direction);
//! * `related`: an ICMP/ICMPv6 error whose quoted datagram belongs to a flow
//!   with an entry (and which goes back to that datagram's sender);
//! * `new`: no entry, and a frame that may open one (TCP SYN without ACK,
//!   any UDP, an ICMP query, other protocols);
//! * `invalid`: no entry, and a frame that cannot open one (TCP without SYN,
//!   an ICMP reply with no query, an error quoting no known flow, a non-first
//!   fragment, a malformed frame);
//! * `untracked`: not IP.
//!
//! After the policy has decided a `new` frame, the caller opens its flow
//! with [`FlowTable::create`] when the final verdict is permit and a
//! `keep_state` rule decided a stage (the engine's batch does this).
//!
//! Entries expire after an idle timeout that depends on the protocol and,
//! for TCP, the phase ([`TcpPhase`]): the `[flows]` timeouts of the rule
//! set. Past two thirds of `max` entries, idle timeouts shrink in
//! proportion to the fill (pf's adaptive timeouts: to half at a full
//! table), so that a flood of new flows frees its own entries sooner. An
//! expired entry is removed when a frame finds it, when [`FlowTable::sweep`]
//! passes it, or when a new flow needs its room. A full table refuses new
//! flows ([`Refused`]); existing flows keep working.
//!
//! Memory is fixed when the table is built: at most 127 bytes per flow of
//! `max` (126.2 for a million), no allocation afterwards (see [`table`](self) for the layout and
//! the concurrency: lookups take no lock, and both directions of one flow
//! may be handled by different workers at once). Time comes from the caller
//! as a [`Tick`] ([`Clock`] gives one; [`ManualClock`] is for tests).
//!
//! ```
//! use palisade_engine::flow::{FlowTable, Moment, Origin, Timeouts, Tick};
//! use palisade_packet::{FlowKey, FlowState};
//!
//! let table = FlowTable::new(1000);
//! let timeouts = Timeouts::from(&palisade_rules::FlowTimeouts::default());
//! let at = |secs: u64| Moment::new(Tick::from_millis(secs * 1000), 1, &timeouts);
//! let syn = FlowKey::new().with_ipv4([10, 0, 0, 5], [198, 51, 100, 7]).with_proto(6)
//!     .with_ports(40000, 443).with_tcp_flags(0x002);
//! let syn_ack = FlowKey::new().with_ipv4([198, 51, 100, 7], [10, 0, 0, 5]).with_proto(6)
//!     .with_ports(443, 40000).with_tcp_flags(0x012);
//!
//! let mut seen = [Default::default(); 2];
//! table.lookup_batch(&[syn, syn_ack], &[], &at(0), &mut seen);
//! assert_eq!((seen[0].state, seen[1].state), (FlowState::New, FlowState::Invalid));
//! // The policy permitted the SYN with a keep_state rule: open its flow.
//! table.create(&seen[0], &syn, &Origin::default(), &at(0)).unwrap();
//! table.lookup_batch(&[syn_ack], &[], &at(1), &mut seen);
//! assert_eq!(seen[0].state, FlowState::Established);
//! assert!(seen[0].is_reply());
//! // Half-open for longer than tcp_handshake (30 s): gone.
//! table.lookup_batch(&[syn_ack], &[], &at(40), &mut seen);
//! assert_eq!(seen[0].state, FlowState::Invalid);
//! assert_eq!(table.stats().expired, 1);
//! ```

mod clock;
mod huge;
mod id;
mod prefetch;
mod simd;
mod table;
mod tcp;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use palisade_packet::{FlowKey, FlowState, FragmentState, Present};
use palisade_rules::FlowTimeouts;

pub use clock::{Clock, ManualClock, SystemClock, Tick, TICK_MS};
pub use huge::advise as advise_huge_pages;
pub use id::FlowId;
pub use table::Origin;
pub use tcp::TcpPhase;

use id::{keyed, Keyed};
use table::{tcp_of, InsertError, NewEntry, Opener, Place, Store, META_OPENER_B, NONE, SLOTS};
use tcp::Tcp;

/// Frames looked up together: their cache misses overlap.
pub const LOOKUP_BATCH: usize = 64;

/// Keys read ahead (a caller's keys may not be in cache, e.g. a bench's).
const KEYS_AHEAD: usize = 8;
/// Frames of a lookup batch between asking for a bucket's line and reading it.
const TAGS_AHEAD: usize = 8;
/// Frames between asking for an entry's line and deciding with it: about
/// as many misses as a core keeps in flight.
const ENTRY_AHEAD: usize = 16;

/// A table of up to this many buckets (about 700 flows) is swept whole
/// whenever a new flow finds it full; a bigger one sweeps [`RECLAIM_BUCKETS`]
/// at most once per tick.
const SMALL_TABLE_BUCKETS: usize = 64;
/// Buckets a full big table sweeps for expired entries before refusing a flow.
const RECLAIM_BUCKETS: usize = 1024;

/// Idle timeouts in ticks, by protocol and TCP phase (from `[flows]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    tcp_handshake: u32,
    tcp_established: u32,
    tcp_closing: u32,
    udp: u32,
    icmp: u32,
    other: u32,
}

impl From<&FlowTimeouts> for Timeouts {
    fn from(t: &FlowTimeouts) -> Self {
        Timeouts {
            tcp_handshake: Tick::span_of_secs(t.tcp_handshake),
            tcp_established: Tick::span_of_secs(t.tcp_established),
            tcp_closing: Tick::span_of_secs(t.tcp_closing),
            udp: Tick::span_of_secs(t.udp),
            icmp: Tick::span_of_secs(t.icmp),
            other: Tick::span_of_secs(t.other),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from(&FlowTimeouts::default())
    }
}

/// The time, generation and timeouts a batch of lookups runs with.
#[derive(Clone, Copy, Debug)]
pub struct Moment<'t> {
    /// Now.
    pub now: Tick,
    /// The generation deciding the frames: an entry last checked under
    /// another one is reported stale ([`Seen::is_stale`]).
    pub generation: u32,
    /// The idle timeouts of that generation.
    pub timeouts: &'t Timeouts,
}

impl<'t> Moment<'t> {
    /// A moment.
    pub fn new(now: Tick, generation: u32, timeouts: &'t Timeouts) -> Self {
        Moment {
            now,
            generation,
            timeouts,
        }
    }
}

/// What a lookup found for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The frame's flow state.
    pub state: FlowState,
    entry: u32,
    id: FlowId,
    stale: bool,
    reply: bool,
    /// The frame's length, counted when it opens its flow.
    bytes: u32,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            state: FlowState::Untracked,
            entry: NONE,
            id: FlowId::default(),
            stale: false,
            reply: false,
            bytes: 0,
        }
    }
}

impl Seen {
    fn fixed(state: FlowState) -> Seen {
        Seen {
            state,
            ..Seen::default()
        }
    }

    /// Whether the frame belongs to an entry (it is `established`).
    pub fn has_entry(&self) -> bool {
        self.entry != NONE
    }

    /// For an `established` frame: whether it goes in the reply direction
    /// (from the side that did not open the flow).
    pub fn is_reply(&self) -> bool {
        self.entry != NONE && self.reply
    }

    /// Whether the frame's entry was last checked under another generation
    /// than the lookup's: the caller re-checks it ([`FlowTable::opening`],
    /// then [`FlowTable::mark_checked`] or [`FlowTable::cut`]).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The flow's id (meaningful for `new` and `established` frames).
    pub fn id(&self) -> &FlowId {
        &self.id
    }
}

/// A new flow refused: the table holds `max` entries none of which has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the flow table is full")
    }
}

impl std::error::Error for Refused {}

/// Idle limits in ticks for one batch: the timeouts scaled by the table's
/// fill, indexed by a flow's class (TCP phase, UDP, ICMP, other).
#[derive(Clone, Copy, Debug)]
struct Limits([u32; 16]);

impl Limits {
    const UDP: usize = table::CLASS_UDP as usize;
    const ICMP: usize = table::CLASS_ICMP as usize;
    const OTHER: usize = table::CLASS_OTHER as usize;

    fn new(t: &Timeouts, scale: u64) -> Limits {
        let s = |x: u32| ((x as u64 * scale) >> 16) as u32;
        let mut l = [s(t.tcp_handshake); 16];
        l[TcpPhase::Established as usize] = s(t.tcp_established);
        l[TcpPhase::Closing as usize] = s(t.tcp_closing);
        l[TcpPhase::Closed as usize] = s(t.tcp_closing);
        l[Limits::UDP] = s(t.udp);
        l[Limits::ICMP] = s(t.icmp);
        l[Limits::OTHER] = s(t.other);
        Limits(l)
    }

    /// The limit of an entry with meta word `meta` (by its class: no branch on the protocol).
    #[inline]
    fn of(&self, meta: u32) -> u32 {
        self.0[table::class_of(meta) & 15]
    }
}

/// What pass 1 of a lookup found a frame to be (its id is kept beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Flow { opens: bool },
    Error,
    Fixed(FlowState),
}

/// The flow id of a complete TCP or UDP frame, in a straight line (the
/// common case); `None` sends the frame to [`keyed`].
#[inline(always)]
fn fast_id(k: &FlowKey) -> Option<(FlowId, bool)> {
    const NEED: u16 = Present::ADDRS | Present::PORTS | Present::L4_PROTO;
    // One branch (`|` and `&`, not `||`): TCP and UDP come mixed, in no order a predictor learns.
    let fast = (k.present.0 & NEED == NEED) & k.status.is_ok() & ((k.l4_proto == 6) | (k.l4_proto == 17));
    if !fast {
        return None;
    }
    let id = FlowId::new(
        k.ip_version == 6,
        k.l4_proto,
        k.src_ip,
        k.dst_ip,
        k.src_port,
        k.dst_port,
    );
    let syn_only = k.present.has(Present::TCP_FLAGS)
        && k.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST | tcp::FIN) == tcp::SYN;
    Some((id, k.l4_proto == 17 || syn_only))
}

/// The table's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct FlowStats {
    /// Entries in use (expired ones not yet removed included).
    pub active: u64,
    /// Capacity.
    pub max: u64,
    /// Flows opened.
    pub created: u64,
    /// Flows removed after their idle timeout (or closed and reopened on the same ports).
    pub expired: u64,
    /// New flows refused because the table was full.
    pub refused: u64,
    /// Flows removed because a new generation's rules would not open them.
    pub cut: u64,
}

/// A flow's opening frame and where it came from: what a re-check evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The opening frame, rebuilt (state `new`).
    pub key: FlowKey,
    /// The generation, rule and context that opened it.
    pub origin: Origin,
}

/// One entry, for listings (`palisade flows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// The opening frame (its addresses, ports and protocol are the flow's key).
    pub opening: Opening,
    /// The TCP phase (`TcpPhase::None` for other protocols).
    pub phase: TcpPhase,
    /// Seconds since the flow was opened.
    pub age_secs: u64,
    /// Seconds since its last frame.
    pub idle_secs: u64,
    /// (packets, bytes) from the opener.
    pub original: (u64, u64),
    /// (packets, bytes) from the responder.
    pub reply: (u64, u64),
    /// The generation it was last checked under (its opening generation until a reload).
    pub checked: u32,
}

/// The flow table: see the [module documentation](self).
#[derive(Debug)]
pub struct FlowTable {
    store: Store,
    expired: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    sweep_cursor: AtomicUsize,
    /// Tick of the last reclaim sweep of a full big table, plus one (0: never).
    last_reclaim: AtomicU32,
}

/// A random seed for a table's hash (from the standard library's per-process keys).
fn random_seed() -> [u64; 4] {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    [0u64, 1, 2, 3].map(|i| s.hash_one(i) | 1)
}

impl FlowTable {
    /// A table for `max` flows (1 to [`palisade_rules::MAX_FLOWS`]; clamped
    /// into that range), every byte of it allocated now.
    pub fn new(max: u32) -> FlowTable {
        FlowTable {
            store: Store::new(max, random_seed()),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            sweep_cursor: AtomicUsize::new(0),
            last_reclaim: AtomicU32::new(0),
        }
    }

    /// Capacity.
    pub fn max(&self) -> u32 {
        self.store.max
    }

    /// Bytes of memory the table holds (index and entries).
    pub fn memory_bytes(&self) -> usize {
        self.store.memory_bytes()
    }

    /// The counters.
    pub fn stats(&self) -> FlowStats {
        let (expired, cut) = (
            self.expired.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
        );
        let active = self.store.active.load(Ordering::Relaxed) as u64;
        FlowStats {
            active,
            max: self.store.max as u64,
            // Every entry made is in use, expired or cut: no counter to bump per new flow.
            created: active + expired + cut,
            expired,
            refused: self.refused.load(Ordering::Relaxed),
            cut,
        }
    }

    /// The adaptive scale of timeouts, in 1/65536: 1 up to two thirds of
    /// `max` entries, then falling in proportion to the fill, to one half at
    /// `max` (pf's adaptive.start and adaptive.end at 2/3 and 4/3 of the limit).
    fn scale(&self) -> u64 {
        let n = self.store.active.load(Ordering::Relaxed) as u64;
        let max = self.store.max as u64;
        let (start, end) = (max * 2 / 3, max * 4 / 3);
        if n <= start || end <= start {
            1 << 16
        } else {
            (end.saturating_sub(n) << 16) / (end - start)
        }
    }

    /// The idle limits of this moment's timeouts at the table's current fill.
    fn limits(&self, m: &Moment<'_>) -> Limits {
        Limits::new(m.timeouts, self.scale())
    }

    /// Finds the flow state of each frame: `keys[i]` parsed from
    /// `frames[i]`. Frame bytes are read only for ICMP (the query
    /// identifier, an error's quoted datagram) and for the byte counts; pass
    /// `&[]` when there are none (ICMP queries and errors are then `invalid`).
    /// Counts each established frame, moves its TCP phase, refreshes its
    /// idle time, and removes entries it finds expired. `out[i]` receives the
    /// answer for `keys[i]` (`min(keys.len(), out.len())` are written).
    ///
    /// Frames are taken [`LOOKUP_BATCH`] at a time, in three stages a few
    /// frames apart: a frame's bucket line is asked for (prefetched) when it
    /// is keyed, its likely entries' lines when the bucket has had time to
    /// arrive, and it is decided when they have: the batch's cache misses
    /// overlap each other and the work on other frames. Never allocates,
    /// never panics.
    pub fn lookup_batch(&self, keys: &[FlowKey], frames: &[&[u8]], m: &Moment<'_>, out: &mut [Seen]) {
        let n = keys.len().min(out.len());
        let limits = self.limits(m);
        let mut start = 0;
        while start < n {
            let end = (start + LOOKUP_BATCH).min(n);
            self.lookup_chunk(
                &keys[start..end],
                frames.get(start..end).unwrap_or(&[]),
                m,
                &limits,
                &mut out[start..end],
            );
            start = end;
        }
    }

    #[inline]
    fn lookup_chunk(
        &self,
        keys: &[FlowKey],
        frames: &[&[u8]],
        m: &Moment<'_>,
        limits: &Limits,
        out: &mut [Seen],
    ) {
        let n = keys.len().min(out.len()).min(LOOKUP_BATCH);
        let mut what = [What::Fixed(FlowState::Untracked); LOOKUP_BATCH];
        let mut places = [Place::default(); LOOKUP_BATCH];
        let mut candidates = [[NONE; 2]; LOOKUP_BATCH];
        // Three stages, software-pipelined: frame `t` is keyed and its bucket
        // asked for while frame `t - TAGS_AHEAD` reads its tags and asks for
        // its likely entries (the first two whose tag matches), and frame
        // `t - TAGS_AHEAD - ENTRY_AHEAD` is decided. So the work on some
        // frames hides the cache misses of others (in separate passes each
        // pass waited for its misses in turn).
        //
        // The loop asks for each key KEYS_AHEAD frames before reading it, so
        // the first KEYS_AHEAD are asked for here, together.
        for k in keys.iter().take(KEYS_AHEAD) {
            prefetch::prefetch(k);
        }
        for t in 0..n + TAGS_AHEAD + ENTRY_AHEAD {
            if t < n {
                // Stage 1: the flow id and home bucket (TCP and UDP in a straight line).
                if let Some(ahead) = keys.get(t + KEYS_AHEAD) {
                    prefetch::prefetch(ahead);
                }
                let k = &keys[t];
                what[t] = match fast_id(k) {
                    Some((id, opens)) => {
                        out[t].id = id;
                        What::Flow { opens }
                    }
                    None => match keyed(k, frames.get(t).copied().unwrap_or(&[])) {
                        Keyed::Flow { id, opens } => {
                            out[t].id = id;
                            What::Flow { opens }
                        }
                        Keyed::Error { quoted } => {
                            out[t].id = quoted;
                            What::Error
                        }
                        Keyed::Fixed(s) => What::Fixed(s),
                    },
                };
                if !matches!(what[t], What::Fixed(_)) {
                    places[t] = self.store.place(&out[t].id);
                    // Non-blocking: the next frames' work goes on while the line comes.
                    self.store.prefetch_bucket(&places[t]);
                }
            }
            if let Some(i) = t.checked_sub(TAGS_AHEAD).filter(|&i| i < n) {
                // Stage 2: the bucket's likely entries, whose lines are asked for
                // in turn (a second one only when a tag matches twice); for a
                // frame with no likely entry that may open a flow, the lines of
                // the entry it would take.
                if let What::Flow { opens } = what[i] {
                    let c = self.store.candidates(&places[i]);
                    candidates[i] = c;
                    if c[0] != NONE {
                        self.store.prefetch_entry(c[0]);
                        if c[1] != NONE {
                            self.store.prefetch_entry(c[1]);
                        }
                    } else if opens {
                        self.store.prefetch_free_slot(&places[i]);
                    }
                }
            }
            if let Some(i) = t.checked_sub(TAGS_AHEAD + ENTRY_AHEAD).filter(|&i| i < n) {
                // Stage 3: decide.
                let bytes = frames.get(i).map_or(0, |f| f.len() as u32);
                // Written in place: a returned Seen copied into `out` stalled on store forwarding.
                let o = &mut out[i];
                match what[i] {
                    What::Fixed(s) => *o = Seen::fixed(s),
                    What::Flow { opens } => {
                        self.established(&keys[i], &places[i], candidates[i], opens, bytes, m, limits, o)
                    }
                    What::Error => *o = self.related(&o.id, &places[i], m, limits),
                }
            }
        }
    }

    /// A frame of flow `id`: established if it has a live entry, else new or invalid.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn established(
        &self,
        k: &FlowKey,
        p: &Place,
        candidates: [u32; 2],
        opens: bool,
        bytes: u32,
        m: &Moment<'_>,
        limits: &Limits,
        out: &mut Seen,
    ) {
        // The id was written by stage 1.
        let id = &out.id;
        out.bytes = bytes;
        out.state = if opens { FlowState::New } else { FlowState::Invalid };
        out.entry = NONE;
        out.stale = false;
        out.reply = false;
        let [first, second] = candidates;
        let e = if first != NONE && self.store.holds(first, id) {
            first
        } else if second != NONE && self.store.holds(second, id) {
            second
        } else {
            self.store.find(id, p)
        };
        let Some(h) = self.store.hot.get(e as usize) else {
            if opens && first != NONE {
                // A tag's false match: the entry it may be opened in was not asked for yet.
                self.store.prefetch_free_slot(p);
            }
            return;
        };
        let meta = h.meta.load(Ordering::Acquire);
        let last = Tick(h.last.load(Ordering::Relaxed));
        if m.now.since(last) > limits.of(meta) {
            if self.store.remove(e, id, p) {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let reply = id.from_b != (meta & META_OPENER_B != 0);
        // One rare branch: only TCP segments that may move the phase take it.
        if (id.proto() == 6) & !table::steady(meta, k.tcp_flags) {
            let flags = k.tcp_flags;
            if tcp_of(meta).reopened_by(flags) {
                // A new connection on the ports of a closed one.
                if self.store.remove(e, id, p) {
                    self.expired.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            self.store.tcp_update(e, id, meta, reply, flags);
        }
        if last != m.now {
            h.last.store(m.now.0, Ordering::Relaxed);
        }
        self.store.count(e, reply as usize, bytes);
        out.state = FlowState::Established;
        out.entry = e;
        out.stale = h.checked.load(Ordering::Relaxed) != m.generation;
        out.reply = reply;
    }

    /// An ICMP error quoting `quoted`: related if that flow has a live entry.
    #[cold]
    fn related(&self, quoted: &FlowId, p: &Place, m: &Moment<'_>, limits: &Limits) -> Seen {
        let e = self.store.find(quoted, p);
        let live = self.store.hot.get(e as usize).is_some_and(|h| {
            let meta = h.meta.load(Ordering::Acquire);
            m.now.since(Tick(h.last.load(Ordering::Relaxed))) <= limits.of(meta)
        });
        Seen::fixed(if live {
            FlowState::Related
        } else {
            FlowState::Invalid
        })
    }

    /// Opens the flow of a `new` frame (`seen` from [`FlowTable::lookup_batch`],
    /// `key` the frame's key): the caller's policy permitted it with a
    /// `keep_state` rule. A flow another worker opened meanwhile is kept as it
    /// is. When the table is full, expired entries are reclaimed first; if
    /// none is, the flow is refused and counted.
    pub fn create(&self, seen: &Seen, key: &FlowKey, origin: &Origin, m: &Moment<'_>) -> Result<(), Refused> {
        if seen.state != FlowState::New {
            return Ok(());
        }
        let id = &seen.id;
        let p = self.store.place(id);
        let tcp = (id.proto() == 6).then_some(Tcp::OPENED);
        let opener = Opener {
            vlan: key.outer_vlan & 0xfff,
            tagged: key.vlan_count > 0,
            tcp_flags: key.tcp_flags,
            dscp: key.dscp,
            first_fragment: key.fragment == FragmentState::First,
            icmp: key.icmp(),
        };
        let new = NewEntry {
            tcp,
            now: m.now,
            generation: m.generation,
            origin: *origin,
            opener,
        };
        let attempt = || self.store.insert(id, &p, &new);
        let res = match attempt() {
            Err(InsertError::Full) if self.reclaim(m) > 0 => attempt(),
            r => r,
        };
        match res {
            Ok((e, true)) => {
                self.store.count(e, 0, seen.bytes);
                Ok(())
            }
            Ok((_, false)) => Ok(()),
            Err(InsertError::Full) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Refused)
            }
        }
    }

    /// Sweeps for expired entries when a new flow finds the table full.
    #[cold]
    fn reclaim(&self, m: &Moment<'_>) -> usize {
        let buckets = self.store.bucket_count();
        if buckets <= SMALL_TABLE_BUCKETS {
            return self.sweep_from(0, buckets, m);
        }
        let mark = m.now.0.wrapping_add(1);
        if self.last_reclaim.swap(mark, Ordering::Relaxed) == mark {
            return 0; // swept this tick already
        }
        self.sweep(m, RECLAIM_BUCKETS)
    }

    /// Removes the expired entries of the next `buckets` buckets (going round
    /// the table; every bucket once a round). Returns how many it removed.
    /// Call it regularly (the engine does, from its control thread) so that
    /// `active` counts live flows and expired entries make room early.
    pub fn sweep(&self, m: &Moment<'_>, buckets: usize) -> usize {
        let total = self.store.bucket_count();
        let buckets = buckets.min(total);
        let start = self.sweep_cursor.fetch_add(buckets, Ordering::Relaxed) % total;
        self.sweep_from(start, buckets, m)
    }

    fn sweep_from(&self, start: usize, buckets: usize, m: &Moment<'_>) -> usize {
        let total = self.store.bucket_count();
        let limits = self.limits(m);
        let mut removed = 0;
        let mut entries = [0u32; SLOTS];
        for b in (start..start + buckets).map(|b| b % total) {
            let n = self.store.bucket_entries(b, &mut entries);
            for &e in &entries[..n] {
                let Some((id, meta)) = self.store.id_of(e) else {
                    continue;
                };
                let last = Tick(self.store.hot[e as usize].last.load(Ordering::Relaxed));
                if m.now.since(last) > limits.of(meta) && self.store.remove(e, &id, &self.store.place(&id)) {
                    removed += 1;
                }
            }
        }
        self.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Buckets in the table's index (a [`FlowTable::sweep`] round is this many).
    pub fn bucket_count(&self) -> usize {
        self.store.bucket_count()
    }

    /// Takes in the live flows of `old` (a table of another size), most
    /// recently active first while there is room; returns how many. Control
    /// path: allocates, reads the whole of `old`; flows `old` still gets while
    /// this runs may be missed.
    pub fn adopt(&self, old: &FlowTable, now: Tick) -> usize {
        let mut records = Vec::new();
        let mut entries = [0u32; SLOTS];
        for b in 0..old.store.bucket_count() {
            let n = old.store.bucket_entries(b, &mut entries);
            records.extend(entries[..n].iter().filter_map(|&e| old.store.record(e)));
        }
        records.sort_by_key(|r| now.since(r.last));
        records.iter().filter(|r| self.store.insert_record(r)).count()
    }

    /// The opening frame and origin of an established frame's flow, for a re-check.
    pub fn opening(&self, seen: &Seen) -> Option<Opening> {
        if !seen.has_entry() {
            return None;
        }
        let r = self.store.record(seen.entry)?;
        (r.id.a == seen.id.a && r.id.b == seen.id.b && r.id.ports == seen.id.ports).then(|| opening_of(&r))
    }

    /// Records that the flow of `seen` was re-checked under `generation` and may stay.
    pub fn mark_checked(&self, seen: &Seen, generation: u32) {
        if let Some(h) = self.store.hot.get(seen.entry as usize) {
            if self.store.holds(seen.entry, &seen.id) {
                h.checked.store(generation, Ordering::Relaxed);
            }
        }
    }

    /// Removes the flow of `seen` because the rules no longer open it (counted as cut).
    pub fn cut(&self, seen: &Seen) -> bool {
        if !seen.has_entry() {
            return false;
        }
        let p = self.store.place(&seen.id);
        let removed = self.store.remove(seen.entry, &seen.id, &p);
        if removed {
            self.cut.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// Every entry in use, for listings. Control path: allocates, reads the whole table.
    pub fn entries(&self, now: Tick) -> Vec<FlowInfo> {
        let mut out = Vec::new();
        let mut entries = [0u32; SLOTS];
        for b in 0..self.store.bucket_count() {
            let n = self.store.bucket_entries(b, &mut entries);
            for &e in &entries[..n] {
                if let Some(r) = self.store.record(e) {
                    let secs = |t: Tick| now.since(t) as u64 * TICK_MS / 1000;
                    out.push(FlowInfo {
                        opening: opening_of(&r),
                        phase: r.tcp.phase,
                        age_secs: secs(r.created),
                        idle_secs: secs(r.last),
                        original: r.counts[0],
                        reply: r.counts[1],
                        checked: r.checked,
                    });
                }
            }
        }
        out
    }
}

/// The opening frame of a record.
fn opening_of(r: &table::Record) -> Opening {
    let (src, dst, sp, dp) = r.id.endpoints(r.opener_from_b);
    let mut k = match r.id.ip_version() {
        6 => FlowKey::new().with_ipv6(src, dst),
        _ => FlowKey::new().with_ipv4((src as u32).to_be_bytes(), (dst as u32).to_be_bytes()),
    }
    .with_proto(r.id.proto())
    .with_dscp(r.opener.dscp);
    match r.id.proto() {
        6 => k = k.with_ports(sp, dp).with_tcp_flags(r.opener.tcp_flags),
        17 => k = k.with_ports(sp, dp),
        _ => {}
    }
    if let Some((t, c)) = r.opener.icmp {
        k = k.with_icmp(t, c);
    }
    if r.opener.tagged {
        k = k.with_vlan(r.opener.vlan);
    }
    if r.opener.first_fragment {
        k = k.with_fragment(FragmentState::First, 0, true);
    }
    Opening {
        key: k.with_flow_state(FlowState::New),
        origin: r.origin,
    }
}

#[cfg(test)]
mod tests;
