//! Comparing a bucket's sixteen tag bytes at once: the flow table's third
//! `unsafe` module, with [`super::huge`] and [`super::prefetch`]. On x86-64
//! that is one SSE2 compare and a move of its mask, where the portable
//! version (kept for other targets, and as the tests' reference) takes some
//! thirty integer instructions a bucket. With a million flows a lookup costs
//! about as much again as each instruction it runs, memory misses or not
//! (measured by `benches/flows.rs`, `flows_lookup`: see the commit that added
//! this). SSE2 is part of x86-64 itself, but std still makes its intrinsics
//! `unsafe` to call outside a `#[target_feature]` function.
#![allow(unsafe_code)]

/// The bytes of `w0` (bytes 0 to 7) and `w1` (8 to 15) equal to `v`, as a
/// 16-bit mask (bit `i` for byte `i`).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(crate) fn match_bytes(w0: u64, w1: u64, v: u8) -> u32 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};
    // SAFETY: this is compiled only where SSE2 is enabled for the whole
    // build (the cfg above; x86-64's baseline has it), so the CPU running
    // it has SSE2; the intrinsics compute on registers only and touch no
    // memory.
    unsafe {
        let bytes = _mm_set_epi64x(w1 as i64, w0 as i64);
        _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(v as i8))) as u32
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
pub(crate) use portable::match_bytes;

/// The same comparison in plain integer arithmetic (SWAR).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
mod portable {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;

    /// A bit in the high bit of every byte of `x` that is zero (exact per byte).
    #[inline(always)]
    pub(super) const fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW7) + LOW7) | x | LOW7)
    }

    /// The high bits of the bytes of `m` (from [`zero_bytes`]) as an 8-bit mask, bit `i` for byte `i`.
    #[inline(always)]
    const fn byte_mask(m: u64) -> u32 {
        (((m >> 7) & ONES).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    }

    /// See [`super::match_bytes`].
    #[inline(always)]
    pub(crate) const fn match_bytes(w0: u64, w1: u64, v: u8) -> u32 {
        let pattern = v as u64 * ONES;
        byte_mask(zero_bytes(w0 ^ pattern)) | byte_mask(zero_bytes(w1 ^ pattern)) << 8
    }
}

#[cfg(test)]
mod tests {
    use super::portable;

    /// The bytes of `w0` then `w1` equal to `v`, byte by byte: the model.
    fn model(w0: u64, w1: u64, v: u8) -> u32 {
        let bytes = ((w1 as u128) << 64 | w0 as u128).to_le_bytes();
        (0..16).filter(|&i| bytes[i] == v).map(|i| 1 << i).sum()
    }

    #[test]
    fn zero_bytes_marks_exactly_the_zero_bytes() {
        for v in 0..=255u8 {
            let x = u64::from_le_bytes([v, 0, 255, 1, 128, 127, v, 0x80]);
            let want: u64 = (0..8)
                .filter(|&i| x >> (8 * i) & 0xff == 0)
                .map(|i| 0x80 << (8 * i))
                .sum();
            assert_eq!(portable::zero_bytes(x), want, "{x:x}");
        }
    }

    /// A byte from a few values, so that matches and near misses (such as
    /// `v ^ 0x80`, equal in the low seven bits) are common.
    fn byte() -> impl proptest::strategy::Strategy<Value = u8> {
        proptest::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xff, 0x17, 0x97])
    }

    proptest::proptest! {
        /// Both versions find the bytes equal to `v`, and only them.
        #[test]
        fn both_versions_match_the_bytes_equal_to_v(bytes in proptest::collection::vec(byte(), 16), v in byte()) {
            let w0 = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            let w1 = u64::from_le_bytes(bytes[8..].try_into().unwrap());
            let want = model(w0, w1, v);
            proptest::prop_assert_eq!(super::match_bytes(w0, w1, v), want);
            proptest::prop_assert_eq!(portable::match_bytes(w0, w1, v), want);
        }
    }
}
