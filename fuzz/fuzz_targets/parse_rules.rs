//! Rule files from arbitrary bytes: parse, compile, run the expects, and read
//! the bytes as an `explain` packet. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_engine::policy::{Context, Policy};

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = palisade_rules::parse("fuzz.toml", data) {
        if let Ok(policy) = Policy::compile(&loaded.ruleset) {
            let _ = policy.check_expects(&loaded);
            for e in &loaded.ruleset.expects {
                let ctx = Context {
                    port: policy.port(&e.port).unwrap_or(u32::MAX),
                    route: None,
                };
                let _ = policy.evaluate(&e.packet, &ctx);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = palisade_rules::parse_packet_spec(text) {
            let _ = palisade_rules::format_packet(&key);
        }
    }
});
