//! The bit-set lookup of small rule sets (the Lucent bit-vector scheme).
//!
//! Each field of the point (source, destination, source port, destination
//! port, and protocol combined with the requirement bits) is cut into its
//! *elementary intervals*: the pieces between consecutive rule bounds. Every
//! value of one piece is in the same rules' boxes, so a piece has one bit
//! set, with bit `i` set when rule `i`'s box holds the piece on that field.
//! Pieces with equal sets share one (their *class*). A lookup finds the
//! class of each field's value with a multi-bit trie (a 16-bit root, then
//! 8-bit nodes: at most three dependent loads) and intersects the sets; the
//! lowest bit left is the first match. When the product of the port and
//! protocol classes is small, their intersections are made at build time
//! (RFC's cross-producting), so a lookup intersects three sets, not five.
//! Sets are stored as 64-byte lines of 512 rules: with AVX-512, a line of
//! the intersection is one load per set and two ternary-logic ANDs, and
//! the first bit is selected over all lines without a branch.
//!
//! The memory is about `classes × rules / 8` bytes per field, which stays
//! small only for small sets: [`Bitsets::build`] declines past its budget,
//! and the trees serve larger sets.
//!
//! Rules that need the reference (see [`crate::leaf::VERIFY`]) have their
//! bit in a separate set too; a candidate among them is verified with
//! [`RuleMatch::matches`], and the scan goes on past it when it fails.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use palisade_packet::FlowKey;

use crate::leaf::{LeafRule, Point, NEVER, VERIFY};
use crate::trie::ValueTrie;
use crate::{RuleIndex, RuleMatch, NO_MATCH};

/// 512 rules' bits of one class: one cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, align(64))]
pub(crate) struct Line([u64; 8]);

impl Line {
    /// A line of no rules.
    pub(crate) const EMPTY: Line = Line([0; 8]);
}

/// Fields a lookup intersects: source, destination, source port, destination
/// port, and protocol with the requirement bits (`packed carried << 8 | proto`).
pub(crate) const FIELDS: usize = 5;
/// Width in bits of each field's values.
const WIDTH: [u32; FIELDS] = [32, 32, 16, 16, 14];
/// Bits of each field's trie root; the rest is looked up 8 bits per level.
const ROOT_BITS: [u32; FIELDS] = [16, 16, 16, 16, 14];
/// The requirement bits a key can carry (see `compiled::REQ_*`): four, a
/// gap (the verify bit), two more; field 4 holds them packed into 6 bits.
const REQ_BITS: u8 = 0x6f;

/// The requirement bits `carried`, packed into 6 bits.
#[inline(always)]
fn pack_carried(carried: u8) -> u32 {
    (carried & 0x0f) as u32 | ((carried & 0x60) >> 1) as u32
}

/// The requirement bits of a packed value (see [`pack_carried`]).
fn unpack_carried(packed: u32) -> u8 {
    (packed & 0x0f) as u8 | ((packed & 0x30) << 1) as u8
}

/// The bit sets of a rule set and the tries that find them.
#[derive(Clone, Debug)]
pub(crate) struct Bitsets {
    fields: [ValueTrie; FIELDS],
    /// Every class's set, `lines` lines each; the first class is empty.
    bits: Vec<Line>,
    /// Lines per set (rules / 512, rounded up).
    lines: usize,
    /// The rules that need the reference, as a set (empty when none does).
    verify: Vec<Line>,
    /// The intersections of the port and protocol fields' classes, when
    /// few enough: then those fields' tries give class numbers into it.
    product: Option<Product>,
}

/// Sets stored once each, as runs of lines.
struct SetStore {
    bits: Vec<Line>,
    first_line: BTreeMap<Vec<Line>, u32>,
}

impl SetStore {
    /// A store holding the empty set (at line 0).
    fn new(lines: usize) -> SetStore {
        let empty = vec![Line::EMPTY; lines];
        SetStore {
            bits: empty.clone(),
            first_line: BTreeMap::from([(empty, 0)]),
        }
    }

    /// The first line of `set`, stored if new.
    fn intern(&mut self, set: &[Line]) -> u32 {
        if let Some(&at) = self.first_line.get(set) {
            return at;
        }
        let at = self.bits.len() as u32;
        self.bits.extend_from_slice(set);
        self.first_line.insert(set.to_vec(), at);
        at
    }
}

/// The intersections of every class of the source port, destination port
/// and protocol fields (RFC's cross-producting): a lookup then intersects
/// three sets, not five.
#[derive(Clone, Debug)]
struct Product {
    /// The first line of the intersection of classes `(a, b, c)`, at `(a * n[1] + b) * n[2] + c`.
    tab: Vec<u32>,
    /// Class counts of the three fields.
    n: [u32; 3],
}

/// Most entries of a [`Product`] table.
const PRODUCT_MAX: usize = 1 << 15;

impl Product {
    /// The product of the classes `sets[2..5]`, when it has at most
    /// [`PRODUCT_MAX`] entries and its new sets take at most `budget` bytes.
    fn build(sets: &[Vec<Vec<Line>>; FIELDS], store: &mut SetStore, budget: usize) -> Option<Product> {
        let n = [sets[2].len(), sets[3].len(), sets[4].len()];
        let count = n[0].checked_mul(n[1])?.checked_mul(n[2])?;
        if count > PRODUCT_MAX {
            return None;
        }
        let mut distinct: BTreeMap<Vec<Line>, u32> = BTreeMap::new();
        let mut local = Vec::with_capacity(count);
        let mut found = Vec::new();
        for a in &sets[2] {
            for b in &sets[3] {
                let ab = intersection(a, b);
                for c in &sets[4] {
                    let abc = intersection(&ab, c);
                    let next = distinct.len() as u32;
                    let number = *distinct.entry(abc).or_insert_with_key(|set| {
                        found.push(set.clone());
                        next
                    });
                    local.push(number);
                    if found.len() * found.first().map_or(0, Vec::len) * 64 > budget {
                        return None;
                    }
                }
            }
        }
        let lines: Vec<u32> = found.iter().map(|set| store.intern(set)).collect();
        Some(Product {
            tab: local.iter().map(|&l| lines[l as usize]).collect(),
            n: [n[0] as u32, n[1] as u32, n[2] as u32],
        })
    }

    /// The first line of the intersection of classes `c[2..5]` (class numbers).
    #[inline(always)]
    fn line(&self, c: &[usize; FIELDS]) -> usize {
        let at = (c[2] * self.n[1] as usize + c[3]) * self.n[2] as usize + c[4];
        self.tab.get(at).copied().unwrap_or(0) as usize
    }
}

/// The set of the rules (of `lines` lines) for which `member` holds.
fn rule_set(rules: &[LeafRule], lines: usize, member: impl Fn(&LeafRule) -> bool) -> Vec<Line> {
    let mut set = vec![Line::EMPTY; lines];
    for (i, r) in rules.iter().enumerate() {
        if member(r) {
            set[i / 512].0[i % 512 / 64] |= 1 << (i % 64);
        }
    }
    set
}

/// The intersection of two sets.
fn intersection(a: &[Line], b: &[Line]) -> Vec<Line> {
    a.iter()
        .zip(b)
        .map(|(x, y)| Line(core::array::from_fn(|w| x.0[w] & y.0[w])))
        .collect()
}

/// The value of each field of a point.
#[inline(always)]
fn field_values(p: &Point) -> [u32; FIELDS] {
    [
        p[0],
        p[1],
        p[2],
        p[3],
        pack_carried(p[5] as u8 & REQ_BITS) << 8 | (p[4] & 0xff),
    ]
}

/// Whether `r` holds `v` on field `f` (never for a rule marked [`NEVER`],
/// one outside the part the bit sets are built for).
fn holds(r: &LeafRule, f: usize, v: u64) -> bool {
    match f {
        4 => {
            let (carried, proto) = (unpack_carried((v >> 8) as u32), (v & 0xff) as u32);
            proto.wrapping_sub(r.lo[4]) <= r.span[4] && r.need & (REQ_BITS | NEVER) & !carried == 0
        }
        _ => (v as u32).wrapping_sub(r.lo[f]) <= r.span[f],
    }
}

impl Bitsets {
    /// Bit sets for `rules` (in priority order; `rules[i].idx == i`), or
    /// `None` when they would take more than `budget` bytes.
    pub(crate) fn build(rules: &[LeafRule], budget: usize) -> Option<Bitsets> {
        let lines = rules.len().div_ceil(512).max(1);
        let set_bytes = lines * core::mem::size_of::<Line>();
        // Each field's pieces, by their first value.
        let mut pieces: [Vec<u64>; FIELDS] = Default::default();
        let mut bytes = 0usize;
        for (f, starts) in pieces.iter_mut().enumerate() {
            let end = 1u64 << WIDTH[f];
            starts.push(0);
            if f == 4 {
                // Every carried value starts a piece, as does every protocol bound under it.
                for carried in 0..=pack_carried(REQ_BITS) as u64 {
                    starts.push(carried << 8);
                    for r in rules {
                        starts.push(carried << 8 | r.lo[4] as u64);
                        starts.push(carried << 8 | (r.lo[4] as u64 + r.span[4] as u64 + 1).min(256));
                    }
                }
            } else {
                for r in rules {
                    starts.push(r.lo[f] as u64);
                    starts.push(r.lo[f] as u64 + r.span[f] as u64 + 1);
                }
            }
            starts.retain(|&s| s < end);
            starts.sort_unstable();
            starts.dedup();
            // An upper bound: every piece its own class, and a trie node per piece and level.
            bytes = bytes
                .saturating_add(starts.len().saturating_mul(set_bytes + 2 * 256 * 4))
                .saturating_add((1usize << ROOT_BITS[f]) * 4);
            if bytes > budget {
                return None;
            }
        }
        // Each field's distinct sets, and the set of each piece.
        let mut sets: [Vec<Vec<Line>>; FIELDS] = Default::default();
        let mut piece_set: [Vec<u32>; FIELDS] = Default::default();
        for f in 0..FIELDS {
            let mut seen: BTreeMap<Vec<Line>, u32> = BTreeMap::new();
            for &v in &pieces[f] {
                let set = rule_set(rules, lines, |r| holds(r, f, v));
                let next = seen.len() as u32;
                let field_sets = &mut sets[f];
                let number = *seen.entry(set).or_insert_with_key(|set| {
                    field_sets.push(set.clone());
                    next
                });
                piece_set[f].push(number);
            }
        }
        let mut store = SetStore::new(lines);
        let product = Product::build(&sets, &mut store, budget.saturating_sub(bytes) / 2);
        let fields: [ValueTrie; FIELDS] = core::array::from_fn(|f| {
            let class: Vec<u32> = if f >= 2 && product.is_some() {
                piece_set[f].clone()
            } else {
                piece_set[f]
                    .iter()
                    .map(|&n| store.intern(&sets[f][n as usize]))
                    .collect()
            };
            ValueTrie::build(WIDTH[f], ROOT_BITS[f], &pieces[f], &class)
        });
        let mut bits = store.bits;
        let needs_reference = |r: &LeafRule| r.need & VERIFY != 0;
        let verify = if rules.iter().any(needs_reference) {
            rule_set(rules, lines, needs_reference)
        } else {
            Vec::new()
        };
        bits.shrink_to_fit();
        let built = Bitsets {
            fields,
            bits,
            lines,
            verify,
            product,
        };
        (built.capacity_bytes() <= budget).then_some(built)
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        (self.bits.capacity() + self.verify.capacity()) * core::mem::size_of::<Line>()
            + self.fields.iter().map(ValueTrie::capacity_bytes).sum::<usize>()
            + self.product.as_ref().map_or(0, |p| p.tab.capacity() * 4)
    }

    /// The first rule matching `key`, whose point is `p` (the lookup without AVX-512).
    #[inline(always)]
    pub(crate) fn lookup(&self, p: &Point, key: &FlowKey, verify_rules: &[RuleMatch]) -> RuleIndex {
        self.first(&self.classes(p), key, verify_rules)
    }

    /// The sets a lookup intersects: 3 with the port and protocol product
    /// (its line is then in `classes()[2]`), else 5.
    #[inline(always)]
    fn set_count(&self) -> usize {
        if self.product.is_some() {
            3
        } else {
            FIELDS
        }
    }

    /// The first line of each field's class for point `p` (with the
    /// product, the first line of its intersection in place of the port
    /// and protocol fields' classes).
    #[inline(always)]
    fn classes(&self, p: &Point) -> [usize; FIELDS] {
        let v = field_values(p);
        let mut c = core::array::from_fn(|f| self.fields[f].class_of(v[f]) as usize);
        if let Some(product) = &self.product {
            let line = product.line(&c);
            c[2..].fill(line);
        }
        c
    }

    /// The first rule whose bit is in every set of `c` (see
    /// [`Bitsets::classes`]) and that matches `key`: rules that need the
    /// reference are checked against `verify_rules`.
    #[inline(always)]
    fn first(&self, c: &[usize; FIELDS], key: &FlowKey, verify_rules: &[RuleMatch]) -> RuleIndex {
        let at = |i: usize| self.bits.get(i).unwrap_or(&Line::EMPTY);
        for l in 0..self.lines {
            let x = c[..self.set_count()].iter().fold(Line([u64::MAX; 8]), |x, &ci| {
                let y = at(ci + l);
                Line(core::array::from_fn(|w| x.0[w] & y.0[w]))
            });
            if let Some(i) = self.first_in_line(l, &x, key, verify_rules) {
                return i;
            }
        }
        NO_MATCH
    }

    /// The first rule of line `l` of the intersection `x` that matches `key`.
    #[inline(always)]
    fn first_in_line(
        &self,
        l: usize,
        x: &Line,
        key: &FlowKey,
        verify_rules: &[RuleMatch],
    ) -> Option<RuleIndex> {
        for (w, &word) in x.0.iter().enumerate() {
            let mut m = word;
            while m != 0 {
                let bit = m.trailing_zeros() as usize;
                let i = l * 512 + w * 64 + bit;
                let needs_reference = self.verify.get(l).is_some_and(|v| v.0[w] >> bit & 1 != 0);
                if !needs_reference || verify_rules.get(i).is_some_and(|r| r.matches(key)) {
                    return Some(i as RuleIndex);
                }
                m &= m - 1;
            }
        }
        None
    }

    /// The value of field 4 (protocol with the requirement bits, see
    /// [`field_values`]) of 16 points' protocols and requirement bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) fn field4_avx512(
        proto: core::arch::x86_64::__m512i,
        carried: core::arch::x86_64::__m512i,
    ) -> core::arch::x86_64::__m512i {
        use core::arch::x86_64::*;
        let bits = |x: u32| _mm512_set1_epi32(x as i32);
        // pack_carried(carried & REQ_BITS): bits 0-3, then bits 5-6 down one.
        let c = _mm512_and_si512(carried, bits(REQ_BITS as u32));
        let packed = _mm512_or_si512(
            _mm512_and_si512(c, bits(0x0f)),
            _mm512_srli_epi32::<1>(_mm512_and_si512(c, bits(0x60))),
        );
        _mm512_or_si512(
            _mm512_slli_epi32::<8>(packed),
            _mm512_and_si512(proto, bits(0xff)),
        )
    }

    /// [`Bitsets::classes`] of [`BATCH`] keys at once, one gather per 16
    /// keys, field and trie level, the gathers of the four groups of 16 in
    /// flight together: `values[f][g]` holds the values of field `f` (see
    /// [`field_values`]) of keys `16g..16g + 16`; `classes[f][j]` receives
    /// its class's first line.
    ///
    /// # Safety
    ///
    /// AVX-512 F must be available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn classes_avx512(
        &self,
        values: &[[core::arch::x86_64::__m512i; BATCH / 16]; FIELDS],
        classes: &mut [[u32; BATCH]; FIELDS],
    ) {
        use core::arch::x86_64::*;
        const G: usize = BATCH / 16;
        // SAFETY (every load and store below): 16 `u32`s at 16 * g inside a local array of BATCH = 16 * G.
        let load =
            |a: &[u32; BATCH], g: usize| unsafe { _mm512_loadu_epi32(a.as_ptr().add(16 * g) as *const i32) };
        let store = |a: &mut [u32; BATCH], g: usize, v: __m512i| unsafe {
            _mm512_storeu_epi32(a.as_mut_ptr().add(16 * g) as *mut i32, v)
        };
        for ((field, v), out) in self.fields.iter().zip(values).zip(classes.iter_mut()) {
            // SAFETY: the features are this function's (and its caller's contract).
            let e = unsafe { field.classes_avx512(v) };
            for (g, e) in e.iter().enumerate() {
                store(out, g, *e);
            }
        }
        let Some(product) = &self.product else { return };
        // The product holds n[0] * n[1] * n[2] >= 1 entries (every field has a class).
        let last = _mm512_set1_epi32(product.tab.len().saturating_sub(1) as i32);
        let n = |i: usize| _mm512_set1_epi32(product.n[i] as i32);
        for g in 0..G {
            let [a, b, c] = core::array::from_fn(|f| load(&classes[2 + f], g));
            let at = _mm512_add_epi32(
                _mm512_mullo_epi32(_mm512_add_epi32(_mm512_mullo_epi32(a, n(1)), b), n(2)),
                c,
            );
            // SAFETY: every index is clamped to the table's last entry.
            let lines = unsafe {
                _mm512_i32gather_epi32::<4>(_mm512_min_epu32(at, last), product.tab.as_ptr() as *const i32)
            };
            for out in &mut classes[2..] {
                store(out, g, lines);
            }
        }
    }

    /// Whether the port and protocol fields are looked up as one (see
    /// [`Bitsets::classes_avx512`]): then [`Bitsets::first_avx512`] takes `K` = 3, else 5.
    #[inline(always)]
    pub(crate) fn has_product(&self) -> bool {
        self.product.is_some()
    }

    /// [`Bitsets::first`] with AVX-512: one load per set and line, `K`
    /// sets (3 with the port and protocol product, else 5) intersected with
    /// ternary-logic ANDs, and for sets of up to [`FLAT_LINES`] lines no
    /// branch on where the first bit is: every line is intersected, and the
    /// first nonzero word and its position are selected from the last line to the first.
    ///
    /// # Safety
    ///
    /// AVX-512 F must be available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn first_avx512<const K: usize>(
        &self,
        c: &[usize; FIELDS],
        key: &FlowKey,
        verify_rules: &[RuleMatch],
    ) -> RuleIndex {
        use core::arch::x86_64::*;
        let end = c[..K]
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .saturating_add(self.lines);
        if end > self.bits.len() || self.lines > FLAT_LINES || K != self.set_count() {
            // Big sets; and never for classes this table gave, but a load must not leave it.
            return self.first(c, key, verify_rules);
        }
        let base = self.bits.as_ptr();
        // The first nonzero word of the intersection and its position, by
        // selects from the last line to the first (no branch on the data).
        let (mut first_word, mut at_word) = (0u64, 0usize);
        for l in (0..self.lines).rev() {
            // SAFETY: `c[f] + l < end <= bits.len()` for every field (checked
            // above); a `Line` is 64 bytes aligned to 64, as the load needs.
            let (word, nonzero) = unsafe {
                let ld = |f: usize| _mm512_load_si512(base.add(c[f] + l) as *const __m512i);
                let mut x = _mm512_ternarylogic_epi64::<0x80>(ld(0), ld(1), ld(2));
                if K > 3 {
                    x = _mm512_ternarylogic_epi64::<0x80>(x, ld(3), ld(4));
                }
                let nonzero = _mm512_test_epi64_mask(x, x);
                let word = _mm_cvtsi128_si64(_mm512_castsi512_si128(_mm512_maskz_compress_epi64(nonzero, x)));
                (word as u64, nonzero)
            };
            let here = nonzero != 0;
            first_word = core::hint::select_unpredictable(here, word, first_word);
            at_word =
                core::hint::select_unpredictable(here, 8 * l + nonzero.trailing_zeros() as usize, at_word);
        }
        let i = at_word * 64 + first_word.trailing_zeros() as usize;
        let found = if first_word != 0 { i as RuleIndex } else { NO_MATCH };
        let needs_reference = self
            .verify
            .get(at_word / 8)
            .is_some_and(|v| v.0[at_word % 8] & first_word & first_word.wrapping_neg() != 0);
        if !needs_reference {
            return found;
        }
        // The first candidate needs the reference: take the candidates in order.
        self.first(c, key, verify_rules)
    }
}

/// Keys [`Bitsets::classes_avx512`] looks up at once.
pub(crate) const BATCH: usize = 64;

/// Lines of the largest sets [`Bitsets::first_avx512`] intersects without a branch.
pub(crate) const FLAT_LINES: usize = 8;
