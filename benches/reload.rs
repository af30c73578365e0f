//! Batch latency of the data path while generations are being swapped, against steady state.
//!
//! `cargo bench -p palisade-benches --bench reload`
//!
//! * `batch64/steady`: one worker classifies batches of 64 keys against a
//!   1,000-rule generation; nothing else happens.
//! * `batch64/steady-other-core-busy`: the same while another thread hashes
//!   (busy, sharing nothing): the fair baseline for the next one.
//! * `batch64/during-reloads`: the same, while another thread reloads two
//!   1,000-rule generations back to back through the whole pipeline.
//! * `pipeline/reload-1000-rules`: one reload (parse .. publish, no fsync).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_engine::policy::Decision;
use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};
use palisade_packet::FlowKey;

const RULES: usize = 1000;

/// A rule set of `RULES` rules on one Port ACL; `flip` changes every rule's action.
fn rules(flip: bool) -> String {
    let (a, b) = if flip {
        ("deny", "permit")
    } else {
        ("permit", "deny")
    };
    let mut s = String::from(
        "version = 1\n[[port]]\nname = \"lan1\"\nvlan = 10\n[[acl]]\nname = \"in\"\ndefault = \"deny\"\n",
    );
    for i in 0..RULES {
        let action = if i & 1 == 0 { a } else { b };
        s.push_str(&format!(
            "  [[acl.rule]]\n  id = \"r{i}\"\n  action = \"{action}\"\n  proto = \"tcp\"\n  src = \"10.{}.{}.0/24\"\n  dst_port = {}\n",
            i / 256,
            i % 256,
            1000 + i
        ));
    }
    s.push_str("[[bind]]\nacl = \"in\"\nport = \"lan1\"\n");
    s
}

fn keys() -> Vec<FlowKey> {
    (0..64u32)
        .map(|j| {
            let i = (j * 15) as usize % RULES;
            FlowKey::new()
                .with_ipv4([10, (i / 256) as u8, (i % 256) as u8, 9], [192, 0, 2, 1])
                .with_proto(6)
                .with_ports(40000, 1000 + i as u16)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("palisade-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rules.toml");
    let (ra, rb) = (rules(false), rules(true));
    std::fs::write(&config, &ra).unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open(&config, &dir.join("state"), opts).unwrap();
    let engine = Arc::new(engine);
    let keys = keys();
    let mut handle = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let ctx = handle.batch().context("lan1", None).unwrap();

    let mut g = c.benchmark_group("batch64");
    g.bench_function("steady", |b| {
        b.iter(|| handle.classify_batch(black_box(&keys), &ctx, &mut out));
    });
    // Baseline for the next one: the other core busy with work that shares nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut text = rules(true).into_bytes();
            while !stop.load(Ordering::Relaxed) {
                text.rotate_left(1);
                black_box(palisade_rules::Digest::of(&text));
            }
        })
    };
    g.bench_function("steady-other-core-busy", |b| {
        b.iter(|| handle.classify_batch(black_box(&keys), &ctx, &mut out));
    });
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicU64::new(0));
    let writer = {
        let (engine, stop, reloads) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&reloads));
        let (ra, rb) = (ra.clone(), rb.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text = if i & 1 == 0 { &rb } else { &ra };
                let src = ReloadSource::Bytes {
                    name: "bench.toml".into(),
                    bytes: text.as_bytes().to_vec(),
                };
                engine.reload(src, &ReloadOptions::default()).unwrap();
                reloads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    g.bench_function("during-reloads", |b| {
        // The port id is the same in both generations (one port), so ctx stays valid.
        b.iter(|| handle.classify_batch(black_box(&keys), &ctx, &mut out));
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!(
        "reloads completed during the measurement: {}",
        reloads.load(Ordering::Relaxed)
    );
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    let mut flip = false;
    g.bench_function("reload-1000-rules", |b| {
        b.iter(|| {
            flip = !flip;
            let text = if flip { &rb } else { &ra };
            let src = ReloadSource::Bytes {
                name: "bench.toml".into(),
                bytes: text.as_bytes().to_vec(),
            };
            engine.reload(src, &ReloadOptions::default()).unwrap()
        });
    });
    g.finish();
    drop(handle);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
