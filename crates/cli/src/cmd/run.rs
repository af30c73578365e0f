//! `palisade run`.

use std::process::ExitCode;

/// Arguments of `palisade run`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `palisade run`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("palisade run: not built yet");
    ExitCode::from(2)
}
