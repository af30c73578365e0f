//! Bytes per rule and per deciding stage: counted from the frame lengths the
//! data path passes, summed over shards, and kept by rule id across reloads.

mod common;

use common::*;
use palisade_engine::policy::{Decision, Verdict};
use palisade_engine::{Engine, ReloadOptions};
use palisade_packet::FlowKey;

fn tcp(port: u16) -> FlowKey {
    FlowKey::new()
        .with_ipv4([10, 0, 10, 5], [198, 51, 100, 7])
        .with_proto(6)
        .with_ports(40000, port)
}

fn udp(port: u16) -> FlowKey {
    tcp(0).with_proto(17).with_ports(40000, port)
}

/// Classifies `keys` (with lengths) entering lan1 on a new worker handle.
fn run(engine: &Engine, keys: &[FlowKey], lens: &[usize]) -> Vec<Decision> {
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let mut b = h.batch();
    let ctx = b.context("lan1", None).unwrap();
    b.classify_frames(keys, lens, &ctx, &mut out);
    out
}

fn rule(engine: &Engine, acl: &str, id: &str) -> (u64, u64) {
    let s = engine.status();
    let a = s.acls.iter().find(|a| a.name == acl).unwrap();
    if id == "default" {
        return (a.counters.default_hits, a.counters.default_bytes);
    }
    let r = a.counters.rules.iter().find(|r| r.id == id).unwrap();
    (r.hits, r.bytes)
}

fn stage(engine: &Engine, name: &str) -> (u64, u64) {
    let s = engine.status();
    let st = s.stages.iter().find(|s| s.stage == name).unwrap();
    (st.permitted, st.denied)
}

#[test]
fn bytes_follow_the_deciding_rule_and_the_frame_total() {
    let dir = TempDir::new("bytes");
    let engine = engine_with(&dir, &rules_a(), false);
    // web permit (pacl) then vlan10 permit (vacl-in default); dns deny at pacl; tcp/9 default deny.
    let out = run(
        &engine,
        &[tcp(443), udp(53), tcp(9), tcp(443)],
        &[100, 200, 300, 1500],
    );
    let verdicts: Vec<Verdict> = out.iter().map(|d| d.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Permit, Verdict::Deny, Verdict::Deny, Verdict::Permit]
    );
    assert_eq!(rule(&engine, "lan-in", "web"), (2, 1600));
    assert_eq!(rule(&engine, "lan-in", "dns"), (1, 200));
    assert_eq!(rule(&engine, "lan-in", "default"), (1, 300));
    // Each ACL on the path counts the frames it decided: vlan10's default saw both web frames.
    assert_eq!(rule(&engine, "vlan10", "default"), (2, 1600));
    let s = engine.status();
    assert_eq!(
        (s.frames.evaluated, s.frames.permitted, s.frames.denied),
        (4, 2, 2)
    );
    assert_eq!(s.bytes, 2100);
    // The final decision's stage: the permits name the last ACL stage (vacl-in), the denies pacl.
    assert_eq!(stage(&engine, "vacl-in"), (2, 0));
    assert_eq!(stage(&engine, "pacl"), (0, 2));
    assert_eq!(stage(&engine, "rescue"), (0, 0));
    assert_eq!(
        s.stages.len(),
        11,
        "every stage is listed, also at zero (flows-full included)"
    );
}

#[test]
fn classify_without_lengths_counts_packets_and_no_bytes() {
    let dir = TempDir::new("nobytes");
    let engine = engine_with(&dir, &rules_a(), false);
    run(&engine, &[tcp(443), udp(53)], &[]);
    // Lengths shorter than the keys: the rest count 0 bytes.
    run(&engine, &[tcp(443), tcp(80)], &[64]);
    assert_eq!(rule(&engine, "lan-in", "web"), (3, 64));
    assert_eq!(rule(&engine, "lan-in", "dns"), (1, 0));
}

#[test]
fn byte_counters_survive_a_reload_that_keeps_the_rule_and_sum_over_workers() {
    let dir = TempDir::new("bytes-reload");
    let engine = engine_with(&dir, &rules_a(), false);
    run(&engine, &[udp(53)], &[70]);
    run(&engine, &[udp(53)], &[30]); // another worker handle, another shard
    assert_eq!(rule(&engine, "lan-in", "dns"), (2, 100));
    // B keeps the id "dns" (now a permit): the count carries on.
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    run(&engine, &[udp(53)], &[50]);
    assert_eq!(rule(&engine, "lan-in", "dns"), (3, 150));
    // A refused reload changes nothing.
    assert!(engine
        .reload(
            bytes("bad.toml", "version = 1\n[[bind]]\nacl = \"x\"\nport = \"p\"\n"),
            &ReloadOptions::default()
        )
        .is_err());
    assert_eq!(rule(&engine, "lan-in", "dns"), (3, 150));
}
