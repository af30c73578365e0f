//! The engine's data path never allocates: worker-handle batches, with
//! counting, under a counting global allocator (steady state, and across a
//! reload that keeps the counter layout).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use palisade_engine::policy::Decision;
use palisade_engine::ReloadOptions;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the measuring thread counts; const-initialised, so reading it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.with(Cell::get) {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn classify_batch_never_allocates() {
    let dir = TempDir::new("noalloc");
    let engine = engine_with(&dir, &rules_a(), false);
    let keys = packets();
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let ctx = h.batch().context("lan1", None).unwrap();
    h.classify_batch(&keys, &ctx, &mut out); // warm up: counter shard sized, arc-swap slots

    ARMED.with(|a| a.set(true));
    for _ in 0..1000 {
        h.classify_batch(&keys, &ctx, &mut out);
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "steady state");

    // B keeps every rule id: same counter slots, so no shard growth either.
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let ctx = h.batch().context("lan1", None).unwrap();
    ARMED.with(|a| a.set(true));
    for _ in 0..1000 {
        h.classify_batch(&keys, &ctx, &mut out);
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "after a reload");
    assert!(engine.status().frames.evaluated >= 2001 * keys.len() as u64);
}

#[test]
fn a_worker_never_frees_a_replaced_generation() {
    let dir = TempDir::new("nofree");
    let engine = std::sync::Arc::new(engine_with(&dir, &rules_a(), false));
    let keys = packets();
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let mut batch = h.batch(); // pins generation A
    let ctx = batch.context("lan1", None).unwrap();
    batch.classify(&keys, &ctx, &mut out);
    // Another thread replaces A while this worker still holds it.
    let e = std::sync::Arc::clone(&engine);
    std::thread::spawn(move || {
        e.reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
            .unwrap();
    })
    .join()
    .unwrap();
    ARMED.with(|a| a.set(true));
    drop(batch); // the worker lets go of the last pin on A
    ARMED.with(|a| a.set(false));
    assert_eq!(
        FREES.load(Ordering::Relaxed),
        0,
        "the worker freed the old rule set"
    );
    assert_ne!(engine.current().number(), 0);
}
