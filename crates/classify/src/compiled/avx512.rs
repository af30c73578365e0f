//! The AVX-512 lookups: 64 keys walk a tree together in vector registers,
//! and leaves and bit sets are checked 16 rules or 512 bits per step. All
//! the `unsafe` code of the compiled classifier's lookups is here (the
//! leaf and bit-set kernels it calls are in `leaf.rs` and `bitset.rs`).

use palisade_packet::FlowKey;

use super::*;
use crate::bitset::{self, Bitsets};
use crate::NO_MATCH;

impl CompiledClassifier {
    /// [`Classifier::classify_batch`] with AVX-512: [`VECTOR_LANES`] keys walk
    /// each tree together in vector registers, and leaves are checked 16 rules per step.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_batch_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        for (k, o) in keys.chunks(VECTOR_LANES).zip(out.chunks_mut(VECTOR_LANES)) {
            self.classify_lanes_avx512(k, o);
        }
    }

    /// Classifies up to [`VECTOR_LANES`] keys: each tree is walked by all of
    /// them at once, 16 per vector, one level per step (three gathers: node
    /// header, base, child; only the child's at the root); the groups of 16
    /// step together so that their gathers overlap. Then each key's leaf is
    /// checked, unless it is the empty one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn classify_lanes_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        use core::arch::x86_64::*;
        const G: usize = VECTOR_LANES / 16;
        let n = keys.len().min(out.len()).min(VECTOR_LANES);
        let mut pts = [[0u32; 8]; VECTOR_LANES];
        let mut dims = [[0u32; VECTOR_LANES]; DIMS];
        for j in 0..n {
            pts[j] = point_of(&keys[j]);
            for d in 0..DIMS {
                dims[d][j] = pts[j][d];
            }
        }
        // Lanes past the keys count as matched, so they walk no tree.
        let mut best = [0u32; VECTOR_LANES];
        best[..n].fill(NO_MATCH);
        // SAFETY: loads of 16 `u32`s inside local arrays of VECTOR_LANES (a multiple of 16).
        let pv: [[__m512i; DIMS]; G] = core::array::from_fn(|g| {
            core::array::from_fn(|d| unsafe {
                _mm512_loadu_epi32(dims[d].as_ptr().add(16 * g) as *const i32)
            })
        });
        let tab = self.tab.as_ptr() as *const i32;
        // The table always holds the dummy node, so it has 3 entries or more,
        // and fewer than 2^31 (the leaf tag), so indices fit an i32.
        let last = self.tab.len().saturating_sub(1) as i32;
        let leaf_tag = _mm512_set1_epi32(LEAF as i32);
        for &(root, first) in &self.roots {
            // Lanes already matched by a rule before this tree's first skip it.
            let mut need = [0 as __mmask16; G];
            let mut refs = [_mm512_setzero_si512(); G];
            for g in 0..G {
                // SAFETY: a load of 16 lanes inside the local array.
                let bv = unsafe { _mm512_loadu_epi32(best.as_ptr().add(16 * g) as *const i32) };
                need[g] = _mm512_cmpgt_epu32_mask(bv, _mm512_set1_epi32(first as i32));
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
            let mut lanes = 0u64;
            for (g, r) in refs.iter().enumerate().rev() {
                // SAFETY: a store of 16 lanes inside the local array.
                unsafe { _mm512_storeu_epi32(leaves.as_mut_ptr().add(16 * g) as *mut i32, *r) };
                // Lanes in the empty leaf have nothing to check (most, in
                // trees of firewall sets).
                let filled = _mm512_mask_cmpneq_epu32_mask(need[g], *r, _mm512_set1_epi32(EMPTY as i32));
                lanes = lanes << 16 | filled as u64;
            }
            // Each lane's leaf match, then the better of it and the lane's
            // best, in vectors: a scalar min would become a branch on a
            // result that arrives late and mispredicts often.
            let mut found = [NO_MATCH; VECTOR_LANES];
            self.leaf_matches(lanes, &leaves, &pts, keys, &best, &mut found);
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
        out[..n].copy_from_slice(&best[..n]);
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

    /// [`Classifier::classify_batch`] with the bit sets and AVX-512: the
    /// classes of [`bitset::BATCH`] keys first (their gathers overlap), then each key's intersection.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_bitsets_avx512(&self, bitsets: &Bitsets, keys: &[FlowKey], out: &mut [RuleIndex]) {
        const CHUNK: usize = bitset::BATCH;
        let mut values = [[0u32; CHUNK]; bitset::FIELDS];
        let mut classes = [[0u32; CHUNK]; bitset::FIELDS];
        for (k, o) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            // Lanes past the keys keep values of an earlier chunk: valid, and their results are dropped.
            for (j, key) in k.iter().enumerate() {
                Bitsets::set_field_values(&point_of(key), j, &mut values);
            }
            // SAFETY (both calls): this function is compiled for, and entered
            // only after `leaf::avx512_available()` found, the features they need.
            #[allow(unsafe_code)]
            unsafe {
                bitsets.classes_avx512(&values, &mut classes)
            };
            for (j, (key, o)) in k.iter().zip(o.iter_mut()).enumerate() {
                let c = core::array::from_fn(|f| classes[f][j] as usize);
                #[allow(unsafe_code)]
                {
                    *o = unsafe {
                        if bitsets.has_product() {
                            bitsets.first_avx512::<3>(&c, key, &self.verify)
                        } else {
                            bitsets.first_avx512::<5>(&c, key, &self.verify)
                        }
                    };
                }
            }
        }
    }

    /// [`Classifier::classify`] with AVX-512 leaf checks, compiled for them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_one_avx512(&self, key: &FlowKey) -> RuleIndex {
        self.classify_one::<true>(key)
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
