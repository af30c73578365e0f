//! Prefetching the flow table's lines: one of its three `unsafe` modules,
//! with [`super::huge`] and [`super::simd`].
//!
//! A batch of lookups first computes every frame's bucket and asks for its
//! line, then every candidate entry's line, then decides: the cache misses of
//! the batch overlap each other and the work on the other frames. A plain
//! load in those passes would hold the CPU's retirement until its line
//! arrives (and then the work of the next frames waits behind it); a
//! prefetch instruction does not. `benches/flows.rs` (`flows_lookup`,
//! `flows_create`) measures the difference (see the commit that added this).
//! std offers prefetching only through `core::arch`, whose intrinsic takes a
//! raw pointer and is therefore `unsafe`.
#![allow(unsafe_code)]

/// Asks for the cache line holding `*r` (into all levels), without waiting for it.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, reads nothing the
    // program can observe and writes nothing; the address comes from a live
    // reference, so it is a valid address of this process anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
