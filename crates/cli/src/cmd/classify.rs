//! `palisade classify RULES CAPTURE --port P [--route FROM:TO] [--json]`.
//!
//! One row per frame of the capture: `frame,verdict,stage,acl,rule`.
//! `stage` is `rescue`, `malformed`, `vlan-filter`, `pacl`, `vacl-in`,
//! `racl-in`, `racl-out`, `vacl-out`, or `none` (no ACL on the frame's
//! path); for a permit it names the last ACL that permitted the frame.
//! `acl` is empty (JSON: null) when no ACL decided; `rule` is the rule's
//! `id`, its 1-based index `#N`, `default`, a rescue rule's id, or empty
//! (JSON: null). A summary goes to stderr.
//!
//! A rule set that keeps or matches flow state is classified as the data
//! path would: the frames go in order through a flow table of `[flows] max`
//! entries (at most one per frame), so a reply after the frame that opened
//! its flow is `established`. The capture's timestamps are not read: no
//! flow expires during a run.
//!
//! Exit codes: 0 every frame classified, 1 the rule file is invalid,
//! 2 usage (unknown port or interface) or an unreadable capture.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::flow::{FlowTable, Moment, Origin, Seen, Tick, Timeouts};
use palisade_engine::policy::{Context, Decision, Policy, RuleRef, Stage, UnknownName, Verdict};

use crate::capture;
use crate::cmd::check::load_policy;

/// Arguments of `palisade classify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The rule file.
    pub rules: PathBuf,
    /// A classic pcap or pcapng capture (Ethernet link type).
    pub capture: PathBuf,
    /// The ingress port every frame arrives on.
    #[arg(long)]
    pub port: String,
    /// Route every frame between two L3 interfaces: `FROM:TO`.
    #[arg(long, value_name = "FROM:TO")]
    pub route: Option<String>,
    /// JSON lines instead of CSV.
    #[arg(long)]
    pub json: bool,
}

/// Resolves `--port` and `--route` into a context; the error is for people.
pub fn context(policy: &Policy, port: &str, route: Option<&str>) -> Result<Context, String> {
    let names = match route {
        None => None,
        Some(r) => match r.split_once(':') {
            Some(pair) => Some(pair),
            None => return Err(format!("--route \"{r}\": expected FROM:TO (two interface names)")),
        },
    };
    policy.resolve(port, names).map_err(|e| match e {
        UnknownName::Interface(name) => format!(
            "--route \"{}\": no interface \"{name}\" in the rule set (interfaces: {})",
            route.unwrap_or_default(),
            interface_names(policy)
        ),
        _ => format!(
            "--port \"{port}\": no such port in the rule set (ports: {})",
            port_names(policy)
        ),
    })
}

fn port_names(policy: &Policy) -> String {
    let names: Vec<&str> = (0..)
        .map_while(|i| policy.port_info(i))
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn interface_names(policy: &Policy) -> String {
    let names: Vec<&str> = (0..)
        .map_while(|i| policy.interface_info(i))
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A JSON string or `null` for an empty label.
pub fn json_opt(s: Option<&str>) -> serde_json::Value {
    match s {
        Some(s) if !s.is_empty() => serde_json::Value::String(s.to_owned()),
        _ => serde_json::Value::Null,
    }
}

fn row(policy: &Policy, frame: u64, d: &Decision, json: bool) -> String {
    let acl = policy.acl_name(d.acl);
    let rule = policy.rule_name(d);
    if json {
        serde_json::json!({
            "frame": frame,
            "verdict": d.verdict.as_str(),
            "stage": d.stage.as_str(),
            "acl": json_opt(acl),
            "rule": json_opt(Some(rule)),
        })
        .to_string()
    } else {
        format!(
            "{frame},{},{},{},{}",
            d.verdict.as_str(),
            d.stage.as_str(),
            csv_field(acl.unwrap_or("")),
            csv_field(rule)
        )
    }
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One frame through the flow table and the policy, as the engine's data path does it.
fn stateful(
    policy: &Policy,
    table: &FlowTable,
    timeouts: &Timeouts,
    frame: &[u8],
    key: &palisade_packet::FlowKey,
    ctx: &Context,
) -> Decision {
    let m = Moment::new(Tick(0), 1, timeouts);
    let mut seen = [Seen::default()];
    table.lookup_batch(std::slice::from_ref(key), &[frame], &m, &mut seen);
    let mut keep = false;
    let d = policy.evaluate_traced(&key.with_flow_state(seen[0].state), ctx, |ev| {
        keep |= ev.verdict == Verdict::Permit && policy.keeps_state(ev.acl, ev.rule);
    });
    let opens = keep && d.verdict == Verdict::Permit;
    if opens && table.create(&seen[0], key, &Origin::default(), &m).is_err() {
        return Decision {
            verdict: Verdict::Deny,
            stage: Stage::FlowsFull,
            acl: None,
            rule: RuleRef::None,
        };
    }
    d
}

/// Runs `palisade classify`.
pub fn run(args: Args) -> ExitCode {
    let (loaded, policy) = match load_policy(&args.rules) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let ctx = match context(&policy, &args.port, args.route.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade classify: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut write_err = None;
    if !args.json {
        if let Err(e) = writeln!(out, "frame,verdict,stage,acl,rule") {
            write_err = Some(e);
        }
    }
    let (mut permit, mut deny) = (0u64, 0u64);
    let flows = match policy.is_stateful() {
        true => {
            let frames = capture::for_each_frame(&args.capture, |_| {}).unwrap_or(0);
            let max = (frames.min(u64::from(u32::MAX)) as u32).clamp(1, loaded.ruleset.flows.max);
            Some((
                FlowTable::new(max),
                Timeouts::from(&loaded.ruleset.flows.timeouts),
            ))
        }
        false => None,
    };
    let res = capture::for_each_frame(&args.capture, |frame| {
        if write_err.is_some() {
            return;
        }
        let key = palisade_packet::parse(frame.data);
        let d = match &flows {
            None => policy.evaluate(&key, &ctx),
            Some((table, timeouts)) => stateful(&policy, table, timeouts, frame.data, &key, &ctx),
        };
        match d.verdict {
            Verdict::Permit => permit += 1,
            Verdict::Deny => deny += 1,
        }
        if let Err(e) = writeln!(out, "{}", row(&policy, frame.number, &d, args.json)) {
            write_err = Some(e);
        }
    });
    if let Err(e) = out.flush() {
        write_err.get_or_insert(e);
    }
    if let Some(e) = write_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
        eprintln!("palisade classify: cannot write output: {e}");
        return ExitCode::from(2);
    }
    match res {
        Ok(n) => {
            eprintln!("{n} frames: {permit} permit, {deny} deny");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
