//! `palisade bench`.

use std::process::ExitCode;

/// Arguments of `palisade bench`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `palisade bench`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("palisade bench: not built yet");
    ExitCode::from(2)
}
