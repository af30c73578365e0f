//! The logger's and the metrics endpoint's requests on the engine's control
//! socket: `log-reopen` (reopen the log files, as SIGUSR1 does) and
//! `observe` (the figures `palisade status` shows: records written,
//! suppressed and dropped, the last write error, scrapes, and the last
//! control events with their times).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use palisade_engine::control::{
    EventReport, Extension, LogReport, MetricsReport, ObserveReply, ObserveReport, Request, Response,
    TimedError,
};

use crate::http::MetricsServer;
use crate::logger::{Logger, Target};
use crate::record::rfc3339_micros;

/// How long `log-reopen` waits for the writer.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

fn at(secs: u64) -> String {
    palisade_engine::status::rfc3339(secs)
}

/// The figures of the logger and the metrics endpoint (`palisade status` shows them under `observe`).
///
/// ```
/// let logger = palisade_observe::Logger::start(Default::default()).unwrap();
/// let r = palisade_observe::service::report(&logger, None);
/// assert_eq!((r.log.json, r.metrics), (None, None));
/// ```
pub fn report(logger: &Logger, metrics: Option<&MetricsServer>) -> ObserveReport {
    let s = logger.stats();
    let err = |e: &Option<(u64, String)>| {
        e.as_ref().map(|(t, m)| TimedError {
            at: at(*t),
            error: m.clone(),
        })
    };
    let metrics = metrics.map(|m| {
        let st = m.stats();
        let last = *st.last.lock().unwrap_or_else(|e| e.into_inner());
        MetricsReport {
            address: m.local_addr().to_string(),
            scrapes: st.scrapes.load(Ordering::Relaxed),
            last_scrape: last.map(|(t, _)| at(t)),
            last_scrape_ms: last.map(|(_, us)| us as f64 / 1000.0),
        }
    });
    ObserveReport {
        log: LogReport {
            json: s.json.as_ref().map(|t| match t {
                Target::Stdout => "-".to_string(),
                Target::File(p) => p.display().to_string(),
            }),
            pcap: s.pcap.as_ref().map(|p| p.display().to_string()),
            records: s.json_frames,
            events: s.json_events,
            pcap_frames: s.pcap_frames,
            suppressed: s.suppressed_total(),
            dropped_queue_full: s.queue_full,
            write_errors: s.json_errors,
            pcap_write_errors: s.pcap_errors,
            last_error: err(&s.json_last_error),
            pcap_last_error: err(&s.pcap_last_error),
            reopens: s.reopens,
        },
        metrics,
        events: s
            .recent_events
            .iter()
            .map(|e| EventReport {
                time: rfc3339_micros(
                    e.time
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                ),
                event: e.event.as_str().into(),
                outcome: e.outcome.as_str().into(),
                uid: e.uid,
                generation: e.generation,
                digest: e.digest.map(|d| d.to_string()),
                stage: e.stage.map(str::to_owned),
                errors: e.errors.clone(),
            })
            .collect(),
    }
}

/// The control-socket extension answering `log-reopen` and `observe`; other requests
/// are left to `next` (another extension, e.g. the data path's), if any.
pub fn extension(
    logger: Arc<Logger>,
    metrics: Option<Arc<MetricsServer>>,
    next: Option<Extension>,
) -> Extension {
    Arc::new(move |engine, req| match req {
        Request::LogReopen => Some(match logger.reopen(REOPEN_WAIT) {
            Ok(()) => Response::Done,
            Err(e) => Response::error(e),
        }),
        Request::Observe => Some(Response::Observe(Box::new(ObserveReply {
            observe: report(&logger, metrics.as_deref()),
        }))),
        _ => next.as_ref().and_then(|f| f(engine, req)),
    })
}
