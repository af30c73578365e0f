//! pcap and pcapng reading from arbitrary bytes (the reader of `palisade
//! inspect` and `classify`, compiled in from the CLI's source): no panic;
//! frames are numbered 1, 2, 3... and never longer than the input; an error
//! counts exactly the frames delivered before it; every frame parses.
//!
//! Shared by the fuzz target `capture` and the replay test
//! crates/cli/tests/fuzz_corpus_capture.rs; both compile the reader in as
//! `crate::capture` from crates/cli/src/capture.rs.

use std::path::Path;

/// Runs one input through every check; panics on a disagreement.
pub fn run(data: &[u8]) {
    let mut delivered = 0u64;
    let res = crate::capture::for_each_frame_in(Path::new("fuzz.pcap"), data, |f| {
        delivered += 1;
        assert_eq!(f.number, delivered);
        assert!(f.data.len() <= data.len());
        let _ = palisade_packet::parse(f.data);
    });
    match res {
        Ok(n) => assert_eq!(n, delivered),
        Err(e) => {
            assert_eq!(e.frames_before, delivered);
            assert!(e.to_string().starts_with("fuzz.pcap: "), "{e}");
        }
    }
}
