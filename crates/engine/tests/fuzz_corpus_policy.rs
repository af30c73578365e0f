//! Replays every committed corpus file of the fuzz target `policy`
//! (fuzz/corpus/policy) through the target's own checks (fuzz/cases/policy.rs)
//! on stable Rust: compiled classifier equal to the reference on frames,
//! built keys and corner keys; the rule set through the policy as the
//! reference decides; nothing panics.

#[allow(dead_code)]
#[path = "../../../fuzz/cases/policy.rs"]
mod case;

#[test]
fn every_policy_corpus_file_replays() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/policy");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus has only {} files", files.len());
    for f in &files {
        // A file a running fuzzer just replaced is gone: skip it.
        let Ok(data) = std::fs::read(f) else { continue };
        eprintln!("replaying {}", f.display()); // shown when the case fails
        case::run(&data);
    }
}
