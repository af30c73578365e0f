//! Fuzz target `classbench`: see fuzz/cases/classbench.rs for the input
//! layout and the checks (run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run classbench`).
#![no_main]

#[path = "../cases/classbench.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| case::run(data));
