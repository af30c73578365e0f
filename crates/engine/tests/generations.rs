//! A rule set is active entirely or not at all: readers see one generation per batch.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use palisade_engine::policy::{BindingKind, Decision, Verdict};
use palisade_engine::{Engine, GenerationState, ReloadOptions, ReloadStage};

#[test]
fn a_and_b_disagree_and_rescue_passes_both() {
    let dir = TempDir::new("ab");
    let engine = engine_with(&dir, &rules_a(), false);
    let keys = packets();
    let va = verdicts(&engine, &keys);
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let vb = verdicts(&engine, &keys);
    let differ = va.iter().zip(&vb).filter(|(a, b)| a != b).count();
    assert!(
        differ >= 4,
        "A and B must disagree on several packets: {va:?} vs {vb:?}"
    );
    assert_eq!(va.last(), Some(&Verdict::Permit), "rescue traffic passes A");
    assert_eq!(vb.last(), Some(&Verdict::Permit), "rescue traffic passes B");
}

#[test]
fn readers_never_see_a_mix_of_two_generations() {
    let dir = TempDir::new("mix");
    let engine = Arc::new(engine_with(&dir, &rules_a(), false));
    let keys = packets();
    let va = verdicts(&engine, &keys);
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let vb = verdicts(&engine, &keys);
    assert_ne!(va, vb);

    let swaps = if cfg!(debug_assertions) { 200 } else { 2000 };
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (engine, done, keys, va, vb) = (
                Arc::clone(&engine),
                Arc::clone(&done),
                keys.clone(),
                va.clone(),
                vb.clone(),
            );
            std::thread::spawn(move || {
                let mut h = engine.handle();
                let mut out = vec![Decision::default(); keys.len()];
                let (mut seen_a, mut seen_b) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let mut b = h.batch();
                    let ctx = b.context("lan1", None).expect("both generations have lan1");
                    b.classify(&keys, &ctx, &mut out);
                    let got: Vec<Verdict> = out.iter().map(|d| d.verdict).collect();
                    if got == va {
                        seen_a += 1;
                    } else if got == vb {
                        seen_b += 1;
                    } else {
                        panic!("a batch mixed generations: {got:?}");
                    }
                }
                (seen_a, seen_b)
            })
        })
        .collect();
    // Status is one snapshot too: its digest and its ACLs always belong together.
    let digest_a = palisade_rules::Digest::of(rules_a().as_bytes()).to_string();
    let status_reader = {
        let (engine, done) = (Arc::clone(&engine), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let st = engine.status();
                let default = st.acls.iter().find(|a| a.name == "lan-in").unwrap().default;
                let is_a = st.digest.as_deref() == Some(digest_a.as_str());
                assert_eq!(
                    default,
                    if is_a { Verdict::Deny } else { Verdict::Permit },
                    "status mixed generations"
                );
                n += 1;
            }
            n
        })
    };
    let (a, b) = (rules_a(), rules_b());
    let mut last = 0;
    for i in 0..swaps {
        let text = if i % 2 == 0 { &a } else { &b };
        let ok = engine
            .reload(bytes("ab.toml", text), &ReloadOptions::default())
            .unwrap();
        assert!(ok.generation > last, "generation numbers increase");
        last = ok.generation;
    }
    done.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    for r in readers {
        let (sa, sb) = r.join().expect("a reader saw a mixed batch");
        total = (total.0 + sa, total.1 + sb);
    }
    assert!(
        total.0 > 0 && total.1 > 0,
        "both generations were observed: {total:?}"
    );
    assert!(status_reader.join().expect("status mixed generations") > 0);
    let st = engine.status();
    assert_eq!(st.generation, last);
    assert_eq!(st.state, GenerationState::Active);
}

#[test]
fn no_rules_denies_everything_and_keeps_the_control_path_open() {
    let dir = TempDir::new("norules");
    let (engine, boot) = Engine::open(
        &dir.join("missing.toml"),
        &dir.join("state"),
        palisade_engine::EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(boot.state, GenerationState::NoRules);
    assert_eq!(boot.config_error.as_ref().map(|e| e.stage.as_str()), Some("read"));
    let keys = packets();
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let ctx = palisade_engine::policy::Context { port: 0, route: None };
    h.classify_batch(&keys, &ctx, &mut out);
    assert!(out.iter().all(|d| d.verdict == Verdict::Deny));
    // Frames a data path cannot even place (no rule set, no port) are counted too.
    h.batch()
        .refuse(&keys, &[], palisade_engine::policy::Stage::Context, &mut out);
    let st = engine.status();
    assert_eq!((st.state, st.generation), (GenerationState::NoRules, 0));
    assert_eq!(
        st.last_reload.as_ref().and_then(|l| l.stage),
        Some(ReloadStage::Read)
    );
    let n = 2 * keys.len() as u64;
    assert_eq!(
        (st.frames.evaluated, st.frames.denied),
        (n, n),
        "denied with no rules, and counted"
    );
    assert_eq!(st.stages.iter().map(|s| s.denied).sum::<u64>(), n);
    // A valid push brings it up; the all-frames counters carry on.
    let ok = engine
        .reload(bytes("a.toml", &rules_a()), &ReloadOptions::default())
        .unwrap();
    assert_eq!(ok.state, GenerationState::Active);
    assert_eq!(verdicts(&engine, &keys).last(), Some(&Verdict::Permit));
    assert_eq!(engine.status().frames.evaluated, n + keys.len() as u64);
}

#[test]
fn counters_count_per_binding_and_follow_rule_ids_across_reloads() {
    let dir = TempDir::new("counters");
    let engine = engine_with(&dir, &rules_a(), false);
    let web = palisade_packet::FlowKey::new()
        .with_ipv4([10, 0, 10, 5], [198, 51, 100, 7])
        .with_proto(6)
        .with_ports(40000, 443);
    let dns = web.with_proto(17).with_ports(40000, 53);
    let other = web.with_ports(40000, 9999); // tcp 9999: lan-in default deny
    let mut h = engine.handle();
    let mut h2 = h.clone();
    let mut out = vec![Decision::default(); 4];
    let ctx = h.batch().context("lan1", None).unwrap();
    h.classify_batch(&[web, web, dns, other], &ctx, &mut out);
    h2.classify_batch(&[web], &ctx, &mut out);
    let st = engine.status();
    let lan_in = st.acls.iter().find(|a| a.name == "lan-in").unwrap();
    let hits = |st: &palisade_engine::Status, id: &str| {
        st.acls
            .iter()
            .find(|a| a.name == "lan-in")
            .unwrap()
            .counters
            .rules
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .hits
    };
    assert_eq!(hits(&st, "web"), 3);
    assert_eq!(hits(&st, "dns"), 1);
    assert_eq!(lan_in.counters.default_hits, 1);
    assert_eq!(
        (
            lan_in.counters.evaluated,
            lan_in.counters.permitted,
            lan_in.counters.denied
        ),
        (5, 3, 2)
    );
    assert_eq!(lan_in.bindings[0].kind, BindingKind::Port);
    assert_eq!(lan_in.bindings[0].target, "lan1");
    // Permitted frames went on to the VLAN ACL; denied ones did not.
    let vlan10 = st.acls.iter().find(|a| a.name == "vlan10").unwrap();
    assert_eq!(vlan10.bindings[0].counts.evaluated, 3);
    assert_eq!(
        (st.frames.evaluated, st.frames.permitted, st.frames.denied),
        (5, 3, 2)
    );

    // B keeps the rule ids: counts carry on; the handles keep counting into the same slots.
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let st = engine.status();
    assert_eq!(hits(&st, "web"), 3);
    let ctx = h.batch().context("lan1", None).unwrap();
    h.classify_batch(&[web], &ctx, &mut out);
    assert_eq!(hits(&engine.status(), "web"), 4);
}
