//! Replays every committed corpus file of the fuzz target `control`
//! (fuzz/corpus/control) through the target's own checks
//! (fuzz/cases/control.rs) on stable Rust: each line parsed and answered
//! alone, then the whole input as one connection's stream through
//! `serve_connection`; one JSON reply with a boolean `ok` per non-blank line.

#[path = "../../../fuzz/cases/control.rs"]
mod case;
#[path = "../../../fuzz/cases/replay.rs"]
mod replay;

#[test]
fn every_control_corpus_file_replays() {
    replay::replay_corpus("control", 10, case::run);
    // Found by the fuzz target: replies were written one JSON token per
    // write(2); a client that sent two requests before reading got the first
    // reply cut short after the server's 30 s write timeout.
    case::run(b"{\"cmd\":\"status\"}\n\n{\"cmd\":\"status\"}\n{\"cmd\":\"status\"}");
    // The engine's temporary directory (see fuzz/cases/control.rs).
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("palisade-fuzz-control-{}", std::process::id())),
    );
}
