//! Huge pages for the flow table's arrays: one of its three `unsafe`
//! modules, with [`super::prefetch`] and [`super::simd`].
//!
//! A lookup in a table of a million flows reads two random lines of about
//! 130 MB; with 4 KiB pages nearly every one also misses the TLB, and the
//! page walk costs as much as the line. Backing the arrays with 2 MiB pages
//! removes most of those walks (measured by `benches/flows.rs`,
//! `flows_lookup/established_1m`; see the README's figures). std has no way to
//! ask for them, so one `madvise(2)` call is made here, twice: `MADV_HUGEPAGE`
//! (later faults and khugepaged use huge pages) and `MADV_COLLAPSE` (the pages
//! already written, by the table's prefault, are copied into huge pages now).
//! It is advice: a kernel without transparent huge pages, or one that refuses,
//! leaves the table as it was, equally correct.
#![allow(unsafe_code)]

/// `MADV_COLLAPSE` (Linux 6.1): not in every libc target's constants.
const MADV_COLLAPSE: libc::c_int = 25;

/// The size of a huge page on the platforms this is for (x86-64, arm64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `slice` with huge
/// pages. Slices shorter than a huge page are left alone. Call it before the
/// table is shared: collapsing copies pages (the kernel keeps their contents).
///
/// Returns whether the kernel took the collapse (for tests and benches).
///
/// ```
/// // A slice shorter than a huge page is left alone.
/// assert!(!palisade_engine::flow::advise_huge_pages(&[0u8; 4096]));
/// ```
pub fn advise<T>(slice: &[T]) -> bool {
    let start = slice.as_ptr() as usize;
    let end = start.saturating_add(std::mem::size_of_val(slice));
    let begin = start.next_multiple_of(HUGE_PAGE);
    let end = end & !(HUGE_PAGE - 1);
    if end <= begin {
        return false;
    }
    let mut collapsed = false;
    for advice in [libc::MADV_HUGEPAGE, MADV_COLLAPSE] {
        // SAFETY: [begin, end) is page-aligned and lies inside `slice`'s
        // allocation, which lives for this call. Both advices leave the range
        // mapped with the same contents (they only change which pages back
        // it), so no reference into `slice` is invalidated; madvise reads or
        // writes no memory of ours.
        let rc = unsafe { libc::madvise(begin as *mut libc::c_void, end - begin, advice) };
        collapsed = advice == MADV_COLLAPSE && rc == 0;
    }
    collapsed
}

#[cfg(test)]
mod tests {
    #[test]
    fn advice_keeps_the_contents_and_skips_small_slices() {
        let small = vec![7u64; 1000];
        assert!(!super::advise(&small));
        let big: Vec<u64> = (0..(8 << 20) / 8).collect();
        let _ = super::advise(&big); // the kernel may refuse: only the contents matter
        assert!(big.iter().enumerate().all(|(i, &v)| v == i as u64));
    }
}
