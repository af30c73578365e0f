//! Replays every committed corpus file of the fuzz target `capture`
//! (fuzz/corpus/capture) through the target's own checks
//! (fuzz/cases/capture.rs) on stable Rust, with the CLI's capture reader
//! compiled in from its source.

#[allow(dead_code)]
#[path = "../src/capture.rs"]
mod capture;
#[path = "../../../fuzz/cases/capture.rs"]
mod case;
#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn every_capture_corpus_file_replays() {
    replay::replay_corpus("capture", 10, case::run);
}
