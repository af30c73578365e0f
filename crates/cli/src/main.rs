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
    /// List the running engine's flow table.
    Flows(cmd::flows::Args),
    /// Make the running engine reopen its log files (as SIGUSR1 does; for logrotate).
    LogReopen(cmd::observe::LogReopenArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Manpage(ManpageArgs),
    /// Add elements to a set of the running rule set, or remove them (`set add|del`).
    Set(cmd::set::Args),
}

/// Arguments of `palisade completions`.
#[derive(clap::Args, Debug)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells completions are made for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    /// `palisade completions bash > /usr/share/bash-completion/completions/palisade`
    Bash,
    /// `palisade completions zsh > /usr/share/zsh/vendor-completions/_palisade`
    Zsh,
    /// `palisade completions fish > /usr/share/fish/vendor_completions.d/palisade.fish`
    Fish,
}

/// Arguments of `palisade manpage`.
#[derive(clap::Args, Debug)]
struct ManpageArgs {
    /// Write palisade.1 and palisade-COMMAND.1 for every command into DIR
    /// instead of printing palisade(1).
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// Prints the completion script for `shell`.
fn completions(args: CompletionsArgs) -> ExitCode {
    use clap::CommandFactory;
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "palisade", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Prints palisade(1), or writes every page into `--dir`.
fn manpage(args: ManpageArgs) -> ExitCode {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
            eprintln!("palisade manpage: {e}");
            return ExitCode::from(2);
        }
        use std::io::Write;
        let _ = std::io::stdout().write_all(&out);
        return ExitCode::SUCCESS;
    };
    let mut pages = vec![("palisade".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("palisade-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone()
                .bin_name(name.replace('-', " "))
                .version(env!("CARGO_PKG_VERSION")),
        ));
    }
    for (name, page) in pages {
        let file = format!("{name}.1");
        let mut out = Vec::new();
        let written = clap_mangen::Man::new(page)
            .title(name.to_uppercase())
            .render(&mut out)
            .and_then(|()| std::fs::write(dir.join(&file), &out));
        if let Err(e) = written {
            eprintln!("palisade manpage: {}: {e}", dir.join(&file).display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

impl Command {
    /// Commands whose only output is stdout: `palisade inspect cap | head`
    /// must end quietly when `head` closes the pipe. Commands that talk to a
    /// daemon keep SIGPIPE ignored, so a closed control socket is an error
    /// they report, not a silent death.
    fn writes_only_stdout(&self) -> bool {
        matches!(
            self,
            Command::Check(_)
                | Command::Inspect(_)
                | Command::Classify(_)
                | Command::Explain(_)
                | Command::Bench(_)
                | Command::Completions(_)
                | Command::Manpage(_)
        )
    }
}

/// Restores the default action of SIGPIPE (Rust starts with it ignored, so
/// `println!` on a closed pipe panics): the process ends as `cat` would.
fn die_quietly_on_broken_pipe() {
    // SAFETY: signal(2) with a valid signal number and SIG_DFL touches no
    // memory of ours; called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
    if cli.command.writes_only_stdout() {
        die_quietly_on_broken_pipe();
    }
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
        Command::Flows(args) => cmd::flows::run(args),
        Command::LogReopen(args) => cmd::observe::log_reopen(args),
        Command::Completions(args) => completions(args),
        Command::Manpage(args) => manpage(args),
        Command::Set(args) => cmd::set::run(args),
    }
}
