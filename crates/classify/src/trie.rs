//! Multi-bit tries from a field's value to the number of its piece: a
//! 16-bit root, then nodes of 8 bits, at most three dependent loads, walked
//! 64 values at a time with AVX-512 gathers.
//!
//! A field's values are cut into *pieces* by sorted starts; every piece has
//! a number (its *class*: the bit sets' first line of the piece's rule set,
//! or the compiled classifier's rank of an IPv4 address). An entry whose
//! values all lie in one piece holds its class (tagged [`CLASS`]); any other
//! entry indexes a node of 256 entries below it. So a 32-bit value needs a
//! node for every /16 and every /24 that a piece starts inside:
//! [`ValueTrie::size_bytes`] tells before building.

use alloc::vec;
use alloc::vec::Vec;

/// A trie entry with this bit holds a class; others index the node below.
pub(crate) const CLASS: u32 = 1 << 31;

/// The trie of one field.
#[derive(Clone, Debug, Default)]
pub(crate) struct ValueTrie {
    /// The root (`1 << root_bits` entries), then nodes of 256 entries.
    tab: Vec<u32>,
    /// The shift of the root index (the field's width less the root's bits).
    root_shift: u32,
}

impl ValueTrie {
    /// The class of value `v`: a root load and then, for wide fields, a
    /// fixed number of steps without a branch (a class entry steps to
    /// itself), since a branch on the depth mispredicts.
    #[inline(always)]
    pub(crate) fn class_of(&self, v: u32) -> u32 {
        let get = |i: u32| self.tab.get(i as usize).copied().unwrap_or(CLASS);
        // Out of the table only for a value wider than the field, which
        // callers never pass; class 0 then.
        let mut e = get(v.checked_shr(self.root_shift).unwrap_or(0));
        let mut shift = self.root_shift;
        while shift >= 8 {
            shift -= 8;
            // All ones when `e` holds a class: it then loads entry 0 and keeps itself.
            let class = 0u32.wrapping_sub(e >> 31);
            let next = get(e.wrapping_add((v >> shift) & 0xff) & !class);
            e = (e & class) | (next & !class);
        }
        e & !CLASS
    }

    /// The trie of a `width`-bit field whose root reads `root_bits` bits,
    /// over the pieces starting at `starts` (ascending, the first 0) whose
    /// classes are `class[i]` (below [`CLASS`]).
    pub(crate) fn build(width: u32, root_bits: u32, starts: &[u64], class: &[u32]) -> ValueTrie {
        let root_shift = width - root_bits;
        let mut tab = vec![0u32; 1 << root_bits];
        fill(&mut tab, 0, 0, 1 << root_bits, root_shift, starts, class);
        tab.shrink_to_fit();
        ValueTrie { tab, root_shift }
    }

    /// The bytes [`ValueTrie::build`] would take for these arguments.
    pub(crate) fn size_bytes(width: u32, root_bits: u32, starts: &[u64]) -> usize {
        let mut entries = 1usize << root_bits;
        let mut shift = width - root_bits;
        // A node below every entry (of the level above) that a piece starts inside.
        while shift >= 8 {
            let inside = |s: &&u64| **s & ((1u64 << shift) - 1) != 0;
            let mut nodes: Vec<u64> = starts.iter().filter(inside).map(|s| s >> shift).collect();
            nodes.dedup();
            entries += 256 * nodes.len();
            shift -= 8;
        }
        entries * 4
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.tab.capacity() * 4
    }

    /// [`ValueTrie::class_of`] of `16 * G` values at once, one gather per
    /// 16 values and trie level, the `G` gathers of a level in flight together.
    ///
    /// # Safety
    ///
    /// AVX-512 F must be available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn classes_avx512<const G: usize>(
        &self,
        values: &[core::arch::x86_64::__m512i; G],
    ) -> [core::arch::x86_64::__m512i; G] {
        use core::arch::x86_64::*;
        let tab = self.tab.as_ptr() as *const i32;
        // Every trie has its root, so it is not empty; and it holds fewer
        // than 2^31 entries (the class tag), so indices fit an i32.
        let last = _mm512_set1_epi32(self.tab.len().saturating_sub(1) as i32);
        // SAFETY: every index is clamped to the table's last entry.
        let mut e: [__m512i; G] = core::array::from_fn(|g| unsafe {
            let root = _mm512_srlv_epi32(values[g], _mm512_set1_epi32(self.root_shift as i32));
            _mm512_i32gather_epi32::<4>(_mm512_min_epu32(root, last), tab)
        });
        let mut shift = self.root_shift;
        while shift >= 8 {
            shift -= 8;
            let mut any = 0;
            let below: [__mmask16; G] = core::array::from_fn(|g| {
                let m = _mm512_cmplt_epu32_mask(e[g], _mm512_set1_epi32(CLASS as i32));
                any |= m;
                m
            });
            if any == 0 {
                // Every value has its class (common: few pieces start inside a /16).
                break;
            }
            for g in 0..G {
                let byte = _mm512_and_si512(
                    _mm512_srlv_epi32(values[g], _mm512_set1_epi32(shift as i32)),
                    _mm512_set1_epi32(0xff),
                );
                let at = _mm512_min_epu32(_mm512_add_epi32(e[g], byte), last);
                // SAFETY: as above; lanes on a class keep it without a load.
                e[g] = unsafe { _mm512_mask_i32gather_epi32::<4>(e[g], below[g], at, tab) };
            }
        }
        e.map(|e| _mm512_andnot_si512(_mm512_set1_epi32(CLASS as i32), e))
    }
}

/// Fills `count` entries of the node at `at`, whose entries cover `1 << k`
/// values each from `base` on: a class where the entry lies in one piece, else a node below.
fn fill(tab: &mut Vec<u32>, at: usize, base: u64, count: usize, k: u32, starts: &[u64], class: &[u32]) {
    for j in 0..count {
        let a = base + ((j as u64) << k);
        let end = a + (1u64 << k) - 1;
        let i = starts.partition_point(|&s| s <= a).saturating_sub(1);
        let one_piece = starts.get(i + 1).is_none_or(|&next| next > end);
        if one_piece || k < 8 {
            tab[at + j] = CLASS | class[i];
        } else {
            let child = tab.len();
            tab.resize(child + 256, 0);
            tab[at + j] = child as u32;
            fill(tab, child, a, 256, k - 8, starts, class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_the_pieces_and_the_size_is_told_before() {
        let starts: Vec<u64> = vec![
            0,
            5,
            0x0100,
            0x0101_0000,
            0x0101_0100,
            0x0101_0101,
            0x0a00_0000,
            0xffff_ffff,
        ];
        let class: Vec<u32> = (0..starts.len() as u32).map(|i| i * 3).collect();
        let t = ValueTrie::build(32, 16, &starts, &class);
        assert_eq!(t.capacity_bytes(), ValueTrie::size_bytes(32, 16, &starts));
        for (i, &s) in starts.iter().enumerate() {
            assert_eq!(t.class_of(s as u32), class[i], "{s:#x}");
            if s > 0 {
                assert_eq!(t.class_of(s as u32 - 1), class[i - 1], "{s:#x} - 1");
            }
        }
        assert_eq!(t.class_of(0x0101_00ff), 9);
        assert_eq!(t.class_of(0x0aff_ffff), 18);
    }
}
