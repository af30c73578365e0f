//! A random rule list plus random frames: the compiled classifier must give
//! the reference linear scan's answer for every key (parsed frames, keys
//! built from fields, and the corner keys of the rules), in single and batch
//! lookups; the same rules written as a TOML rule set and compiled into a
//! `Policy` must decide as the reference says. Nothing may panic.
//!
//! Input layout: byte 0 = rule count (mod 17), byte 1 = leaf size, byte 2 =
//! space factor; then the rules, then keys until the bytes run out. Every
//! read past the end yields zero, so any input is a valid case.
//!
//! Shared by the fuzz target `policy` and the replay test
//! crates/engine/tests/fuzz_corpus_policy.rs, so both check the same things.

use std::fmt::Write as _;

use palisade_classify::{
    corner_keys, BuildConfig, Classifier, CompiledClassifier, FragmentMatch, IpFamily, LinearClassifier,
    PortRange, Prefix, RuleMatch, TcpFlagsMatch, NO_MATCH,
};
use palisade_engine::policy::{Context, Policy, Verdict};
use palisade_packet::{FlowKey, FragmentState};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u128(&mut self) -> u128 {
        // A short tail widened: fuzzers find interesting high bits through the 32-bit head.
        (u128::from(self.u32()) << 96) | u128::from(self.u32())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn prefix(inp: &mut Input<'_>, v6: bool) -> Prefix {
    let len = inp.u8();
    if v6 {
        Prefix::v6(inp.u128(), len % 129)
    } else {
        Prefix::v4(inp.u32().to_be_bytes(), len % 33)
    }
}

fn ports(inp: &mut Input<'_>) -> Vec<PortRange> {
    let n = inp.u8() % 3 + 1;
    (0..n)
        .map(|_| {
            let (a, b) = (inp.u16(), inp.u16());
            PortRange {
                lo: a.min(b),
                hi: a.max(b),
            }
        })
        .collect()
}

fn rule(inp: &mut Input<'_>) -> RuleMatch {
    let f = inp.u8();
    let g = inp.u8();
    let v6 = g & 1 != 0;
    let mut r = RuleMatch::any();
    if f & 1 != 0 {
        r.family = Some(if v6 { IpFamily::V6 } else { IpFamily::V4 });
    }
    if f & 2 != 0 {
        r.src = (0..inp.u8() % 2 + 1).map(|_| prefix(inp, v6)).collect();
    }
    if f & 4 != 0 {
        r.dst = (0..inp.u8() % 2 + 1).map(|_| prefix(inp, v6)).collect();
    }
    if f & 8 != 0 {
        r.proto = Some([6, 17, 1, 58, 132, 47][usize::from(inp.u8() % 6)]);
    }
    let has_ports = matches!(r.proto, Some(6 | 17 | 132));
    if f & 16 != 0 && has_ports {
        r.src_port = ports(inp);
    }
    if f & 32 != 0 && has_ports {
        r.dst_port = ports(inp);
    }
    if f & 64 != 0 && matches!(r.proto, Some(1 | 58)) {
        r.icmp_type = Some(inp.u8());
        if g & 2 != 0 {
            r.icmp_code = Some(inp.u8());
        }
    }
    if f & 128 != 0 {
        match g >> 4 & 3 {
            0 if r.proto == Some(6) => {
                let mask = inp.u16() & 0x0fff;
                r.tcp_flags = Some(TcpFlagsMatch {
                    value: inp.u16() & mask,
                    mask,
                });
            }
            1 => r.vlan = vec![inp.u16() % 4094 + 1],
            2 => {
                r.fragment = Some(
                    [
                        FragmentMatch::None,
                        FragmentMatch::First,
                        FragmentMatch::NonFirst,
                        FragmentMatch::Any,
                    ][usize::from(inp.u8() % 4)],
                )
            }
            _ => r.dscp = vec![inp.u8() % 64],
        }
    }
    r
}

fn key(inp: &mut Input<'_>) -> FlowKey {
    let kind = inp.u8();
    if kind & 1 == 0 {
        // A raw frame of up to 127 bytes.
        let n = usize::from(inp.u8() % 128).min(inp.0.len());
        let (frame, rest) = inp.0.split_at(n);
        inp.0 = rest;
        return palisade_packet::parse(frame);
    }
    let mut k = if kind & 2 == 0 {
        FlowKey::new().with_ipv4(inp.u32().to_be_bytes(), inp.u32().to_be_bytes())
    } else {
        FlowKey::new().with_ipv6(inp.u128(), inp.u128())
    };
    let proto = [6, 17, 1, 58, 132, 47, 0, 255][usize::from(kind >> 2 & 7)];
    k = k.with_proto(proto);
    match proto {
        6 => {
            k = k
                .with_ports(inp.u16(), inp.u16())
                .with_tcp_flags(inp.u16() & 0x0fff)
        }
        17 | 132 => k = k.with_ports(inp.u16(), inp.u16()),
        1 | 58 => k = k.with_icmp(inp.u8(), inp.u8()),
        _ => {}
    }
    if kind & 32 != 0 {
        k = k.with_dscp(inp.u8() % 64);
    }
    if kind & 64 != 0 {
        k = k.with_vlan(inp.u16() % 4094 + 1);
    }
    if kind & 128 != 0 {
        k = k.with_fragment(FragmentState::First, 0, true);
    }
    k
}

/// The rules as a rule file: one ACL bound to an untagged port, or `None`
/// when a rule uses a field this writer does not render.
fn toml_of(rules: &[RuleMatch], default_permit: bool) -> Option<String> {
    let mut t = String::from("version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\n");
    let _ = writeln!(
        t,
        "default = \"{}\"",
        if default_permit { "permit" } else { "deny" }
    );
    let pfx = |p: &Prefix| match p.family {
        IpFamily::V4 => format!("\"{}/{}\"", std::net::Ipv4Addr::from(p.addr as u32), p.len),
        IpFamily::V6 => format!("\"{}/{}\"", std::net::Ipv6Addr::from(p.addr), p.len),
    };
    let prt = |r: &PortRange| format!("\"{}-{}\"", r.lo, r.hi);
    for (i, r) in rules.iter().enumerate() {
        if r.family.is_some() || r.tcp_flags.is_some() || r.fragment.is_some() || r.ethertype.is_some() {
            return None;
        }
        let _ = writeln!(t, "[[acl.rule]]\nid = \"r{i}\"");
        let _ = writeln!(t, "action = \"{}\"", if i % 2 == 0 { "deny" } else { "permit" });
        if let Some(p) = r.proto {
            let _ = writeln!(t, "proto = {p}");
        }
        for (name, list) in [("src", &r.src), ("dst", &r.dst)] {
            if !list.is_empty() {
                let v: Vec<String> = list.iter().map(pfx).collect();
                let _ = writeln!(t, "{name} = [{}]", v.join(", "));
            }
        }
        for (name, list) in [("src_port", &r.src_port), ("dst_port", &r.dst_port)] {
            if !list.is_empty() {
                let v: Vec<String> = list.iter().map(prt).collect();
                let _ = writeln!(t, "{name} = [{}]", v.join(", "));
            }
        }
        if let Some(x) = r.icmp_type {
            let _ = writeln!(t, "icmp_type = {x}");
        }
        if let Some(x) = r.icmp_code {
            let _ = writeln!(t, "icmp_code = {x}");
        }
        if !r.vlan.is_empty() {
            let _ = writeln!(t, "vlan = {:?}", r.vlan);
        }
        if !r.dscp.is_empty() {
            let _ = writeln!(t, "dscp = {:?}", r.dscp);
        }
    }
    t.push_str("[[bind]]\nacl = \"a\"\nport = \"p\"\n");
    Some(t)
}

/// The build settings, rules and keys (corner keys of the rules included) of an input.
pub fn decode(data: &[u8]) -> (BuildConfig, Vec<RuleMatch>, Vec<FlowKey>) {
    let mut inp = Input(data);
    let n = inp.u8() % 17;
    let config = BuildConfig {
        memory_cap_bytes: 16 << 20,
        leaf_size: usize::from(inp.u8() % 16) + 1,
        space_factor: usize::from(inp.u8() % 16) + 2,
        vector: true,
        bitset_max_rules: 1024,
        ipv4_rank_min_rules: BuildConfig::default().ipv4_rank_min_rules,
    };
    let rules: Vec<RuleMatch> = (0..n).map(|_| rule(&mut inp)).collect();
    let mut keys = Vec::new();
    while !inp.is_empty() && keys.len() < 64 {
        keys.push(key(&mut inp));
    }
    keys.extend(corner_keys(&rules, 256));
    (config, rules, keys)
}

/// Prints the rules of a failing case (a panic anywhere below, the builder's included).
struct OnPanic<'a>(&'a [RuleMatch]);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rules of the failing case: {:?}", self.0);
        }
    }
}

/// Runs one input through every check; panics on a disagreement.
pub fn run(data: &[u8]) {
    let (config, rules, keys) = decode(data);
    let n = rules.len();

    let _report = OnPanic(&rules);
    let reference = LinearClassifier::new(rules.clone());
    let want: Vec<u32> = keys.iter().map(|k| reference.classify(k)).collect();
    // Both structures (bit sets, trees) with both lookups: AVX-512 (where the CPU has it) and
    // scalar; trees also with IPv4 addresses by rank (what sets of 8192 rules or more use).
    for (vector, bitset_max_rules, ipv4_rank_min_rules) in [
        (true, 1024, config.ipv4_rank_min_rules),
        (false, 1024, config.ipv4_rank_min_rules),
        (true, 0, config.ipv4_rank_min_rules),
        (false, 0, config.ipv4_rank_min_rules),
        (true, 0, 0),
        (false, 0, 0),
    ] {
        let config = BuildConfig {
            vector,
            bitset_max_rules,
            ipv4_rank_min_rules,
            ..config
        };
        let Ok(compiled) = CompiledClassifier::build(&rules, &config) else {
            continue;
        };
        let mut got = vec![NO_MATCH; keys.len()];
        compiled.classify_batch(&keys, &mut got);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                compiled.classify(k),
                want[i],
                "single lookup (vector {vector}, bit sets up to {bitset_max_rules} rules), key {k:?}, rules {rules:?}"
            );
            assert_eq!(
                got[i], want[i],
                "batch lookup (vector {vector}, bit sets up to {bitset_max_rules} rules), key {k:?}, rules {rules:?}"
            );
        }
    }

    // The same rules through the rule language and the policy.
    let Some(text) = toml_of(&rules, n % 2 == 1) else {
        return;
    };
    let Ok(loaded) = palisade_rules::parse("fuzz.toml", text.as_bytes()) else {
        return;
    };
    let Ok(policy) = Policy::compile(&loaded.ruleset) else {
        return;
    };
    let acl = &loaded.ruleset.acls[0];
    let reference = LinearClassifier::new(acl.rules.iter().map(|r| r.matcher.clone()).collect());
    let ctx = Context {
        port: policy.port("p").expect("port p"),
        route: None,
    };
    for k in &keys {
        if !k.status.is_ok() || k.vlan_count != 0 {
            continue; // malformed frames and the VLAN filter are not this ACL's answer
        }
        let want = match reference.classify(k) {
            NO_MATCH => Verdict::from(acl.default),
            i => Verdict::from(acl.rules[i as usize].action),
        };
        assert_eq!(
            policy.evaluate(k, &ctx).verdict,
            want,
            "policy, key {k:?}\n{text}"
        );
    }
}
