//! Ranks of IPv6 addresses: how the trees see all 128 bits through 32.
//!
//! The bounds of a rule set's IPv6 prefixes on one address cut the 128-bit
//! space into *elementary intervals*; every address of one interval is in
//! the same prefixes. An address's *rank* is the number of its interval
//! (the intervals counted from 0 in address order). A prefix covers whole
//! intervals, consecutive ones, so in rank space it is the range from the
//! rank of its first address to the rank of its last: exactly, not an
//! approximation. The trees and bit sets then cut and compare 32-bit ranks
//! as they cut and compare IPv4 addresses, and every address bit that
//! tells two rules apart (the 128th as well as the 1st) separates ranks.
//!
//! (A set whose prefixes all lie in one site needs no ranks: see [`AddrMap`].)
//!
//! [`RankIndex::rank`] is a search for the last interval start at or below
//! an address, in a static B-tree of the starts: level 0 holds every start
//! in order, and each level above it every 8th entry of the one below (from
//! the 8th on), so one block of 8 per level narrows the search eightfold.
//! A block is 8 high halves then 8 low halves of the starts (128 bytes):
//! one comparison of 8 starts is two vector loads. A 20,000-interval set
//! takes 5 levels, the top ones always in cache. No branch depends on
//! the address, so a batch of searches overlaps in the CPU.

use alloc::vec::Vec;

use crate::{IpFamily, Prefix};

/// Starts per block.
pub(super) const BLOCK: usize = 8;

/// Eight interval starts: their high halves, then their low halves (two cache lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub(super) struct Block {
    pub hi: [u64; BLOCK],
    pub lo: [u64; BLOCK],
}

impl Block {
    /// How many of the block's starts are at or below the address `(hi, lo)`.
    #[inline(always)]
    fn count_at_or_below(&self, hi: u64, lo: u64) -> usize {
        let mut n = 0;
        for i in 0..BLOCK {
            let (h, l) = (self.hi[i], self.lo[i]);
            n += ((h < hi) | ((h == hi) & (l <= lo))) as usize;
        }
        n
    }
}

/// One level of the B-tree: whole blocks, padded with the largest address.
#[derive(Clone, Debug, Default)]
pub(super) struct Level {
    pub blocks: Vec<Block>,
    /// Starts in the level (without the padding).
    pub len: usize,
}

/// The interval starts of one address field (source or destination) and
/// the B-tree that finds an address's interval.
#[derive(Clone, Debug)]
pub(crate) struct RankIndex {
    /// The top level first, level 0 (every start) last.
    levels: Vec<Level>,
}

impl Default for RankIndex {
    fn default() -> Self {
        RankIndex::new(Vec::new())
    }
}

impl RankIndex {
    /// The index of the intervals that the given starts cut (0 is always a start).
    pub(crate) fn new(mut starts: Vec<u128>) -> RankIndex {
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let mut levels = Vec::new();
        let mut level = starts;
        loop {
            let len = level.len();
            let blocks = level
                .chunks(BLOCK)
                .map(|chunk| {
                    let at = |i: usize| chunk.get(i).copied().unwrap_or(u128::MAX);
                    Block {
                        hi: core::array::from_fn(|i| (at(i) >> 64) as u64),
                        lo: core::array::from_fn(|i| at(i) as u64),
                    }
                })
                .collect();
            levels.push(Level { blocks, len });
            if len <= BLOCK {
                break;
            }
            // Every 8th from the 8th on: entry i of the next level is entry 8(i + 1) here.
            level = level.iter().copied().skip(BLOCK).step_by(BLOCK).collect();
        }
        levels.reverse();
        RankIndex { levels }
    }

    /// The index of the interval starts of `prefixes` (each prefix starts an
    /// interval, and so does the address after its last).
    pub(crate) fn of_prefixes<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> RankIndex {
        let mut starts = Vec::new();
        for p in prefixes.filter(|p| p.family == IpFamily::V6) {
            let (lo, hi) = p.range();
            starts.push(lo);
            if let Some(next) = hi.checked_add(1) {
                starts.push(next);
            }
        }
        RankIndex::new(starts)
    }

    /// The levels, top first.
    pub(super) fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Number of intervals.
    pub(crate) fn intervals(&self) -> usize {
        self.levels.last().map_or(1, |l| l.len)
    }

    /// The rank of `addr`: the number of interval starts at or below it, minus one.
    #[inline(always)]
    pub(crate) fn rank(&self, addr: u128) -> u32 {
        let (hi, lo) = ((addr >> 64) as u64, addr as u64);
        // Starts at or below the address, counted on the level above (0 above the top).
        let mut below = 0usize;
        for level in &self.levels {
            let n = level.blocks.get(below).map_or(0, |b| b.count_at_or_below(hi, lo));
            // The padding (the largest address) counts for the largest
            // address only; the level's length caps it.
            below = (below * BLOCK + n).min(level.len);
        }
        // Start 0 is at or below every address, so `below >= 1`.
        below.saturating_sub(1) as u32
    }

    /// The ranks of the addresses in `lanes` (a bit per lane) into `out`:
    /// level by level for all of them, so that their searches overlap.
    #[inline(always)]
    pub(crate) fn rank_lanes<const N: usize>(&self, addrs: &[u128; N], lanes: u64, out: &mut [u32; N]) {
        let mut below = [0usize; N];
        for level in &self.levels {
            let mut m = lanes;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                if let (Some(b), Some(&a)) = (below.get_mut(j), addrs.get(j)) {
                    let n = level
                        .blocks
                        .get(*b)
                        .map_or(0, |blk| blk.count_at_or_below((a >> 64) as u64, a as u64));
                    *b = (*b * BLOCK + n).min(level.len);
                }
            }
        }
        for (j, (o, b)) in out.iter_mut().zip(below).enumerate() {
            if lanes & 1 << j != 0 {
                *o = b.saturating_sub(1) as u32;
            }
        }
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.levels
            .iter()
            .map(|l| l.blocks.capacity() * core::mem::size_of::<Block>())
            .sum::<usize>()
            + self.levels.capacity() * core::mem::size_of::<Level>()
    }
}

/// How the IPv6 part sees one address field (source or destination) in 32 bits.
///
/// When every IPv6 prefix of the field (but `/0`) shares its first `c`
/// bits and none is longer than `c + 32` (a site's ACL: every prefix inside
/// one /48, none longer than /80), the 32 bits after the common prefix are
/// the value (a *window*): exact for an address inside the common prefix,
/// and an address outside it matches no prefix but `/0`, which the point
/// says with a requirement bit ([`AddrMap::value`]). Otherwise the value is
/// the address's rank ([`RankIndex`]), exact for every address.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddrMap {
    /// The common prefix and its length, when the field is seen through a window.
    window: Option<(u128, u8)>,
    /// The ranks, otherwise.
    pub ranks: RankIndex,
}

impl AddrMap {
    /// The map of the IPv6 prefixes in `prefixes` (other families are skipped).
    pub(crate) fn of_prefixes<'a>(prefixes: impl Iterator<Item = &'a Prefix> + Clone) -> AddrMap {
        let v6 = prefixes.filter(|p| p.family == IpFamily::V6 && p.len > 0);
        let mut first: Option<Prefix> = None;
        let (mut common, mut longest) = (128u8, 0u8);
        for p in v6.clone() {
            let f = *first.get_or_insert(*p);
            common = common.min(p.len).min((f.addr ^ p.addr).leading_zeros() as u8);
            longest = longest.max(p.len);
        }
        match first {
            None => AddrMap::default(),
            Some(f) if longest <= common.saturating_add(32) => AddrMap {
                window: Some((f.addr & Prefix::mask_of(IpFamily::V6, common), common)),
                ranks: RankIndex::default(),
            },
            Some(_) => AddrMap {
                window: None,
                ranks: RankIndex::of_prefixes(v6),
            },
        }
    }

    /// Whether addresses are seen through a window (else by rank).
    #[inline(always)]
    pub(crate) fn is_window(&self) -> bool {
        self.window.is_some()
    }

    /// The length of the prefix every IPv6 prefix of the field shares (0 by rank).
    pub(crate) fn common_len(&self) -> u8 {
        self.window.map_or(0, |(_, len)| len)
    }

    /// An address's value and whether it lies inside the common prefix
    /// (always, by rank): in a window, the 32 bits after the common prefix.
    #[inline(always)]
    pub(crate) fn value(&self, addr: u128) -> (u32, bool) {
        match self.window {
            Some((common, len)) => (
                (addr.checked_shl(len as u32).unwrap_or(0) >> 96) as u32,
                addr & Prefix::mask_of(IpFamily::V6, len) == common,
            ),
            None => (self.ranks.rank(addr), true),
        }
    }

    /// The values of the first and last address of `p` (an IPv6 prefix
    /// that is not `/0`), and whether a key must lie inside the common
    /// prefix to match it (always in a window, never by rank).
    pub(crate) fn range_of(&self, p: &Prefix) -> (u32, u32, bool) {
        let (lo, hi) = p.range();
        ((self.value(lo).0), self.value(hi).0, self.window.is_some())
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.ranks.capacity_bytes()
    }
}

/// The maps of IPv6 source and destination addresses, and the IPv4 ranks
/// when the IPv4 part uses them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ranks {
    /// Source addresses.
    pub src: AddrMap,
    /// Destination addresses.
    pub dst: AddrMap,
    /// The IPv4 addresses' ranks (large sets, see [`super::rank32`]).
    pub v4: Option<super::rank32::V4Ranks>,
}

impl Ranks {
    /// The largest value of each dimension of the points of the part of
    /// `family`: an address's rank is below its field's interval count.
    pub(crate) fn dim_max(&self, family: IpFamily) -> [u32; super::DIMS] {
        let mut m = super::DIM_MAX;
        match (family, &self.v4) {
            (IpFamily::V4, Some(v4)) => {
                m[0] = v4.src.intervals() as u32 - 1;
                m[1] = v4.dst.intervals() as u32 - 1;
            }
            (IpFamily::V4, None) => {}
            (IpFamily::V6, _) => {
                for (d, map) in [&self.src, &self.dst].into_iter().enumerate() {
                    if !map.is_window() {
                        m[d] = map.ranks.intervals() as u32 - 1;
                    }
                }
            }
        }
        m
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.src.capacity_bytes()
            + self.dst.capacity_bytes()
            + self.v4.as_ref().map_or(0, |v| v.capacity_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rank by its definition: starts at or below, minus one.
    fn rank_by_scan(starts: &[u128], a: u128) -> u32 {
        starts.iter().filter(|&&s| s <= a).count() as u32 - 1
    }

    #[test]
    fn ranks_equal_a_scan_of_the_starts_at_every_size() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 511, 512, 513, 4097] {
            let mut starts: Vec<u128> = (0..n as u128)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ (i << 64))
                .collect();
            starts.push(u128::MAX);
            let index = RankIndex::new(starts.clone());
            starts.push(0);
            starts.sort_unstable();
            starts.dedup();
            assert_eq!(index.intervals(), starts.len());
            for &s in starts.iter().step_by(1 + n / 200) {
                for a in [s, s.wrapping_sub(1), s.wrapping_add(1), s ^ 1 << 64] {
                    assert_eq!(index.rank(a), rank_by_scan(&starts, a), "n {n}, address {a:#x}");
                }
            }
            assert_eq!(index.rank(u128::MAX), starts.len() as u32 - 1);
            assert_eq!(index.rank(0), 0);
            // Lanes, a batch at a time.
            let addrs: [u128; 64] =
                core::array::from_fn(|j| starts[j * 7 % starts.len()].wrapping_add(j as u128 % 3));
            let mut out = [u32::MAX; 64];
            index.rank_lanes(&addrs, u64::MAX ^ 1, &mut out);
            for j in 1..64 {
                assert_eq!(out[j], rank_by_scan(&starts, addrs[j]), "n {n}, lane {j}");
            }
            assert_eq!(out[0], u32::MAX, "a lane not asked for is left alone");
        }
    }

    /// Whether `addr`'s value and inside bit put it in the range of `p` (as a rule box would).
    fn in_range(map: &AddrMap, p: &Prefix, addr: u128) -> bool {
        let (lo, hi, needs_inside) = map.range_of(p);
        let (v, inside) = map.value(addr);
        lo <= v && v <= hi && (inside || !needs_inside)
    }

    #[test]
    fn a_prefix_is_a_range_of_ranks() {
        let site = 0x2001_0db8_0000_0000_0000_0000_0000_0000u128;
        let prefixes = [
            Prefix::v6(site, 48),
            Prefix::v6(site | 1 << 72, 56),
            Prefix::v6(site | 1 << 72 | 5, 128),
            Prefix::v6(u128::MAX, 128),
        ];
        let map = AddrMap::of_prefixes(prefixes.iter());
        assert!(!map.is_window(), "a /128 outside the site: ranks");
        // 0, site, site|1<<72, the /128 and after it, after the /56, after the /48, MAX.
        assert_eq!(map.ranks.intervals(), 8);
        for p in &prefixes {
            let (a, b) = p.range();
            for addr in [a, b, a.wrapping_sub(1), b.wrapping_add(1), a + (b - a) / 2] {
                assert_eq!(
                    p.contains(IpFamily::V6, addr),
                    in_range(&map, p, addr),
                    "{p:?} {addr:#x}"
                );
            }
        }
    }

    #[test]
    fn a_site_is_seen_through_a_window() {
        let site = 0x2001_0db8_05a1u128 << 80;
        let prefixes = [
            Prefix::v6(site, 48),
            Prefix::v6(site | 0xff << 72, 56),
            Prefix::v6(site | 0xffff_ffff << 48, 80),
            Prefix::v6(0, 0),
        ];
        let map = AddrMap::of_prefixes(prefixes.iter());
        assert_eq!((map.is_window(), map.common_len()), (true, 48));
        for p in &prefixes[..3] {
            let (a, b) = p.range();
            let outside_site = [site - 1, site + (1 << 80), 0, u128::MAX];
            for addr in [a, b, a.wrapping_sub(1), b.wrapping_add(1), a + (b - a) / 2]
                .into_iter()
                .chain(outside_site)
            {
                assert_eq!(
                    p.contains(IpFamily::V6, addr),
                    in_range(&map, p, addr),
                    "{p:?} {addr:#x}"
                );
            }
        }
        // A prefix 33 bits past the common one: ranks.
        let longer = [Prefix::v6(site, 48), Prefix::v6(site | 1 << 47, 81)];
        assert!(!AddrMap::of_prefixes(longer.iter()).is_window());
    }
}
