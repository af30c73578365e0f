//! A BGP-like prefix list for set benchmarks and tests: deterministic, with
//! the length mix of a full Internet routing table (IPv4 mostly /24, /22,
//! /23, /20-/21, /16; IPv6 mostly /48, /32, /44, /40) plus the host
//! entries of a blocklist, and traffic that hits it about half the time.
//!
//! Shared by `benches/sets.rs` and the CLI's set test (through `#[path]`), so
//! the benchmark and the test measure and check the same shape.

use palisade_classify::Prefix;

/// xorshift64*: a small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }
}

/// (length, count per 100,000) of IPv4 prefixes: a routing table's mix
/// (few /8-/15, 1.4% /16, 58% /24) and 5% blocklist hosts (/32).
const V4_LENGTHS: [(u8, u32); 21] = [
    (8, 2),
    (10, 4),
    (12, 30),
    (13, 60),
    (14, 110),
    (15, 200),
    (16, 1350),
    (17, 800),
    (18, 1300),
    (19, 2500),
    (20, 4200),
    (21, 5400),
    (22, 11000),
    (23, 10000),
    (24, 58000),
    (25, 200),
    (26, 200),
    (27, 150),
    (28, 150),
    (30, 100),
    (32, 5000),
];

/// (length, weight per 1,000) of IPv6 prefixes.
const V6_LENGTHS: [(u8, u32); 9] = [
    (29, 40),
    (32, 120),
    (36, 50),
    (40, 80),
    (44, 80),
    (48, 500),
    (56, 30),
    (64, 60),
    (128, 40),
];

fn pick(rng: &mut Rng, table: &[(u8, u32)]) -> u8 {
    let total: u32 = table.iter().map(|t| t.1).sum();
    let mut r = rng.below(u64::from(total)) as u32;
    for &(len, w) in table {
        if r < w {
            return len;
        }
        r -= w;
    }
    table[table.len() - 1].0
}

/// `n` prefixes, `v6_percent` of them IPv6 (duplicates possible, as in a merged feed).
pub fn bgp_like(n: usize, v6_percent: u64, seed: u64) -> Vec<Prefix> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| {
            if rng.below(100) < v6_percent {
                // Global unicast as allocated: 2001::/16 and 2400::/8 - 2a0f::/16.
                let top: u128 = match rng.below(4) {
                    0 => 0x2001,
                    _ => 0x2400 + rng.below(0x0610) as u128,
                };
                let addr = top << 112 | (u128::from(rng.bits()) << 48) | u128::from(rng.bits() >> 16);
                Prefix::v6(addr, pick(&mut rng, &V6_LENGTHS))
            } else {
                // Unicast space, 1.0.0.0-223.255.255.255 but 10/8 and 127/8.
                let first = match 1 + rng.below(223) as u32 {
                    10 | 127 => 11,
                    f => f,
                };
                let addr = first << 24 | (rng.bits() as u32 & 0x00ff_ffff);
                Prefix::v4(addr.to_be_bytes(), pick(&mut rng, &V4_LENGTHS))
            }
        })
        .collect()
}

/// An address inside `p` (random host bits).
pub fn inside(rng: &mut Rng, p: &Prefix) -> u128 {
    let (lo, hi) = p.range();
    let span = hi - lo;
    let r = (u128::from(rng.bits()) << 64 | u128::from(rng.bits())) & span;
    lo | r
}
