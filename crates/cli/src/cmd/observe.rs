//! `palisade run --log/--log-pcap/--metrics`, `palisade log-reopen`, and the
//! logging and metrics sections of `palisade status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use palisade_engine::control::{Client, ObserveReply, ObserveReport, Request};
use palisade_observe::http::MetricsServer;
use palisade_observe::{LogConfig, Logger, Target};

/// Logging and metrics flags of `palisade run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ObserveArgs {
    /// Write a JSON line for every logged frame (rules with `log = true`, rate-limited by
    /// `[logging]`) and every control action to FILE (appended; `-`: standard output).
    /// Reopened on SIGUSR1 and `palisade log-reopen` (logrotate).
    #[arg(long, value_name = "FILE")]
    pub log: Option<String>,
    /// Write the logged frames as pcapng to FILE, each with a comment naming acl, rule and generation.
    #[arg(long, value_name = "FILE")]
    pub log_pcap: Option<PathBuf>,
    /// Serve `GET /metrics` (Prometheus text format) on ADDR, e.g. 127.0.0.1:9469. Use a
    /// loopback address unless the port is otherwise protected: the endpoint has no authentication.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log records each data-path worker may hold for the writer; more are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub log_queue: u32,
}

/// Starts the logger of `palisade run` (with no output it only counts control events).
pub fn start_logger(args: &ObserveArgs) -> Result<Arc<Logger>, String> {
    let config = LogConfig {
        json: args.log.as_deref().map(|l| match l {
            "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }),
        pcap: args.log_pcap.clone(),
        queue: args.log_queue as usize,
        ..LogConfig::default()
    };
    Logger::start(config).map(Arc::new)
}

/// Starts the metrics endpoint when `--metrics` is given.
pub fn start_metrics(
    args: &ObserveArgs,
    render: palisade_observe::http::Render,
) -> Result<Option<Arc<MetricsServer>>, String> {
    match &args.metrics {
        None => Ok(None),
        Some(addr) => MetricsServer::start(addr, render).map(|m| Some(Arc::new(m))),
    }
}

/// Arguments of `palisade log-reopen`.
#[derive(clap::Args, Debug)]
pub struct LogReopenArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
}

/// Runs `palisade log-reopen`: the daemon reopens its log files (as on SIGUSR1).
pub fn log_reopen(args: LogReopenArgs) -> ExitCode {
    let client = Client::new(&args.control);
    match client.call::<serde::de::IgnoredAny>(&Request::LogReopen) {
        Ok(_) => {
            println!("log files reopened");
            ExitCode::SUCCESS
        }
        Err(e) => crate::cmd::control::fail(&client, e, "log-reopen"),
    }
}

/// The daemon's logging and metrics figures, when it serves them.
pub fn gather(client: &Client) -> Option<ObserveReport> {
    client
        .call::<ObserveReply>(&Request::Observe)
        .ok()
        .map(|r| r.observe)
}

/// The human-readable logging, metrics and control-event lines of `palisade status`; every
/// line that reports an event starts with its time.
pub fn render(ob: Option<&ObserveReport>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let Some(ob) = ob else {
        return o;
    };
    let log = &ob.log;
    let outputs: Vec<String> = [("json", &log.json), ("pcapng", &log.pcap)]
        .iter()
        .filter_map(|(kind, v)| v.as_ref().map(|p| format!("{kind} {p}")))
        .collect();
    if outputs.is_empty() {
        let _ = writeln!(o, "log        off (no --log or --log-pcap)");
    } else {
        let _ = writeln!(
            o,
            "log        {}: {} records, {} control events, {} pcapng frames; {} suppressed (over rate), \
             {} dropped (queue full), {} write errors, {} reopens",
            outputs.join(", "),
            log.records,
            log.events,
            log.pcap_frames,
            log.suppressed,
            log.dropped_queue_full,
            log.write_errors + log.pcap_write_errors,
            log.reopens
        );
    }
    for e in [&log.last_error, &log.pcap_last_error].into_iter().flatten() {
        let _ = writeln!(o, "{}  log write error: {}", e.at, e.error);
    }
    match &ob.metrics {
        None => {
            let _ = writeln!(o, "metrics    off (no --metrics)");
        }
        Some(m) => {
            let last = match (&m.last_scrape, m.last_scrape_ms) {
                (Some(t), Some(ms)) => format!(", last at {t} ({ms:.1} ms)"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "metrics    http://{}/metrics: {} scrapes{last}",
                m.address, m.scrapes
            );
        }
    }
    for e in &ob.events {
        let uid = match e.uid {
            Some(u) => format!("uid {u}"),
            None => "by the engine".into(),
        };
        let stage = e
            .stage
            .as_ref()
            .map(|s| format!(" at stage {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "{}  {} {}{stage} ({uid}): generation {}",
            e.time, e.event, e.outcome, e.generation
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_name_outputs_figures_and_timestamped_events() {
        let ob: ObserveReport = serde_json::from_value(serde_json::json!({
            "log": {"json": "/var/log/palisade.json", "pcap": null, "records": 5, "events": 2,
                    "pcap_frames": 0, "suppressed": 95, "dropped_queue_full": 1, "write_errors": 0,
                    "pcap_write_errors": 0, "reopens": 1,
                    "last_error": {"at": "2025-01-02T03:04:05Z", "error": "--log x: No space left on device"},
                    "pcap_last_error": null},
            "metrics": {"address": "127.0.0.1:9469", "scrapes": 3, "last_scrape": "2025-01-02T03:04:06Z", "last_scrape_ms": 1.5},
            "events": [{"time": "2025-01-02T03:04:07.000001Z", "event": "reload", "outcome": "refused",
                        "uid": 1000, "generation": 4, "digest": null, "stage": "validate"},
                       {"time": "2025-01-02T03:04:08.000000Z", "event": "revert", "outcome": "ok",
                        "uid": null, "generation": 6, "digest": null, "stage": null}]
        }))
        .unwrap();
        let text = render(Some(&ob));
        assert!(
            text.contains("log        json /var/log/palisade.json: 5 records, 2 control events"),
            "{text}"
        );
        assert!(
            text.contains("95 suppressed (over rate), 1 dropped (queue full)"),
            "{text}"
        );
        assert!(
            text.contains("2025-01-02T03:04:05Z  log write error: --log x: No space left on device"),
            "{text}"
        );
        assert!(
            text.contains(
                "metrics    http://127.0.0.1:9469/metrics: 3 scrapes, last at 2025-01-02T03:04:06Z (1.5 ms)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "2025-01-02T03:04:07.000001Z  reload refused at stage validate (uid 1000): generation 4"
            ),
            "{text}"
        );
        assert!(
            text.contains("2025-01-02T03:04:08.000000Z  revert ok (by the engine): generation 6"),
            "{text}"
        );
        assert!(render(None).is_empty());
    }
}
