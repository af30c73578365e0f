//! `parse` never touches the heap: a counting global allocator sees zero
//! allocations while every kind of frame is parsed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_packet::parse;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn parse_makes_no_heap_allocation() {
    // Frames prepared up front: IPv4/TCP, VLAN IPv4/UDP, IPv6 with extensions,
    // fragments, garbage and every prefix of each.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let eth = |ty: [u8; 2]| [&[2u8, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2][..], &ty[..]].concat();
    let v4 = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let tcp = [
        0x9c, 0x40, 1, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x12, 0, 0, 0, 0, 0, 0,
    ];
    frames.push([&eth([8, 0])[..], &v4, &tcp].concat());
    frames.push([&eth([0x81, 0])[..], &[0, 20, 8, 0], &v4, &tcp].concat());
    let mut v6 = vec![0x60, 0, 0, 0, 0, 36, 0, 64];
    v6.extend_from_slice(&[0x20; 32]);
    frames.push(
        [
            &eth([0x86, 0xdd])[..],
            &v6,
            &[44, 0, 0, 1, 0, 0, 0, 1],
            &[6, 0, 1, 4, 0, 0, 0, 0],
            &tcp,
        ]
        .concat(),
    );
    frames.push((0..=255u8).collect());
    let prefixes: Vec<Vec<u8>> = frames
        .iter()
        .flat_map(|f| (0..=f.len()).map(move |n| f[..n].to_vec()))
        .collect();
    frames.extend(prefixes);

    let before = ALLOCS.load(Ordering::SeqCst);
    let mut sink = 0u64;
    for f in &frames {
        let k = parse(f);
        sink = sink.wrapping_add(u64::from(k.src_port) + u64::from(k.vlan_count));
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "parse allocated (sink {sink})");
    assert!(sink > 0);
}
