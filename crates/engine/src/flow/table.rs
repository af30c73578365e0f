//! The flow table's storage: a bucketed hash index over two entry arrays,
//! sized once, shared by every worker.
//!
//! # Layout (about 118 bytes per flow of `max`)
//!
//! * **Index**: buckets of one cache line, 15 slots of 32 bits each (an 8-bit
//!   tag from the hash and a 24-bit entry number) and an overflow count.
//!   There are `max / 11` buckets (about 73% full when the table is), in
//!   shards of contiguous buckets; a key's home bucket is in its shard, and a
//!   key that finds its home full goes to the next bucket of the shard, the
//!   buckets it passes counting it in their overflow (F14's scheme: a lookup
//!   stops at the first bucket with no overflow; nothing ever moves, so no
//!   tombstones).
//! * **Hot entries** (64 bytes, one line): the key (both addresses, both
//!   ports, protocol, family), a meta word (TCP phase, FINs, which side
//!   opened), last-seen tick, generation last checked, and per direction the
//!   low bits of the packet and byte counts. Everything an established
//!   frame reads or writes is on this line.
//! * **Cold entries** (48 bytes): creation tick, creating generation and rule,
//!   the opening frame and its context (for the re-check after a reload), the
//!   counters' high bits, the free-list link.
//!
//! # Concurrency
//!
//! Lookups take no lock: every field is an atomic read or written whole. A
//! slot holds its tag and entry number in one word, so a lookup never sees
//! half a slot; an entry is compared with the whole key before it is used,
//! and an entry freed and reused while a lookup reads it either still holds
//! the key (the lookup then ran before the removal) or fails the comparison.
//! Inserting and removing take the lock of the key's shard (a spin lock that
//! yields; never held across an allocation or a system call). Entries come
//! from a lock-free free list (a Treiber stack whose head carries an ABA
//! counter) and, until every entry has been used once, from a bump counter.
//! The TCP phase changes by compare-and-swap, so FINs seen at once by two
//! workers are both kept. Last-seen and the per-direction counters are plain
//! stores: each direction of a flow is normally handled by one worker at a
//! time (the kernel's fanout hashes a flow to one socket); when it is not,
//! a count may miss an increment, never a verdict.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::clock::Tick;
use super::id::{FlowId, META_KEY, META_VALID};
use super::tcp::{Tcp, TcpPhase};

/// Slots per bucket.
pub(crate) const SLOTS: usize = 15;
/// Entries per bucket at most `max`: 11 of 15 slots (73%).
const FILL: usize = 11;
/// Entry numbers are 24 bits.
pub(crate) const ENTRY_BITS: u32 = 24;
const ENTRY_MASK: u32 = (1 << ENTRY_BITS) - 1;
/// No entry.
pub(crate) const NONE: u32 = u32::MAX;

/// Meta-word bits beyond the key's (see [`super::id`] for the key's).
pub(crate) const META_OPENER_B: u32 = 1 << 10;
const META_PHASE_SHIFT: u32 = 12;
const META_PHASE: u32 = 0xf << META_PHASE_SHIFT;
const META_FIN_OPENER: u32 = 1 << 16;
const META_FIN_RESPONDER: u32 = 1 << 17;

/// Counter word: packets in the low 24 bits, bytes in the high 40.
const PKT_BITS: u32 = 24;
const PKT_MASK: u64 = (1 << PKT_BITS) - 1;

#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    /// How many keys whose home is this bucket or an earlier one live past it.
    overflow: AtomicU32,
    slots: [AtomicU32; SLOTS],
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
    next: AtomicU32,
    _spare: AtomicU32,
}

/// Where a flow came from: what the table keeps to re-check it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The generation whose rules opened it.
    pub generation: u32,
    /// The rule that opened it, in the caller's numbering (the engine: a counter slot).
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

/// The storage: index, entries, free list.
pub(crate) struct Store {
    pub max: u32,
    buckets: Box<[Bucket]>,
    pub hot: Box<[Hot]>,
    cold: Box<[Cold]>,
    locks: Box<[ShardLock]>,
    /// Buckets per shard.
    shard_len: usize,
    seed: [u64; 4],
    /// Free list head: ABA counter in the high half, entry + 1 in the low (0: empty).
    free: AtomicU64,
    /// Entries handed out from the never-used end.
    fresh: AtomicU32,
    /// Entries in use.
    pub active: AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max", &self.max)
            .field("buckets", &self.buckets.len())
            .field("shards", &self.locks.len())
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A home bucket and a tag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    shard: usize,
    home: usize,
    tag: u32,
}

impl Place {
    /// The home bucket's index (for tests of the hash's spread).
    #[cfg(test)]
    pub fn home_bucket(&self) -> usize {
        self.home
    }
}

impl Store {
    /// Storage for `max` flows (1 to 2^24), every byte allocated now.
    pub fn new(max: u32, seed: [u64; 4]) -> Store {
        let max = max.clamp(1, 1 << ENTRY_BITS);
        let n = max as usize;
        let buckets = n.div_ceil(FILL).max(1);
        // Shards of at least 64 buckets (so a shard's load stays near the mean), at most 1024.
        let want = (buckets / 64).max(1);
        let shards = (1usize << (usize::BITS - 1 - want.leading_zeros())).min(1024);
        let shard_len = buckets.div_ceil(shards);
        let buckets = shard_len * shards;
        Store {
            max,
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            hot: (0..n).map(|_| Hot::default()).collect(),
            cold: (0..n).map(|_| Cold::default()).collect(),
            locks: (0..shards).map(|_| ShardLock::default()).collect(),
            shard_len,
            seed,
            free: AtomicU64::new(0),
            fresh: AtomicU32::new(0),
            active: AtomicU32::new(0),
        }
    }

    /// Bytes of the index and the entries.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Bucket>()
            + self.hot.len() * size_of::<Hot>()
            + self.cold.len() * size_of::<Cold>()
            + self.locks.len() * size_of::<ShardLock>()
    }

    /// Buckets in the index.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    #[inline]
    pub fn place(&self, id: &FlowId) -> Place {
        let h = id.hash(&self.seed);
        let shard = ((((h >> 32) & 0xffff) * self.locks.len() as u64) >> 16) as usize;
        let within = (((h & 0xffff_ffff) * self.shard_len as u64) >> 32) as usize;
        let tag = ((h >> 48) & 0xff) as u32;
        Place {
            shard,
            home: shard * self.shard_len + within,
            tag: if tag == 0 { 1 } else { tag },
        }
    }

    /// Loads the home bucket's first word, so that the line is on its way
    /// before the bucket is scanned (batches overlap their cache misses).
    #[inline]
    pub fn touch_bucket(&self, p: &Place) -> u32 {
        self.buckets
            .get(p.home)
            .map_or(0, |b| b.overflow.load(Ordering::Relaxed))
    }

    /// Loads an entry's first word (see [`Store::touch_bucket`]).
    #[inline]
    pub fn touch_entry(&self, entry: u32) -> u32 {
        self.hot
            .get(entry as usize)
            .map_or(0, |h| h.ports.load(Ordering::Relaxed))
    }

    #[inline]
    fn next_bucket(&self, p: &Place, b: usize) -> usize {
        let start = p.shard * self.shard_len;
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
        h.meta.load(Ordering::Acquire) & META_KEY == id.key_meta
            && h.ports.load(Ordering::Relaxed) == id.ports
            && h.addr[0].load(Ordering::Relaxed) == (id.a >> 64) as u64
            && h.addr[1].load(Ordering::Relaxed) == id.a as u64
            && h.addr[2].load(Ordering::Relaxed) == (id.b >> 64) as u64
            && h.addr[3].load(Ordering::Relaxed) == id.b as u64
    }

    /// The first entry of the home bucket with `p`'s tag, without comparing keys:
    /// a guess to touch before [`Store::find`] confirms it.
    #[inline]
    pub fn first_candidate(&self, p: &Place) -> u32 {
        let Some(b) = self.buckets.get(p.home) else {
            return NONE;
        };
        for s in &b.slots {
            let v = s.load(Ordering::Relaxed);
            if v >> ENTRY_BITS == p.tag {
                return v & ENTRY_MASK;
            }
        }
        NONE
    }

    /// The entry holding `id`, if any.
    #[inline]
    pub fn find(&self, id: &FlowId, p: &Place) -> u32 {
        let mut b = p.home;
        for _ in 0..self.shard_len {
            let Some(bucket) = self.buckets.get(b) else {
                return NONE;
            };
            for s in &bucket.slots {
                let v = s.load(Ordering::Acquire);
                if v >> ENTRY_BITS == p.tag && self.holds(v & ENTRY_MASK, id) {
                    return v & ENTRY_MASK;
                }
            }
            if bucket.overflow.load(Ordering::Acquire) == 0 {
                return NONE;
            }
            b = self.next_bucket(p, b);
        }
        NONE
    }

    fn pop_free(&self) -> Option<u32> {
        let mut head = self.free.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                break;
            }
            let e = top - 1;
            let next = self
                .cold
                .get(e as usize)
                .map_or(0, |c| c.next.load(Ordering::Relaxed));
            let new = (head >> 32).wrapping_add(1) << 32 | next as u64;
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(e),
                Err(h) => head = h,
            }
        }
        let f = self.fresh.load(Ordering::Relaxed);
        if f >= self.max {
            return None;
        }
        let f = self.fresh.fetch_add(1, Ordering::Relaxed);
        if f < self.max {
            Some(f)
        } else {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    fn push_free(&self, e: u32) {
        let Some(c) = self.cold.get(e as usize) else {
            return;
        };
        let mut head = self.free.load(Ordering::Relaxed);
        loop {
            c.next.store(head as u32, Ordering::Relaxed);
            let new = (head >> 32).wrapping_add(1) << 32 | (e as u64 + 1);
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
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
        let Some(lock) = self.locks.get(p.shard) else {
            return Err(InsertError::Full);
        };
        let _guard = lock.lock();
        let found = self.find(id, p);
        if found != NONE {
            return Ok((found, false));
        }
        let e = self.pop_free().ok_or(InsertError::Full)?;
        // A free slot along the chain, counting the overflow of every full bucket passed.
        let mut b = p.home;
        let mut passed = 0;
        let mut slot = None;
        for _ in 0..self.shard_len {
            let Some(bucket) = self.buckets.get(b) else { break };
            if let Some(s) = bucket.slots.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
                slot = Some(s);
                break;
            }
            passed += 1;
            b = self.next_bucket(p, b);
        }
        let Some(slot) = slot else {
            // The shard is full (the rest of the table may not be): refuse as full.
            self.push_free(e);
            return Err(InsertError::Full);
        };
        let (Some(h), Some(c)) = (self.hot.get(e as usize), self.cold.get(e as usize)) else {
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
        if let Some(t) = tcp {
            meta = with_tcp(meta, t);
        }
        h.meta.store(meta, Ordering::Release);
        let mut ob = p.home;
        for _ in 0..passed {
            if let Some(bucket) = self.buckets.get(ob) {
                bucket.overflow.fetch_add(1, Ordering::Relaxed);
            }
            ob = self.next_bucket(p, ob);
        }
        slot.store(p.tag << ENTRY_BITS | e, Ordering::Release);
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok((e, true))
    }

    /// Removes entry `e` if it still holds `id` (a concurrent remover may have
    /// been first); returns whether this call removed it.
    pub fn remove(&self, e: u32, id: &FlowId, p: &Place) -> bool {
        let Some(lock) = self.locks.get(p.shard) else {
            return false;
        };
        let guard = lock.lock();
        let mut b = p.home;
        let want = p.tag << ENTRY_BITS | e;
        let mut passed = 0;
        let mut hit = None;
        for _ in 0..self.shard_len {
            let Some(bucket) = self.buckets.get(b) else { break };
            if let Some(s) = bucket.slots.iter().find(|s| s.load(Ordering::Relaxed) == want) {
                hit = Some(s);
                break;
            }
            if bucket.overflow.load(Ordering::Relaxed) == 0 {
                break;
            }
            passed += 1;
            b = self.next_bucket(p, b);
        }
        let Some(slot) = hit else { return false };
        if !self.holds(e, id) {
            return false;
        }
        slot.store(0, Ordering::Release);
        let mut ob = p.home;
        for _ in 0..passed {
            if let Some(bucket) = self.buckets.get(ob) {
                bucket.overflow.fetch_sub(1, Ordering::Relaxed);
            }
            ob = self.next_bucket(p, ob);
        }
        if let Some(h) = self.hot.get(e as usize) {
            h.meta.store(0, Ordering::Release);
        }
        drop(guard);
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.push_free(e);
        true
    }

    /// The entry numbers in bucket `b` (for sweeps), into `out`; returns how many.
    pub fn bucket_entries(&self, b: usize, out: &mut [u32; SLOTS]) -> usize {
        let Some(bucket) = self.buckets.get(b) else {
            return 0;
        };
        let mut n = 0;
        for s in &bucket.slots {
            let v = s.load(Ordering::Acquire);
            if v != 0 {
                out[n] = v & ENTRY_MASK;
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

/// The meta word with TCP state `t`.
pub(crate) const fn with_tcp(meta: u32, t: Tcp) -> u32 {
    let m = meta & !(META_PHASE | META_FIN_OPENER | META_FIN_RESPONDER);
    m | (t.phase as u32) << META_PHASE_SHIFT
        | if t.fin_opener { META_FIN_OPENER } else { 0 }
        | if t.fin_responder { META_FIN_RESPONDER } else { 0 }
}

/// The TCP state of a meta word.
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

    #[test]
    fn entries_fit_the_budget() {
        assert_eq!(size_of::<Hot>(), 64);
        assert_eq!(size_of::<Cold>(), 48);
        assert_eq!(size_of::<Bucket>(), 64);
        let s = Store::new(1 << 20, [1, 2, 3, 4]);
        let per_flow = s.memory_bytes() as f64 / (1 << 20) as f64;
        assert!(per_flow <= 128.0, "{per_flow} bytes per flow");
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
