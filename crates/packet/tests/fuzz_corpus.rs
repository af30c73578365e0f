//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/parse_frame`) through
//! `parse`, so CI exercises every input the fuzzer found interesting on stable Rust.

use palisade_packet::{parse, parse_general, FragmentState};

#[test]
fn replay_parse_frame_corpus() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/parse_frame"
    ));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz/corpus/parse_frame is committed") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let k = parse(&data);
        // The invariants the fuzz target asserts.
        assert!(!(k.fragment == FragmentState::NonFirst && k.ports().is_some()));
        assert_eq!(k, parse(&data), "parse is deterministic");
        assert_eq!(k, parse_general(&data), "fast path and general walker agree");
        n += 1;
    }
    assert!(n >= 50, "corpus unexpectedly small: {n} files");
}
