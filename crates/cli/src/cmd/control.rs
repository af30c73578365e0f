//! `palisade status/reload/confirm/rollback`: clients of the control socket.
//!
//! Exit codes: 0 done (for `reload`: the new generation is active), 1 refused
//! (the stage and every error are printed), 2 the socket could not be reached,
//! 3 `--timeout` passed while the daemon was still working (the reload goes
//! on; the message says where it stands).
//!
//! `reload` and `rollback` wait as long as the daemon works on them (a huge
//! rule set compiles for minutes), printing its progress to stderr every few
//! seconds; `--timeout SECS` gives up earlier.

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::control::{Client, ClientError, ConfirmReply, GenerationReply, Request};
use palisade_engine::status::Status;
use palisade_engine::GenerationState;

/// Arguments of `palisade status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `palisade reload`.
#[derive(clap::Args, Debug)]
pub struct ReloadArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// The rule file to load (default: the daemon's --config).
    #[arg(value_name = "RULES")]
    pub rules: Option<PathBuf>,
    /// Revert by itself unless `palisade confirm` follows within SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub confirm_within: Option<f64>,
    /// Allow the reload to change or remove [[rescue]] rules.
    #[arg(long)]
    pub allow_rescue_change: bool,
    /// Evaluate RULES beside the active generation on live traffic without enforcing it.
    #[arg(long, value_name = "RULES", conflicts_with_all = ["rules", "confirm_within", "promote"])]
    pub shadow: Option<PathBuf>,
    /// Make the shadow candidate active through the normal reload pipeline.
    #[arg(long, conflicts_with = "rules")]
    pub promote: bool,
    /// Give up waiting after SECS seconds (the reload goes on in the daemon;
    /// default: wait as long as the daemon works on it).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `palisade confirm`.
#[derive(clap::Args, Debug)]
pub struct ConfirmArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
}

/// Arguments of `palisade rollback`.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// The kept generation to go back to (default: the one that was active
    /// and confirmed before the current one; reverted ones are skipped).
    #[arg(long = "to", value_name = "GENERATION")]
    pub to: Option<u64>,
    /// Revert by itself unless `palisade confirm` follows within SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub confirm_within: Option<f64>,
    /// Give up waiting after SECS seconds (the rollback goes on in the daemon).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reports a failed call: a refusal (exit 1, with its stage and every error)
/// or an unreachable daemon (exit 2).
pub(crate) fn fail(client: &Client, e: ClientError, what: &str) -> ExitCode {
    match e {
        ClientError::Refused(r) => {
            match r.stage {
                Some(stage) => eprintln!("palisade: {what} refused at stage {stage}; nothing changed"),
                None => eprintln!("palisade: {}", r.error),
            }
            for e in &r.errors {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
        e @ ClientError::GaveUp { .. } => {
            eprintln!("palisade: {what}: {e}");
            ExitCode::from(3)
        }
        other => {
            eprintln!("palisade: {}: {other}", client.socket().display());
            ExitCode::from(2)
        }
    }
}

/// A positive number of seconds given for `flag`, or the message saying it is not.
pub(crate) fn seconds(flag: &str, secs: Option<f64>) -> Result<Option<std::time::Duration>, ExitCode> {
    match secs {
        None => Ok(None),
        Some(s) => match std::time::Duration::try_from_secs_f64(s) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => {
                eprintln!("palisade: {flag} must be a positive number of seconds");
                Err(ExitCode::from(2))
            }
        },
    }
}

/// Sends a reload, rollback or set change and waits as long as the daemon
/// works on it, telling the operator what it is doing when it takes a while.
pub(crate) fn call_long<T: serde::de::DeserializeOwned>(
    client: &Client,
    req: &Request,
    limit: Option<std::time::Duration>,
) -> Result<T, ClientError> {
    let mut shown: Option<(palisade_engine::ReloadStage, u64)> = None;
    client.call_long::<T>(req, limit, |p, waited| {
        let secs = waited.as_secs();
        // From the first look (after a second), then on every new stage and every 10 s.
        let due = match shown {
            None => true,
            Some((stage, at)) => stage != p.stage || secs >= at + 10,
        };
        if due {
            eprintln!(
                "palisade: the daemon is working on {}: stage {} ({secs} s)",
                p.source, p.stage
            );
            shown = Some((p.stage, secs));
        }
    })
}

/// Prints a value as pretty JSON.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs `palisade status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let client = Client::new(&args.control);
    let st = match client.status() {
        Ok(st) => st,
        Err(e) => return fail(&client, e, "status"),
    };
    let full = crate::cmd::shadow::FullStatus::gather(&client, st);
    if args.json {
        print_json(&full);
        return ExitCode::SUCCESS;
    }
    print!("{}", render_status(&full.status));
    print!("{}", crate::cmd::shadow::render_data_path(&full));
    print!("{}", crate::cmd::observe::render(full.observe.as_ref()));
    ExitCode::SUCCESS
}

/// The human-readable status.
fn render_status(st: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "generation {}  state {}",
        st.generation,
        st.state.as_str().to_uppercase()
    );
    let _ = writeln!(o, "digest     {}", st.digest.as_deref().unwrap_or("-"));
    let _ = writeln!(o, "source     {}", st.source.as_deref().unwrap_or("-"));
    let _ = writeln!(o, "loaded     {}", st.loaded_at);
    if let Some(d) = &st.confirm_deadline {
        let _ = writeln!(o, "reverts    {d} unless confirmed (palisade confirm)");
    }
    match st.state {
        GenerationState::NoRules => {
            let _ = writeln!(
                o,
                "NO RULES: every frame is denied until a valid rule set is loaded"
            );
        }
        GenerationState::LastKnownGood => {
            let _ = writeln!(
                o,
                "RUNNING ON LAST-KNOWN-GOOD: a newer generation or the config asked for could not be used at boot"
            );
        }
        _ => {}
    }
    if !st.confirm_persisted {
        let _ = writeln!(
            o,
            "CONFIRMATION NOT PERSISTED: {}; a restart now would boot the generation before it (palisade confirm retries)",
            st.confirm_error.as_deref().unwrap_or("the state directory refused the write")
        );
    }
    let c = &st.config;
    if c.differs {
        match (&c.digest, &c.error) {
            (Some(d), _) => {
                let _ = writeln!(
                    o,
                    "config     {} (digest {d}) DIFFERS from the running rules and is not applied; \
                     apply it with: palisade reload --control SOCK (no file), or SIGHUP",
                    c.path
                );
            }
            (None, e) => {
                let _ = writeln!(
                    o,
                    "config     {}: {}",
                    c.path,
                    e.as_deref().unwrap_or("cannot be read")
                );
            }
        }
    } else if !c.path.is_empty() {
        let _ = writeln!(o, "config     {} (the running rules)", c.path);
    }
    if let Some(p) = &st.reloading {
        let _ = writeln!(
            o,
            "reloading  {}: stage {} (since {})",
            p.source,
            p.stage,
            palisade_engine::status::rfc3339(p.started_at)
        );
    }
    let f = &st.frames;
    let _ = writeln!(
        o,
        "frames     {} evaluated, {} permitted, {} denied",
        f.evaluated, f.permitted, f.denied
    );
    if let Some(fl) = &st.flows {
        let _ = writeln!(
            o,
            "flows      {} active of {} max; {} created, {} expired, {} refused (table full), {} cut by reloads",
            fl.active, fl.max, fl.created, fl.expired, fl.refused, fl.cut
        );
        let _ = writeln!(
            o,
            "           frames: {} invalid, {} denied at flows-full",
            fl.invalid_frames, fl.full_frames
        );
    }
    let _ = writeln!(o, "rescue     {} rule(s)", st.rescue);
    for set in &st.sets {
        let file = match (&set.file, &set.file_digest) {
            (Some(f), Some(d)) => format!(", file {f} (sha256 {d})"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "set {} ({}): {} elements{file}",
            set.name, set.kind, set.elements
        );
    }
    for acl in &st.acls {
        let c = &acl.counters;
        let _ = writeln!(
            o,
            "acl {} ({} rules, default {}): {} evaluated, {} permitted, {} denied",
            acl.name, acl.rules, acl.default, c.evaluated, c.permitted, c.denied
        );
        if acl.bindings.is_empty() {
            let _ = writeln!(o, "  (not bound)");
        }
        for b in &acl.bindings {
            let dir = b
                .direction
                .map(|d| format!(" {}", d.as_str()))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  bound to {} {}{}: {} evaluated, {} permitted, {} denied",
                b.kind.as_str(),
                b.target,
                dir,
                b.counts.evaluated,
                b.counts.permitted,
                b.counts.denied
            );
        }
        for r in &c.rules {
            let _ = writeln!(o, "  rule {}: {} hits", r.id, r.hits);
        }
        let _ = writeln!(o, "  default: {} hits", c.default_hits);
    }
    let decided: Vec<String> = st
        .stages
        .iter()
        .filter(|s| s.permitted + s.denied > 0)
        .map(|s| format!("{} {}/{}", s.stage, s.permitted, s.denied))
        .collect();
    if !decided.is_empty() {
        let _ = writeln!(o, "stages     {} (permitted/denied)", decided.join(", "));
    }
    if !st.kept.is_empty() {
        let _ = writeln!(o, "kept generations (state directory):");
        for k in &st.kept {
            let _ = writeln!(
                o,
                "  {:>6}  {:<11}  {}  {}  {}",
                k.generation,
                k.outcome.as_str(),
                k.time,
                k.digest.get(..16).unwrap_or(&k.digest),
                k.source
            );
        }
    }
    for r in &st.kept_refused {
        let _ = writeln!(o, "  REFUSED  {r}");
    }
    if let Some(lr) = &st.last_reload {
        if lr.ok {
            let _ = writeln!(
                o,
                "last reload: ok at {} (generation {})",
                lr.at,
                lr.generation.unwrap_or(0)
            );
        } else {
            let _ = writeln!(
                o,
                "last reload: REFUSED at stage {} at {}",
                lr.stage.map_or("-", |s| s.as_str()),
                lr.at
            );
            for e in &lr.errors {
                let _ = writeln!(o, "  {e}");
            }
        }
    }
    o
}

/// Prints a reload/rollback outcome; 0 when active, 1 when refused, 2 unreachable.
fn report_reload(client: &Client, res: Result<GenerationReply, ClientError>, as_json: bool) -> ExitCode {
    let reply = match res {
        Ok(r) => r,
        Err(ClientError::Refused(r)) if as_json => {
            print_json(&palisade_engine::control::Response::Error(r).to_value());
            return ExitCode::from(1);
        }
        Err(e) => return fail(client, e, "reload"),
    };
    if as_json {
        print_json(&palisade_engine::control::Response::Generation(reply).to_value());
        return ExitCode::SUCCESS;
    }
    for w in &reply.warnings {
        eprintln!("{w}");
    }
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

/// Runs `palisade reload`.
pub fn reload(args: ReloadArgs) -> ExitCode {
    let client = Client::new(&args.control);
    if let Some(candidate) = &args.shadow {
        return crate::cmd::shadow::client_shadow(&client, candidate, args.json);
    }
    let promoted = match args.promote {
        true => match crate::cmd::shadow::candidate_path(&client) {
            Ok(p) => Some(p),
            Err(code) => return code,
        },
        false => None,
    };
    if let Err(code) = seconds("--confirm-within", args.confirm_within) {
        return code;
    }
    let limit = match seconds("--timeout", args.timeout) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // The daemon reads the file itself: send a path it can resolve.
    let path = args.rules.as_ref().or(promoted.as_ref()).map(|rules| {
        std::path::absolute(rules)
            .unwrap_or_else(|_| rules.clone())
            .display()
            .to_string()
    });
    let req = Request::Reload {
        path,
        text: None,
        name: None,
        confirm_within: args.confirm_within,
        allow_rescue_change: args.allow_rescue_change,
    };
    let res = call_long::<GenerationReply>(&client, &req, limit);
    if promoted.is_some() && res.is_ok() {
        crate::cmd::shadow::clear(&client);
    }
    report_reload(&client, res, args.json)
}

/// Runs `palisade confirm`.
pub fn confirm(args: ConfirmArgs) -> ExitCode {
    let client = Client::new(&args.control);
    match client.call::<ConfirmReply>(&Request::Confirm) {
        Ok(reply) => {
            println!("generation {} confirmed", reply.generation);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&client, e, "confirm"),
    }
}

/// Runs `palisade rollback`.
pub fn rollback(args: RollbackArgs) -> ExitCode {
    let client = Client::new(&args.control);
    if let Err(code) = seconds("--confirm-within", args.confirm_within) {
        return code;
    }
    let limit = match seconds("--timeout", args.timeout) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let req = Request::Rollback {
        to: args.to,
        confirm_within: args.confirm_within,
    };
    let res = call_long::<GenerationReply>(&client, &req, limit);
    report_reload(&client, res, args.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_names_state_counters_and_refusals() {
        let st: Status = serde_json::from_value(serde_json::json!({
            "generation": 3, "digest": "ab", "source": "r.toml", "state": "last-known-good",
            "loaded_at": "t0", "confirm_deadline": null, "engine_version": "0.1.0",
            "rescue": 0, "rescue_hits": [],
            "frames": {"evaluated": 5, "permitted": 3, "denied": 2},
            "acls": [{"name": "in", "rules": 1, "default": "deny",
                      "bindings": [{"kind": "routed", "target": "wan", "direction": "in",
                                    "evaluated": 5, "permitted": 3, "denied": 2}],
                      "counters": {"evaluated": 5, "permitted": 3, "denied": 2,
                                   "rules": [{"id": "dns", "hits": 3}], "default_hits": 2}}],
            "last_reload": {"ok": false, "stage": "validate", "errors": ["r.toml:3:1: bad"], "at": "t",
                            "generation": null},
            "kept": []
        }))
        .unwrap();
        let text = render_status(&st);
        assert!(text.contains("LAST-KNOWN-GOOD"), "{text}");
        assert!(text.contains("bound to routed wan in: 5 evaluated"), "{text}");
        assert!(text.contains("rule dns: 3 hits"), "{text}");
        assert!(text.contains("REFUSED at stage validate"), "{text}");
        assert!(text.contains("r.toml:3:1: bad"), "{text}");
    }

    #[test]
    fn status_text_lists_kept_generations_and_says_when_the_config_differs() {
        let st: Status = serde_json::from_value(serde_json::json!({
            "generation": 6, "digest": "cd", "source": "pushed.toml", "state": "active",
            "loaded_at": "t0", "confirm_deadline": null, "engine_version": "0.1.0",
            "rescue": 0, "rescue_hits": [], "frames": {"evaluated": 0, "permitted": 0, "denied": 0},
            "acls": [], "last_reload": null,
            "confirm_persisted": false, "confirm_error": "generation 6: No space left on device",
            "config": {"path": "/etc/palisade/rules.toml", "digest": "ab", "error": null, "differs": true},
            "reloading": {"stage": "compile", "source": "big.toml", "started_at": 0},
            "kept": [{"generation": 5, "digest": "ab", "source": "/etc/palisade/rules.toml",
                      "time": "2026-01-01T00:00:00Z", "outcome": "confirmed"},
                     {"generation": 6, "digest": "cd", "source": "pushed.toml",
                      "time": "2026-01-01T00:01:00Z", "outcome": "reverted"}],
            "kept_refused": ["generation 9: not a regular file: refused"]
        }))
        .unwrap();
        let text = render_status(&st);
        assert!(text.contains("DIFFERS from the running rules"), "{text}");
        assert!(
            text.contains("palisade reload --control SOCK (no file), or SIGHUP"),
            "{text}"
        );
        assert!(text.contains("CONFIRMATION NOT PERSISTED"), "{text}");
        assert!(text.contains("reloading  big.toml: stage compile"), "{text}");
        assert!(
            text.contains("reverted") && text.contains("pushed.toml"),
            "{text}"
        );
        assert!(text.contains("REFUSED  generation 9"), "{text}");
    }
}
