//! Fuzz target `capture`: see fuzz/cases/capture.rs for the checks
//! (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run capture`).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/cli/src/capture.rs"]
mod capture;
#[path = "../cases/capture.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| case::run(data));
