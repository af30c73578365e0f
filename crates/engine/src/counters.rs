//! Counters: sharded per worker, keyed by identity so they follow rules across reloads.
//!
//! Every counted thing (a rule of an ACL, an ACL's default, a rescue rule, a
//! binding's evaluated/permitted/denied) gets a *slot* from the engine-wide
//! [`SlotRegistry`], looked up by a stable identity string such as
//! `rule lan-in dns`. A generation carries a [`Layout`] mapping its own
//! indices to slots, computed once on the control path. A rule that keeps its
//! id in the next generation keeps its slot, so its count carries on.
//!
//! Each worker handle owns one [`Shard`]: an array of atomics that only its
//! own thread writes (plain relaxed load + store, no read-modify-write, no
//! cache line shared with another writer). Status sums all shards.
//!
//! Slots are freed when their identity is in no generation that may still
//! run or come back (the engine decides: every generation in memory and
//! every kept one), so a daemon that sees thousands of reloads with new rule
//! ids keeps a bounded number of slots. A freed slot may go to a new identity
//! later; since a worker's cells can only be written by that worker, the
//! count the old identity left there is not zeroed but recorded as the slot's
//! *baseline* and subtracted when status reads it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::policy::Stage;

/// Identity of a counted thing, stable across reloads.
pub(crate) fn rule_identity(acl: &str, rule: &str) -> String {
    format!("rule\u{0}{acl}\u{0}{rule}")
}

/// Identity of an ACL's implicit default rule.
pub(crate) fn default_identity(acl: &str) -> String {
    format!("default\u{0}{acl}")
}

/// Identity of the all-frames counters (evaluated, permitted, denied, bytes).
pub(crate) const TOTAL_IDENTITY: &str = "total";

/// Identity of the per-stage counters: frames each stage decided, permitted and denied.
pub(crate) const STAGES_IDENTITY: &str = "stages";

/// Slots of a rule, an ACL default or a rescue rule: packets, then bytes at `+1`.
pub(crate) const RULE_WIDTH: u32 = 2;

/// Slots of the all-frames counters: evaluated, permitted, denied, bytes.
pub(crate) const TOTAL_WIDTH: u32 = 4;

/// Every stage that can decide a frame, in the order of the stage counters
/// (two slots each: permitted, denied).
pub(crate) const STAGES: [Stage; 11] = [
    Stage::Rescue,
    Stage::Malformed,
    Stage::VlanFilter,
    Stage::Context,
    Stage::PortAcl,
    Stage::VlanAclIn,
    Stage::RoutedAclIn,
    Stage::RoutedAclOut,
    Stage::VlanAclOut,
    Stage::Passed,
    Stage::FlowsFull,
];

/// The position of `stage` in [`STAGES`] (exhaustive: a new stage must be placed here).
#[inline]
pub(crate) const fn stage_index(stage: Stage) -> u32 {
    match stage {
        Stage::Rescue => 0,
        Stage::Malformed => 1,
        Stage::VlanFilter => 2,
        Stage::Context => 3,
        Stage::PortAcl => 4,
        Stage::VlanAclIn => 5,
        Stage::RoutedAclIn => 6,
        Stage::RoutedAclOut => 7,
        Stage::VlanAclOut => 8,
        Stage::Passed => 9,
        Stage::FlowsFull => 10,
    }
}

/// Identity of the frames whose flow state was `invalid`, and (next slot)
/// of the frames denied at stage `flows-full`.
pub(crate) const FLOWS_IDENTITY: &str = "flows";

/// Identity of a port or L3 interface name in the engine's flow-name
/// registry (not a counter): its number is how a flow entry keeps its
/// opening frame's context.
pub(crate) fn context_identity(kind: &str, name: &str) -> String {
    format!("context\u{0}{kind}\u{0}{name}")
}

/// Identity of a rescue rule.
pub(crate) fn rescue_identity(rescue: &str) -> String {
    format!("rescue\u{0}{rescue}")
}

/// Identity of a binding (its ACL and where it is attached).
pub(crate) fn binding_identity(acl: &str, kind: &str, target: &str, direction: Option<&str>) -> String {
    format!(
        "bind\u{0}{acl}\u{0}{kind}\u{0}{target}\u{0}{}",
        direction.unwrap_or("")
    )
}

/// Hands out counter slots by identity; frees the slots of identities no
/// longer live ([`SlotRegistry::retain`]) for reuse.
#[derive(Debug, Default)]
pub(crate) struct SlotRegistry {
    slots: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Identity -> (first slot, width).
    map: HashMap<String, (u32, u32)>,
    /// One past the highest slot ever handed out.
    next: u32,
    /// Freed slots by width.
    free: HashMap<u32, Vec<u32>>,
}

impl SlotRegistry {
    /// The slot of `identity`, allocating `width` consecutive slots the first time
    /// (a freed run of that width when there is one).
    pub(crate) fn slot(&self, identity: &str, width: u32) -> u32 {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let reg = &mut *guard;
        if let Some(&(s, _)) = reg.map.get(identity) {
            return s;
        }
        let s = match reg.free.get_mut(&width).and_then(Vec::pop) {
            Some(s) => s,
            None => {
                let s = reg.next;
                reg.next += width;
                s
            }
        };
        reg.map.insert(identity.to_string(), (s, width));
        s
    }

    /// Frees the slots of every identity not in `live`; returns the freed runs (slot, width).
    pub(crate) fn retain(&self, live: &HashSet<&str>) -> Vec<(u32, u32)> {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let reg = &mut *guard;
        let mut freed = Vec::new();
        reg.map.retain(|id, &mut (s, w)| {
            let keep = live.contains(id.as_str());
            if !keep {
                freed.push((s, w));
            }
            keep
        });
        for &(s, w) in &freed {
            reg.free.entry(w).or_default().push(s);
        }
        freed
    }

    /// Identities holding a slot.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    /// One past the highest slot ever handed out.
    #[cfg(test)]
    pub(crate) fn high(&self) -> u32 {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).next
    }

    /// The identity that holds `slot`, if any (control path: scans the registry).
    pub(crate) fn identity_of(&self, slot: u32) -> Option<String> {
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .map
            .iter()
            .find(|(_, &(s, _))| s == slot)
            .map(|(k, _)| k.clone())
    }
}

/// Where one binding's three counters live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BindingSlots {
    /// Frames evaluated; `+1` permitted, `+2` denied.
    pub base: u32,
}

/// One generation's map from its indices to counter slots.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    /// Per ACL (policy order): one slot per rule, then one for the default
    /// (packets; bytes at `+1`, see [`RULE_WIDTH`]).
    pub acl_rules: Vec<Vec<u32>>,
    /// Per rescue rule (packets; bytes at `+1`).
    pub rescue: Vec<u32>,
    /// Per binding (policy order).
    pub bindings: Vec<BindingSlots>,
    /// All frames: evaluated, `+1` permitted, `+2` denied, `+3` bytes.
    pub total: u32,
    /// Frames per deciding stage: `+2i` permitted and `+2i+1` denied by `STAGES[i]`.
    pub stages: u32,
    /// Frames whose flow state was `invalid`; `+1` frames denied at stage `flows-full`.
    pub flows: u32,
    /// One past the highest slot used.
    pub len: usize,
    /// The identities of every slot above (what keeps them from being freed).
    pub identities: Arc<[String]>,
}

impl Layout {
    pub(crate) fn fix_len(&mut self) {
        let mut max = (self.total + TOTAL_WIDTH)
            .max(self.stages + 2 * STAGES.len() as u32)
            .max(self.flows + 2);
        for v in &self.acl_rules {
            for &s in v {
                max = max.max(s + RULE_WIDTH);
            }
        }
        for &s in &self.rescue {
            max = max.max(s + RULE_WIDTH);
        }
        for b in &self.bindings {
            max = max.max(b.base + 3);
        }
        self.len = max as usize;
    }
}

/// One worker's counters: written by one thread only, read by status.
#[derive(Debug)]
pub(crate) struct Shard {
    cells: ArcSwap<Box<[AtomicU64]>>,
}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            cells: ArcSwap::from_pointee(Vec::new().into_boxed_slice()),
        }
    }

    /// The current cell array (for the owning worker to cache, or for status).
    pub(crate) fn cells(&self) -> Arc<Box<[AtomicU64]>> {
        self.cells.load_full()
    }

    /// Grows the array to `len` cells, keeping values. Only the owning worker calls this,
    /// so no increment can be lost between the copy and the swap.
    pub(crate) fn grow(&self, len: usize) -> Arc<Box<[AtomicU64]>> {
        let old = self.cells.load_full();
        if old.len() >= len {
            return old;
        }
        // 64 bytes of padding after the cells: no other shard's counters share a cache line with ours.
        let new: Box<[AtomicU64]> = (0..len + 8)
            .map(|i| AtomicU64::new(old.get(i).map_or(0, |c| c.load(Ordering::Relaxed))))
            .collect();
        let new = Arc::new(new);
        self.cells.store(Arc::clone(&new));
        new
    }
}

/// Adds one to a cell owned by the calling thread (single writer: load + store).
#[inline]
pub(crate) fn bump(cells: &[AtomicU64], slot: u32) {
    if let Some(c) = cells.get(slot as usize) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

/// Adds `n` to a cell owned by the calling thread (single writer: load + store).
#[inline]
pub(crate) fn add(cells: &[AtomicU64], slot: u32, n: u64) {
    if let Some(c) = cells.get(slot as usize) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// Every worker's shard; status sums across them.
#[derive(Debug, Default)]
pub(crate) struct ShardSet {
    shards: Mutex<Vec<Arc<Shard>>>,
    /// Per slot, what earlier owners of a freed slot counted there (subtracted by [`ShardSet::totals`]).
    baseline: Mutex<Vec<u64>>,
}

impl ShardSet {
    /// Registers a new shard for a new worker handle.
    pub(crate) fn add(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::new());
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&shard));
        shard
    }

    /// The sum over all shards of each slot, `len` slots long, since the slot's current owner got it.
    pub(crate) fn totals(&self, len: usize) -> Vec<u64> {
        let mut out = self.raw_totals(len);
        let baseline = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        for (o, b) in out.iter_mut().zip(baseline.iter()) {
            *o = o.wrapping_sub(*b);
        }
        out
    }

    fn raw_totals(&self, len: usize) -> Vec<u64> {
        let mut out = vec![0u64; len];
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        for shard in shards.iter() {
            let cells = shard.cells();
            for (o, c) in out.iter_mut().zip(cells.iter()) {
                *o = o.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        out
    }

    /// Records the counts in freed slots as their baseline, so the slots' next
    /// owners start from zero. Only for slots that no running generation uses
    /// (no worker writes them any more, so their sums are stable).
    pub(crate) fn release(&self, freed: &[(u32, u32)]) {
        let Some(end) = freed.iter().map(|&(s, w)| (s + w) as usize).max() else {
            return;
        };
        let raw = self.raw_totals(end);
        let mut baseline = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        if baseline.len() < end {
            baseline.resize(end, 0);
        }
        for &(s, w) in freed {
            for i in s as usize..(s + w) as usize {
                baseline[i] = raw[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_by_identity_and_never_overlap() {
        let r = SlotRegistry::default();
        let a = r.slot(&rule_identity("acl", "dns"), 1);
        let b = r.slot(&binding_identity("acl", "port", "lan1", None), 3);
        let c = r.slot(&rule_identity("acl", "web"), 1);
        assert_eq!(r.slot(&rule_identity("acl", "dns"), 1), a);
        assert_eq!(b, a + 1);
        assert_eq!(c, b + 3);
    }

    #[test]
    fn shards_grow_without_losing_counts_and_sum() {
        let set = ShardSet::default();
        let s1 = set.add();
        let s2 = set.add();
        let c1 = s1.grow(2);
        bump(&c1, 1);
        bump(&c1, 1);
        let c1 = s1.grow(4);
        bump(&c1, 3);
        bump(&c1, 99); // out of range: ignored, no panic
        let c2 = s2.grow(4);
        bump(&c2, 1);
        assert_eq!(set.totals(4), vec![0, 3, 0, 1]);
    }

    #[test]
    fn freed_slots_are_reused_from_zero() {
        let r = SlotRegistry::default();
        let set = ShardSet::default();
        let shard = set.add();
        let old = r.slot(&rule_identity("acl", "old"), 1);
        let kept = r.slot(&rule_identity("acl", "kept"), 1);
        let cells = shard.grow(2);
        bump(&cells, old);
        bump(&cells, old);
        bump(&cells, kept);
        let kept_id = rule_identity("acl", "kept");
        let live: HashSet<&str> = [kept_id.as_str()].into_iter().collect();
        let freed = r.retain(&live);
        assert_eq!(freed, vec![(old, 1)]);
        set.release(&freed);
        let new = r.slot(&rule_identity("acl", "new"), 1);
        assert_eq!(new, old, "the freed slot is reused");
        assert_eq!(r.high(), 2, "no new slot was needed");
        assert_eq!(set.totals(2)[new as usize], 0, "the new owner starts from zero");
        assert_eq!(set.totals(2)[kept as usize], 1, "a live slot keeps its count");
        bump(&cells, new);
        assert_eq!(set.totals(2)[new as usize], 1);
        assert_eq!(r.len(), 2);
    }
}
