//! The replies of the logger's and the metrics endpoint's requests
//! (`log-reopen`, `observe`), served by the `palisade-observe` crate's
//! extension: what `palisade status` shows about logging, metrics and the
//! last control events.

use serde::{Deserialize, Serialize};

/// An output's last error and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedError {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What failed, naming the file.
    pub error: String,
}

/// The logger's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReport {
    /// The JSON-lines output (`-`: standard output), if any.
    pub json: Option<String>,
    /// The pcapng output, if any.
    pub pcap: Option<String>,
    /// Frame records written to the JSON output.
    pub records: u64,
    /// Control events written to the JSON output.
    pub events: u64,
    /// Frames written to the pcapng output.
    pub pcap_frames: u64,
    /// Frames of logged rules not logged: over their rule's rate.
    pub suppressed: u64,
    /// Records dropped because a worker's queue was full (the writer was behind).
    pub dropped_queue_full: u64,
    /// Records that could not be written to the JSON output.
    pub write_errors: u64,
    /// Frames that could not be written to the pcapng output.
    pub pcap_write_errors: u64,
    /// The JSON output's last error.
    pub last_error: Option<TimedError>,
    /// The pcapng output's last error.
    pub pcap_last_error: Option<TimedError>,
    /// Reopens asked for (SIGUSR1, `log-reopen`).
    pub reopens: u64,
}

/// The metrics endpoint's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// The address it listens on.
    pub address: String,
    /// `GET /metrics` answered.
    pub scrapes: u64,
    /// When the last scrape was answered (RFC 3339, UTC).
    pub last_scrape: Option<String>,
    /// How long rendering the last scrape took, milliseconds.
    pub last_scrape_ms: Option<f64>,
}

/// One control event, as status lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// When (RFC 3339, UTC, microseconds).
    pub time: String,
    /// `reload`, `confirm`, `rollback`, `revert`.
    pub event: String,
    /// `ok` or `refused`.
    pub outcome: String,
    /// The client's uid (`null`: the engine itself).
    pub uid: Option<u32>,
    /// The generation active after it.
    pub generation: u64,
    /// Its digest.
    pub digest: Option<String>,
    /// For a refused one: the stage that refused it.
    pub stage: Option<String>,
    /// For a refused one: its causes.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Logging, metrics and the last control events of a daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserveReport {
    /// The logger.
    pub log: LogReport,
    /// The metrics endpoint (`null` without `--metrics`).
    pub metrics: Option<MetricsReport>,
    /// The last control events, oldest first.
    pub events: Vec<EventReport>,
}

/// The reply to `observe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserveReply {
    /// The report.
    pub observe: ObserveReport,
}
