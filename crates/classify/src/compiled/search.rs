//! The lookups without AVX-512, and the parts every lookup shares: a tree
//! step, a walk, a leaf check.

use palisade_packet::FlowKey;

use super::*;
use crate::leaf::{self, Probe};
use crate::NO_MATCH;

impl CompiledClassifier {
    /// Follows one tree reference one level down (a leaf stays on itself,
    /// without a branch: it steps through the dummy node and keeps its reference).
    #[inline(always)]
    pub(super) fn step(&self, r: u32, p: &Point) -> u32 {
        // Bit masks, not `if`: the compiler turned the select into a branch
        // per lane and level, which mispredicts as lanes reach their leaves.
        let leaf_mask = 0u32.wrapping_sub(r >> 31);
        let child = child_of(&self.tab, (r & !leaf_mask) as usize, p);
        (r & leaf_mask) | (child & !leaf_mask)
    }

    /// Walks a tree to its leaf; returns the leaf's reference.
    #[inline(always)]
    pub(super) fn walk(&self, mut r: u32, p: &Point) -> u32 {
        while !self.is_leaf(r) {
            r = self.step(r, p);
        }
        r
    }

    /// The first rule of leaf `r` that matches, if better than `best`; else
    /// `best`, or with `VECTOR` and not `MIN` some index not better than `best`.
    /// `VECTOR` checks 16 rules per step; callers pass it only when [`leaf::avx512_available`].
    #[inline(always)]
    pub(super) fn leaf_first<const VECTOR: bool, const MIN: bool>(
        &self,
        r: u32,
        p: &Point,
        key: &FlowKey,
        best: u32,
    ) -> u32 {
        let leaf = Self::leaf_ref(r);
        let q = Probe {
            p,
            key,
            verify: &self.verify,
            best,
        };
        #[cfg(target_arch = "x86_64")]
        if VECTOR {
            // SAFETY: `VECTOR` is true only on a path entered after
            // `leaf::avx512_available()` returned true (see `vector`).
            #[allow(unsafe_code)]
            return unsafe {
                if self.verify.is_empty() {
                    leaf::first_avx512::<false, MIN>(&self.leaves, leaf, q)
                } else {
                    leaf::first_avx512::<true, MIN>(&self.leaves, leaf, q)
                }
            };
        }
        leaf::first_scalar(&self.leaves, leaf, &q)
    }

    /// Classifies up to [`LANES`] keys, walking them level by level together
    /// (the lookup without AVX-512).
    #[inline(always)]
    pub(super) fn classify_lanes(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let n = keys.len().min(out.len()).min(LANES);
        let mut pts = [[0u32; 8]; LANES];
        for j in 0..n {
            pts[j] = point_of(&keys[j]);
        }
        // Lanes past the keys count as matched, so they walk no tree.
        let mut best = [0; LANES];
        best[..n].fill(NO_MATCH);
        for &(root, first) in &self.roots {
            // Lanes already matched by a rule before this tree's first sit on
            // the empty leaf; a tree no lane needs is skipped.
            let mut refs = [0u32; LANES];
            let mut any = false;
            for j in 0..LANES {
                let need = best[j] > first;
                refs[j] = if need { root } else { EMPTY };
                any |= need;
            }
            if !any {
                continue;
            }
            // All lanes step together until every lane sits on its leaf.
            loop {
                let mut all_leaves = true;
                for j in 0..LANES {
                    refs[j] = self.step(refs[j], &pts[j]);
                    all_leaves &= refs[j] & LEAF != 0;
                }
                if all_leaves {
                    break;
                }
            }
            for j in 0..n {
                best[j] = self.leaf_first::<false, true>(refs[j], &pts[j], &keys[j], best[j]);
            }
        }
        out[..n].copy_from_slice(&best[..n]);
    }

    #[inline(always)]
    pub(super) fn classify_one<const VECTOR: bool>(&self, key: &FlowKey) -> RuleIndex {
        let p = point_of(key);
        let mut best = NO_MATCH;
        for &(root, first) in &self.roots {
            if first >= best {
                continue;
            }
            let leaf = self.walk(root, &p);
            best = self.leaf_first::<VECTOR, true>(leaf, &p, key, best);
        }
        best
    }
}
