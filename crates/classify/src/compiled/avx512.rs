//! The AVX-512 lookups: 64 keys walk a tree together in vector registers,
//! and leaves and bit sets are checked 16 rules or 512 bits per step. All
//! the `unsafe` code of the compiled classifier's lookups is here (the
//! leaf and bit-set kernels it calls are in `leaf.rs` and `bitset.rs`).

use palisade_packet::FlowKey;

use super::ranks::{RankIndex, BLOCK};
use super::*;
use crate::bitset::{self, Bitsets};
use crate::leaf::LeafKey;
use crate::NO_MATCH;

/// The points of a chunk's lanes field by field (the fields of [`Point`]),
/// 16 lanes to a vector.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct LanePoints {
    f: [[u32; VECTOR_LANES]; 8],
}

#[cfg(target_arch = "x86_64")]
impl LanePoints {
    /// The words a leaf check compares of lane `j`'s point.
    #[inline(always)]
    fn leaf_key(&self, j: usize) -> LeafKey {
        let at = |f: usize| self.f[f].get(j).copied().unwrap_or(0);
        LeafKey {
            s: at(0),
            d: at(1),
            proto: at(4),
            ports: at(6),
            req: at(7),
        }
    }

    /// Field `f` of the 16 lanes of group `g`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn load(&self, f: usize, g: usize) -> core::arch::x86_64::__m512i {
        let row = &self.f[f.min(7)];
        let g = g.min(VECTOR_LANES / 16 - 1);
        // SAFETY: 16 `u32`s at 16 * g inside a row of VECTOR_LANES = 16 * (the largest g + 1).
        unsafe { core::arch::x86_64::_mm512_loadu_epi32(row.as_ptr().add(16 * g) as *const i32) }
    }

    /// Stores field `f` of the 16 lanes of group `g`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn store(&mut self, f: usize, g: usize, v: core::arch::x86_64::__m512i) {
        let row = &mut self.f[f.min(7)];
        let g = g.min(VECTOR_LANES / 16 - 1);
        // SAFETY: as in `load`.
        unsafe { core::arch::x86_64::_mm512_storeu_epi32(row.as_mut_ptr().add(16 * g) as *mut i32, v) }
    }

    /// Sets lane `j`'s point.
    fn set_point(&mut self, j: usize, p: &Point) {
        for (row, &v) in self.f.iter_mut().zip(p) {
            if let Some(slot) = row.get_mut(j) {
                *slot = v;
            }
        }
    }
}

/// The 32-bit word of a [`FlowKey`] that holds the field at byte offset
/// `at`, and the shift to its low bit (fields of 1, 2 and 4 bytes at their
/// alignment never straddle a word; a `u128`'s first word is its low 32 bits
/// on x86-64).
#[cfg(target_arch = "x86_64")]
const fn key_word(at: usize) -> (i32, u32) {
    ((at / 4) as i32, (at % 4) as u32 * 8)
}

impl CompiledClassifier {
    /// [`Classifier::classify_batch`] with AVX-512: [`VECTOR_LANES`] keys at
    /// a time, their points first (gathered field by field from the keys;
    /// IPv4 addresses ranked by their tries), then the lanes of each part:
    /// walking its trees together in vector registers (leaves checked 16
    /// rules per step), or through its bit sets.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn classify_batch_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let mut lp = LanePoints {
            f: [[0; VECTOR_LANES]; 8],
        };
        // The bit sets' scratch: the field classes of a chunk's lanes.
        let mut scratch = [[0u32; VECTOR_LANES]; bitset::FIELDS];
        for (c, (k, o)) in keys
            .chunks(VECTOR_LANES)
            .zip(out.chunks_mut(VECTOR_LANES))
            .enumerate()
        {
            let n = k.len().min(o.len());
            // The next chunk's keys, on their way while this one is looked up.
            for key in keys.iter().skip((c + 1) * VECTOR_LANES).take(VECTOR_LANES) {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    key as *const FlowKey as *const i8,
                );
            }
            let of_part = self.lane_points(&k[..n], &mut lp);
            // Lanes past the keys count as matched, so they walk no tree.
            let mut best = [0u32; VECTOR_LANES];
            best[..n].fill(NO_MATCH);
            for (part, &lanes) in self.parts.iter().zip(&of_part) {
                if lanes == 0 {
                    continue;
                }
                match &part.bitsets {
                    Some(bitsets) => {
                        self.bitsets_lanes_avx512(bitsets, &lp, k, lanes, &mut best, &mut scratch)
                    }
                    None => self.walk_lanes_avx512(&part.roots, &lp, k, lanes, &mut best),
                }
            }
            o[..n].copy_from_slice(&best[..n]);
        }
    }

    /// The points of `keys` (at most [`VECTOR_LANES`]) into `lp`, and the
    /// lanes of each part (a bit per lane): the keys' words are gathered
    /// field by field, 16 keys to a gather, IPv4 addresses become their
    /// ranks when the IPv4 part uses them; IPv6 keys (rare in a batch, or
    /// all of it) take [`points_of`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn lane_points(&self, keys: &[FlowKey], lp: &mut LanePoints) -> [u64; 2] {
        use core::arch::x86_64::*;
        use core::mem::offset_of;
        const G: usize = VECTOR_LANES / 16;
        const KEY_WORDS: i32 = (core::mem::size_of::<FlowKey>() / 4) as i32;
        const _: () = assert!(
            core::mem::size_of::<FlowKey>().is_multiple_of(4) && core::mem::align_of::<FlowKey>() >= 4
        );
        let n = keys.len().min(VECTOR_LANES);
        let base = keys.as_ptr() as *const i32;
        let bcast = |x: u32| _mm512_set1_epi32(x as i32);
        let iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let mut v6 = 0u64;
        let mut srcs = [_mm512_setzero_si512(); G];
        let mut dsts = [_mm512_setzero_si512(); G];
        for g in 0..G {
            let live = if n >= 16 * (g + 1) {
                0xffff
            } else {
                ((1u32 << n.saturating_sub(16 * g)) - 1) as __mmask16
            };
            if live == 0 {
                // Past the keys: zero points (their lanes are never looked at).
                for f in 0..8 {
                    lp.store(f, g, _mm512_setzero_si512());
                }
                continue;
            }
            let at = _mm512_mullo_epi32(
                _mm512_add_epi32(iota, bcast(16 * g as u32)),
                _mm512_set1_epi32(KEY_WORDS),
            );
            // The word holding the field at byte offset `off`, shifted down and masked to `bits`.
            let field = |off: usize, bits: u32| {
                let (word, shift) = key_word(off);
                // SAFETY: lane i reads word `word` of key 16g + i, inside
                // the key (`word` < KEY_WORDS) for live lanes, the only ones read.
                let w = unsafe {
                    _mm512_mask_i32gather_epi32::<4>(
                        _mm512_setzero_si512(),
                        live,
                        _mm512_add_epi32(at, _mm512_set1_epi32(word)),
                        base,
                    )
                };
                let w = _mm512_srli_epi32::<0>(_mm512_srlv_epi32(w, bcast(shift)));
                if bits == 32 {
                    w
                } else {
                    _mm512_and_si512(w, bcast((1u32 << bits) - 1))
                }
            };
            let present = field(offset_of!(FlowKey, present), 16);
            let version = field(offset_of!(FlowKey, ip_version), 8);
            let has = |bit: u16| _mm512_test_epi32_mask(present, bcast(bit as u32));
            let addrs = has(Present::ADDRS) & live;
            let is_v4 = _mm512_mask_cmpeq_epi32_mask(addrs, version, bcast(4));
            let is_v6 = _mm512_mask_cmpeq_epi32_mask(addrs, version, bcast(6));
            v6 |= (is_v6 as u64) << (16 * g);
            let with_proto = has(Present::L4_PROTO);
            let with_ports = has(Present::PORTS);
            let src = _mm512_maskz_mov_epi32(is_v4, field(offset_of!(FlowKey, src_ip), 32));
            let dst = _mm512_maskz_mov_epi32(is_v4, field(offset_of!(FlowKey, dst_ip), 32));
            let proto = _mm512_maskz_mov_epi32(with_proto, field(offset_of!(FlowKey, l4_proto), 8));
            let sp = _mm512_maskz_mov_epi32(with_ports, field(offset_of!(FlowKey, src_port), 16));
            let dp = _mm512_maskz_mov_epi32(with_ports, field(offset_of!(FlowKey, dst_port), 16));
            let req = |m: __mmask16, bits: u8| _mm512_maskz_mov_epi32(m, bcast(bits as u32));
            let carried = _mm512_or_si512(
                _mm512_or_si512(req(is_v4, REQ_IP | REQ_V4), req(with_proto, REQ_PROTO)),
                req(with_ports, REQ_PORTS),
            );
            srcs[g] = src;
            dsts[g] = dst;
            lp.store(2, g, sp);
            lp.store(3, g, dp);
            lp.store(4, g, proto);
            lp.store(5, g, carried);
            lp.store(6, g, _mm512_or_si512(_mm512_slli_epi32::<16>(sp), dp));
            lp.store(
                7,
                g,
                _mm512_or_si512(_mm512_slli_epi32::<8>(carried), bcast(0xff)),
            );
        }
        if let Some(v4) = &self.ranks.v4 {
            // Every lane is ranked (address 0 of a key without one has rank 0);
            // IPv6 lanes are overwritten below.
            for (d, (index, vals)) in [(&v4.src, &mut srcs), (&v4.dst, &mut dsts)]
                .into_iter()
                .enumerate()
            {
                match index.trie() {
                    // SAFETY: this function has the features the trie's kernel needs.
                    Some(trie) => *vals = unsafe { trie.classes_avx512(vals) },
                    None => {
                        // (Never for a classifier's ranks: they are built with their trie.)
                        let _ = d;
                        for v in vals.iter_mut() {
                            let mut a = [0u32; 16];
                            // SAFETY: a store of 16 lanes into a local array of 16.
                            unsafe { _mm512_storeu_epi32(a.as_mut_ptr() as *mut i32, *v) };
                            for x in a.iter_mut() {
                                *x = index.lookup(*x);
                            }
                            // SAFETY: a load of 16 lanes from a local array of 16.
                            *v = unsafe { _mm512_loadu_epi32(a.as_ptr() as *const i32) };
                        }
                    }
                }
            }
        }
        for g in 0..G {
            lp.store(0, g, srcs[g]);
            lp.store(1, g, dsts[g]);
        }
        if v6 != 0 {
            let mut pts = [[0u32; 8]; VECTOR_LANES];
            // (This function has the features the ranks' kernel needs, so the call is safe.)
            let rank =
                |index: &RankIndex, addrs: &[u128; VECTOR_LANES], lanes, out: &mut [u32; VECTOR_LANES]| {
                    rank_lanes_avx512(index, addrs, lanes, out)
                };
            points_of(keys, &self.ranks, &mut pts, rank);
            let mut m = v6;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(p) = pts.get(j) {
                    lp.set_point(j, p);
                }
            }
        }
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        [all & !v6, v6]
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
        lp: &LanePoints,
        keys: &[FlowKey],
        lanes: u64,
        best: &mut [RuleIndex; VECTOR_LANES],
    ) {
        use core::arch::x86_64::*;
        const G: usize = VECTOR_LANES / 16;
        let pv: [[__m512i; DIMS]; G] = core::array::from_fn(|g| core::array::from_fn(|d| lp.load(d, g)));
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
            self.leaf_matches(filled_lanes, &leaves, lp, keys, best, &mut found);
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
        lp: &LanePoints,
        keys: &[FlowKey],
        best: &[RuleIndex; VECTOR_LANES],
        found: &mut [RuleIndex; VECTOR_LANES],
    ) {
        while lanes != 0 {
            let j = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            if let (Some(f), Some(&b), Some(k), Some(&r)) =
                (found.get_mut(j), best.get(j), keys.get(j), leaves.get(j))
            {
                *f = self.leaf_first_of::<true, false>(r, &lp.leaf_key(j), k, b);
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
        lp: &LanePoints,
        keys: &[FlowKey],
        mut lanes: u64,
        best: &mut [RuleIndex; VECTOR_LANES],
        classes: &mut BitsetScratch,
    ) {
        const _: () = assert!(bitset::BATCH == VECTOR_LANES);
        const G: usize = VECTOR_LANES / 16;
        // Lanes of other parts or past the keys hold valid points too; their classes are not used.
        let values: [[core::arch::x86_64::__m512i; G]; bitset::FIELDS] = core::array::from_fn(|f| {
            core::array::from_fn(|g| match f {
                4 => Bitsets::field4_avx512(lp.load(4, g), lp.load(5, g)),
                _ => lp.load(f, g),
            })
        });
        // SAFETY (both calls): this function is compiled for, and entered
        // only after `leaf::avx512_available()` found, the features they need.
        #[allow(unsafe_code)]
        unsafe {
            bitsets.classes_avx512(&values, classes)
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

/// The field classes of a chunk's lanes (see [`Bitsets::classes_avx512`]).
#[cfg(target_arch = "x86_64")]
type BitsetScratch = [[u32; VECTOR_LANES]; bitset::FIELDS];

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
