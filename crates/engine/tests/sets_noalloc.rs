//! Set lookups on the data path never allocate: batches through a worker
//! handle (longer than one set chunk), one key through the policy, with a
//! large IPv4 trie, IPv6 intervals behind their index, a port set and an
//! anonymous set (a rule's long list), under a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_engine::policy::{Decision, Verdict};
use palisade_engine::{Engine, EngineOptions};
use palisade_packet::FlowKey;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

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
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn set_lookups_never_allocate() {
    let dir = std::env::temp_dir().join(format!("palisade-sets-noalloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 5,000 IPv4 /24s (a trie) and 1,000 IPv6 /48s (indexed intervals).
    let mut file = String::new();
    for i in 0..5000u32 {
        file.push_str(&format!(
            "{}.{}.{}.0/24\n",
            11 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    for i in 0..1000u32 {
        file.push_str(&format!("2001:db8:{i:x}::/48\n"));
    }
    std::fs::write(dir.join("bl.txt"), file).unwrap();
    let long: Vec<String> = (0..40).map(|i| format!("\"198.18.{i}.0/24\"")).collect();
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            "version = 1\n[[port]]\nname = \"p\"\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n\
             [[set]]\nname = \"web\"\nelements = [80, 443]\n[[acl]]\nname = \"a\"\ndefault = \"permit\"\n\
             [[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n\
             [[acl.rule]]\naction = \"deny\"\nsrc = [{}]\n\
             [[acl.rule]]\naction = \"permit\"\nproto = \"tcp\"\ndst_port = \"!@web\"\n\
             [[bind]]\nacl = \"a\"\nport = \"p\"\n",
            long.join(", ")
        ),
    )
    .unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap();
    let keys: Vec<FlowKey> = (0..100u32)
        .map(|i| {
            let k = match i % 4 {
                0 => FlowKey::new().with_ipv4([11, 0, (i % 20) as u8, 9], [1, 1, 1, 1]),
                1 => FlowKey::new().with_ipv6((0x2001_0db8u128 << 96) | u128::from(i % 3) << 80, 1),
                2 => FlowKey::new().with_ipv4([198, 18, (i % 50) as u8, 1], [1, 1, 1, 1]),
                _ => FlowKey::new().with_ipv4([9, 9, 9, 9], [1, 1, 1, 1]),
            };
            k.with_proto(6)
                .with_ports(40000, if i % 2 == 0 { 443 } else { 22 })
        })
        .collect();
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let ctx = h.batch().context("p", None).unwrap();
    h.classify_batch(&keys, &ctx, &mut out); // warm up: counter shard sized, arc-swap slots
    assert!(
        out.iter().any(|d| d.verdict == Verdict::Deny) && out.iter().any(|d| d.verdict == Verdict::Permit)
    );
    let gen = engine.current();
    let policy = gen.policy().unwrap();

    ARMED.with(|a| a.set(true));
    for _ in 0..200 {
        h.classify_batch(&keys, &ctx, &mut out);
        for k in &keys {
            std::hint::black_box(policy.evaluate(k, &ctx));
        }
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0);
    drop(gen);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
