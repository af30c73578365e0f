//! Replays the `parse_rules` fuzz corpus (and cheap deterministic mutations
//! of it) through the parser on stable Rust: errors are fine, panics are not.

use std::path::PathBuf;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/parse_rules"
    ));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {}", files.len());
    files
}

fn exercise(bytes: &[u8]) {
    match palisade_rules::parse("fuzz.toml", bytes) {
        Ok(l) => {
            for d in &l.warnings {
                assert!(d.span.line >= 1 && d.span.col >= 1);
            }
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "an invalid file must say why");
            for d in &errs {
                assert!(d.span.line >= 1 && d.span.col >= 1, "{d}");
                assert!(!d.message.is_empty());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(k) = palisade_rules::parse_packet_spec(text) {
            let again = palisade_rules::parse_packet_spec(&palisade_rules::format_packet(&k));
            assert_eq!(again, Ok(k), "format_packet must round-trip");
        }
    }
}

#[test]
fn corpus_replays_without_panic() {
    for (name, bytes) in corpus() {
        let r = std::panic::catch_unwind(|| exercise(&bytes));
        assert!(r.is_ok(), "panic on corpus file {name}");
    }
}

#[test]
fn example_rule_sets_in_the_corpus_are_valid() {
    for (name, bytes) in corpus() {
        if name.ends_with("office.toml") || name.ends_with("campus.toml") || name.ends_with("edge6.toml") {
            assert!(palisade_rules::parse(&name, &bytes).is_ok(), "{name}");
        }
    }
}

#[test]
fn mutations_never_panic() {
    // xorshift: deterministic, no dependency.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tokens: [&[u8]; 12] = [
        b"\"",
        b"[",
        b"]]",
        b"=",
        b"\n",
        b"-",
        b"/",
        b"::",
        b"4294967296",
        b"\xff",
        b"{",
        b"\"any\"",
    ];
    // Only the hand-written seeds (named *.toml / *.txt): fuzzer-found entries are replayed above.
    for (name, bytes) in corpus()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".toml") || n.ends_with(".txt"))
    {
        for _ in 0..60 {
            let mut m = bytes.clone();
            let edits = 1 + next() % 4;
            for _ in 0..edits {
                if m.is_empty() {
                    break;
                }
                let at = (next() % m.len() as u64) as usize;
                match next() % 4 {
                    0 => m.truncate(at),
                    1 => m[at] = (next() & 0xff) as u8,
                    2 => {
                        let t = tokens[(next() % tokens.len() as u64) as usize];
                        m.splice(at..at, t.iter().copied());
                    }
                    _ => {
                        let end = (at + (next() % 16) as usize).min(m.len());
                        m.drain(at..end);
                    }
                }
            }
            let r = std::panic::catch_unwind(|| exercise(&m));
            assert!(
                r.is_ok(),
                "panic on a mutation of {name}: {:?}",
                String::from_utf8_lossy(&m)
            );
        }
    }
}
