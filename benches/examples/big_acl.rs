//! Writes a rule file of one large ACL of ClassBench's shape (see `rulegen`).
//!
//! `cargo run --release -p palisade-benches --example big_acl -- RULES OUT.toml [SEED]`

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(out)) = (args.get(1).and_then(|n| n.parse().ok()), args.get(2)) else {
        eprintln!("usage: big_acl RULES OUT.toml [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    std::fs::write(out, palisade_benches::rulegen::big_acl(n, seed)).unwrap_or_else(|e| {
        eprintln!("{out}: {e}");
        std::process::exit(2);
    });
}
