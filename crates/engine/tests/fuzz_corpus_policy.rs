//! Replays every committed corpus file of the fuzz target `policy`
//! (fuzz/corpus/policy) through the target's own checks (fuzz/cases/policy.rs)
//! on stable Rust: compiled classifier equal to the reference on frames,
//! built keys and corner keys; the rule set through the policy as the
//! reference decides; nothing panics.

#[allow(dead_code)]
#[path = "../../../fuzz/cases/policy.rs"]
mod case;
#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn every_policy_corpus_file_replays() {
    replay::replay_corpus("policy", 10, case::run);
}
