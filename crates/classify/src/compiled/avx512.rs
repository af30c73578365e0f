//! The AVX-512 lookups: 64 keys walk a tree together in vector registers,
//! and leaves and bit sets are checked 16 rules or 512 bits per step. All
//! the `unsafe` code of the compiled classifier's lookups is here (the
//! leaf and bit-set kernels it calls are in `leaf.rs` and `bitset.rs`).

use palisade_packet::FlowKey;

use super::ranks::{RankIndex, BLOCK};
use super::*;
use crate::bitset::{self, Bitsets};
use crate::NO_MATCH;

impl CompiledClassifier {
    /// [`Classifier::classify_batch`] with AVX-512: [`VECTOR_LANES`] keys at
    /// a time, their points first, then the lanes of each part: walking its
    /// trees together in vector registers (leaves checked 16 rules per
    /// step), or through its bit sets.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_batch_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let mut pts = [[0u32; 8]; VECTOR_LANES];
        // The bit sets' scratch: the field values and classes of a chunk's lanes.
        let mut scratch = (
            [[0u32; VECTOR_LANES]; bitset::FIELDS],
            [[0u32; VECTOR_LANES]; bitset::FIELDS],
        );
        for (k, o) in keys.chunks(VECTOR_LANES).zip(out.chunks_mut(VECTOR_LANES)) {
            let n = k.len().min(o.len());
            // (This function has the features the ranks' kernel needs, so the call is safe.)
            let rank =
                |index: &RankIndex, addrs: &[u128; VECTOR_LANES], lanes, out: &mut [u32; VECTOR_LANES]| {
                    rank_lanes_avx512(index, addrs, lanes, out)
                };
            let of_part = points_of(&k[..n], &self.ranks, &mut pts, rank);
            // Lanes past the keys count as matched, so they walk no tree.
            let mut best = [0u32; VECTOR_LANES];
            best[..n].fill(NO_MATCH);
            for (part, &lanes) in self.parts.iter().zip(&of_part) {
                if lanes == 0 {
                    continue;
                }
                match &part.bitsets {
                    Some(bitsets) => {
                        self.bitsets_lanes_avx512(bitsets, &pts, k, lanes, &mut best, &mut scratch)
                    }
                    None => self.walk_lanes_avx512(&part.roots, &pts, k, lanes, &mut best),
                }
            }
            o[..n].copy_from_slice(&best[..n]);
        }
    }

    /// Looks up the lanes in `lanes` (a bit per lane; points `pts`, keys
    /// `keys`) in the trees `roots`, into `best`: each tree is walked by all
    /// of them at once, 16 per vector, one level per step (three gathers:
    /// node header, base, child; only the child's at the root); the groups
    /// of 16 step together so that their gathers overlap. Then each key's
    /// leaf is checked, unless it is the empty one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn walk_lanes_avx512(
        &self,
        roots: &[(u32, u32)],
        pts: &[Point; VECTOR_LANES],
        keys: &[FlowKey],
        lanes: u64,
        best: &mut [RuleIndex; VECTOR_LANES],
    ) {
        use core::arch::x86_64::*;
        const G: usize = VECTOR_LANES / 16;
        let mut dims = [[0u32; VECTOR_LANES]; DIMS];
        for (j, p) in pts.iter().enumerate() {
            for d in 0..DIMS {
                dims[d][j] = p[d];
            }
        }
        // SAFETY: loads of 16 `u32`s inside local arrays of VECTOR_LANES (a multiple of 16).
        let pv: [[__m512i; DIMS]; G] = core::array::from_fn(|g| {
            core::array::from_fn(|d| unsafe {
                _mm512_loadu_epi32(dims[d].as_ptr().add(16 * g) as *const i32)
            })
        });
        let in_part: [__mmask16; G] = core::array::from_fn(|g| (lanes >> (16 * g)) as __mmask16);
        let tab = self.tab.as_ptr() as *const i32;
        // The table always holds the dummy node, so it has 3 entries or more,
        // and fewer than 2^31 (the leaf tag), so indices fit an i32.
        let last = self.tab.len().saturating_sub(1) as i32;
        let leaf_tag = _mm512_set1_epi32(LEAF as i32);
        for &(root, first) in roots {
            // Lanes of other parts, and lanes already matched by a rule before this tree's first, skip it.
            let mut need = [0 as __mmask16; G];
            let mut refs = [_mm512_setzero_si512(); G];
            for g in 0..G {
                // SAFETY: a load of 16 lanes inside the local array.
                let bv = unsafe { _mm512_loadu_epi32(best.as_ptr().add(16 * g) as *const i32) };
                need[g] = _mm512_mask_cmpgt_epu32_mask(in_part[g], bv, _mm512_set1_epi32(first as i32));
                refs[g] = _mm512_mask_blend_epi32(
                    need[g],
                    _mm512_set1_epi32(EMPTY as i32),
                    _mm512_set1_epi32(root as i32),
                );
            }
            if need.iter().all(|&m| m == 0) {
                continue;
            }
            // The root is the same node for every lane: its header and base
            // are scalars, so its step needs only the child gather.
            if !self.is_leaf(root) {
                let at = (root as usize).min(self.tab.len().saturating_sub(3));
                let hdr = self.tab.get(at).copied().unwrap_or(0);
                let base = self.tab.get(at + 1).copied().unwrap_or(0);
                let d = (hdr & 7) as usize;
                let bcast = |x: u32| _mm512_set1_epi32(x as i32);
                for g in 0..G {
                    let v = pv[g][if d < DIMS { d } else { 0 }];
                    let child_at = child_slots(bcast(at as u32), bcast(hdr), bcast(base), v, last);
                    // SAFETY: `child_at` is clamped to 0..=last, inside `tab`.
                    refs[g] = unsafe { _mm512_mask_i32gather_epi32::<4>(refs[g], need[g], child_at, tab) };
                }
            }
            loop {
                let mut any = 0;
                for g in 0..G {
                    // Lanes still on a node (below the leaf tag).
                    let active = _mm512_cmplt_epu32_mask(refs[g], leaf_tag);
                    any |= active;
                    if active == 0 {
                        continue;
                    }
                    let at = _mm512_min_epu32(refs[g], _mm512_set1_epi32(last - 2));
                    // SAFETY: every index is clamped to 0..=last, inside `tab`
                    // (`at` to last - 2, so `at + 1` is inside too).
                    let (hdr, base) = unsafe {
                        (
                            _mm512_mask_i32gather_epi32::<4>(_mm512_setzero_si512(), active, at, tab),
                            _mm512_mask_i32gather_epi32::<4>(
                                _mm512_setzero_si512(),
                                active,
                                _mm512_add_epi32(at, _mm512_set1_epi32(1)),
                                tab,
                            ),
                        )
                    };
                    // The node's dimension of each lane's point.
                    let dim = _mm512_and_si512(hdr, _mm512_set1_epi32(7));
                    let mut v = pv[g][0];
                    for (d, pd) in pv[g].iter().enumerate().skip(1) {
                        let is_d = _mm512_cmpeq_epi32_mask(dim, _mm512_set1_epi32(d as i32));
                        v = _mm512_mask_mov_epi32(v, is_d, *pd);
                    }
                    let child_at = child_slots(at, hdr, base, v, last);
                    // SAFETY: `child_at` is clamped to 0..=last (at <= last - 2 and
                    // idx <= 0xffff, so the sum cannot wrap before the clamp).
                    refs[g] = unsafe { _mm512_mask_i32gather_epi32::<4>(refs[g], active, child_at, tab) };
                }
                if any == 0 {
                    break;
                }
            }
            let mut leaves = [0u32; VECTOR_LANES];
            let mut filled_lanes = 0u64;
            for (g, r) in refs.iter().enumerate().rev() {
                // SAFETY: a store of 16 lanes inside the local array.
                unsafe { _mm512_storeu_epi32(leaves.as_mut_ptr().add(16 * g) as *mut i32, *r) };
                // Lanes in the empty leaf have nothing to check (most, in
                // trees of firewall sets).
                let filled = _mm512_mask_cmpneq_epu32_mask(need[g], *r, _mm512_set1_epi32(EMPTY as i32));
                filled_lanes = filled_lanes << 16 | filled as u64;
            }
            // Each lane's leaf match, then the better of it and the lane's
            // best, in vectors: a scalar min would become a branch on a
            // result that arrives late and mispredicts often.
            let mut found = [NO_MATCH; VECTOR_LANES];
            self.leaf_matches(filled_lanes, &leaves, pts, keys, best, &mut found);
            for g in 0..G {
                // SAFETY: loads and a store of 16 lanes inside the local arrays.
                unsafe {
                    let at = 16 * g;
                    let b = _mm512_loadu_epi32(best.as_ptr().add(at) as *const i32);
                    let f = _mm512_loadu_epi32(found.as_ptr().add(at) as *const i32);
                    _mm512_storeu_epi32(best.as_mut_ptr().add(at) as *mut i32, _mm512_min_epu32(b, f));
                }
            }
        }
    }

    /// The leaf match of each lane in `lanes` (a bit per lane) against its
    /// leaf in `leaves`, into `found`: a rule better than the lane's `best`,
    /// or an index not better than it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline(never)]
    fn leaf_matches(
        &self,
        mut lanes: u64,
        leaves: &[u32; VECTOR_LANES],
        pts: &[Point; VECTOR_LANES],
        keys: &[FlowKey],
        best: &[RuleIndex; VECTOR_LANES],
        found: &mut [RuleIndex; VECTOR_LANES],
    ) {
        while lanes != 0 {
            let j = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            if let (Some(f), Some(&b), Some(p), Some(k), Some(&r)) = (
                found.get_mut(j),
                best.get(j),
                pts.get(j),
                keys.get(j),
                leaves.get(j),
            ) {
                *f = self.leaf_first::<true, false>(r, p, k, b);
            }
        }
    }

    /// Looks up the lanes in `lanes` (a bit per lane) in `bitsets`, into
    /// `best`: the classes of all [`bitset::BATCH`] lanes first (their
    /// gathers overlap), then each lane's intersection.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn bitsets_lanes_avx512(
        &self,
        bitsets: &Bitsets,
        pts: &[Point; VECTOR_LANES],
        keys: &[FlowKey],
        mut lanes: u64,
        best: &mut [RuleIndex; VECTOR_LANES],
        (values, classes): &mut BitsetScratch,
    ) {
        const _: () = assert!(bitset::BATCH == VECTOR_LANES);
        // Lanes of other parts or past the keys hold valid points too; their classes are not used.
        for (j, p) in pts.iter().enumerate() {
            Bitsets::set_field_values(p, j, values);
        }
        // SAFETY (both calls): this function is compiled for, and entered
        // only after `leaf::avx512_available()` found, the features they need.
        #[allow(unsafe_code)]
        unsafe {
            bitsets.classes_avx512(values, classes)
        };
        while lanes != 0 {
            let j = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            let (Some(key), Some(b)) = (keys.get(j), best.get_mut(j)) else {
                continue;
            };
            let c = core::array::from_fn(|f| classes[f][j] as usize);
            #[allow(unsafe_code)]
            {
                *b = unsafe {
                    if bitsets.has_product() {
                        bitsets.first_avx512::<3>(&c, key, &self.verify)
                    } else {
                        bitsets.first_avx512::<5>(&c, key, &self.verify)
                    }
                };
            }
        }
    }

    /// One key's first match in the trees `roots` of its part, with AVX-512 leaf checks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_one_avx512(&self, roots: &[(u32, u32)], p: &Point, key: &FlowKey) -> RuleIndex {
        self.classify_one::<true>(roots, p, key)
    }
}

/// The field values and classes of a chunk's lanes (see [`Bitsets::classes_avx512`]).
#[cfg(target_arch = "x86_64")]
type BitsetScratch = (
    [[u32; VECTOR_LANES]; bitset::FIELDS],
    [[u32; VECTOR_LANES]; bitset::FIELDS],
);

/// [`RankIndex::rank_lanes`] with AVX-512: a block's 8 starts compared
/// with an address in two loads and three vector compares.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn rank_lanes_avx512(
    index: &RankIndex,
    addrs: &[u128; VECTOR_LANES],
    lanes: u64,
    out: &mut [u32; VECTOR_LANES],
) {
    use core::arch::x86_64::*;
    let mut below = [0u32; VECTOR_LANES];
    for level in index.levels() {
        let mut m = lanes;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            let (Some(b), Some(&a)) = (below.get_mut(j), addrs.get(j)) else {
                continue;
            };
            let n = match level.blocks.get(*b as usize) {
                // SAFETY: aligned loads of the block's two 64-byte halves
                // (`Block` is 64-byte aligned), through a reference to it.
                Some(blk) => unsafe {
                    let hi = _mm512_load_si512(blk.hi.as_ptr() as *const __m512i);
                    let lo = _mm512_load_si512(blk.lo.as_ptr() as *const __m512i);
                    let (ah, al) = (_mm512_set1_epi64((a >> 64) as i64), _mm512_set1_epi64(a as i64));
                    let lt = _mm512_cmplt_epu64_mask(hi, ah);
                    let eq = _mm512_cmpeq_epu64_mask(hi, ah);
                    let le = _mm512_mask_cmple_epu64_mask(eq, lo, al);
                    (lt | le).count_ones()
                },
                None => 0,
            };
            *b = (*b * BLOCK as u32 + n).min(level.len as u32);
        }
    }
    let mut m = lanes;
    while m != 0 {
        let j = m.trailing_zeros() as usize;
        m &= m - 1;
        if let (Some(o), Some(&b)) = (out.get_mut(j), below.get(j)) {
            *o = b.saturating_sub(1);
        }
    }
}

/// Where each lane's child reference is in the table: the node at `at`
/// (header `hdr`, base `base`) cut at the lane's value `v` (as
/// [`child_of`]), clamped to `last`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn child_slots(
    at: core::arch::x86_64::__m512i,
    hdr: core::arch::x86_64::__m512i,
    base: core::arch::x86_64::__m512i,
    v: core::arch::x86_64::__m512i,
    last: i32,
) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    let shift = _mm512_and_si512(_mm512_srli_epi32::<8>(hdr), _mm512_set1_epi32(31));
    let idx = _mm512_min_epu32(
        _mm512_srlv_epi32(_mm512_sub_epi32(v, base), shift),
        _mm512_srli_epi32::<16>(hdr),
    );
    _mm512_min_epu32(
        _mm512_add_epi32(_mm512_add_epi32(at, idx), _mm512_set1_epi32(2)),
        _mm512_set1_epi32(last),
    )
}
