//! Large rule files of ClassBench's shape for the scaling benchmarks: one ACL
//! of random 5-tuple rules (source and destination prefixes of every length,
//! single ports and ranges, TCP/UDP/ICMP/any), deterministic, written as the
//! TOML rule language, bound to port `lan1`.
//!
//! `cargo run --release -p palisade-benches --example big_acl -- 65535 /tmp/big.toml`
//! writes one; `benches/scale.rs` measures check and reload on them.

use std::fmt::Write as _;

use crate::prefixes::Rng;

fn prefix(rng: &mut Rng) -> String {
    let len = [16u32, 20, 24, 24, 24, 28, 32, 32, 32, 32][rng.below(10) as usize];
    let addr = (rng.bits() as u32) & (u32::MAX << (32 - len));
    format!("{}/{len}", std::net::Ipv4Addr::from(addr))
}

fn port(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => {
            let lo = rng.below(65536) as u32;
            let hi = (lo + rng.below(4096) as u32).min(65535);
            format!("\"{lo}-{hi}\"")
        }
        1 => "\"1024-65535\"".into(),
        _ => [22, 25, 53, 80, 123, 443, 8080, 3306][rng.below(8) as usize].to_string(),
    }
}

/// A rule file with one ACL of `rules` rules (ids `r0`...).
pub fn big_acl(rules: usize, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut s = String::from(
        "version = 1\n[[port]]\nname = \"lan1\"\nvlan = 10\n[[rescue]]\nproto = \"tcp\"\nsrc = \"192.0.2.0/28\"\ndst_port = 22\n\
         [[acl]]\nname = \"big\"\ndefault = \"deny\"\n",
    );
    for i in 0..rules {
        let action = if rng.below(3) == 0 { "deny" } else { "permit" };
        let _ = write!(s, "[[acl.rule]]\nid = \"r{i}\"\naction = \"{action}\"\n");
        // At least one address: a rule matching everything would shadow all after it.
        let (src, dst) = match rng.below(16) {
            0 => (false, true),
            1 => (true, false),
            _ => (true, true),
        };
        if src {
            let _ = writeln!(s, "src = \"{}\"", prefix(&mut rng));
        }
        if dst {
            let _ = writeln!(s, "dst = \"{}\"", prefix(&mut rng));
        }
        match rng.below(16) {
            0 => {}
            1 => s.push_str("proto = \"icmp\"\n"),
            2..=5 => {
                let _ = writeln!(s, "proto = \"udp\"\ndst_port = {}", port(&mut rng));
            }
            _ => {
                let _ = writeln!(s, "proto = \"tcp\"\ndst_port = {}", port(&mut rng));
                if rng.below(4) == 0 {
                    let _ = writeln!(s, "src_port = {}", port(&mut rng));
                }
            }
        }
    }
    s.push_str("[[bind]]\nacl = \"big\"\nport = \"lan1\"\n");
    s
}
