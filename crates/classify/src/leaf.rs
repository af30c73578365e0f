//! Leaves of the compiled classifier: priority-ordered lists of rule boxes,
//! stored field by field so that one AVX-512 instruction tests 16 rules.
//!
//! A leaf is a run of `u32` *words* in one array shared by all leaves: its
//! rules in *blocks* of up to 16, each block field after field. A field of
//! a block of `m` rules is `m` consecutive words: source low and span,
//! destination low and span, ports low and span (source port in the high
//! half, destination port in the low one), protocol low with the
//! requirement bits and the protocol span (`span << 16 | need << 8 | proto`),
//! and the rule index: 32 bytes per rule. The packing lets the vector check
//! test both ports with one 16-bit subtraction and one saturating one, and
//! protocol and requirements with two byte operations and a ternary logic op.
//!
//! So a field of a block is one load, at an address the lookup computes
//! from the leaf's first word and rule count alone (both in the leaf's
//! reference), loads are masked to the block's rules, and a leaf's fields
//! lie together: checking a leaf of 8 rules touches 256 contiguous bytes,
//! not a cache line in each of 8 field arrays (which cost a third of the
//! lookup's speed on the 10K ClassBench sets). The words end with 16
//! padding words so that no load, masked or not, can leave them.
//!
//! The vector check ([`first_avx512`]) tests a key against 16 boxes
//! without a branch and takes the first hit; the scalar check
//! ([`first_scalar`]) reads the same words one rule at a time. Both give the
//! same answer; the vector one is used only when the CPU has AVX-512 (F, BW, VL).

use alloc::vec::Vec;

use palisade_packet::FlowKey;

use crate::{RuleIndex, RuleMatch};

/// Requirement bit that no key carries: the rule must be verified with the reference.
pub(crate) const VERIFY: u8 = 16;
/// Requirement bit of rules that never match: never carried, never verified.
pub(crate) const NEVER: u8 = 0x80;
/// The largest rule count a leaf reference holds; a leaf with this many
/// rules or more starts with a header word holding the count.
pub(crate) const BIG_LEAF: u32 = 31;
/// Padding words after the last leaf, so that a 16-word load from any
/// field of any block stays inside the words.
const TAIL_WORDS: usize = BLOCK;

/// A key's point: source, destination, source port, destination port,
/// protocol, then the requirement bits it carries at index 5; and at 6
/// and 7 the words the vector check compares with, so it computes none
/// per leaf: both ports (`src << 16 | dst`) and `carried << 8 | 0xff`.
pub(crate) type Point = [u32; 8];

/// One rule of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafRule {
    /// Low bound per dimension.
    pub lo: [u32; 5],
    /// `hi - lo` per dimension.
    pub span: [u32; 5],
    /// Requirement bits, with [`VERIFY`] for rules checked by the reference.
    pub need: u8,
    /// The rule's index.
    pub idx: u32,
}

impl LeafRule {
    /// Whether the point lies in the rule's box.
    #[inline(always)]
    pub(crate) fn contains(&self, p: &Point) -> bool {
        (0..5).all(|d| p[d].wrapping_sub(self.lo[d]) <= self.span[d])
    }

    /// A rule that never matches, with index `idx` (what reads past a leaf's end give).
    const fn never(idx: u32) -> LeafRule {
        LeafRule {
            lo: [0; 5],
            span: [0; 5],
            need: NEVER,
            idx,
        }
    }
}

/// A leaf as a reference names it: its first word and its count code (the
/// rule count, or [`BIG_LEAF`] when a header word holds the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafRef {
    /// First word (the header word of a big leaf).
    pub start: usize,
    /// Rule count, or [`BIG_LEAF`].
    pub code: u32,
}

/// The words of a point that a leaf check compares, which determine the
/// whole point: source, destination, protocol, both ports
/// (`src << 16 | dst`) and the requirement word (`carried << 8 | 0xff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafKey {
    pub s: u32,
    pub d: u32,
    pub proto: u32,
    pub ports: u32,
    pub req: u32,
}

impl LeafKey {
    /// The compared words of point `p`.
    #[inline(always)]
    pub(crate) fn of(p: &Point) -> LeafKey {
        LeafKey {
            s: p[0],
            d: p[1],
            proto: p[4],
            ports: p[6],
            req: p[7],
        }
    }

    /// The whole point.
    #[inline(always)]
    pub(crate) fn point(&self) -> Point {
        [
            self.s,
            self.d,
            self.ports >> 16,
            self.ports & 0xffff,
            self.proto,
            self.req >> 8,
            self.ports,
            self.req,
        ]
    }
}

/// What a leaf is checked for: a key and its point, the rules to verify
/// with the reference (by index), and the best match found so far.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub k: &'a LeafKey,
    pub key: &'a FlowKey,
    pub verify: &'a [RuleMatch],
    pub best: RuleIndex,
}

impl Probe<'_> {
    /// Whether the rule with index `idx`, whose box holds the point, matches per the reference.
    #[inline(always)]
    fn verified(&self, idx: RuleIndex) -> bool {
        self.verify.get(idx as usize).is_some_and(|r| r.matches(self.key))
    }
}

/// Words of one rule in a block: source low and span, destination low and
/// span, ports low and span, protocol-and-requirements low and span, index.
const FIELDS: usize = 8;
/// Field numbers in a block (see [`FIELDS`]).
const S_LO: usize = 0;
const S_SPAN: usize = 1;
const D_LO: usize = 2;
const D_SPAN: usize = 3;
/// `src_port_lo << 16 | dst_port_lo`.
const PT_LO: usize = 4;
/// `src_port_span << 16 | dst_port_span`.
const PT_SPAN: usize = 5;
/// `proto_span << 16 | need << 8 | proto_lo`.
const MI: usize = 6;
const IDX: usize = 7;
/// Rules per block: one vector step.
pub(crate) const BLOCK: usize = 16;

/// The words of all leaves, block after block.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leaves {
    words: Vec<u32>,
}

impl Leaves {
    /// Words in use.
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    /// Appends a leaf and returns it.
    pub(crate) fn push(&mut self, rules: &[LeafRule]) -> LeafRef {
        let start = self.len();
        let code = if rules.len() >= BIG_LEAF as usize {
            self.words.push(rules.len() as u32);
            BIG_LEAF
        } else {
            rules.len() as u32
        };
        for block in rules.chunks(BLOCK) {
            let base = self.words.len();
            let m = block.len();
            self.words.resize(base + FIELDS * m, 0);
            for (i, r) in block.iter().enumerate() {
                let fields = [
                    r.lo[0],
                    r.span[0],
                    r.lo[1],
                    r.span[1],
                    (r.lo[2] & 0xffff) << 16 | (r.lo[3] & 0xffff),
                    (r.span[2] & 0xffff) << 16 | (r.span[3] & 0xffff),
                    (r.span[4] & 0xff) << 16 | (r.need as u32) << 8 | (r.lo[4] & 0xff),
                    r.idx,
                ];
                for (f, w) in fields.into_iter().enumerate() {
                    self.words[base + f * m + i] = w;
                }
            }
        }
        LeafRef { start, code }
    }

    /// Moves the words from `from` on down to `to`, dropping what was there.
    pub(crate) fn move_down(&mut self, from: usize, to: usize) {
        self.words.copy_within(from.., to);
        self.words.truncate(self.words.len() - (from - to));
    }

    /// Drops the words from `len` on.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.words.truncate(len);
    }

    /// Appends the padding and releases spare capacity.
    pub(crate) fn finish(&mut self) {
        self.words.resize(self.words.len() + TAIL_WORDS, 0);
        self.words.shrink_to_fit();
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.words.capacity() * 4
    }

    /// The first block's word and the rule count of a leaf.
    #[inline(always)]
    pub(crate) fn bounds(&self, leaf: LeafRef) -> (usize, usize) {
        if leaf.code == BIG_LEAF {
            let n = self.words.get(leaf.start).copied().unwrap_or(0) as usize;
            (leaf.start + 1, n)
        } else {
            (leaf.start, leaf.code as usize)
        }
    }

    /// The block holding rule `i` of a leaf whose first block is at
    /// `first` and which has `n` rules: its word, its rule count, and the
    /// rule's place in it (past the count when `i >= n`, which callers treat as the end).
    #[inline(always)]
    fn block_of(first: usize, n: usize, i: usize) -> (usize, usize, usize) {
        let b = i / BLOCK;
        (
            first + b * BLOCK * FIELDS,
            n.saturating_sub(b * BLOCK).min(BLOCK),
            i % BLOCK,
        )
    }

    /// Word `f` of the rule in place `i` of the block at `base` with `m` rules (0 past the end).
    #[inline(always)]
    fn word(&self, base: usize, m: usize, f: usize, i: usize) -> u32 {
        self.words.get(base + f * m + i).copied().unwrap_or(0)
    }

    /// Rule `i` of a leaf whose first block is at `first` and which has `n` rules.
    pub(crate) fn rule(&self, first: usize, n: usize, i: usize) -> LeafRule {
        let (base, m, i) = Self::block_of(first, n, i);
        if i >= m || base + FIELDS * m > self.len() {
            return LeafRule::never(crate::NO_MATCH);
        }
        let g = |f| self.word(base, m, f, i);
        let (pt_lo, pt_span, mi) = (g(PT_LO), g(PT_SPAN), g(MI));
        LeafRule {
            lo: [g(S_LO), g(D_LO), pt_lo >> 16, pt_lo & 0xffff, mi & 0xff],
            span: [
                g(S_SPAN),
                g(D_SPAN),
                pt_span >> 16,
                pt_span & 0xffff,
                (mi >> 16) & 0xff,
            ],
            need: (mi >> 8) as u8,
            idx: g(IDX),
        }
    }

    /// The index of rule `i` of a leaf (see [`Leaves::rule`]); `NO_MATCH` past the end.
    #[inline(always)]
    fn idx(&self, first: usize, n: usize, i: usize) -> RuleIndex {
        let (base, m, i) = Self::block_of(first, n, i);
        if i >= m {
            return crate::NO_MATCH;
        }
        self.words
            .get(base + IDX * m + i)
            .copied()
            .unwrap_or(crate::NO_MATCH)
    }
}

/// The first rule of `leaf` matching the probe's key, if its index is
/// below the probe's best; else that best. One rule at a time.
#[inline(always)]
pub(crate) fn first_scalar(l: &Leaves, leaf: LeafRef, q: &Probe) -> RuleIndex {
    let (first, n) = l.bounds(leaf);
    let p = q.k.point();
    let carried = p[5] as u8;
    for i in 0..n {
        // The index first: a scan ends at the best match so far without reading the box.
        let idx = l.idx(first, n, i);
        if idx >= q.best {
            return q.best;
        }
        let c = l.rule(first, n, i);
        if !c.contains(&p) {
            continue;
        }
        let miss = c.need & !carried;
        if miss == 0 || (miss == VERIFY && q.verified(idx)) {
            return idx;
        }
    }
    q.best
}

/// Whether this CPU runs [`first_avx512`] (AVX-512 F, BW and VL).
pub(crate) fn avx512_available() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        false
    }
}

/// Masks of the `m` (at most 16) rules of the block at word `base`
/// whose box holds the point: `(plain, to_verify)`, the rules that match
/// outright and, with `ANY_VERIFY`, those that match if the reference agrees.
///
/// # Safety
///
/// AVX-512 F, BW and VL must be available, `m <= BLOCK`, and `base + FIELDS * m + BLOCK <= l.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(unsafe_code)]
unsafe fn chunk_masks<const ANY_VERIFY: bool>(l: &Leaves, base: usize, m: usize, p: &LeafKey) -> (u32, u32) {
    use core::arch::x86_64::*;
    // m <= 16 (the caller's contract), so the shift cannot overflow.
    let k = ((1u32 << m) - 1) as __mmask16;
    // SAFETY: each load reads at most 16 words from word `base + f * m`
    // with f < FIELDS, so below `base + FIELDS * m + BLOCK <= l.len()` (the
    // caller's contract); loads are masked to the block's rules besides.
    unsafe {
        // Macros, not closures: the loads must compile with this function's target features.
        macro_rules! ld {
            ($f:ident) => {
                _mm512_maskz_loadu_epi32(k, l.words.as_ptr().add(base + $f * m) as *const i32)
            };
        }
        let bcast = |v: u32| _mm512_set1_epi32(v as i32);
        let mut m = _mm512_mask_cmple_epu32_mask(k, _mm512_sub_epi32(bcast(p.s), ld!(S_LO)), ld!(S_SPAN));
        m = _mm512_mask_cmple_epu32_mask(m, _mm512_sub_epi32(bcast(p.d), ld!(D_LO)), ld!(D_SPAN));
        // Both ports: per 16-bit half, (port - lo) saturating-minus span is 0 when inside.
        let ports = _mm512_subs_epu16(_mm512_sub_epi16(bcast(p.ports), ld!(PT_LO)), ld!(PT_SPAN));
        m = _mm512_mask_testn_epi32_mask(m, ports, ports);
        // Byte 0: the protocol, as the ports, against the span from byte 2;
        // byte 1 becomes 0 (span byte 0xff). Bytes 2 and 3 are not tested.
        let mi = ld!(MI);
        let span = _mm512_or_si512(_mm512_srli_epi32::<16>(mi), bcast(0xff00));
        let proto = _mm512_subs_epu8(_mm512_sub_epi8(bcast(p.proto), mi), span);
        // proto | (mi & !key): byte 1 is then need & !carried (key byte 0 is 0xff).
        let with_need = |carried: u32| _mm512_ternarylogic_epi32::<0xf4>(proto, mi, bcast(carried));
        let low_half = bcast(0xffff);
        let plain_bits = with_need(p.req);
        let plain = _mm512_mask_testn_epi32_mask(m, plain_bits, low_half) as u32;
        if !ANY_VERIFY {
            return (plain, 0);
        }
        let verify_bits = with_need(p.req | (VERIFY as u32) << 8);
        let to_verify = _mm512_mask_testn_epi32_mask(m, verify_bits, low_half) as u32 & !plain;
        (plain, to_verify)
    }
}

/// [`first_scalar`], 16 rules per step, without a branch for leaves of at
/// most 16 plain rules. `ANY_VERIFY` is false only when no rule of the
/// classifier needs the reference.
///
/// # Safety
///
/// AVX-512 F, BW and VL must be available ([`avx512_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(unsafe_code)]
pub(crate) unsafe fn first_avx512<const ANY_VERIFY: bool, const MIN: bool>(
    l: &Leaves,
    leaf: LeafRef,
    q: Probe,
) -> RuleIndex {
    let (start, n) = (leaf.start, leaf.code as usize);
    if n > BLOCK || start + FIELDS * n + BLOCK > l.len() {
        // Big leaves; and never for a table built here (its padding makes
        // room), but a load must not leave the words.
        return first_avx512_slow(l, leaf, q.k, q.key, q.verify, q.best);
    }
    // SAFETY: the features are the caller's contract; the bound was checked above.
    let (plain, to_verify) = unsafe { chunk_masks::<ANY_VERIFY>(l, start, n, q.k) };
    if ANY_VERIFY && to_verify != 0 {
        return first_avx512_slow(l, leaf, q.k, q.key, q.verify, q.best);
    }
    // The first plain match's index, NO_MATCH when there is none: the
    // indices are loaded with the other fields and the first match's is
    // compressed to lane 0, so no load waits for the check. Selects, not
    // branches: whether a leaf beats the best so far is unpredictable, and
    // a branch on it would wait for the whole check.
    // SAFETY: as `chunk_masks`'s loads (the index field is one of them).
    let idx = unsafe {
        use core::arch::x86_64::*;
        let k = ((1u32 << n) - 1) as __mmask16;
        let idx = _mm512_maskz_loadu_epi32(k, l.words.as_ptr().add(start + IDX * n) as *const i32);
        let first = _mm512_mask_compress_epi32(_mm512_set1_epi32(-1), plain as __mmask16, idx);
        _mm_cvtsi128_si32(_mm512_castsi512_si128(first)) as u32
    };
    if MIN {
        idx.min(q.best)
    } else {
        idx
    }
}

/// [`first_avx512`] for big leaves and rules to verify: a block per step, in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline(never)]
#[cold]
#[allow(unsafe_code)]
fn first_avx512_slow(
    l: &Leaves,
    leaf: LeafRef,
    k: &LeafKey,
    key: &FlowKey,
    verify: &[RuleMatch],
    best: RuleIndex,
) -> RuleIndex {
    // The probe's parts come apart: as one struct, its fields were stored to
    // memory for every leaf, on the fast path too.
    let q = &Probe { k, key, verify, best };
    let (first_word, n) = l.bounds(leaf);
    let mut c = 0;
    while c < n {
        let (base, m, _) = Leaves::block_of(first_word, n, c);
        if base + FIELDS * m + BLOCK > l.len() {
            return first_scalar(l, leaf, q);
        }
        // SAFETY: the features are enabled on this function; the bound was checked above.
        let (plain, to_verify) = unsafe { chunk_masks::<true>(l, base, m, q.k) };
        let first = plain.trailing_zeros(); // 32 when no plain rule matched
        let idx_at = |i: u32| l.idx(first_word, n, c + i as usize);
        // Rules to verify before the first plain match, in order.
        let mut v = to_verify & (((1u64 << first) - 1) as u32);
        while v != 0 {
            let i = v.trailing_zeros();
            let idx = idx_at(i);
            if idx >= q.best {
                return q.best;
            }
            if q.verified(idx) {
                return idx;
            }
            v &= v - 1;
        }
        if plain != 0 {
            return idx_at(first).min(q.best);
        }
        c += BLOCK;
    }
    q.best
}
