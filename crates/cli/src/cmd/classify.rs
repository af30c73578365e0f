//! `palisade classify`.

use std::process::ExitCode;

/// Arguments of `palisade classify`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `palisade classify`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("palisade classify: not built yet");
    ExitCode::from(2)
}
