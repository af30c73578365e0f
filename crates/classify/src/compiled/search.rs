//! The lookups without AVX-512, and the parts every lookup shares: a tree
//! step, a walk, a leaf check.

use palisade_packet::FlowKey;

use super::ranks::RankIndex;
use super::*;
use crate::leaf::{self, LeafKey, Probe};

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
        self.leaf_first_of::<VECTOR, MIN>(r, &LeafKey::of(p), key, best)
    }

    /// [`CompiledClassifier::leaf_first`] of a point given by the words a leaf check compares.
    #[inline(always)]
    pub(super) fn leaf_first_of<const VECTOR: bool, const MIN: bool>(
        &self,
        r: u32,
        k: &LeafKey,
        key: &FlowKey,
        best: u32,
    ) -> u32 {
        let leaf = Self::leaf_ref(r);
        let q = Probe {
            k,
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

    /// Classifies up to [`LANES`] keys (the lookup without AVX-512): their
    /// points first, then each part's lanes, walking its trees level by level together.
    #[inline(always)]
    pub(super) fn classify_lanes(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let n = keys.len().min(out.len()).min(LANES);
        let mut pts = [[0u32; 8]; LANES];
        let of_part = points_of(&keys[..n], &self.ranks, &mut pts, RankIndex::rank_lanes);
        rank_v4_lanes(&self.ranks, &mut pts, of_part[0]);
        let of_part = of_part.map(|m| m as u8);
        // Lanes past the keys count as matched, so they walk no tree.
        let mut best = [0; LANES];
        best[..n].fill(NO_MATCH);
        for (part, &lanes) in self.parts.iter().zip(&of_part) {
            if lanes == 0 {
                continue;
            }
            match &part.bitsets {
                Some(bitsets) => {
                    for j in (0..n).filter(|j| lanes & 1 << j != 0) {
                        best[j] = bitsets.lookup(&pts[j], &keys[j], &self.verify);
                    }
                }
                None => self.walk_lanes(&part.roots, &pts, keys, lanes, &mut best),
            }
        }
        out[..n].copy_from_slice(&best[..n]);
    }

    /// Looks up the lanes in `lanes` (a bit per lane) in the trees `roots`, into `best`.
    #[inline(always)]
    fn walk_lanes(
        &self,
        roots: &[(u32, u32)],
        pts: &[Point; LANES],
        keys: &[FlowKey],
        lanes: u8,
        best: &mut [RuleIndex; LANES],
    ) {
        for &(root, first) in roots {
            // Lanes of other parts, and lanes already matched by a rule
            // before this tree's first, sit on the empty leaf; a tree no lane needs is skipped.
            let mut refs = [0u32; LANES];
            let mut any = false;
            for j in 0..LANES {
                let need = lanes & 1 << j != 0 && best[j] > first;
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
            for (j, key) in keys.iter().enumerate().take(LANES) {
                if lanes & 1 << j != 0 {
                    best[j] = self.leaf_first::<false, true>(refs[j], &pts[j], key, best[j]);
                }
            }
        }
    }

    /// One key's first match in the trees `roots` of its part.
    #[inline(always)]
    pub(super) fn classify_one<const VECTOR: bool>(
        &self,
        roots: &[(u32, u32)],
        p: &Point,
        key: &FlowKey,
    ) -> RuleIndex {
        let mut best = NO_MATCH;
        for &(root, first) in roots {
            if first >= best {
                continue;
            }
            let leaf = self.walk(root, p);
            best = self.leaf_first::<VECTOR, true>(leaf, p, key, best);
        }
        best
    }
}
