//! Shared helpers for Palisade's criterion benches (see the `[[bench]]` targets).

pub mod prefixes;
pub mod rulegen;
