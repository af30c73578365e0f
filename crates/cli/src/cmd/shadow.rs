//! The client side of the data path's control requests: `palisade reload
//! --shadow/--promote` and the `data_path` and `shadow` sections of
//! `palisade status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use palisade_engine::control;
use serde_json::{json, Value};

use crate::cmd::control::{ask, ok};

/// How long `status` waits for the shadow section.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `palisade reload --shadow RULES`: load a candidate beside the active generation.
pub fn client_shadow(socket: &Path, rules: &Path, as_json: bool) -> ExitCode {
    let path: PathBuf = std::path::absolute(rules).unwrap_or_else(|_| rules.to_path_buf());
    let reply = match ask(
        socket,
        json!({"cmd": "shadow", "path": path.display().to_string()}),
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
    }
    if ok(&reply) {
        if !as_json {
            println!(
                "shadow: {} (digest {}) evaluated beside the active generation, not enforced",
                path.display(),
                reply["shadow"]["digest"].as_str().unwrap_or("-")
            );
        }
        return ExitCode::SUCCESS;
    }
    if !as_json {
        let err = reply.get("error").and_then(Value::as_str).unwrap_or("refused");
        eprintln!("palisade: shadow {}: {err}", path.display());
        if let Some(stage) = reply.get("stage").and_then(Value::as_str) {
            eprintln!("stage: {stage}");
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
    if reply.get("stage").is_some() || err_is_refusal(&reply) {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

fn err_is_refusal(reply: &Value) -> bool {
    reply.get("error").and_then(Value::as_str) == Some("candidate refused")
}

/// `palisade reload --promote`: the candidate's file, if the daemon has one.
pub fn candidate_path(socket: &Path) -> Result<PathBuf, ExitCode> {
    let reply = ask(socket, json!({"cmd": "shadow-status"}))?;
    match reply
        .get("shadow")
        .and_then(|s| s.get("source"))
        .and_then(Value::as_str)
    {
        Some(p) if ok(&reply) => Ok(PathBuf::from(p)),
        _ => {
            eprintln!(
                "palisade: --promote: the daemon has no shadow candidate (palisade reload --shadow RULES)"
            );
            Err(ExitCode::from(1))
        }
    }
}

/// After a successful `--promote`: stop evaluating the candidate.
pub fn clear(socket: &Path) {
    let _ = ask(socket, json!({"cmd": "shadow-clear"}));
}

/// Adds `shadow` to a status object when the daemon evaluates a candidate.
pub fn add_to_status(socket: &Path, status: &mut Value) {
    if let Ok(reply) = control::request(socket, &json!({"cmd": "shadow-status"}), TIMEOUT) {
        if let (true, Some(sh), Some(obj)) = (ok(&reply), reply.get("shadow"), status.as_object_mut()) {
            if !sh.is_null() {
                obj.insert("shadow".into(), sh.clone());
            }
        }
    }
}

/// The human-readable shadow section of `palisade status`.
pub fn render(status: &Value) -> String {
    use std::fmt::Write as _;
    let Some(sh) = status.get("shadow") else {
        return String::new();
    };
    let mut o = String::new();
    let n = |k: &str| sh.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        o,
        "shadow     {} ({}): {} of {} frames decided differently{}",
        sh["source"].as_str().unwrap_or("-"),
        sh["digest"].as_str().map_or("-", |d| d.get(..12).unwrap_or(d)),
        n("differ"),
        n("frames"),
        if sh["promoted"] == true { " [promoted]" } else { "" }
    );
    for acl in sh["acls"].as_array().into_iter().flatten() {
        for r in acl["rules"].as_array().into_iter().flatten() {
            if r["differ"].as_u64().unwrap_or(0) > 0 {
                let _ = writeln!(
                    o,
                    "  {} / {}: {}",
                    acl["name"].as_str().unwrap_or("-"),
                    r["id"].as_str().unwrap_or("-"),
                    r["differ"]
                );
            }
        }
        if acl["default_differ"].as_u64().unwrap_or(0) > 0 {
            let _ = writeln!(
                o,
                "  {} / default: {}",
                acl["name"].as_str().unwrap_or("-"),
                acl["default_differ"]
            );
        }
    }
    for ex in sh["examples"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  e.g. {} on {}: active {}, candidate {}",
            ex["packet"].as_str().unwrap_or("-"),
            ex["interface"].as_str().unwrap_or("-"),
            ex["active"].as_str().unwrap_or("-"),
            ex["candidate"].as_str().unwrap_or("-")
        );
    }
    o
}

/// Adds `data_path` and `shadow` to a status object when the daemon has them.
pub fn add_data_path_to_status(socket: &std::path::Path, status: &mut serde_json::Value) {
    let req = serde_json::json!({"cmd": "data-path"});
    if let Ok(reply) = palisade_engine::control::request(socket, &req, std::time::Duration::from_secs(30)) {
        if let (Some(dp), Some(obj)) = (reply.get("data_path"), status.as_object_mut()) {
            obj.insert("data_path".into(), dp.clone());
        }
    }
    add_to_status(socket, status);
}

/// The human-readable data-path and shadow sections of `palisade status`.
pub fn render_data_path(status: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if let Some(dp) = status.get("data_path") {
        let _ = writeln!(
            o,
            "data path  {} ({} workers)",
            dp["mode"].as_str().unwrap_or("-"),
            dp["workers"]
        );
        for s in dp["interfaces"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {}: rx {} permitted {} denied {} forwarded {} tx_errors {} oversize {}",
                s["interface"].as_str().unwrap_or("-"),
                s["rx"],
                s["permitted"],
                s["denied"],
                s["forwarded"],
                s["tx_errors"],
                s["oversize"]
            );
        }
    }
    o.push_str(&render(status));
    o
}
