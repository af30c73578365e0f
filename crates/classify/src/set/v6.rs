//! IPv6 membership: sorted disjoint intervals, with a 16-bit bucket index for large sets.
//!
//! An address is in the set when the last interval starting at or below it
//! ends at or above it. Past 256 intervals, the search is
//! narrowed by an index of 2^16 buckets over the 16 address bits that
//! follow the bits every interval shares (for a blocklist of global unicast
//! prefixes, bits 3-18), so a lookup is one index load and a short binary
//! search. Every read is checked: no lookup can panic.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::v4::SMALL;

/// Past this many intervals, the bucket index narrows the search.
const INDEXED: usize = 256;

const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// IPv6 membership structure.
#[derive(Clone, Debug)]
pub(crate) struct V6 {
    starts: Box<[u128]>,
    ends: Box<[u128]>,
    index: Option<Index>,
}

#[derive(Clone, Debug)]
struct Index {
    /// Leading bits shared by every start and end (at most 112).
    common: u32,
    /// Those bits' value (the address shifted right by `128 - common`).
    prefix: u128,
    /// Per bucket: the first interval that ends at or after the bucket's lowest address (`BUCKETS + 1` entries).
    first: Box<[u32]>,
}

impl V6 {
    /// Builds from sorted, disjoint, non-adjacent intervals.
    pub(crate) fn build(iv: &[(u128, u128)]) -> V6 {
        let starts: Box<[u128]> = iv.iter().map(|i| i.0).collect();
        let ends: Box<[u128]> = iv.iter().map(|i| i.1).collect();
        let index = match (iv.first(), iv.last()) {
            (Some(&(lo, _)), Some(&(_, hi))) if iv.len() > INDEXED => {
                let common = (lo ^ hi).leading_zeros().min(128 - BUCKET_BITS);
                let prefix = if common == 0 { 0 } else { lo >> (128 - common) };
                let mut first = Vec::with_capacity(BUCKETS + 1);
                let mut j = 0usize;
                for b in 0..=BUCKETS as u128 {
                    // The bucket's lowest address (past the last bucket: beyond every interval).
                    let low = if b == BUCKETS as u128 {
                        None
                    } else {
                        let within = b << (128 - BUCKET_BITS - common);
                        Some(if common == 0 {
                            within
                        } else {
                            prefix << (128 - common) | within
                        })
                    };
                    match low {
                        Some(low) => {
                            while j < iv.len() && ends[j] < low {
                                j += 1;
                            }
                        }
                        None => j = iv.len(),
                    }
                    first.push(j as u32);
                }
                Some(Index {
                    common,
                    prefix,
                    first: first.into_boxed_slice(),
                })
            }
            _ => None,
        };
        V6 { starts, ends, index }
    }

    /// Whether `a` is in the set.
    #[inline]
    pub(crate) fn contains(&self, a: u128) -> bool {
        if self.starts.len() <= SMALL {
            return self
                .starts
                .iter()
                .zip(self.ends.iter())
                .fold(false, |hit, (&s, &e)| hit | (s <= a && a <= e));
        }
        let (lo, hi) = match &self.index {
            None => (0, self.starts.len()),
            Some(ix) => {
                if ix.common > 0 && a >> (128 - ix.common) != ix.prefix {
                    return false; // outside the block every interval lies in
                }
                let b = ((a << ix.common) >> (128 - BUCKET_BITS)) as usize;
                let lo = ix.first.get(b).copied().unwrap_or(0) as usize;
                // The interval crossing into the next bucket is its first too: one past it.
                let hi = ix.first.get(b + 1).map_or(self.starts.len(), |&h| h as usize + 1);
                (lo, hi.min(self.starts.len()))
            }
        };
        let Some(starts) = self.starts.get(lo..hi) else {
            return false;
        };
        super::last_at_most(starts, a).is_some_and(|j| self.ends.get(lo + j).is_some_and(|&e| a <= e))
    }

    /// Bytes of the tables.
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.starts.len() + self.ends.len()) * 16 + self.index.as_ref().map_or(0, |ix| ix.first.len() * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn naive(iv: &[(u128, u128)], a: u128) -> bool {
        iv.iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    fn check(iv: &[(u128, u128)]) {
        let s = V6::build(iv);
        let mut probes = vec![0, u128::MAX, 1 << 127];
        for &(lo, hi) in iv {
            for a in [lo, hi] {
                probes.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
            }
        }
        for a in probes {
            assert_eq!(s.contains(a), naive(iv, a), "{a:#x}, {} intervals", iv.len());
        }
    }

    #[test]
    fn indexed_and_plain_searches_equal_the_intervals() {
        // Clustered under 2001:db8::/32 (a long common prefix), then spread over the whole space.
        let base: u128 = 0x2001_0db8 << 96;
        let clustered: Vec<(u128, u128)> = (0..1000u128)
            .map(|i| (base + (i << 70), base + (i << 70) + (1 << 64) - 1))
            .collect();
        check(&clustered);
        check(&clustered[..10]);
        check(&clustered[..100]);
        let spread: Vec<(u128, u128)> = (0..600u128)
            .map(|i| (i << 118, (i << 118) + (i << 60)))
            .chain([(u128::MAX - 3, u128::MAX)])
            .collect();
        check(&spread);
        // Each interval spans many index buckets.
        let wide: Vec<(u128, u128)> = (0..300u128)
            .map(|i| (base + (i << 80), base + (i << 80) + (1 << 79)))
            .collect();
        check(&wide);
        check(&[(0, u128::MAX)]);
        check(&[]);
    }
}
