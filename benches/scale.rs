//! Rule sets that grow: `palisade check`'s work on one ACL of 65,535 rules
//! (parse, validate with the shadowed-rule check, compile, expects), and a
//! reload of 16,384 rules through the whole engine pipeline (parse ..
//! self-test .. persist with fsync .. publish), both on rules of
//! ClassBench's shape (`rulegen::big_acl`). The baseline is the previous
//! generation of the same code path: alternate with `main`'s binary (see
//! the README's "Rule sets that grow").
//!
//! Run: `cargo bench -p palisade-benches --bench scale`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_benches::rulegen::big_acl;
use palisade_engine::policy::Policy;
use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    g.sample_size(10).measurement_time(Duration::from_secs(20));

    let big = big_acl(65_535, 0x5eed);
    g.bench_function("check_65535_rules", |b| {
        b.iter(|| {
            let loaded = palisade_rules::parse("big.toml", black_box(big.as_bytes())).unwrap();
            let policy = Policy::compile(&loaded.ruleset).unwrap();
            black_box(policy.check_expects(&loaded));
        })
    });

    let dir = std::env::temp_dir().join(format!("palisade-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rules.toml");
    let (a, b16) = (big_acl(16_384, 0x5eed), big_acl(16_384, 7));
    std::fs::write(&config, &a).unwrap();
    let (engine, _) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
    let mut flip = false;
    g.bench_function("reload_16384_rules", |b| {
        b.iter(|| {
            flip = !flip;
            let bytes = if flip { b16.clone() } else { a.clone() }.into_bytes();
            let src = ReloadSource::Bytes {
                name: "rules.toml".into(),
                bytes,
            };
            black_box(engine.reload(src, &ReloadOptions::default()).unwrap());
        })
    });
    g.finish();
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
