//! `palisade set add|del --control SOCK SET ELEMENT... [--file F]`: change a
//! set of the running rule set.
//!
//! The daemon makes a new generation through its whole reload pipeline (the
//! set recompiled, the `[[expect]]`s run, persisted, published atomically,
//! `--confirm-within` honoured) and writes the set's file through, so a later
//! reload or restart keeps the change. Elements are written as in a set file
//! (`203.0.113.0/24`, `2001:db8::1`, `22`, `1000-2000`); `--file F` reads
//! more of them from F, one a line with `#` comments (errors there are
//! reported at `F:line:col` before anything is sent).
//!
//! Like `reload`, it waits as long as the daemon works on the change (a large
//! set recompiles), printing its progress to stderr every few seconds;
//! `--timeout SECS` gives up earlier.
//!
//! Exit codes: 0 done (or nothing to change), 1 refused (a bad element, or a
//! stage of the pipeline; every cause is printed and nothing changed), 2 the
//! daemon could not be reached or the arguments are wrong, 3 `--timeout`
//! passed while the daemon was still working (the change goes on).

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::control::{Client, ClientError, Request, Response, SetAction, SetReply};

use crate::cmd::control::{call_long, fail, print_json, seconds};

/// What to do to the set.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add the elements (those already in the set are skipped).
    Add,
    /// Remove the elements (each must be listed in the set's file).
    Del,
}

/// Arguments of `palisade set`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `add` or `del`.
    #[arg(value_enum)]
    pub op: Op,
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// The set's name, as its [[set]] names it.
    #[arg(value_name = "SET")]
    pub set: String,
    /// Elements: addresses, prefixes, ports or port ranges.
    #[arg(value_name = "ELEMENT")]
    pub elements: Vec<String>,
    /// Read more elements from F (one a line, '#' comments).
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
    /// Revert by itself (and restore the set file) unless `palisade confirm` follows within SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub confirm_within: Option<f64>,
    /// Give up waiting after SECS seconds (the change goes on in the daemon;
    /// default: wait as long as the daemon works on it).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `palisade set`.
pub fn run(args: Args) -> ExitCode {
    let mut elements = args.elements.clone();
    if let Some(f) = &args.file {
        let name = f.display().to_string();
        // (a FIFO or a device is refused at once, never waited on or read without end)
        let text = match palisade_rules::read_rule_file(f) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("palisade: {name}: cannot read: {e}");
                return ExitCode::from(2);
            }
        };
        match palisade_rules::parse_element_lines(&name, &text) {
            Ok(more) => elements.extend(more),
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("palisade: set {} refused; nothing changed", args.set);
                return ExitCode::from(1);
            }
        }
    }
    if elements.is_empty() {
        eprintln!("palisade: set: give at least one ELEMENT or --file F");
        return ExitCode::from(2);
    }
    if let Some(secs) = args.confirm_within {
        if !(secs.is_finite() && secs > 0.0) {
            eprintln!("palisade: --confirm-within must be a positive number of seconds");
            return ExitCode::from(2);
        }
    }
    let op = match args.op {
        Op::Add => SetAction::Add,
        Op::Del => SetAction::Del,
    };
    let limit = match seconds("--timeout", args.timeout) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let client = Client::new(&args.control);
    let req = Request::Set {
        set: args.set.clone(),
        op,
        elements,
        confirm_within: args.confirm_within,
    };
    let reply = match call_long::<SetReply>(&client, &req, limit) {
        Ok(r) => r,
        Err(ClientError::Refused(r)) if args.json => {
            print_json(&Response::Error(r).to_value());
            return ExitCode::from(1);
        }
        Err(e) => return fail(&client, e, &format!("set {}", args.set)),
    };
    if args.json {
        print_json(&Response::Set(Box::new(reply)).to_value());
        return ExitCode::SUCCESS;
    }
    let verb = match args.op {
        Op::Add => "added",
        Op::Del => "removed",
    };
    if reply.changed == 0 {
        println!(
            "set {}: nothing to change ({} elements); generation {} stays {}",
            reply.set,
            reply.elements,
            reply.generation,
            reply.state.as_str()
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "set {}: {} element{} {verb}, {} now; file {} (sha256 {})",
        reply.set,
        reply.changed,
        if reply.changed == 1 { "" } else { "s" },
        reply.elements,
        reply.file,
        reply.file_digest
    );
    println!(
        "generation {} {} (digest {})",
        reply.generation,
        reply.state.as_str(),
        reply.digest
    );
    if let Some(d) = &reply.confirm_deadline {
        println!("reverts at {d} unless confirmed: palisade confirm --control SOCK");
    }
    ExitCode::SUCCESS
}
