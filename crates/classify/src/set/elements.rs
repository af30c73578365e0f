//! The elements of a set as written: sorted, without duplicates, compact.
//!
//! These lists are what a set *is* (what `set del` removes and what status
//! counts); the lookup structures are built from them. Overlapping elements
//! stay listed as written and are merged only in the structures.

use alloc::vec::Vec;

use crate::{IpFamily, PortRange, Prefix};

/// The address elements of a set: IPv4 and IPv6 prefixes (an address is a
/// full-length prefix), kept sorted and without duplicates.
///
/// IPv4 prefixes are stored in 8 bytes each, so a million-prefix blocklist
/// takes 8 MB here.
///
/// ```
/// use palisade_classify::{AddrList, Prefix};
/// let mut list = AddrList::from_prefixes([Prefix::v4([10, 0, 0, 0], 8), Prefix::v6(1 << 127, 1)]);
/// assert!(!list.insert(Prefix::v4([10, 0, 0, 0], 8)), "already there");
/// assert!(list.insert(Prefix::v4([10, 1, 0, 0], 16)), "overlaps, but is another element");
/// assert_eq!((list.len(), list.v4_len(), list.v6_len()), (3, 2, 1));
/// assert!(list.remove(&Prefix::v4([10, 0, 0, 0], 8)));
/// assert_eq!(list.iter().next(), Some(Prefix::v4([10, 1, 0, 0], 16)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrList {
    /// `addr << 8 | len`: sorts by address, then length.
    v4: Vec<u64>,
    /// (address, length), sorted.
    v6: Vec<(u128, u8)>,
}

const fn v4_code(p: &Prefix) -> u64 {
    (p.addr as u32 as u64) << 8 | p.len as u64
}

fn v4_prefix(code: u64) -> Prefix {
    Prefix::v4(((code >> 8) as u32).to_be_bytes(), code as u8)
}

impl AddrList {
    /// An empty list.
    ///
    /// ```
    /// assert!(palisade_classify::AddrList::new().is_empty());
    /// ```
    pub const fn new() -> Self {
        AddrList {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// A list of `prefixes`, sorted and deduplicated (host bits are cleared
    /// by [`Prefix`]'s constructors; a prefix built by hand with host bits set
    /// is stored with them cleared).
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let list = AddrList::from_prefixes(vec![Prefix::v4([192, 0, 2, 0], 24); 3]);
    /// assert_eq!(list.len(), 1);
    /// ```
    pub fn from_prefixes(prefixes: impl IntoIterator<Item = Prefix>) -> Self {
        let mut list = AddrList::new();
        list.extend(prefixes);
        list
    }

    /// Adds every prefix of `prefixes`; returns how many were new.
    ///
    /// Appends, then sorts: the sort finds the old list as one sorted run,
    /// so adding k elements to n costs about n + k log k, not k times n.
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let mut list = AddrList::from_prefixes([Prefix::v4([10, 0, 0, 0], 8)]);
    /// assert_eq!(list.extend([Prefix::v4([10, 0, 0, 0], 8), Prefix::v4([10, 0, 0, 1], 32)]), 1);
    /// ```
    pub fn extend(&mut self, prefixes: impl IntoIterator<Item = Prefix>) -> usize {
        let before = self.len();
        let prefixes = prefixes.into_iter();
        if prefixes.size_hint().1.is_some_and(|n| n <= 16) {
            // A few into a long list: one shift each beats a pass over the whole list.
            for p in prefixes {
                self.insert(p);
            }
            return self.len() - before;
        }
        for p in prefixes {
            let p = normalized(p);
            match p.family {
                IpFamily::V4 => self.v4.push(v4_code(&p)),
                IpFamily::V6 => self.v6.push((p.addr, p.len)),
            }
        }
        self.v4.sort();
        self.v4.dedup();
        self.v6.sort();
        self.v6.dedup();
        self.len() - before
    }

    /// Adds one prefix; false when it was already an element.
    ///
    /// ```
    /// let mut list = palisade_classify::AddrList::new();
    /// assert!(list.insert(palisade_classify::Prefix::v6(0, 0)));
    /// ```
    pub fn insert(&mut self, p: Prefix) -> bool {
        let p = normalized(p);
        match p.family {
            IpFamily::V4 => {
                let c = v4_code(&p);
                match self.v4.binary_search(&c) {
                    Ok(_) => false,
                    Err(at) => {
                        self.v4.insert(at, c);
                        true
                    }
                }
            }
            IpFamily::V6 => match self.v6.binary_search(&(p.addr, p.len)) {
                Ok(_) => false,
                Err(at) => {
                    self.v6.insert(at, (p.addr, p.len));
                    true
                }
            },
        }
    }

    /// Removes one element (exactly as listed: removing `10.0.0.1` from a
    /// list holding `10.0.0.0/24` removes nothing); false when it was not listed.
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let mut list = AddrList::from_prefixes([Prefix::v4([10, 0, 0, 0], 24)]);
    /// assert!(!list.remove(&Prefix::v4([10, 0, 0, 1], 32)));
    /// ```
    pub fn remove(&mut self, p: &Prefix) -> bool {
        let p = normalized(*p);
        match p.family {
            IpFamily::V4 => match self.v4.binary_search(&v4_code(&p)) {
                Ok(at) => {
                    self.v4.remove(at);
                    true
                }
                Err(_) => false,
            },
            IpFamily::V6 => match self.v6.binary_search(&(p.addr, p.len)) {
                Ok(at) => {
                    self.v6.remove(at);
                    true
                }
                Err(_) => false,
            },
        }
    }

    /// Removes every listed element of `prefixes` in one pass; returns how many were removed.
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let mut list = AddrList::from_prefixes((0..4u8).map(|i| Prefix::v4([10, 0, 0, i], 32)));
    /// assert_eq!(list.remove_all(&[Prefix::v4([10, 0, 0, 1], 32), Prefix::v4([10, 9, 9, 9], 32)]), 1);
    /// assert_eq!(list.len(), 3);
    /// ```
    pub fn remove_all(&mut self, prefixes: &[Prefix]) -> usize {
        let before = self.len();
        let mut gone4: Vec<u64> = Vec::new();
        let mut gone6: Vec<(u128, u8)> = Vec::new();
        for p in prefixes {
            let p = normalized(*p);
            match p.family {
                IpFamily::V4 => gone4.push(v4_code(&p)),
                IpFamily::V6 => gone6.push((p.addr, p.len)),
            }
        }
        gone4.sort_unstable();
        gone6.sort_unstable();
        if !gone4.is_empty() {
            self.v4.retain(|c| gone4.binary_search(c).is_err());
        }
        if !gone6.is_empty() {
            self.v6.retain(|c| gone6.binary_search(c).is_err());
        }
        before - self.len()
    }

    /// Whether `p` is listed (exactly).
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let list = AddrList::from_prefixes([Prefix::v4([10, 0, 0, 0], 8)]);
    /// assert!(list.lists(&Prefix::v4([10, 0, 0, 0], 8)));
    /// assert!(!list.lists(&Prefix::v4([10, 0, 0, 0], 9)));
    /// ```
    pub fn lists(&self, p: &Prefix) -> bool {
        let p = normalized(*p);
        match p.family {
            IpFamily::V4 => self.v4.binary_search(&v4_code(&p)).is_ok(),
            IpFamily::V6 => self.v6.binary_search(&(p.addr, p.len)).is_ok(),
        }
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(palisade_classify::AddrList::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// assert!(palisade_classify::AddrList::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of IPv4 elements.
    ///
    /// ```
    /// assert_eq!(palisade_classify::AddrList::new().v4_len(), 0);
    /// ```
    pub fn v4_len(&self) -> usize {
        self.v4.len()
    }

    /// Number of IPv6 elements.
    ///
    /// ```
    /// assert_eq!(palisade_classify::AddrList::new().v6_len(), 0);
    /// ```
    pub fn v6_len(&self) -> usize {
        self.v6.len()
    }

    /// Every element, IPv4 first, each family in ascending order.
    ///
    /// ```
    /// use palisade_classify::{AddrList, Prefix};
    /// let list = AddrList::from_prefixes([Prefix::v6(0, 0), Prefix::v4([1, 2, 3, 4], 32)]);
    /// assert_eq!(list.iter().next().unwrap().family, palisade_classify::IpFamily::V4);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.v4
            .iter()
            .map(|&c| v4_prefix(c))
            .chain(self.v6.iter().map(|&(a, l)| Prefix::v6(a, l)))
    }

    /// The /16 blocks the IPv4 elements touch, ascending.
    pub(crate) fn v4_blocks(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for &c in &self.v4 {
            let (lo, hi) = v4_prefix(c).range();
            out.extend((lo as u32 >> 16)..=(hi as u32 >> 16));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How the IPv4 elements cover /16 block `b`; for a partly covered one,
    /// its merged intervals in `pieces`. A binary search per prefix length up
    /// to 16 and one range of the list: no scan of the whole list.
    pub(crate) fn v4_block(&self, b: u32, pieces: &mut Vec<(u32, u32)>) -> Block {
        let start = b << 16;
        for len in 0..=16u8 {
            let net = start & Prefix::mask_of(IpFamily::V4, len) as u32;
            if self.v4.binary_search(&((net as u64) << 8 | len as u64)).is_ok() {
                return Block::Full;
            }
        }
        let lo = self.v4.partition_point(|&c| c < (start as u64) << 8);
        let hi = self
            .v4
            .partition_point(|&c| c <= ((start | 0xffff) as u64) << 8 | 0xff);
        pieces.clear();
        for &c in self.v4.get(lo..hi).unwrap_or(&[]) {
            let (a, z) = v4_prefix(c).range();
            push_merged(pieces, a as u32, z as u32);
        }
        match pieces.as_slice() {
            [] => Block::Empty,
            [(a, z)] if *a == start && *z == start | 0xffff => Block::Full,
            _ => Block::Part,
        }
    }

    /// The IPv4 elements as merged, sorted, disjoint and non-adjacent intervals.
    pub(crate) fn v4_intervals(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for &c in &self.v4 {
            let (lo, hi) = v4_prefix(c).range();
            push_merged(&mut out, lo as u32, hi as u32);
        }
        out
    }

    /// The IPv6 elements as merged, sorted, disjoint and non-adjacent intervals.
    pub(crate) fn v6_intervals(&self) -> Vec<(u128, u128)> {
        let mut out: Vec<(u128, u128)> = Vec::new();
        for &(a, l) in &self.v6 {
            let (lo, hi) = Prefix::v6(a, l).range();
            push_merged(&mut out, lo, hi);
        }
        out
    }
}

/// How a list covers one /16 block.
pub(crate) enum Block {
    /// Not at all.
    Empty,
    /// Wholly.
    Full,
    /// Partly (the intervals are given apart).
    Part,
}

/// Appends `[lo, hi]` to intervals sorted by start, merging it with the last
/// one when they overlap or touch.
fn push_merged<T: Copy + Ord + One>(out: &mut Vec<(T, T)>, lo: T, hi: T) {
    if let Some(last) = out.last_mut() {
        if last.1 == T::MAX || lo <= last.1.add_one() {
            if hi > last.1 {
                last.1 = hi;
            }
            return;
        }
    }
    out.push((lo, hi));
}

trait One {
    const MAX: Self;
    fn add_one(self) -> Self;
}

impl One for u32 {
    const MAX: Self = u32::MAX;
    fn add_one(self) -> Self {
        self.saturating_add(1)
    }
}

impl One for u128 {
    const MAX: Self = u128::MAX;
    fn add_one(self) -> Self {
        self.saturating_add(1)
    }
}

impl One for u16 {
    const MAX: Self = u16::MAX;
    fn add_one(self) -> Self {
        self.saturating_add(1)
    }
}

/// A prefix with its length capped and host bits cleared.
fn normalized(p: Prefix) -> Prefix {
    match p.family {
        IpFamily::V4 => Prefix::v4((p.addr as u32).to_be_bytes(), p.len),
        IpFamily::V6 => Prefix::v6(p.addr, p.len),
    }
}

/// The port elements of a set: single ports and ranges, sorted, without duplicates.
///
/// ```
/// use palisade_classify::{PortList, PortRange};
/// let list = PortList::from_ranges([PortRange { lo: 1000, hi: 2000 }, PortRange::single(22), PortRange::single(22)]);
/// assert_eq!(list.len(), 2);
/// assert_eq!(list.iter().next(), Some(PortRange::single(22)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortList {
    ranges: Vec<PortRange>,
}

impl PortList {
    /// An empty list.
    ///
    /// ```
    /// assert!(palisade_classify::PortList::new().is_empty());
    /// ```
    pub const fn new() -> Self {
        PortList { ranges: Vec::new() }
    }

    /// A list of `ranges`, sorted and deduplicated (a reversed range is turned round).
    ///
    /// ```
    /// use palisade_classify::{PortList, PortRange};
    /// assert_eq!(PortList::from_ranges([PortRange { lo: 9, hi: 1 }]).iter().next(), Some(PortRange { lo: 1, hi: 9 }));
    /// ```
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Self {
        let mut list = PortList::new();
        list.extend(ranges);
        list
    }

    /// Adds every range; returns how many were new.
    ///
    /// ```
    /// let mut list = palisade_classify::PortList::new();
    /// assert_eq!(list.extend([palisade_classify::PortRange::single(53)]), 1);
    /// ```
    pub fn extend(&mut self, ranges: impl IntoIterator<Item = PortRange>) -> usize {
        let before = self.ranges.len();
        self.ranges.extend(ranges.into_iter().map(|r| PortRange {
            lo: r.lo.min(r.hi),
            hi: r.lo.max(r.hi),
        }));
        self.ranges.sort_by_key(|r| (r.lo, r.hi));
        self.ranges.dedup();
        self.ranges.len() - before
    }

    /// Removes every listed element of `ranges` (exactly as listed); returns how many were removed.
    ///
    /// ```
    /// use palisade_classify::{PortList, PortRange};
    /// let mut list = PortList::from_ranges([PortRange::single(22), PortRange::single(23)]);
    /// assert_eq!(list.remove_all(&[PortRange::single(23), PortRange::single(80)]), 1);
    /// ```
    pub fn remove_all(&mut self, ranges: &[PortRange]) -> usize {
        let before = self.ranges.len();
        self.ranges.retain(|r| !ranges.contains(r));
        before - self.ranges.len()
    }

    /// Whether `r` is listed (exactly).
    ///
    /// ```
    /// use palisade_classify::{PortList, PortRange};
    /// assert!(PortList::from_ranges([PortRange::single(22)]).lists(&PortRange::single(22)));
    /// ```
    pub fn lists(&self, r: &PortRange) -> bool {
        self.ranges
            .binary_search_by_key(&(r.lo, r.hi), |x| (x.lo, x.hi))
            .is_ok()
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(palisade_classify::PortList::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// assert!(palisade_classify::PortList::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Every element in ascending order.
    ///
    /// ```
    /// assert_eq!(palisade_classify::PortList::new().iter().count(), 0);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = PortRange> + '_ {
        self.ranges.iter().copied()
    }

    /// The ranges merged into sorted, disjoint, non-adjacent intervals.
    pub(crate) fn intervals(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for r in &self.ranges {
            push_merged(&mut out, r.lo, r.hi);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn intervals_merge_overlapping_and_adjacent_elements() {
        let list = AddrList::from_prefixes([
            Prefix::v4([10, 0, 0, 0], 25),
            Prefix::v4([10, 0, 0, 128], 25),
            Prefix::v4([10, 0, 0, 7], 32),
            Prefix::v4([10, 0, 2, 0], 24),
            Prefix::v4([255, 255, 255, 255], 32),
            Prefix::v4([0, 0, 0, 0], 1),
        ]);
        assert_eq!(
            list.v4_intervals(),
            vec![(0, 0x7fff_ffff), (0xffff_ffff, 0xffff_ffff)],
            "10/8 pieces lie inside 0/1"
        );
        let list = AddrList::from_prefixes([
            Prefix::v4([10, 0, 0, 0], 25),
            Prefix::v4([10, 0, 0, 128], 25),
            Prefix::v4([10, 0, 2, 0], 24),
        ]);
        assert_eq!(
            list.v4_intervals(),
            vec![(0x0a00_0000, 0x0a00_00ff), (0x0a00_0200, 0x0a00_02ff)]
        );
        let all6 = AddrList::from_prefixes([Prefix::v6(0, 0), Prefix::v6(5, 128)]);
        assert_eq!(all6.v6_intervals(), vec![(0, u128::MAX)]);
        let ports = PortList::from_ranges([
            PortRange { lo: 10, hi: 20 },
            PortRange { lo: 21, hi: 30 },
            PortRange { lo: 15, hi: 16 },
            PortRange::single(65535),
        ]);
        assert_eq!(ports.intervals(), vec![(10, 30), (65535, 65535)]);
    }
}
