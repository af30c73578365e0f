//! Fuzz target `policy`: see fuzz/cases/policy.rs for the input layout and
//! the checks (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run policy`).
#![no_main]

#[path = "../cases/policy.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| case::run(data));
