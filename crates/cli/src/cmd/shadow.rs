//! The client side of the data path's control requests: `palisade reload
//! --shadow/--promote` and the `data_path` and `shadow` sections of
//! `palisade status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use palisade_engine::control::{
    Client, ClientError, DataPathReply, DataPathReport, Request, Response, ShadowReply, ShadowReport,
};
use palisade_engine::status::Status;
use serde::Serialize;

use crate::cmd::control::{fail, print_json};

/// How long `status` waits for the data-path and shadow sections.
const SECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// `palisade status --json`: the engine's status plus the data path's sections.
#[derive(Debug, Serialize)]
pub struct FullStatus {
    /// The engine's status.
    #[serde(flatten)]
    pub status: Status,
    /// The data path's mode, interfaces and counters, when the daemon has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_path: Option<DataPathReport>,
    /// The shadow candidate's report, when one is evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowReport>,
    /// Logging, metrics and the last control events, when the daemon serves them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observe: Option<palisade_engine::control::ObserveReport>,
}

impl FullStatus {
    /// Adds `data_path`, `shadow` and `observe` to `status` when the daemon has them.
    pub fn gather(client: &Client, status: Status) -> FullStatus {
        let client = client.clone().with_timeout(SECTION_TIMEOUT);
        let data_path = client
            .call::<DataPathReply>(&Request::DataPath)
            .ok()
            .map(|r| r.data_path);
        let shadow = client
            .call::<ShadowReply>(&Request::ShadowStatus)
            .ok()
            .and_then(|r| r.shadow);
        let observe = crate::cmd::observe::gather(&client);
        FullStatus {
            status,
            data_path,
            shadow,
            observe,
        }
    }
}

/// `palisade reload --shadow RULES`: load a candidate beside the active generation.
pub fn client_shadow(client: &Client, rules: &Path, as_json: bool) -> ExitCode {
    let path: PathBuf = std::path::absolute(rules).unwrap_or_else(|_| rules.to_path_buf());
    let req = Request::Shadow {
        path: path.display().to_string(),
    };
    match client.call::<ShadowReply>(&req) {
        Ok(reply) => {
            if as_json {
                print_json(&Response::Shadow(Box::new(reply)).to_value());
            } else {
                println!(
                    "shadow: {} (digest {}) evaluated beside the active generation, not enforced",
                    path.display(),
                    reply.shadow.as_ref().map_or("-", |s| s.digest.as_str())
                );
            }
            ExitCode::SUCCESS
        }
        Err(ClientError::Refused(r)) => {
            if as_json {
                print_json(&Response::Error(r).to_value());
            } else {
                eprintln!("palisade: shadow {}: {}", path.display(), r.error);
                if let Some(stage) = r.stage {
                    eprintln!("stage: {stage}");
                }
                for e in &r.errors {
                    eprintln!("{e}");
                }
            }
            ExitCode::from(1)
        }
        Err(e) => fail(client, e, "shadow"),
    }
}

/// `palisade reload --promote`: the candidate's file, if the daemon has one.
pub fn candidate_path(client: &Client) -> Result<PathBuf, ExitCode> {
    match client.call::<ShadowReply>(&Request::ShadowStatus) {
        Ok(ShadowReply { shadow: Some(sh) }) => Ok(PathBuf::from(sh.source)),
        Ok(ShadowReply { shadow: None }) | Err(ClientError::Refused(_)) => {
            eprintln!(
                "palisade: --promote: the daemon has no shadow candidate (palisade reload --shadow RULES)"
            );
            Err(ExitCode::from(1))
        }
        Err(e) => Err(fail(client, e, "promote")),
    }
}

/// After a successful `--promote`: stop evaluating the candidate.
pub fn clear(client: &Client) {
    let _ = client.call::<serde::de::IgnoredAny>(&Request::ShadowClear);
}

/// The human-readable data-path and shadow sections of `palisade status`.
pub fn render_data_path(full: &FullStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if let Some(dp) = &full.data_path {
        let _ = writeln!(o, "data path  {} ({} workers)", dp.mode, dp.workers);
        for s in &dp.interfaces {
            let _ = writeln!(
                o,
                "  {}: rx {} permitted {} denied {} forwarded {} tx_errors {} oversize {}",
                s.interface, s.rx, s.permitted, s.denied, s.forwarded, s.tx_errors, s.oversize
            );
        }
    }
    if let Some(sh) = &full.shadow {
        o.push_str(&render_shadow(sh));
    }
    o
}

/// The human-readable shadow section of `palisade status`.
fn render_shadow(sh: &ShadowReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "shadow     {} ({}): {} of {} frames decided differently{}",
        sh.source,
        sh.digest.get(..12).unwrap_or(&sh.digest),
        sh.differ,
        sh.frames,
        if sh.promoted { " [promoted]" } else { "" }
    );
    if sh.flows_checked > 0 {
        let _ = writeln!(
            o,
            "  flows it would cut: {} of the {} live when it was loaded",
            sh.flows_cut, sh.flows_checked
        );
    }
    for acl in &sh.acls {
        for r in acl.rules.iter().filter(|r| r.differ > 0) {
            let _ = writeln!(o, "  {} / {}: {}", acl.name, r.id, r.differ);
        }
        if acl.default_differ > 0 {
            let _ = writeln!(o, "  {} / default: {}", acl.name, acl.default_differ);
        }
    }
    for ex in &sh.examples {
        let _ = writeln!(
            o,
            "  e.g. {} on {}: active {}, candidate {}",
            ex.packet, ex.interface, ex.active, ex.candidate
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_section_says_how_many_live_flows_the_candidate_would_cut() {
        let mut sh = ShadowReport {
            source: "next.toml".into(),
            digest: "0123456789abcdef".into(),
            promoted: false,
            frames: 10,
            differ: 2,
            other_differ: 0,
            flows_checked: 0,
            flows_cut: 0,
            acls: Vec::new(),
            examples: Vec::new(),
        };
        let text = render_shadow(&sh);
        assert_eq!(
            text,
            "shadow     next.toml (0123456789ab): 2 of 10 frames decided differently\n"
        );
        (sh.flows_checked, sh.flows_cut) = (5, 3);
        let text = render_shadow(&sh);
        assert!(
            text.contains("\n  flows it would cut: 3 of the 5 live when it was loaded\n"),
            "{text}"
        );
    }
}
