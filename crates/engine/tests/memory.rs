//! Counter slots of rule ids that no kept generation has any more are freed:
//! thousands of reloads that each bring new rule ids keep the daemon's memory
//! flat. (Its own test binary: it measures this process's resident set.)

mod common;

use common::*;
use palisade_engine::ReloadOptions;

/// Resident set size of this process, in KiB (from /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn rss_stays_flat_over_2000_reloads_with_new_rule_ids() {
    let dir = TempDir::new("rss");
    let engine = engine_with(&dir, &rules_a(), false);
    let mut worker = engine.handle();
    let keys = packets();
    let reload = |i: usize| {
        engine
            .reload(
                bytes("ids.toml", &with_ids(&format!("g{i}"), 200)),
                &ReloadOptions::default(),
            )
            .unwrap();
    };
    let count = |w: &mut palisade_engine::WorkerHandle| {
        let mut out = vec![palisade_engine::policy::Decision::default(); keys.len()];
        let mut b = w.batch();
        let ctx = b.context("lan1", None).unwrap();
        b.classify(&keys, &ctx, &mut out);
    };
    // Warm up: allocator arenas, the kept window (10 generations) full.
    for i in 0..200 {
        reload(i);
        count(&mut worker);
    }
    let before = rss_kib();
    for i in 200..2200 {
        reload(i);
        count(&mut worker);
    }
    let after = rss_kib();
    println!("RSS before {before} KiB, after 2000 more reloads {after} KiB");
    // 2000 reloads x 200 new ids each held ~400,000 slots and their names
    // before slots were freed (tens of MB); now it is what 12 generations need.
    assert!(
        after < before + 6 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 2000 reloads"
    );
    // Counters of the rules still running still count.
    let st = engine.status();
    let acl = st.acls.iter().find(|a| a.name == "lan-in").unwrap();
    assert!(acl.counters.evaluated > 0);
}
