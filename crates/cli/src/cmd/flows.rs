//! `palisade flows --control SOCK [--json] [--limit N]`: the running engine's flow table.
//!
//! One line per entry: the flow's key (its opening frame, as `explain` writes
//! packets), its state (the TCP phase, or `active`), age and idle time,
//! packets and bytes from the side that opened it (`out`) and from the other
//! (`in`), the generation whose rules opened it and the rule, and the
//! generation it was last checked under. The first line gives the table's
//! counters. `--json` prints the daemon's reply (`stats`, `flows`, `total`).
//!
//! Exit codes: 0 listed, 1 refused by the daemon, 2 the socket could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::control::{Client, FlowsReply, Request, FLOWS_LIMIT};

use crate::cmd::control::{fail, print_json};

/// Arguments of `palisade flows`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// List at most N entries (the counters always cover the whole table).
    #[arg(long, value_name = "N", default_value_t = FLOWS_LIMIT)]
    pub limit: usize,
}

/// Runs `palisade flows`.
pub fn run(args: Args) -> ExitCode {
    let client = Client::new(&args.control);
    let reply: FlowsReply = match client.call(&Request::Flows {
        limit: Some(args.limit),
    }) {
        Ok(r) => r,
        Err(e) => return fail(&client, e, "flows"),
    };
    if args.json {
        print_json(&reply);
        return ExitCode::SUCCESS;
    }
    print!("{}", render(&reply));
    ExitCode::SUCCESS
}

/// The human-readable listing.
fn render(r: &FlowsReply) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    match &r.stats {
        None => {
            let _ = writeln!(o, "no flow table: no generation has kept state");
            return o;
        }
        Some(s) => {
            let _ = writeln!(
                o,
                "flows: {} active of {} max; {} created, {} expired, {} refused (table full), {} cut by reloads",
                s.active, s.max, s.created, s.expired, s.refused, s.cut
            );
        }
    }
    let width = r.flows.iter().map(|f| f.key.len()).max().unwrap_or(0);
    for f in &r.flows {
        let _ = writeln!(
            o,
            "{:<width$}  {:<12} age {}s idle {}s  out {}/{}B  in {}/{}B  gen {} rule {} checked {}",
            f.key,
            f.state,
            f.age,
            f.idle,
            f.packets_out,
            f.bytes_out,
            f.packets_in,
            f.bytes_in,
            f.generation,
            f.rule,
            f.checked
        );
    }
    if r.total > r.flows.len() {
        let _ = writeln!(o, "({} more not listed: --limit)", r.total - r.flows.len());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::flow::FlowStats;
    use palisade_engine::stateful::FlowEntry;

    fn entry(key: &str) -> FlowEntry {
        FlowEntry {
            key: key.to_owned(),
            state: "established".to_owned(),
            age: 7,
            idle: 1,
            packets_out: 3,
            bytes_out: 180,
            packets_in: 2,
            bytes_in: 120,
            generation: 4,
            rule: "lan/open".to_owned(),
            checked: 5,
        }
    }

    #[test]
    fn listing_gives_counters_entries_and_what_was_left_out() {
        let stats = FlowStats {
            active: 3,
            max: 8,
            created: 9,
            expired: 5,
            refused: 1,
            cut: 0,
        };
        let r = FlowsReply {
            stats: Some(stats),
            flows: vec![
                entry("tcp 198.18.0.1:40000 -> 198.18.1.1:80"),
                entry("udp 198.18.0.1:5 -> 198.18.1.1:53"),
            ],
            total: 3,
        };
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "flows: 3 active of 8 max; 9 created, 5 expired, 1 refused (table full), 0 cut by reloads"
        );
        assert!(
            lines[1].starts_with("tcp 198.18.0.1:40000 -> 198.18.1.1:80  established  age 7s idle 1s"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("out 3/180B  in 2/120B  gen 4 rule lan/open checked 5"),
            "{text}"
        );
        // Keys are padded to one width so the columns line up.
        assert_eq!(
            lines[1].find("established"),
            lines[2].find("established"),
            "{text}"
        );
        assert_eq!(lines[3], "(1 more not listed: --limit)");
        let none = FlowsReply {
            stats: None,
            flows: vec![],
            total: 0,
        };
        assert_eq!(render(&none), "no flow table: no generation has kept state\n");
    }
}
