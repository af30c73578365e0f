//! `palisade`: the command line of the Palisade packet-filter engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Palisade: a packet-filter firewall engine with atomic rule reloads.
#[derive(Parser, Debug)]
#[command(name = "palisade", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse every frame of a capture and print one CSV row per frame.
    Inspect(cmd::inspect::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args),
    }
}
