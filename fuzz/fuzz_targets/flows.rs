//! Fuzz target `flows`: see fuzz/cases/flows.rs for the input layout and
//! the checks (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run flows`).
#![no_main]

#[path = "../cases/flows.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| case::run(data));
