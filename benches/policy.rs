//! The policy's data path: one key through rescue, VLAN stamping and every
//! ACL stage of `rules/office.toml`, against the cost of the reference
//! classifier scanning the largest single ACL of the same set (the
//! baseline: what the stages add on top of one classification).
//!
//! The mix (64 keys, fixed): the demo capture's flows (LAN web, SSH, DNS,
//! ping, guest web and guest-to-LAN, IPv6 web, fragments, ARP), routed
//! LAN -> WAN. Each iteration evaluates all 64; median / 64 is the time
//! per packet.
//!
//! Run: `cargo bench -p palisade-benches --bench policy`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use palisade_classify::{Classifier, LinearClassifier};
use palisade_engine::policy::{Context, Decision, Policy, Route};
use palisade_packet::FlowKey;

const SPECS: [&str; 16] = [
    "tcp 10.0.10.5:50000 -> 198.51.100.7:443",
    "tcp 10.0.10.5:50001 -> 198.51.100.7:22",
    "udp 10.0.10.5:53000 -> 10.0.10.1:53",
    "icmp 10.0.10.5 -> 198.51.100.7 type 8 code 0",
    "tcp 10.0.10.5:50000 -> 198.51.100.7:443 flags ack,psh",
    "tcp 192.168.20.7:40000 -> 198.51.100.7:443 vlan 20",
    "tcp 192.168.20.7:40001 -> 10.0.10.5:22 vlan 20",
    "udp 192.168.20.7:40002 -> 10.0.10.1:53 vlan 20",
    "tcp [2001:db8:10::5]:50002 -> [2001:db8:ffff::7]:443",
    "udp 10.0.10.5 -> 198.51.100.7 fragment non-first",
    "udp 10.0.10.5:1 -> 8.8.8.8:53",
    "tcp 10.0.10.5:50003 -> 198.51.100.9:80",
    "udp [2001:db8:10::5]:1 -> [2001:db8:ffff::7]:443",
    "icmpv6 2001:db8:10::5 -> 2001:db8:ffff::7 type 128 code 0",
    "tcp 10.9.9.9:1 -> 198.51.100.7:443",
    "udp 10.0.10.5:123 -> 198.51.100.7:123",
];

fn setup() -> (Policy, Vec<FlowKey>, Context, LinearClassifier) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/office.toml");
    let loaded = palisade_rules::load(&path).expect("rules/office.toml");
    let policy = Policy::compile(&loaded.ruleset).expect("compile");
    let mut keys: Vec<FlowKey> = SPECS
        .iter()
        .map(|s| palisade_rules::parse_packet_spec(s).unwrap())
        .collect();
    let mut arp = FlowKey::new();
    arp.ethertype = 0x0806;
    arp.present.0 |= palisade_packet::Present::ETHERTYPE;
    keys[15] = arp;
    let keys: Vec<FlowKey> = keys.iter().cycle().take(64).copied().collect();
    let ctx = Context {
        port: policy.port("lan1").unwrap(),
        route: Some(Route {
            from: policy.interface("lan").unwrap(),
            to: policy.interface("wan").unwrap(),
        }),
    };
    let largest = loaded.ruleset.acls.iter().max_by_key(|a| a.rules.len()).unwrap();
    let linear = LinearClassifier::new(largest.rules.iter().map(|r| r.matcher.clone()).collect());
    (policy, keys, ctx, linear)
}

fn bench(c: &mut Criterion) {
    let (policy, keys, ctx, linear) = setup();
    let mut g = c.benchmark_group("policy_mix64");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("evaluate_all_stages", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(policy.evaluate(black_box(k), &ctx));
            }
        })
    });
    let mut out = vec![Decision::default(); keys.len()];
    g.bench_function("evaluate_batch", |b| {
        b.iter(|| policy.evaluate_batch(black_box(&keys), &ctx, &mut out))
    });
    g.bench_function("baseline_linear_one_acl", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(linear.classify(black_box(k)));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
