//! Replays every committed corpus file of the fuzz target `capture`
//! (fuzz/corpus/capture) through the target's own checks
//! (fuzz/cases/capture.rs) on stable Rust, with the CLI's capture reader
//! compiled in from its source.

#[allow(dead_code)]
#[path = "../src/capture.rs"]
mod capture;
#[path = "../../../fuzz/cases/capture.rs"]
mod case;

#[test]
fn every_capture_corpus_file_replays() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/capture");
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
