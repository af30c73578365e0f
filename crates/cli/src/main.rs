//! `palisade`: the command line of the Palisade packet-filter engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bridge;
mod capture;
mod cmd;
mod logger;

/// Palisade: a packet-filter firewall engine with atomic rule reloads.
#[derive(Parser, Debug)]
#[command(name = "palisade", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse, validate and compile a rule file and run its [[expect]] vectors.
    Check(cmd::check::Args),
    /// Parse every frame of a capture and print one CSV row per frame.
    Inspect(cmd::inspect::Args),
    /// Print the verdict of a rule set for every frame of a capture.
    Classify(cmd::classify::Args),
    /// Walk one packet through every stage and say what decided.
    Explain(cmd::explain::Args),
    /// Build and classify throughput on a ClassBench filter set.
    Bench(cmd::bench::Args),
    /// Run the engine daemon (control plane, optionally a filtering bridge).
    Run(cmd::run::Args),
    /// Show the running engine's generation, digest, state, ACLs and counters.
    Status(cmd::control::StatusArgs),
    /// Load a new rule set into the running engine.
    Reload(cmd::control::ReloadArgs),
    /// Confirm a reload made with --confirm-within.
    Confirm(cmd::control::ConfirmArgs),
    /// Go back to a kept generation.
    Rollback(cmd::control::RollbackArgs),
    /// Make the running engine reopen its log files (as SIGUSR1 does; for logrotate).
    LogReopen(cmd::observe::LogReopenArgs),
}

fn main() -> ExitCode {
    logger::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Check(args) => cmd::check::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Classify(args) => cmd::classify::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Status(args) => cmd::control::status(args),
        Command::Reload(args) => cmd::control::reload(args),
        Command::Confirm(args) => cmd::control::confirm(args),
        Command::Rollback(args) => cmd::control::rollback(args),
        Command::LogReopen(args) => cmd::observe::log_reopen(args),
    }
}
