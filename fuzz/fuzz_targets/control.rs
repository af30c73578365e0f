//! Fuzz target `control`: see fuzz/cases/control.rs for the checks
//! (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run control`).
#![no_main]

#[path = "../cases/control.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| case::run(data));
