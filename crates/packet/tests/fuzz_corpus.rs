//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/parse_frame`) through
//! `parse`, so CI exercises every input the fuzzer found interesting on stable Rust.

use palisade_packet::{parse, parse_general, FragmentState};

#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn replay_parse_frame_corpus() {
    let mut n = 0;
    replay::replay_corpus("parse_frame", 50, |data| {
        let k = parse(data);
        // The invariants the fuzz target asserts.
        assert!(!(k.fragment == FragmentState::NonFirst && k.ports().is_some()));
        assert_eq!(k, parse(data), "parse is deterministic");
        assert_eq!(k, parse_general(data), "fast path and general walker agree");
        n += 1;
    });
    assert!(n >= 50, "corpus unexpectedly small: {n} files");
}
