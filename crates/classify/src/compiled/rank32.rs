//! Ranks of IPv4 addresses: the first stage that takes the nesting out of
//! the address dimensions of large rule sets.
//!
//! The rules' prefixes on one address field cut the 32-bit space into
//! *elementary intervals*; an address's *rank* is the number of its interval.
//! A prefix is then an exact range of ranks, and the trees cut rank space:
//! equal pieces of rank space follow the rules wherever they cluster (a
//! cluster of /32s under a /20 is one cut of ranks where address space
//! needed one level per few bits), and a child's region is covered by a
//! rule exactly when the rule covers its intervals, so the build drops
//! every rule shadowed there (in address space, a power-of-two region rarely
//! lines up with a prefix, and shadowed rules were kept).
//!
//! A lookup finds the rank in a multi-bit trie ([`ValueTrie`]: the top 16
//! bits in a direct table, then a node of 8 bits for each /16 and each /24
//! that an interval starts inside), at most three dependent loads, 64
//! addresses at a time with AVX-512 gathers. The build ranks the rules'
//! bounds by a binary search in the sorted starts, which needs no trie: the
//! search for rules that can match at all ranks every rule so, and only the
//! final build pays for a trie, over the rules that remain, when it fits its budget.

use alloc::vec::Vec;

use crate::trie::ValueTrie;

/// Bits of the address the trie's root reads.
const ROOT_BITS: u32 = 16;

/// The ranks of one IPv4 address field (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Rank32 {
    /// Every interval's first address, ascending (the first is 0).
    starts: Vec<u32>,
    /// The trie that finds a key's rank, when the ranks are looked up (not only built with).
    trie: Option<ValueTrie>,
}

impl Rank32 {
    /// The ranks of the intervals that the IPv4 ranges `(first, last)` cut
    /// the address space into: each range starts an interval, and so does
    /// the address after its end. With `trie_budget`, also the trie that
    /// looks keys up, or `None` when it would take more bytes than that.
    pub(crate) fn of_ranges(
        ranges: impl Iterator<Item = (u32, u32)>,
        trie_budget: Option<usize>,
    ) -> Option<Rank32> {
        let mut starts = alloc::vec![0];
        for (lo, hi) in ranges {
            starts.push(lo);
            if let Some(next) = hi.checked_add(1) {
                starts.push(next);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let trie = match trie_budget {
            Some(budget) => {
                let wide: Vec<u64> = starts.iter().map(|&s| s as u64).collect();
                if ValueTrie::size_bytes(32, ROOT_BITS, &wide) > budget {
                    return None;
                }
                let class: Vec<u32> = (0..starts.len() as u32).collect();
                Some(ValueTrie::build(32, ROOT_BITS, &wide, &class))
            }
            None => None,
        };
        Some(Rank32 { starts, trie })
    }

    /// Number of intervals.
    pub(crate) fn intervals(&self) -> usize {
        self.starts.len()
    }

    /// The rank of `addr` (the number of interval starts at or below it,
    /// less one) by a binary search: for the build.
    pub(crate) fn rank(&self, addr: u32) -> u32 {
        self.starts.partition_point(|&s| s <= addr).saturating_sub(1) as u32
    }

    /// The rank of `addr` through the trie (the lookup's way; the binary
    /// search's when no trie was built).
    #[inline(always)]
    pub(crate) fn lookup(&self, addr: u32) -> u32 {
        match &self.trie {
            Some(t) => t.class_of(addr),
            None => self.rank(addr),
        }
    }

    /// The trie, when built.
    pub(super) fn trie(&self) -> Option<&ValueTrie> {
        self.trie.as_ref()
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.starts.capacity() * 4 + self.trie.as_ref().map_or(0, ValueTrie::capacity_bytes)
    }
}

/// The IPv4 ranks of both address fields, when the IPv4 part uses them.
#[derive(Clone, Debug)]
pub(crate) struct V4Ranks {
    /// Source addresses.
    pub src: Rank32,
    /// Destination addresses.
    pub dst: Rank32,
}

impl V4Ranks {
    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.src.capacity_bytes() + self.dst.capacity_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank_by_scan(starts: &[u32], a: u32) -> u32 {
        starts.iter().filter(|&&s| s <= a).count() as u32 - 1
    }

    #[test]
    fn ranks_equal_a_scan_of_the_starts() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Clusters inside one /16 and one /24, sparse ranges, and the edges.
        for n in [0usize, 1, 30, 1000, 20_000] {
            let mut ranges: Vec<(u32, u32)> = (0..n)
                .map(|i| {
                    let a = 0x0a0b_0000 | (next() as u32 & if i % 2 == 0 { 0xffff } else { 0xff });
                    let len = next() % 33;
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    (a & mask, a | !mask)
                })
                .collect();
            ranges.extend((0..200).map(|_| {
                let a = next() as u32;
                (a, a)
            }));
            ranges.extend([
                (0, u32::MAX),
                (u32::MAX, u32::MAX),
                (0x0a0c_0000, 0x0a0c_ffff),
                (1, 1),
            ]);
            let index = Rank32::of_ranges(ranges.iter().copied(), Some(usize::MAX)).unwrap();
            let mut starts: Vec<u32> = ranges
                .iter()
                .flat_map(|&(lo, hi)| [Some(lo), hi.checked_add(1)])
                .flatten()
                .collect();
            starts.push(0);
            starts.sort_unstable();
            starts.dedup();
            assert_eq!(index.intervals(), starts.len());
            for &s in starts.iter().step_by(1 + starts.len() / 3000) {
                for a in [
                    s,
                    s.wrapping_sub(1),
                    s.wrapping_add(1),
                    s ^ 0x8000,
                    s | 0xffff,
                    s & !0xffff,
                ] {
                    let want = rank_by_scan(&starts, a);
                    assert_eq!(index.rank(a), want, "n {n}, address {a:#x}");
                    assert_eq!(index.lookup(a), want, "n {n}, address {a:#x}");
                }
            }
            assert_eq!(index.lookup(u32::MAX), starts.len() as u32 - 1);
            assert_eq!(index.lookup(0), 0);
        }
    }

    #[test]
    fn a_trie_past_its_budget_is_not_built() {
        // Starts inside 1,000 /24s: a node for each (and for their /16s).
        let ranges = (0..1000u32).map(|i| (i << 8 | 1, i << 8 | 1));
        assert!(Rank32::of_ranges(ranges.clone(), Some(1 << 20)).is_none());
        let r = Rank32::of_ranges(ranges, Some(4 << 20)).unwrap();
        assert!(r.capacity_bytes() > 1 << 20);
        assert_eq!(r.lookup(1000 << 8), r.rank(1000 << 8));
    }
}
