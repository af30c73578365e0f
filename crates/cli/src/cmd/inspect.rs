//! `palisade inspect CAPTURE`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `palisade inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A classic pcap or pcapng capture.
    pub capture: PathBuf,
}

/// Runs `palisade inspect`.
pub fn run(args: Args) -> ExitCode {
    eprintln!("palisade inspect {}: not built yet", args.capture.display());
    ExitCode::from(2)
}
