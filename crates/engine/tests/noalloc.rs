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

/// LAN opens UDP flows (keep_state), the WAN gets only their replies.
fn stateful_rules(open_proto: &str, note: &str) -> String {
    format!(
        r#"version = 1
# {note}
[flows]
max = 65536
[[port]]
name = "lan1"
[[port]]
name = "wan0"
[[acl]]
name = "lan-in"
  [[acl.rule]]
  id = "open"
  action = "permit"
  proto = "{open_proto}"
  keep_state = true
[[acl]]
name = "wan-in"
  [[acl.rule]]
  id = "replies"
  action = "permit"
  state = ["established", "related"]
[[bind]]
acl = "lan-in"
port = "lan1"
[[bind]]
acl = "wan-in"
port = "wan0"
"#
    )
}

#[test]
fn stateful_batches_never_allocate_opening_rechecking_or_cutting_flows() {
    use palisade_engine::policy::Verdict;
    use palisade_packet::FlowKey;
    let dir = TempDir::new("noalloc-flows");
    let engine = engine_with(&dir, &stateful_rules("udp", "a"), false);
    let out_key = |n: u32| {
        FlowKey::new()
            .with_ipv4([198, 18, 10, (n >> 16) as u8 + 1], [198, 19, 0, 7])
            .with_proto(17)
            .with_ports(n as u16, 53)
    };
    let reply = |n: u32| {
        FlowKey::new()
            .with_ipv4([198, 19, 0, 7], [198, 18, 10, (n >> 16) as u8 + 1])
            .with_proto(17)
            .with_ports(53, n as u16)
    };
    let ack = FlowKey::new()
        .with_ipv4([198, 19, 0, 7], [198, 18, 10, 9])
        .with_proto(6)
        .with_ports(443, 4000)
        .with_tcp_flags(0x010);
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); 64];
    let (mut lan, mut wan) = {
        let b = h.batch();
        (b.context("lan1", None).unwrap(), b.context("wan0", None).unwrap())
    };
    let mut outs = [FlowKey::new(); 32];
    let mut backs = [FlowKey::new(); 33];
    use palisade_engine::policy::Context;
    let mut round = |h: &mut palisade_engine::WorkerHandle, lan: &Context, wan: &Context, first: u32| {
        for j in 0..32 {
            outs[j] = out_key(first + j as u32);
            backs[j] = reply(first + j as u32);
        }
        backs[32] = ack;
        h.batch().classify(&outs, lan, &mut out);
        let opened = out[..32].iter().all(|d| d.verdict == Verdict::Permit);
        h.batch().classify(&backs, wan, &mut out);
        (
            opened,
            out[..33].iter().filter(|d| d.verdict == Verdict::Permit).count(),
        )
    };
    round(&mut h, &lan, &wan, 0); // warm up: counter shard sized, arc-swap slots

    ARMED.with(|a| a.set(true));
    for r in 1..200 {
        assert_eq!(round(&mut h, &lan, &wan, r * 32), (true, 32));
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "opening flows and their replies"
    );

    // The same access (another digest): every flow is re-checked on its next frame and kept.
    engine
        .reload(
            bytes("same.toml", &stateful_rules("udp", "b")),
            &ReloadOptions::default(),
        )
        .unwrap();
    (lan, wan) = {
        let b = h.batch();
        (b.context("lan1", None).unwrap(), b.context("wan0", None).unwrap())
    };
    ARMED.with(|a| a.set(true));
    for r in 1..100 {
        assert_eq!(round(&mut h, &lan, &wan, r * 32), (true, 32), "kept");
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "re-checking flows");

    // Revoked: the flows are cut on their next frame, new ones not opened.
    engine
        .reload(
            bytes("revoked.toml", &stateful_rules("tcp", "c")),
            &ReloadOptions::default(),
        )
        .unwrap();
    (lan, wan) = {
        let b = h.batch();
        (b.context("lan1", None).unwrap(), b.context("wan0", None).unwrap())
    };
    ARMED.with(|a| a.set(true));
    for r in 100..200 {
        assert_eq!(round(&mut h, &lan, &wan, r * 32), (false, 0), "cut");
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "cutting flows");
    assert!(engine.flow_stats().unwrap().cut >= 100 * 32);
}
