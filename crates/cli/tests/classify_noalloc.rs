//! The policy's data path never allocates: evaluate, evaluate_traced and
//! evaluate_batch are run under a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use palisade_engine::policy::{Context, Decision, Policy, Route};
use palisade_packet::FlowKey;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
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
fn evaluation_never_allocates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/office.toml");
    let loaded = palisade_rules::load(&path).unwrap();
    let policy = Policy::compile(&loaded.ruleset).unwrap();
    let specs = [
        "tcp 10.0.10.5:40000 -> 198.51.100.7:443",
        "tcp 10.0.10.5:40000 -> 198.51.100.7:22",
        "udp 10.0.10.5:5353 -> 10.0.10.1:53",
        "icmp 10.0.10.5 -> 198.51.100.7 type 8 code 0",
        "tcp 192.168.20.7:1 -> 10.0.10.5:22 vlan 20",
        "tcp 192.168.20.7:1 -> 10.0.10.5:22 vlan 30",
        "tcp [2001:db8:10::5]:1 -> [2001:db8:ffff::7]:443",
        "tcp 192.0.2.3:5000 -> 10.0.10.5:22",
    ];
    let mut keys: Vec<FlowKey> = specs
        .iter()
        .map(|s| palisade_rules::parse_packet_spec(s).unwrap())
        .collect();
    let mut bad = keys[0];
    bad.status = palisade_packet::ParseStatus::Truncated(palisade_packet::Layer::Tcp);
    keys.push(bad);
    keys.push(FlowKey::new());
    let lan = policy.interface("lan").unwrap();
    let wan = policy.interface("wan").unwrap();
    let contexts = [
        Context {
            port: policy.port("lan1").unwrap(),
            route: None,
        },
        Context {
            port: policy.port("lan1").unwrap(),
            route: Some(Route { from: lan, to: wan }),
        },
        Context {
            port: policy.port("wan0").unwrap(),
            route: Some(Route { from: wan, to: lan }),
        },
        Context {
            port: 1000,
            route: None,
        },
    ];
    let mut out = vec![Decision::default(); keys.len()];
    let mut events = 0usize;
    ARMED.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        for ctx in &contexts {
            for k in &keys {
                std::hint::black_box(policy.evaluate(k, ctx));
                std::hint::black_box(policy.evaluate_traced(k, ctx, |_| events += 1));
            }
            policy.evaluate_batch(&keys, ctx, &mut out);
        }
    }
    ARMED.store(false, Ordering::SeqCst);
    assert!(events > 0);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "the policy allocated on the data path"
    );
}
