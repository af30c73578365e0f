//! Replays every committed corpus file of the fuzz target `flows`
//! (fuzz/corpus/flows) through the target's own checks (fuzz/cases/flows.rs)
//! on stable Rust: arbitrary frame sequences through one flow table, never a
//! panic, never more than `max` entries, counters that add up.

#[allow(dead_code)]
#[path = "../../../fuzz/cases/flows.rs"]
mod case;
#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn every_flows_corpus_file_replays() {
    replay::replay_corpus("flows", 10, case::run);
}
