//! IPv4 membership: a scan of a few intervals for small sets, a 16-8-8 bitmap trie for the rest.
//!
//! The trie has three levels. The top table has one 32-bit entry per /16:
//! none of it in the set, all of it, or the index of a node. A node holds
//! two 256-bit maps over its /24s, *full* (the whole /24 is in the set) and
//! *part* (some of it is), and the index of its first leaf; a leaf is the
//! 256-bit map of one partly covered /24, and a node's leaves are stored
//! in order, so a /24's leaf is found by counting the part bits below it.
//! A lookup is at most three dependent loads (the top table, 256 KiB, mostly
//! in cache) and never more, whatever the prefix lengths.
//!
//! Memory is bounded by the shape, not the element count: 256 KiB of top
//! table, 72 bytes per /16 that is partly covered (at most 4.5 MiB) and 32
//! bytes per /24 that is partly covered (one per prefix longer than /24 at
//! most). A million /24s take about 5 MiB; a million /32s, each in its own
//! /24, 37 MiB.
//!
//! Every read goes through `get` or a fixed-size array: no lookup can panic.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Sets of at most this many intervals are scanned, not put in a trie (the
/// trie's top table is 256 KiB; a scan of 16 intervals is a few vector
/// compares, and a binary search over more was slower than the trie).
pub(crate) const SMALL: usize = 16;

const TOP: usize = 1 << 16;
/// Words per node: full map (4), part map (4), first leaf (1).
const NODE_WORDS: usize = 9;
const LEAF_WORDS: usize = 4;

/// IPv4 membership structure.
#[derive(Clone, Debug)]
pub(crate) enum V4 {
    /// Sorted, disjoint intervals (starts and ends apart, for the scan).
    Small { starts: Box<[u32]>, ends: Box<[u32]> },
    /// The bitmap trie.
    Trie(Trie),
}

#[derive(Clone, Debug)]
pub(crate) struct Trie {
    /// Per /16: 0 none of it, 1 all of it, n >= 2 node n - 2.
    top: Box<[u32; TOP]>,
    nodes: Vec<u64>,
    leaves: Vec<u64>,
    /// Words of `nodes` and `leaves` no block refers to any more (left by updates).
    garbage: usize,
}

/// Past this many blocks touched, an update rebuilds the whole trie.
const UPDATE_MAX_BLOCKS: usize = 4096;

impl V4 {
    /// Builds from sorted, disjoint, non-adjacent intervals.
    pub(crate) fn build(iv: &[(u32, u32)]) -> V4 {
        if iv.len() <= SMALL {
            return V4::Small {
                starts: iv.iter().map(|i| i.0).collect(),
                ends: iv.iter().map(|i| i.1).collect(),
            };
        }
        V4::Trie(Trie::build(iv))
    }

    /// The structure for `list` after its elements `touched` were added or
    /// removed: the trie's blocks they touch recomputed, or a full build.
    pub(crate) fn updated(&self, list: &super::AddrList, touched: &super::AddrList) -> V4 {
        if let V4::Trie(t) = self {
            let blocks = touched.v4_blocks();
            if let Some(t) = t.updated(list, &blocks) {
                return V4::Trie(t);
            }
        }
        V4::build(&list.v4_intervals())
    }

    /// Whether `a` is in the set.
    #[inline]
    pub(crate) fn contains(&self, a: u32) -> bool {
        match self {
            V4::Small { starts, ends } => starts
                .iter()
                .zip(ends.iter())
                .fold(false, |hit, (&s, &e)| hit | (s <= a && a <= e)),
            V4::Trie(t) => t.contains(a),
        }
    }

    /// Bytes of the tables.
    pub(crate) fn memory_bytes(&self) -> usize {
        match self {
            V4::Small { starts, ends } => (starts.len() + ends.len()) * 4,
            V4::Trie(t) => TOP * 4 + (t.nodes.len() + t.leaves.len()) * 8,
        }
    }
}

impl Trie {
    fn build(iv: &[(u32, u32)]) -> Trie {
        let top: Box<[u32; TOP]> = vec![0u32; TOP]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| Box::new([0u32; TOP]));
        let mut t = Trie {
            top,
            nodes: Vec::new(),
            leaves: Vec::new(),
            garbage: 0,
        };
        let mut scratch16 = Vec::new();
        let mut scratch24 = Vec::new();
        sweep(iv, 16, &mut scratch16, &mut |step| match step {
            Step::Full(first, last) => {
                for e in t.top.iter_mut().take(last as usize + 1).skip(first as usize) {
                    *e = 1;
                }
            }
            Step::Part(unit, pieces) => {
                let e = t.push_node(pieces, &mut scratch24);
                if let Some(slot) = t.top.get_mut(unit as usize) {
                    *slot = e;
                }
            }
        });
        t
    }

    /// Appends the node of a partly covered /16 (its intervals `pieces`);
    /// returns the top-table entry that refers to it.
    fn push_node(&mut self, pieces: &[(u32, u32)], scratch: &mut Vec<(u32, u32)>) -> u32 {
        let node = self.nodes.len() / NODE_WORDS;
        let mut full = [0u64; 4];
        let mut part = [0u64; 4];
        let first_leaf = self.leaves.len() / LEAF_WORDS;
        let leaves = &mut self.leaves;
        sweep(pieces, 8, scratch, &mut |step| match step {
            Step::Full(a, b) => set_range(&mut full, a & 255, b & 255),
            Step::Part(unit24, bits) => {
                set_range(&mut part, unit24 & 255, unit24 & 255);
                let mut leaf = [0u64; 4];
                for &(lo, hi) in bits {
                    set_range(&mut leaf, lo & 255, hi & 255);
                }
                leaves.extend_from_slice(&leaf);
            }
        });
        self.nodes.extend_from_slice(&full);
        self.nodes.extend_from_slice(&part);
        self.nodes.push(first_leaf as u64);
        node as u32 + 2
    }

    /// Words a node and its leaves take (for garbage accounting).
    fn node_words(&self, entry: u32) -> usize {
        let at = (entry.saturating_sub(2)) as usize * NODE_WORDS;
        let parts = self
            .nodes
            .get(at + 4..at + 8)
            .map_or(0, |p| p.iter().map(|w| w.count_ones() as usize).sum());
        NODE_WORDS + parts * LEAF_WORDS
    }

    /// The trie with the /16 blocks `blocks` recomputed from `list`'s IPv4
    /// elements (every other block shared as it was); `None` when a full
    /// rebuild is the better deal (too many blocks, too much garbage).
    fn updated(&self, list: &super::AddrList, blocks: &[u32]) -> Option<Trie> {
        if blocks.len() > UPDATE_MAX_BLOCKS {
            return None;
        }
        let mut t = self.clone();
        let mut scratch = Vec::new();
        let mut pieces = Vec::new();
        for &b in blocks {
            let old = t.top.get(b as usize).copied().unwrap_or(0);
            if old >= 2 {
                t.garbage += t.node_words(old);
            }
            let entry = match list.v4_block(b, &mut pieces) {
                super::elements::Block::Empty => 0,
                super::elements::Block::Full => 1,
                super::elements::Block::Part => t.push_node(&pieces, &mut scratch),
            };
            if let Some(slot) = t.top.get_mut(b as usize) {
                *slot = entry;
            }
        }
        (t.garbage <= (t.nodes.len() + t.leaves.len()) / 2).then_some(t)
    }

    #[inline]
    fn contains(&self, a: u32) -> bool {
        let e = self.top[(a >> 16) as usize];
        if e < 2 {
            return e == 1;
        }
        let at = (e - 2) as usize * NODE_WORDS;
        let Some(node) = self
            .nodes
            .get(at..at + NODE_WORDS)
            .and_then(|n| <&[u64; NODE_WORDS]>::try_from(n).ok())
        else {
            return false;
        };
        let b = (a >> 8) & 255;
        let w = (b >> 6) as usize;
        let bit = 1u64 << (b & 63);
        if node[w] & bit != 0 {
            return true;
        }
        let part = node[4 + w];
        if part & bit == 0 {
            return false;
        }
        let mut rank = (part & (bit - 1)).count_ones() as usize;
        for p in &node[4..4 + w] {
            rank += p.count_ones() as usize;
        }
        let leaf = node[8] as usize + rank;
        let word = self
            .leaves
            .get(leaf * LEAF_WORDS + ((a & 255) >> 6) as usize)
            .copied()
            .unwrap_or(0);
        word >> (a & 63) & 1 != 0
    }
}

/// Sets bits `a..=b` (both at most 255) of a 256-bit map.
fn set_range(map: &mut [u64; 4], a: u32, b: u32) {
    for (w, word) in map.iter_mut().enumerate() {
        let (wlo, whi) = (w as u32 * 64, w as u32 * 64 + 63);
        let (lo, hi) = (a.max(wlo), b.min(whi));
        if lo > hi {
            continue;
        }
        let n = hi - lo + 1;
        let ones = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        *word |= ones << (lo - wlo);
    }
}

/// What [`sweep`] finds, unit by unit.
enum Step<'a> {
    /// Units `first..=last` lie wholly inside one interval.
    Full(u32, u32),
    /// This unit is partly covered, by these intervals clipped to it.
    Part(u32, &'a [(u32, u32)]),
}

/// Walks sorted, disjoint intervals unit by unit (units of `2^shift`
/// addresses, in ascending order) and reports each run of wholly covered
/// units and each partly covered unit.
fn sweep(iv: &[(u32, u32)], shift: u32, scratch: &mut Vec<(u32, u32)>, step: &mut impl FnMut(Step<'_>)) {
    let mask: u32 = (1u32 << shift) - 1;
    let n = iv.len();
    let mut k = 0;
    // Where interval k resumes (it may have been cut at a unit boundary).
    let mut from = iv.first().map_or(0, |i| i.0);
    while k < n {
        let (start, hi) = iv[k];
        let lo = from.max(start);
        let unit = lo >> shift;
        let unit_end = lo | mask;
        if lo & mask == 0 && hi >= unit_end {
            let last = if hi & mask == mask {
                hi >> shift
            } else {
                (hi >> shift) - 1
            };
            step(Step::Full(unit, last));
            let next = (u64::from(last) + 1) << shift;
            if next > u64::from(hi) {
                k += 1;
                from = iv.get(k).map_or(0, |i| i.0);
            } else {
                from = next as u32;
            }
            continue;
        }
        scratch.clear();
        let (mut lo, mut hi) = (lo, hi);
        loop {
            scratch.push((lo, hi.min(unit_end)));
            if hi > unit_end {
                from = unit_end + 1; // interval k goes on in the next unit
                break;
            }
            k += 1;
            match iv.get(k) {
                Some(&(s, e)) if s <= unit_end => (lo, hi) = (s, e),
                Some(&(s, _)) => {
                    from = s;
                    break;
                }
                None => break,
            }
        }
        step(Step::Part(unit, scratch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn naive(iv: &[(u32, u32)], a: u32) -> bool {
        iv.iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    #[test]
    fn trie_equals_the_intervals_at_every_edge() {
        // Intervals of every shape: whole /16 runs, /24 runs, partial /24s, the ends of the space.
        let mut iv = vec![
            (0, 0),
            (2, 0x0001_ffff),
            (0x0a00_0000, 0x0aff_ffff),
            (0x0b00_0100, 0x0b00_02ff),
            (0x0b00_0381, 0x0b00_0381),
            (0x0b00_03f0, 0x0b01_0010),
            (0x0c00_0000, 0x0c00_007f),
            (0xffff_ff00, 0xffff_ffff),
        ];
        for i in 0..300u32 {
            iv.push((0x2000_0000 + i * 0x1_0000 + 5, 0x2000_0000 + i * 0x1_0000 + 5 + i));
        }
        iv.sort_unstable();
        let trie = V4::build(&iv);
        assert!(matches!(trie, V4::Trie(_)));
        let small = V4::build(&iv[..8]);
        assert!(matches!(V4::build(&iv[..17]), V4::Trie(_)));
        assert!(matches!(small, V4::Small { .. }));
        let mut probes = vec![u32::MAX, 1, 0x0001_0000];
        for &(lo, hi) in &iv {
            for a in [lo, hi] {
                probes.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
            }
        }
        for a in probes {
            assert_eq!(trie.contains(a), naive(&iv, a), "trie, {a:#x}");
            assert_eq!(small.contains(a), naive(&iv[..8], a), "small, {a:#x}");
        }
    }

    #[test]
    fn everything_and_nothing() {
        let all = V4::Trie(Trie::build(&[(0, u32::MAX)]));
        assert!(all.contains(0) && all.contains(u32::MAX) && all.contains(0x8000_0000));
        let none = V4::Trie(Trie::build(&[]));
        assert!(!none.contains(0) && !none.contains(u32::MAX));
        assert_eq!(none.memory_bytes(), TOP * 4);
    }
}
