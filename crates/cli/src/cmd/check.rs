//! `palisade check`.

use std::process::ExitCode;

/// Arguments of `palisade check`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `palisade check`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("palisade check: not built yet");
    ExitCode::from(2)
}
