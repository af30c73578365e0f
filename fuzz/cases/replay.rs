//! Walks a committed fuzz corpus, so the replay tests in the crates run the
//! same inputs the fuzzers kept. Included with `#[path]` by each replay test
//! (not by the fuzz targets), so `CARGO_MANIFEST_DIR` is that test's crate
//! under `crates/`.

/// Calls `each` with the bytes of every file of `fuzz/corpus/<target>`, in
/// name order (the file name goes to stderr first, shown when a case fails).
/// Panics when the corpus has fewer than `min_files` files, so a lost corpus
/// cannot turn the replay into a test of nothing.
pub fn replay_corpus(target: &str, min_files: usize, mut each: impl FnMut(&[u8])) {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus")).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= min_files,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        eprintln!("replaying {}", f.display());
        each(&data);
    }
}
