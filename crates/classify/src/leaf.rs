//! Leaves of the compiled classifier: priority-ordered lists of rule boxes,
//! stored field by field so that one AVX-512 instruction tests 16 rules.
//!
//! All leaves share one set of *planes*, one `u32` array per field of a rule
//! box: source low and span, destination low and span, rule index, ports low
//! and span (source port in the high half, destination port in the low
//! one), and protocol low with the requirement bits (`proto | need << 8`)
//! and protocol span (`span | 0xff00`): 36 bytes per rule. The packing lets
//! the vector check test both ports with one 16-bit subtraction and one
//! saturating one, and protocol and requirements with two byte operations
//! and a ternary logic op. A leaf is a run of
//! consecutive *slots*, named by its first slot and its rule count. So a
//! field of up to 16 rules of a leaf is one load from one plane, at an
//! address the lookup gets from the slot alone, and short leaves waste
//! nothing: loads are masked to the leaf's rules. The planes end with 16
//! padding slots so that no load, masked or not, can leave them.
//!
//! The vector check ([`first_avx512`]) tests a key against 16 boxes
//! without a branch and takes the first hit; the scalar check
//! ([`first_scalar`]) reads the same planes one rule at a time. Both give the
//! same answer; the vector one is used only when the CPU has AVX-512 (F, BW, VL).

use alloc::vec::Vec;

use palisade_packet::FlowKey;

use crate::{RuleIndex, RuleMatch};

/// Requirement bit that no key carries: the rule must be verified with the reference.
pub(crate) const VERIFY: u8 = 16;
/// Requirement bit of padding and header slots: never carried, never verified.
const NEVER: u8 = 0x80;
/// The largest rule count a leaf reference holds; a leaf with this many
/// rules or more starts with a header slot whose index field is the count.
pub(crate) const BIG_LEAF: u32 = 31;
/// Padding slots after the last leaf.
const TAIL_SLOTS: usize = 16;
/// Bytes of one slot over all planes.
pub(crate) const SLOT_BYTES: usize = 36;

/// A key's point: source, destination, source port, destination port,
/// protocol, then the requirement bits it carries at index 5 (6 and 7 unused).
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

    /// A slot that never matches (padding, or a big leaf's header holding `idx`).
    const fn never(idx: u32) -> LeafRule {
        LeafRule {
            lo: [0; 5],
            span: [0; 5],
            need: NEVER,
            idx,
        }
    }
}

/// A leaf as a reference names it: its first slot and its count code (the
/// rule count, or [`BIG_LEAF`] when a header slot holds the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafRef {
    /// First slot (the header slot of a big leaf).
    pub start: usize,
    /// Rule count, or [`BIG_LEAF`].
    pub code: u32,
}

/// What a leaf is checked for: a key and its point, the rules to verify
/// with the reference (by index), and the best match found so far.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub p: &'a Point,
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

/// The planes of all leaves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leaves {
    s_lo: Vec<u32>,
    s_span: Vec<u32>,
    d_lo: Vec<u32>,
    d_span: Vec<u32>,
    idx: Vec<u32>,
    /// `src_port_lo << 16 | dst_port_lo`.
    pt_lo: Vec<u32>,
    /// `src_port_span << 16 | dst_port_span`.
    pt_span: Vec<u32>,
    /// `need << 8 | proto_lo`.
    mi_lo: Vec<u32>,
    /// `0xff00 | proto_span`: the saturating subtraction clears byte 1.
    mi_span: Vec<u32>,
}

impl Leaves {
    /// Slots in use.
    pub(crate) fn len(&self) -> usize {
        self.idx.len()
    }

    fn push_slot(&mut self, r: &LeafRule) {
        self.s_lo.push(r.lo[0]);
        self.s_span.push(r.span[0]);
        self.d_lo.push(r.lo[1]);
        self.d_span.push(r.span[1]);
        self.idx.push(r.idx);
        self.pt_lo.push((r.lo[2] & 0xffff) << 16 | (r.lo[3] & 0xffff));
        self.pt_span
            .push((r.span[2] & 0xffff) << 16 | (r.span[3] & 0xffff));
        self.mi_lo.push((r.need as u32) << 8 | (r.lo[4] & 0xff));
        self.mi_span.push(0xff00 | (r.span[4] & 0xff));
    }

    /// Appends a leaf and returns it.
    pub(crate) fn push(&mut self, rules: &[LeafRule]) -> LeafRef {
        let start = self.len();
        let code = if rules.len() >= BIG_LEAF as usize {
            self.push_slot(&LeafRule::never(rules.len() as u32));
            BIG_LEAF
        } else {
            rules.len() as u32
        };
        for r in rules {
            self.push_slot(r);
        }
        LeafRef { start, code }
    }

    /// Drops the slots from `len` on.
    pub(crate) fn truncate(&mut self, len: usize) {
        macro_rules! all {
            ($($f:ident),*) => { $( self.$f.truncate(len); )* };
        }
        all!(s_lo, s_span, d_lo, d_span, idx, pt_lo, pt_span, mi_lo, mi_span);
    }

    /// Appends the padding slots and releases spare capacity.
    pub(crate) fn finish(&mut self) {
        for _ in 0..TAIL_SLOTS {
            self.push_slot(&LeafRule::never(crate::NO_MATCH));
        }
        macro_rules! all {
            ($($f:ident),*) => { $( self.$f.shrink_to_fit(); )* };
        }
        all!(s_lo, s_span, d_lo, d_span, idx, pt_lo, pt_span, mi_lo, mi_span);
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.idx.capacity() * SLOT_BYTES
    }

    /// The first rule slot and the rule count of a leaf.
    #[inline(always)]
    pub(crate) fn bounds(&self, leaf: LeafRef) -> (usize, usize) {
        if leaf.code == BIG_LEAF {
            let n = self.idx.get(leaf.start).copied().unwrap_or(0) as usize;
            (leaf.start + 1, n)
        } else {
            (leaf.start, leaf.code as usize)
        }
    }

    /// The rule in `slot` (a never-matching one past the end).
    pub(crate) fn rule(&self, slot: usize) -> LeafRule {
        if slot >= self.len() {
            return LeafRule::never(crate::NO_MATCH);
        }
        // Every plane has `len()` elements, so these never fall back.
        let g = |v: &[u32]| v.get(slot).copied().unwrap_or(0);
        let (pt_lo, pt_span, mi_lo, mi_span) =
            (g(&self.pt_lo), g(&self.pt_span), g(&self.mi_lo), g(&self.mi_span));
        LeafRule {
            lo: [
                g(&self.s_lo),
                g(&self.d_lo),
                pt_lo >> 16,
                pt_lo & 0xffff,
                mi_lo & 0xff,
            ],
            span: [
                g(&self.s_span),
                g(&self.d_span),
                pt_span >> 16,
                pt_span & 0xffff,
                mi_span & 0xff,
            ],
            need: (mi_lo >> 8) as u8,
            idx: g(&self.idx),
        }
    }
}

/// The first rule of `leaf` matching the probe's key, if its index is
/// below the probe's best; else that best. One rule at a time.
#[inline(always)]
pub(crate) fn first_scalar(l: &Leaves, leaf: LeafRef, q: &Probe) -> RuleIndex {
    let (first, n) = l.bounds(leaf);
    let carried = q.p[5] as u8;
    for slot in first..first + n {
        // The index first: a scan ends at the best match so far without reading the box.
        let idx = l.idx.get(slot).copied().unwrap_or(crate::NO_MATCH);
        if idx >= q.best {
            return q.best;
        }
        let c = l.rule(slot);
        if !c.contains(q.p) {
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

/// Masks of the rules in slots `s..s + 16` (the first `left` of them)
/// whose box holds the point: `(plain, to_verify)`, the rules that match
/// outright and, with `ANY_VERIFY`, those that match if the reference agrees.
///
/// # Safety
///
/// AVX-512 F, BW and VL must be available, and `s + 16 <= l.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(unsafe_code)]
unsafe fn chunk_masks<const ANY_VERIFY: bool>(l: &Leaves, s: usize, left: usize, p: &Point) -> (u32, u32) {
    use core::arch::x86_64::*;
    let k: __mmask16 = if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as u16
    };
    let carried = p[5] & 0xff;
    // SAFETY: each load reads at most 16 elements from slot `s` of a plane
    // that has `l.len() >= s + 16` elements (the caller's contract); loads
    // are masked to the leaf's rules besides.
    unsafe {
        // Macros, not closures: the loads must compile with this function's target features.
        macro_rules! ld {
            ($v:ident) => {
                _mm512_maskz_loadu_epi32(k, l.$v.as_ptr().add(s) as *const i32)
            };
        }
        let bcast = |v: u32| _mm512_set1_epi32(v as i32);
        let mut m = _mm512_mask_cmple_epu32_mask(k, _mm512_sub_epi32(bcast(p[0]), ld!(s_lo)), ld!(s_span));
        m = _mm512_mask_cmple_epu32_mask(m, _mm512_sub_epi32(bcast(p[1]), ld!(d_lo)), ld!(d_span));
        // Both ports: per 16-bit half, (port - lo) saturating-minus span is 0 when inside.
        let ports = _mm512_subs_epu16(
            _mm512_sub_epi16(bcast(p[2] << 16 | p[3]), ld!(pt_lo)),
            ld!(pt_span),
        );
        m = _mm512_mask_testn_epi32_mask(m, ports, ports);
        // Byte 0: the protocol, as the ports; byte 1 becomes 0 (span byte 0xff).
        let mi_lo = ld!(mi_lo);
        let proto = _mm512_subs_epu8(_mm512_sub_epi8(bcast(p[4]), mi_lo), ld!(mi_span));
        // proto | (mi_lo & !key): byte 1 is then need & !carried (key byte 0 is 0xff).
        let with_need =
            |carried: u32| _mm512_ternarylogic_epi32::<0xf4>(proto, mi_lo, bcast(0xff | carried << 8));
        let plain_bits = with_need(carried);
        let plain = _mm512_mask_testn_epi32_mask(m, plain_bits, plain_bits) as u32;
        if !ANY_VERIFY {
            return (plain, 0);
        }
        let verify_bits = with_need(carried | VERIFY as u32);
        let to_verify = _mm512_mask_testn_epi32_mask(m, verify_bits, verify_bits) as u32 & !plain;
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
pub(crate) unsafe fn first_avx512<const ANY_VERIFY: bool>(l: &Leaves, leaf: LeafRef, q: &Probe) -> RuleIndex {
    let (start, n) = (leaf.start, leaf.code as usize);
    if n > 16 || start + 16 > l.len() {
        // Big leaves; and never for a table built here (its padding makes
        // room), but a load must not leave the planes.
        return first_avx512_slow(l, leaf, q);
    }
    // SAFETY: the features are the caller's contract; the bound was checked above.
    let (plain, to_verify) = unsafe { chunk_masks::<ANY_VERIFY>(l, start, n, q.p) };
    if ANY_VERIFY && to_verify != 0 {
        return first_avx512_slow(l, leaf, q);
    }
    // The first plain match's index; NO_MATCH (padding's) when there is none.
    let first = if plain != 0 {
        plain.trailing_zeros() as usize
    } else {
        16
    };
    let idx = l.idx.get(start + first).copied().unwrap_or(crate::NO_MATCH);
    let idx = if plain != 0 { idx } else { crate::NO_MATCH };
    idx.min(q.best)
}

/// [`first_avx512`] for big leaves and rules to verify: 16 slots per step, in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline(never)]
#[cold]
#[allow(unsafe_code)]
fn first_avx512_slow(l: &Leaves, leaf: LeafRef, q: &Probe) -> RuleIndex {
    let (first_slot, n) = l.bounds(leaf);
    let mut c = 0;
    while c < n {
        let s = first_slot + c;
        if s + 16 > l.len() {
            return first_scalar(l, leaf, q);
        }
        // SAFETY: the features are enabled on this function; the bound was checked above.
        let (plain, to_verify) = unsafe { chunk_masks::<true>(l, s, n - c, q.p) };
        let first = plain.trailing_zeros(); // 32 when no plain rule matched
        let idx_at = |i: u32| l.idx.get(s + i as usize).copied().unwrap_or(crate::NO_MATCH);
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
        c += 16;
    }
    q.best
}
