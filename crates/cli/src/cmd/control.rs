//! `palisade status/reload/confirm/rollback`: clients of the control socket.
//!
//! Exit codes: 0 done (for `reload`: the new generation is active), 1 refused
//! (the stage and every error are printed), 2 the socket could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use palisade_engine::control;
use serde_json::{json, Value};

/// How long a client waits for the daemon (a large rule set compiles for a while).
const TIMEOUT: Duration = Duration::from_secs(300);

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
    /// The kept generation to go back to (default: the previous rules).
    #[arg(long = "to", value_name = "GENERATION")]
    pub to: Option<u64>,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends one request to the daemon; an unreachable socket is reported and becomes exit code 2.
pub(crate) fn ask(socket: &std::path::Path, req: Value) -> Result<Value, ExitCode> {
    control::request(socket, &req, TIMEOUT).map_err(|e| {
        eprintln!("palisade: {}: cannot talk to the daemon: {e}", socket.display());
        ExitCode::from(2)
    })
}

/// Whether the daemon answered `"ok": true`.
pub(crate) fn ok(reply: &Value) -> bool {
    reply.get("ok").and_then(Value::as_bool) == Some(true)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Runs `palisade status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let reply = match ask(&args.control, json!({"cmd": "status"})) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if !ok(&reply) {
        eprintln!("palisade: {}", s(&reply, "error"));
        return ExitCode::from(1);
    }
    let mut st = reply.get("status").cloned().unwrap_or(Value::Null);
    crate::cmd::shadow::add_data_path_to_status(&args.control, &mut st);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print!("{}", render_status(&st));
    print!("{}", crate::cmd::shadow::render_data_path(&st));
    ExitCode::SUCCESS
}

/// The human-readable status.
fn render_status(st: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let state = s(st, "state");
    let _ = writeln!(
        o,
        "generation {}  state {}",
        n(st, "generation"),
        state.to_uppercase()
    );
    let _ = writeln!(o, "digest     {}", s(st, "digest"));
    let _ = writeln!(o, "source     {}", s(st, "source"));
    let _ = writeln!(o, "loaded     {}", s(st, "loaded_at"));
    if let Some(d) = st.get("confirm_deadline").and_then(Value::as_str) {
        let _ = writeln!(o, "reverts    {d} unless confirmed (palisade confirm)");
    }
    match state {
        "no-rules" => {
            let _ = writeln!(
                o,
                "NO RULES: every frame is denied until a valid rule set is loaded"
            );
        }
        "last-known-good" => {
            let _ = writeln!(
                o,
                "RUNNING ON LAST-KNOWN-GOOD: the config was missing or invalid at boot"
            );
        }
        _ => {}
    }
    let f = st.get("frames").cloned().unwrap_or(Value::Null);
    let _ = writeln!(
        o,
        "frames     {} evaluated, {} permitted, {} denied",
        n(&f, "evaluated"),
        n(&f, "permitted"),
        n(&f, "denied")
    );
    let _ = writeln!(o, "rescue     {} rule(s)", n(st, "rescue"));
    for acl in st.get("acls").and_then(Value::as_array).into_iter().flatten() {
        let c = acl.get("counters").cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            o,
            "acl {} ({} rules, default {}): {} evaluated, {} permitted, {} denied",
            s(acl, "name"),
            n(acl, "rules"),
            s(acl, "default"),
            n(&c, "evaluated"),
            n(&c, "permitted"),
            n(&c, "denied")
        );
        let bindings = acl
            .get("bindings")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if bindings.is_empty() {
            let _ = writeln!(o, "  (not bound)");
        }
        for b in &bindings {
            let dir = b
                .get("direction")
                .and_then(Value::as_str)
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  bound to {} {}{}: {} evaluated, {} permitted, {} denied",
                s(b, "kind"),
                s(b, "target"),
                dir,
                n(b, "evaluated"),
                n(b, "permitted"),
                n(b, "denied")
            );
        }
        for r in c.get("rules").and_then(Value::as_array).into_iter().flatten() {
            let _ = writeln!(o, "  rule {}: {} hits", s(r, "id"), n(r, "hits"));
        }
        let _ = writeln!(o, "  default: {} hits", n(&c, "default_hits"));
    }
    if let Some(lr) = st.get("last_reload").filter(|v| !v.is_null()) {
        if lr.get("ok").and_then(Value::as_bool) == Some(true) {
            let _ = writeln!(
                o,
                "last reload: ok at {} (generation {})",
                s(lr, "at"),
                n(lr, "generation")
            );
        } else {
            let _ = writeln!(
                o,
                "last reload: REFUSED at stage {} at {}",
                s(lr, "stage"),
                s(lr, "at")
            );
            for e in lr.get("errors").and_then(Value::as_array).into_iter().flatten() {
                let _ = writeln!(o, "  {}", e.as_str().unwrap_or_default());
            }
        }
    }
    o
}

/// Prints a reload/rollback reply; 0 when active, 1 when refused.
fn report_reload(reply: &Value, as_json: bool) -> ExitCode {
    if as_json {
        println!("{}", serde_json::to_string_pretty(reply).unwrap_or_default());
    }
    if !ok(reply) {
        if !as_json {
            match reply.get("stage").and_then(Value::as_str) {
                Some(stage) => eprintln!("palisade: reload refused at stage {stage}; nothing changed"),
                None => eprintln!("palisade: {}", s(reply, "error")),
            }
            for e in reply
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                eprintln!("{}", e.as_str().unwrap_or_default());
            }
        }
        return ExitCode::from(1);
    }
    if !as_json {
        for w in reply
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            eprintln!("{}", w.as_str().unwrap_or_default());
        }
        let state = s(reply, "state");
        println!(
            "generation {} {} (digest {})",
            n(reply, "generation"),
            state,
            s(reply, "digest")
        );
        if let Some(d) = reply.get("confirm_deadline").and_then(Value::as_str) {
            println!("reverts at {d} unless confirmed: palisade confirm --control SOCK");
        }
    }
    ExitCode::SUCCESS
}

/// Runs `palisade reload`.
pub fn reload(args: ReloadArgs) -> ExitCode {
    if let Some(candidate) = &args.shadow {
        return crate::cmd::shadow::client_shadow(&args.control, candidate, args.json);
    }
    let promoted = match args.promote {
        true => match crate::cmd::shadow::candidate_path(&args.control) {
            Ok(p) => Some(p),
            Err(code) => return code,
        },
        false => None,
    };
    let mut req = json!({"cmd": "reload", "allow_rescue_change": args.allow_rescue_change});
    if let Some(rules) = args.rules.as_ref().or(promoted.as_ref()) {
        // The daemon reads the file itself: send a path it can resolve.
        let path = std::path::absolute(rules).unwrap_or_else(|_| rules.clone());
        req["path"] = json!(path.display().to_string());
    }
    if let Some(secs) = args.confirm_within {
        if !(secs.is_finite() && secs > 0.0) {
            eprintln!("palisade: --confirm-within must be a positive number of seconds");
            return ExitCode::from(2);
        }
        req["confirm_within"] = json!(secs);
    }
    match ask(&args.control, req) {
        Ok(reply) => {
            if promoted.is_some() && ok(&reply) {
                crate::cmd::shadow::clear(&args.control);
            }
            report_reload(&reply, args.json)
        }
        Err(code) => code,
    }
}

/// Runs `palisade confirm`.
pub fn confirm(args: ConfirmArgs) -> ExitCode {
    match ask(&args.control, json!({"cmd": "confirm"})) {
        Ok(reply) if ok(&reply) => {
            println!("generation {} confirmed", n(&reply, "generation"));
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            eprintln!("palisade: {}", s(&reply, "error"));
            ExitCode::from(1)
        }
        Err(code) => code,
    }
}

/// Runs `palisade rollback`.
pub fn rollback(args: RollbackArgs) -> ExitCode {
    let req = match args.to {
        Some(g) => json!({"cmd": "rollback", "to": g}),
        None => json!({"cmd": "rollback"}),
    };
    match ask(&args.control, req) {
        Ok(reply) => report_reload(&reply, args.json),
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_names_state_counters_and_refusals() {
        let st = json!({
            "generation": 3, "state": "last-known-good", "digest": "ab", "source": "r.toml",
            "frames": {"evaluated": 5, "permitted": 3, "denied": 2},
            "acls": [{"name": "in", "rules": 1, "default": "deny",
                      "bindings": [{"kind": "routed", "target": "wan", "direction": "in", "evaluated": 5}],
                      "counters": {"evaluated": 5, "rules": [{"id": "dns", "hits": 3}], "default_hits": 2}}],
            "last_reload": {"ok": false, "stage": "validate", "errors": ["r.toml:3:1: bad"], "at": "t"}
        });
        let text = render_status(&st);
        assert!(text.contains("LAST-KNOWN-GOOD"), "{text}");
        assert!(text.contains("bound to routed wan in: 5 evaluated"), "{text}");
        assert!(text.contains("rule dns: 3 hits"), "{text}");
        assert!(text.contains("REFUSED at stage validate"), "{text}");
        assert!(text.contains("r.toml:3:1: bad"), "{text}");
    }
}
