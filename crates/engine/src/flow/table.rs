//! The flow table's storage: entries that live in the slots of a bucketed
//! hash index, sized once, shared by every worker.
//!
//! # Layout (at most 127 bytes per flow of `max`: 126.2 for a million)
//!
//! * **Tags**: per bucket 16 bytes, an overflow count and the 8-bit hash tags
//!   of its 15 slots (0: empty), all 16 compared at once ([`super::simd`]).
//!   The buckets are `max / 12.5` (the table is 83% full when `max` flows
//!   are in it), 1.3 MB for a million flows: they fit the second-level
//!   cache, though a lookup's stream of entry lines evicts many. A key's
//!   home bucket is in its shard; a key that finds its home full takes a
//!   slot of the next bucket of the shard, the buckets it passes counting it
//!   in their overflow (F14's scheme: a lookup stops at the first bucket
//!   with no overflow; nothing ever moves, so no tombstones).
//! * **Hot entries** (64 bytes, one line, entry = bucket x 15 + slot): the
//!   key (both addresses, both ports, protocol, family), a meta word (TCP
//!   phase and FINs, or the timeout class of another protocol; which side opened), last-seen tick, generation last
//!   checked, and per direction the low bits of the packet and byte counts.
//!   Everything an established frame reads or writes is on this line: a
//!   lookup costs one cache miss.
//! * **Cold entries** (40 bytes, same numbering): creation tick, creating
//!   generation and rule, the opening frame and its context (for the re-check
//!   after a reload), the counters' high bits.
//!
//! # Concurrency
//!
//! Lookups take no lock: every field is an atomic read or written whole. A
//! bucket's tags are read as whole words; an entry is compared with the
//! whole key before it is used, and an entry freed and reused while a lookup
//! reads it either still holds the key (the lookup then ran before the
//! removal) or fails the comparison. Inserting and removing take the lock of
//! the key's shard (a spin lock that yields; never held across an allocation
//! or a system call), and `active` is raised before an entry is made, so the
//! table never holds more than `max`. The TCP phase changes by
//! compare-and-swap, so FINs seen at once by two workers are both kept.
//! Last-seen and the per-direction counters are plain stores: each direction
//! of a flow is normally handled by one worker at a time (the kernel's fanout
//! hashes a flow to one socket); when it is not, a count may miss an
//! increment, never a verdict.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::clock::Tick;
use super::id::{FlowId, META_KEY, META_VALID};
use super::tcp::{Tcp, TcpPhase};

/// Slots per bucket.
pub(crate) const SLOTS: usize = 15;
/// Buckets per flow of `max`: 2 per 25 (12.5 flows in 15 slots, 83%).
const FILL_NUM: usize = 2;
const FILL_DEN: usize = 25;
/// Buckets per shard at least (so a shard's fill stays near the table's).
const SHARD_MIN_BUCKETS: usize = 256;
/// No entry.
pub(crate) const NONE: u32 = u32::MAX;

/// Meta-word bits beyond the key's (see [`super::id`] for the key's).
pub(crate) const META_OPENER_B: u32 = 1 << 10;
const META_PHASE_SHIFT: u32 = 12;
const META_PHASE: u32 = 0xf << META_PHASE_SHIFT;
/// The phase bits of a flow of another protocol than TCP hold its timeout
/// class instead (TCP phases are 0 to 5), so that an entry's idle limit is
/// found by indexing, without a branch on its protocol.
pub(crate) const CLASS_UDP: u32 = 8;
pub(crate) const CLASS_ICMP: u32 = 9;
pub(crate) const CLASS_OTHER: u32 = 10;
const META_FIN_OPENER: u32 = 1 << 16;
const META_FIN_RESPONDER: u32 = 1 << 17;

/// Counter word: packets in the low 24 bits, bytes in the high 40.
const PKT_BITS: u32 = 24;
const PKT_MASK: u64 = (1 << PKT_BITS) - 1;

/// One bucket of the index: byte 0 is the overflow count (how many keys
/// whose home is this bucket or an earlier one live past it; it sticks at
/// 255), bytes 1 to 15 the slots' tags. Only a holder of the shard's lock
/// writes it (a whole word at a time); lookups read whole words.
#[derive(Debug, Default)]
#[repr(C, align(16))]
pub(crate) struct Tags {
    words: [AtomicU64; 2],
}

impl Tags {
    #[inline]
    fn overflow(&self) -> u32 {
        self.words[0].load(Ordering::Acquire) as u8 as u32
    }

    fn byte(&self, i: usize) -> u8 {
        self.words
            .get(i / 8)
            .map_or(0, |w| (w.load(Ordering::Acquire) >> (8 * (i % 8))) as u8)
    }

    /// Writes byte `i` (under the shard lock).
    fn set_byte(&self, i: usize, v: u8) {
        let Some(w) = self.words.get(i / 8) else { return };
        let shift = 8 * (i % 8);
        let old = w.load(Ordering::Relaxed);
        w.store(old & !(0xff << shift) | (v as u64) << shift, Ordering::Release);
    }

    fn tag(&self, slot: usize) -> u8 {
        self.byte(slot + 1)
    }

    fn set_tag(&self, slot: usize, tag: u8) {
        self.set_byte(slot + 1, tag);
    }

    fn add_overflow(&self, up: bool) {
        match (self.overflow(), up) {
            (255, _) => {} // stuck: lookups go on past this bucket, which is always correct
            (n, true) => self.set_byte(0, n as u8 + 1),
            (0, false) => {}
            (n, false) => self.set_byte(0, n as u8 - 1),
        }
    }

    /// The slots whose tag is `tag`, as a bit set (bit `i`: slot `i`), without a branch.
    #[inline]
    fn matches(&self, tag: u8) -> u32 {
        let (w0, w1) = (
            self.words[0].load(Ordering::Acquire),
            self.words[1].load(Ordering::Acquire),
        );
        // Byte 0 is the overflow count, not a slot.
        (super::simd::match_bytes(w0, w1, tag) & !1) >> 1
    }
}

#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Hot {
    addr: [AtomicU64; 4],
    ports: AtomicU32,
    pub(crate) meta: AtomicU32,
    pub(crate) last: AtomicU32,
    pub(crate) checked: AtomicU32,
    /// Original direction, reply direction.
    count: [AtomicU64; 2],
}

#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Cold {
    created: AtomicU32,
    generation: AtomicU32,
    rule: AtomicU32,
    context: [AtomicU32; 3],
    /// The opening frame: see [`Opener`].
    opener: AtomicU64,
    /// Per direction: packet carries (units of 2^24) in the low half, byte carries (2^40) in the high.
    carry: [AtomicU32; 2],
}

/// Where a flow came from: what the table keeps to re-check it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The generation whose rules opened it.
    pub generation: u32,
    /// The rule that opened it, in the caller's numbering (the engine: the
    /// rule's number among the names it keeps for flows, never a counter slot).
    pub rule: u32,
    /// The opening frame's context, in the caller's numbering (the engine:
    /// stable ids of the port and the route's interfaces; `u32::MAX` for none).
    pub context: [u32; 3],
}

/// The fields of the opening frame beyond its flow id, packed in 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct Opener {
    pub vlan: u16,
    pub tagged: bool,
    pub tcp_flags: u16,
    pub dscp: u8,
    /// 0 none, 1 first fragment.
    pub first_fragment: bool,
    pub icmp: Option<(u8, u8)>,
}

impl Opener {
    fn pack(self) -> u64 {
        let (t, c, has) = match self.icmp {
            Some((t, c)) => (t as u64, c as u64, 1),
            None => (0, 0, 0),
        };
        (self.vlan as u64 & 0xfff)
            | (self.tagged as u64) << 12
            | (self.first_fragment as u64) << 13
            | has << 14
            | (self.tcp_flags as u64 & 0xfff) << 16
            | (self.dscp as u64 & 0x3f) << 28
            | t << 40
            | c << 48
    }

    fn unpack(w: u64) -> Opener {
        Opener {
            vlan: (w & 0xfff) as u16,
            tagged: w >> 12 & 1 != 0,
            first_fragment: w >> 13 & 1 != 0,
            icmp: (w >> 14 & 1 != 0).then_some(((w >> 40) as u8, (w >> 48) as u8)),
            tcp_flags: (w >> 16 & 0xfff) as u16,
            dscp: (w >> 28 & 0x3f) as u8,
        }
    }
}

/// A writer lock of one shard of buckets, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ShardLock(AtomicBool);

impl ShardLock {
    fn lock(&self) -> ShardGuard<'_> {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // The holder may have been preempted: let it run.
                std::thread::yield_now();
            }
        }
        ShardGuard(&self.0)
    }
}

struct ShardGuard<'a>(&'a AtomicBool);

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What a new entry starts with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewEntry {
    /// The TCP state (for TCP flows).
    pub tcp: Option<Tcp>,
    /// Creation and last-seen time.
    pub now: Tick,
    /// The generation it is checked under.
    pub generation: u32,
    /// Where it came from.
    pub origin: Origin,
    /// The opening frame's fields.
    pub opener: Opener,
}

/// Why an entry could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// Every entry is in use.
    Full,
}

/// One entry's record, read without a lock (for listings and re-checks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub id: FlowId,
    pub opener_from_b: bool,
    pub tcp: Tcp,
    pub last: Tick,
    pub checked: u32,
    pub created: Tick,
    pub origin: Origin,
    pub opener: Opener,
    /// (packets, bytes), original then reply direction.
    pub counts: [(u64, u64); 2],
}

/// The storage: tags, entries.
pub(crate) struct Store {
    pub max: u32,
    tags: Box<[Tags]>,
    pub hot: Box<[Hot]>,
    cold: Box<[Cold]>,
    locks: Box<[ShardLock]>,
    /// Buckets per shard.
    shard_len: usize,
    seed: [u64; 4],
    /// Entries in use (raised before an entry is made, so never past `max`).
    pub active: AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max", &self.max)
            .field("buckets", &self.tags.len())
            .field("shards", &self.locks.len())
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A home bucket and a tag.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Place {
    shard: u32,
    home: u32,
    tag: u8,
}

impl Place {
    /// The home bucket's index (for tests of the hash's spread).
    #[cfg(test)]
    pub fn home_bucket(&self) -> usize {
        self.home as usize
    }
}

impl Store {
    /// Storage for `max` flows (1 to 2^24), every byte allocated now.
    pub fn new(max: u32, seed: [u64; 4]) -> Store {
        let max = max.clamp(1, 1 << 24);
        let buckets = (max as usize * FILL_NUM).div_ceil(FILL_DEN).max(1);
        let want = (buckets / SHARD_MIN_BUCKETS).max(1);
        let shards = (1usize << (usize::BITS - 1 - want.leading_zeros())).min(1024);
        let shard_len = buckets.div_ceil(shards);
        let buckets = shard_len * shards;
        let entries = buckets * SLOTS;
        let store = Store {
            max,
            tags: (0..buckets).map(|_| Tags::default()).collect(),
            hot: (0..entries).map(|_| Hot::default()).collect(),
            cold: (0..entries).map(|_| Cold::default()).collect(),
            locks: (0..shards).map(|_| ShardLock::default()).collect(),
            shard_len,
            seed,
            active: AtomicU32::new(0),
        };
        store.prefault();
        // Two random lines a lookup, each a TLB miss with 4 KiB pages: ask for 2 MiB ones.
        super::huge::advise(&store.tags);
        super::huge::advise(&store.hot);
        super::huge::advise(&store.cold);
        store
    }

    /// Writes every page of the table once, now: zeroed memory from the
    /// allocator is mapped only when first written, and a data path must not
    /// take those page faults (nor the table's memory grow under a flood).
    fn prefault(&self) {
        for t in self.tags.iter().step_by(4096 / size_of::<Tags>()) {
            t.words[0].store(0, Ordering::Relaxed);
        }
        for h in self.hot.iter().step_by(4096 / size_of::<Hot>()) {
            h.ports.store(0, Ordering::Relaxed);
        }
        for c in self.cold.iter().step_by(4096 / size_of::<Cold>()) {
            c.created.store(0, Ordering::Relaxed);
        }
    }

    /// Bytes of the tags and the entries.
    pub fn memory_bytes(&self) -> usize {
        self.tags.len() * size_of::<Tags>()
            + self.hot.len() * size_of::<Hot>()
            + self.cold.len() * size_of::<Cold>()
            + self.locks.len() * size_of::<ShardLock>()
    }

    /// Buckets in the index.
    pub fn bucket_count(&self) -> usize {
        self.tags.len()
    }

    #[inline]
    pub fn place(&self, id: &FlowId) -> Place {
        let h = id.hash(&self.seed);
        let shard = ((((h >> 32) & 0xffff) * self.locks.len() as u64) >> 16) as usize;
        let within = (((h & 0xffff_ffff) * self.shard_len as u64) >> 32) as usize;
        let tag = (h >> 48) as u8;
        Place {
            shard: shard as u32,
            home: (shard * self.shard_len + within) as u32,
            tag: if tag == 0 { 1 } else { tag },
        }
    }

    /// Asks for the home bucket's line, so that it is on its way before its
    /// tags are compared (a batch's misses overlap).
    #[inline]
    pub fn prefetch_bucket(&self, p: &Place) {
        if let Some(t) = self.tags.get(p.home as usize) {
            super::prefetch::prefetch(t);
        }
    }

    /// Asks for an entry's hot line (see [`Store::prefetch_bucket`]).
    #[inline]
    pub fn prefetch_entry(&self, entry: u32) {
        if let Some(h) = self.hot.get(entry as usize) {
            super::prefetch::prefetch(h);
        }
    }

    /// Asks for the lines of the entry a new flow of `p` would most likely
    /// take (the home bucket's first free slot), so that opening it after the
    /// policy has decided finds them in cache. The bucket's tags are read.
    #[inline]
    pub fn prefetch_free_slot(&self, p: &Place) {
        let Some(tags) = self.tags.get(p.home as usize) else {
            return;
        };
        let free = tags.matches(0);
        if free == 0 {
            return;
        }
        let e = p.home as usize * SLOTS + free.trailing_zeros() as usize;
        if let (Some(h), Some(c)) = (self.hot.get(e), self.cold.get(e)) {
            super::prefetch::prefetch(h);
            // A cold entry (40 bytes) may straddle two lines.
            super::prefetch::prefetch(c);
            super::prefetch::prefetch(&c.carry[1]);
        }
    }

    #[inline]
    fn next_bucket(&self, p: &Place, b: usize) -> usize {
        let start = p.shard as usize * self.shard_len;
        if b + 1 >= start + self.shard_len {
            start
        } else {
            b + 1
        }
    }

    /// Whether entry `e` holds `id`'s key.
    #[inline]
    pub fn holds(&self, e: u32, id: &FlowId) -> bool {
        let Some(h) = self.hot.get(e as usize) else {
            return false;
        };
        // One comparison of all the differences (a hit, the common case, reads every field anyway).
        let meta = (h.meta.load(Ordering::Acquire) & META_KEY) ^ id.key_meta;
        let ports = h.ports.load(Ordering::Relaxed) ^ id.ports;
        let addrs = (h.addr[0].load(Ordering::Relaxed) ^ (id.a >> 64) as u64)
            | (h.addr[1].load(Ordering::Relaxed) ^ id.a as u64)
            | (h.addr[2].load(Ordering::Relaxed) ^ (id.b >> 64) as u64)
            | (h.addr[3].load(Ordering::Relaxed) ^ id.b as u64);
        (meta | ports) as u64 | addrs == 0
    }

    /// The first two entries with `p`'s tag, in the first bucket of its chain
    /// that has any, without comparing keys (`NONE` for none): guesses to
    /// touch before [`Store::find`] confirms them. An 8-bit tag also
    /// matches another of a bucket's dozen entries about once in twenty
    /// lookups, and that entry comes first in about half of those: guessing
    /// only the first then paid for a second miss, in turn.
    #[inline]
    pub fn candidates(&self, p: &Place) -> [u32; 2] {
        let mut b = p.home as usize;
        for _ in 0..self.shard_len {
            let Some(tags) = self.tags.get(b) else {
                return [NONE; 2];
            };
            match tags.matches(p.tag) {
                0 if tags.overflow() == 0 => return [NONE; 2],
                0 => b = self.next_bucket(p, b),
                m => {
                    let first = (b * SLOTS + m.trailing_zeros() as usize) as u32;
                    let rest = m & (m - 1);
                    let second = (b * SLOTS + rest.trailing_zeros() as usize) as u32;
                    return [first, if rest == 0 { NONE } else { second }];
                }
            }
        }
        [NONE; 2]
    }

    /// The entry holding `id`, if any.
    #[inline]
    pub fn find(&self, id: &FlowId, p: &Place) -> u32 {
        let mut b = p.home as usize;
        for _ in 0..self.shard_len {
            let Some(tags) = self.tags.get(b) else {
                return NONE;
            };
            let mut m = tags.matches(p.tag);
            while m != 0 {
                let e = (b * SLOTS + m.trailing_zeros() as usize) as u32;
                if self.holds(e, id) {
                    return e;
                }
                m &= m - 1;
            }
            if tags.overflow() == 0 {
                return NONE;
            }
            b = self.next_bucket(p, b);
        }
        NONE
    }

    /// Makes an entry for `id` (the frame that opens it went `from_b` or not),
    /// unless one exists: returns the entry and whether it is new.
    pub fn insert(&self, id: &FlowId, p: &Place, new: &NewEntry) -> Result<(u32, bool), InsertError> {
        let NewEntry {
            tcp,
            now,
            generation,
            ref origin,
            opener,
        } = *new;
        let Some(lock) = self.locks.get(p.shard as usize) else {
            return Err(InsertError::Full);
        };
        let _guard = lock.lock();
        let found = self.find(id, p);
        if found != NONE {
            return Ok((found, false));
        }
        if self.active.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        }
        // A free slot along the chain, counting the overflow of every full bucket passed.
        let mut b = p.home as usize;
        let mut passed = 0;
        let mut slot = None;
        for _ in 0..self.shard_len {
            let Some(tags) = self.tags.get(b) else { break };
            let free = tags.matches(0);
            if free != 0 {
                slot = Some((b, free.trailing_zeros() as usize));
                break;
            }
            passed += 1;
            b = self.next_bucket(p, b);
        }
        let Some((b, i)) = slot else {
            // The shard is full (the rest of the table may not be): refuse as full.
            self.active.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        };
        let e = b * SLOTS + i;
        let (Some(h), Some(c), Some(tags)) = (self.hot.get(e), self.cold.get(e), self.tags.get(b)) else {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        };
        // Order the entry's new contents after its last owner's removal (see the module docs).
        fence(Ordering::Release);
        h.addr[0].store((id.a >> 64) as u64, Ordering::Relaxed);
        h.addr[1].store(id.a as u64, Ordering::Relaxed);
        h.addr[2].store((id.b >> 64) as u64, Ordering::Relaxed);
        h.addr[3].store(id.b as u64, Ordering::Relaxed);
        h.ports.store(id.ports, Ordering::Relaxed);
        h.last.store(now.0, Ordering::Relaxed);
        h.checked.store(generation, Ordering::Relaxed);
        h.count[0].store(0, Ordering::Relaxed);
        h.count[1].store(0, Ordering::Relaxed);
        c.created.store(now.0, Ordering::Relaxed);
        c.generation.store(origin.generation, Ordering::Relaxed);
        c.rule.store(origin.rule, Ordering::Relaxed);
        for (slot, v) in c.context.iter().zip(origin.context) {
            slot.store(v, Ordering::Relaxed);
        }
        c.opener.store(opener.pack(), Ordering::Relaxed);
        c.carry[0].store(0, Ordering::Relaxed);
        c.carry[1].store(0, Ordering::Relaxed);
        let mut meta = id.key_meta | if id.from_b { META_OPENER_B } else { 0 };
        meta = match (tcp, id.proto()) {
            (Some(t), _) => with_tcp(meta, t),
            (None, 6) => meta,
            (None, 17) => meta | CLASS_UDP << META_PHASE_SHIFT,
            (None, 1 | 58) => meta | CLASS_ICMP << META_PHASE_SHIFT,
            (None, _) => meta | CLASS_OTHER << META_PHASE_SHIFT,
        };
        h.meta.store(meta, Ordering::Release);
        let mut ob = p.home as usize;
        for _ in 0..passed {
            if let Some(t) = self.tags.get(ob) {
                t.add_overflow(true);
            }
            ob = self.next_bucket(p, ob);
        }
        tags.set_tag(i, p.tag);
        Ok((e as u32, true))
    }

    /// Removes entry `e` if it still holds `id` (a concurrent remover may have
    /// been first); returns whether this call removed it.
    pub fn remove(&self, e: u32, id: &FlowId, p: &Place) -> bool {
        let Some(lock) = self.locks.get(p.shard as usize) else {
            return false;
        };
        let guard = lock.lock();
        let (b, i) = (e as usize / SLOTS, e as usize % SLOTS);
        let Some(tags) = self.tags.get(b) else {
            return false;
        };
        if tags.tag(i) != p.tag || !self.holds(e, id) {
            return false;
        }
        tags.set_tag(i, 0);
        // The buckets between the key's home and its bucket counted it in their overflow.
        let start = p.shard as usize * self.shard_len;
        let passed = (b + self.shard_len - p.home as usize) % self.shard_len;
        debug_assert!(b >= start && b < start + self.shard_len);
        let mut ob = p.home as usize;
        for _ in 0..passed {
            if let Some(t) = self.tags.get(ob) {
                t.add_overflow(false);
            }
            ob = self.next_bucket(p, ob);
        }
        if let Some(h) = self.hot.get(e as usize) {
            h.meta.store(0, Ordering::Release);
        }
        drop(guard);
        self.active.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// The entries in bucket `b` (for sweeps), into `out`; returns how many.
    pub fn bucket_entries(&self, b: usize, out: &mut [u32; SLOTS]) -> usize {
        let Some(tags) = self.tags.get(b) else {
            return 0;
        };
        let mut n = 0;
        for i in 0..SLOTS {
            if tags.tag(i) != 0 {
                out[n] = (b * SLOTS + i) as u32;
                n += 1;
            }
        }
        n
    }

    /// The key of entry `e` (meaningful while it is valid).
    pub fn id_of(&self, e: u32) -> Option<(FlowId, u32)> {
        let h = self.hot.get(e as usize)?;
        let meta = h.meta.load(Ordering::Acquire);
        if meta & META_VALID == 0 {
            return None;
        }
        let a = (h.addr[0].load(Ordering::Relaxed) as u128) << 64 | h.addr[1].load(Ordering::Relaxed) as u128;
        let b = (h.addr[2].load(Ordering::Relaxed) as u128) << 64 | h.addr[3].load(Ordering::Relaxed) as u128;
        let id = FlowId {
            a,
            b,
            ports: h.ports.load(Ordering::Relaxed),
            key_meta: meta & META_KEY,
            from_b: false,
        };
        Some((id, meta))
    }

    /// Everything about entry `e`, if it is in use.
    pub fn record(&self, e: u32) -> Option<Record> {
        let (id, meta) = self.id_of(e)?;
        let h = self.hot.get(e as usize)?;
        let c = self.cold.get(e as usize)?;
        let counts = [0, 1].map(|d| {
            let w = h.count[d].load(Ordering::Relaxed);
            let carry = c.carry[d].load(Ordering::Relaxed);
            (
                (w & PKT_MASK) + ((carry & 0xffff) as u64) * (1 << PKT_BITS),
                (w >> PKT_BITS) + ((carry >> 16) as u64) * (1 << (64 - PKT_BITS)),
            )
        });
        Some(Record {
            id,
            opener_from_b: meta & META_OPENER_B != 0,
            tcp: tcp_of(meta),
            last: Tick(h.last.load(Ordering::Relaxed)),
            checked: h.checked.load(Ordering::Relaxed),
            created: Tick(c.created.load(Ordering::Relaxed)),
            origin: Origin {
                generation: c.generation.load(Ordering::Relaxed),
                rule: c.rule.load(Ordering::Relaxed),
                context: [0, 1, 2].map(|i| c.context[i].load(Ordering::Relaxed)),
            },
            opener: Opener::unpack(c.opener.load(Ordering::Relaxed)),
            counts,
        })
    }

    /// Copies a record of another table in (a resize): its key, state,
    /// times, origin and counts. Returns whether there was room.
    pub fn insert_record(&self, r: &Record) -> bool {
        let id = FlowId {
            from_b: r.opener_from_b,
            ..r.id
        };
        let p = self.place(&id);
        let new = NewEntry {
            tcp: Some(r.tcp).filter(|t| t.phase != TcpPhase::None),
            now: r.created,
            generation: r.checked,
            origin: r.origin,
            opener: r.opener,
        };
        let Ok((e, true)) = self.insert(&id, &p, &new) else {
            return false;
        };
        if let (Some(h), Some(c)) = (self.hot.get(e as usize), self.cold.get(e as usize)) {
            h.last.store(r.last.0, Ordering::Relaxed);
            for (d, &(pkts, bytes)) in r.counts.iter().enumerate() {
                let low = (bytes & ((1 << (64 - PKT_BITS)) - 1)) << PKT_BITS | (pkts & PKT_MASK);
                h.count[d].store(low, Ordering::Relaxed);
                let carry_p = (pkts >> PKT_BITS).min(0xffff) as u32;
                let carry_b = (bytes >> (64 - PKT_BITS)).min(0xffff) as u32;
                c.carry[d].store(carry_b << 16 | carry_p, Ordering::Relaxed);
            }
        }
        true
    }

    /// Counts one frame of `bytes` bytes in direction `dir` (0 original, 1 reply) of entry `e`.
    #[inline]
    pub fn count(&self, e: u32, dir: usize, bytes: u32) {
        let Some(h) = self.hot.get(e as usize) else {
            return;
        };
        let Some(cell) = h.count.get(dir) else { return };
        let w = cell.load(Ordering::Relaxed);
        let pkts = (w & PKT_MASK) + 1;
        let octets = (w >> PKT_BITS) + bytes as u64;
        if pkts > PKT_MASK || octets >> (64 - PKT_BITS) != 0 {
            self.carry(e, dir, pkts, octets, cell);
            return;
        }
        cell.store(octets << PKT_BITS | pkts, Ordering::Relaxed);
    }

    /// Moves the counters' overflow into the cold entry (once in 16 M packets or 1 TiB).
    #[cold]
    fn carry(&self, e: u32, dir: usize, pkts: u64, octets: u64, cell: &AtomicU64) {
        let Some(c) = self.cold.get(e as usize).and_then(|c| c.carry.get(dir)) else {
            return;
        };
        let carry_p = (pkts >> PKT_BITS) as u32;
        let carry_b = (octets >> (64 - PKT_BITS)) as u32;
        let old = c.load(Ordering::Relaxed);
        let p = ((old & 0xffff) + carry_p).min(0xffff);
        let b = ((old >> 16) + carry_b).min(0xffff);
        c.store(b << 16 | p, Ordering::Relaxed);
        let low = (octets & ((1 << (64 - PKT_BITS)) - 1)) << PKT_BITS | (pkts & PKT_MASK);
        cell.store(low, Ordering::Relaxed);
    }

    /// Applies a TCP segment to entry `e` (which holds `id`), by compare-and-swap.
    #[inline]
    pub fn tcp_update(&self, e: u32, id: &FlowId, meta: u32, reply: bool, flags: u16) {
        let Some(h) = self.hot.get(e as usize) else {
            return;
        };
        let mut cur = meta;
        loop {
            let next = with_tcp(cur, tcp_of(cur).after(flags, reply));
            if next == cur || cur & META_KEY != id.key_meta {
                return;
            }
            match h
                .meta
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(m) => cur = m,
            }
        }
    }
}

/// Whether a TCP segment with `flags` leaves an entry's TCP state as it is
/// (an established flow's data and ACKs: the common case, decided without
/// computing the transition).
#[inline]
pub(crate) const fn steady(meta: u32, flags: u16) -> bool {
    use super::tcp::{FIN, RST, SYN};
    (meta & META_PHASE) >> META_PHASE_SHIFT == TcpPhase::Established as u32 && flags & (FIN | RST | SYN) == 0
}

/// The meta word with TCP state `t`.
pub(crate) const fn with_tcp(meta: u32, t: Tcp) -> u32 {
    let m = meta & !(META_PHASE | META_FIN_OPENER | META_FIN_RESPONDER);
    m | (t.phase as u32) << META_PHASE_SHIFT
        | if t.fin_opener { META_FIN_OPENER } else { 0 }
        | if t.fin_responder { META_FIN_RESPONDER } else { 0 }
}

/// The timeout class of a meta word: the TCP phase, or a `CLASS_*` (below 16).
#[inline(always)]
pub(crate) const fn class_of(meta: u32) -> usize {
    ((meta & META_PHASE) >> META_PHASE_SHIFT) as usize
}

/// The TCP state of a meta word (of a TCP flow).
pub(crate) const fn tcp_of(meta: u32) -> Tcp {
    Tcp {
        phase: TcpPhase::from_bits((meta & META_PHASE) >> META_PHASE_SHIFT),
        fin_opener: meta & META_FIN_OPENER != 0,
        fin_responder: meta & META_FIN_RESPONDER != 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry() -> NewEntry {
        NewEntry {
            tcp: None,
            now: Tick(0),
            generation: 1,
            origin: Origin::default(),
            opener: Opener::default(),
        }
    }

    #[test]
    fn entries_fit_the_budget() {
        assert_eq!(size_of::<Hot>(), 64);
        assert_eq!(size_of::<Cold>(), 40);
        assert_eq!(size_of::<Tags>(), 16);
        for max in [1 << 20, 1 << 24, 1000, 100_000] {
            let s = Store::new(max, [1, 2, 3, 4]);
            let per_flow = s.memory_bytes() as f64 / max as f64;
            assert!(per_flow <= 128.0, "max {max}: {per_flow} bytes per flow");
        }
    }

    #[test]
    fn tags_match_slots_not_the_overflow_count() {
        let t = Tags::default();
        t.set_tag(0, 7);
        t.set_tag(6, 7);
        t.set_tag(7, 9);
        t.set_tag(14, 7);
        t.set_byte(0, 7); // an overflow count equal to the tag is not a slot
        assert_eq!(t.matches(7), 1 | 1 << 6 | 1 << 14);
        assert_eq!(t.matches(9), 1 << 7);
        assert_eq!(t.matches(0).count_ones(), 11);
        assert_eq!(t.overflow(), 7);
    }

    #[test]
    fn the_first_two_entries_sharing_a_tag_are_both_guessed() {
        let s = Store::new(1000, [1, 2, 3, 4]);
        // Three keys forced into one bucket with one tag (as 8-bit tags collide).
        let p = Place {
            shard: 0,
            home: 3,
            tag: 42,
        };
        let ids = [5, 6, 7].map(|port| FlowId::new(false, 17, 1, 2, port, 53));
        let entries = ids.map(|id| s.insert(&id, &p, &entry()).unwrap().0);
        assert_eq!(s.candidates(&p), [entries[0], entries[1]]);
        for (id, e) in ids.iter().zip(entries) {
            assert_eq!(s.find(id, &p), e);
        }
        // With the first gone, the next two; with one left, it alone.
        assert!(s.remove(entries[0], &ids[0], &p));
        assert_eq!(s.candidates(&p), [entries[1], entries[2]]);
        assert!(s.remove(entries[1], &ids[1], &p));
        assert_eq!(s.candidates(&p), [entries[2], NONE]);
        assert!(s.remove(entries[2], &ids[2], &p));
        assert_eq!(s.candidates(&p), [NONE, NONE]);
        // Keys whose home bucket is full of other tags are guessed in the
        // next bucket of the chain, also past the shard's end (one shard of
        // 80 buckets here: bucket 79's next is 0).
        assert_eq!((s.bucket_count(), s.locks.len()), (80, 1));
        for home in [3, 79] {
            let other = Place { tag: 7, home, ..p };
            let tagged = Place { tag: 42, home, ..p };
            for port in 0..SLOTS as u16 {
                let id = FlowId::new(false, 6, 9, u128::from(10 + home), port, 80);
                s.insert(&id, &other, &entry()).unwrap();
            }
            let next = (home as usize + 1) % 80;
            let over = [1, 2].map(|port| FlowId::new(false, 6, 11, u128::from(12 + home), port, 80));
            let e0 = s.insert(&over[0], &tagged, &entry()).unwrap().0;
            assert_eq!(e0 as usize / SLOTS, next, "in the next bucket");
            assert_eq!(s.candidates(&tagged), [e0, NONE]);
            let e1 = s.insert(&over[1], &tagged, &entry()).unwrap().0;
            assert_eq!(s.candidates(&tagged), [e0, e1]);
            assert_eq!(s.find(&over[1], &tagged), e1);
        }
    }

    #[test]
    fn opener_packs_losslessly() {
        let o = Opener {
            vlan: 4094,
            tagged: true,
            tcp_flags: 0x0c2,
            dscp: 46,
            first_fragment: true,
            icmp: Some((128, 3)),
        };
        assert_eq!(Opener::unpack(o.pack()), o);
        assert_eq!(Opener::unpack(Opener::default().pack()), Opener::default());
    }

    #[test]
    fn counters_carry_into_the_cold_entry() {
        let s = Store::new(4, [1, 2, 3, 4]);
        let id = FlowId::new(false, 17, 1, 2, 3, 4);
        let p = s.place(&id);
        let (e, new) = s.insert(&id, &p, &entry()).unwrap();
        assert!(new);
        // Just below both limits, then over them.
        s.hot[e as usize].count[0].store(
            ((1u64 << 40) - 10) << PKT_BITS | (PKT_MASK - 1),
            Ordering::Relaxed,
        );
        s.count(e, 0, 20);
        s.count(e, 0, 20);
        let r = s.record(e).unwrap();
        assert_eq!(r.counts[0], (PKT_MASK + 1, (1u64 << 40) - 10 + 40));
        assert_eq!(r.counts[1], (0, 0));
    }
}
