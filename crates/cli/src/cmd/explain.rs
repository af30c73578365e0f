//! `palisade explain`.

use std::process::ExitCode;

/// Arguments of `palisade explain`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `palisade explain`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("palisade explain: not built yet");
    ExitCode::from(2)
}
