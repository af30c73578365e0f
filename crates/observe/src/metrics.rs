//! The Prometheus text exposition (format 0.0.4) of a running engine.
//!
//! [`render`] reads everything from one [`palisade_engine::Engine::status`]
//! (the snapshot the data path uses; counters summed over the workers'
//! shards, which the workers keep writing meanwhile: nothing stops) plus the
//! logger's figures and any [`MetricsSource`] a front end adds (the data
//! path's interface counters, the flow table).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `palisade_generation_info` | gauge (1) | `generation`, `digest` |
//! | `palisade_generation_state` | gauge (1) | `state` |
//! | `palisade_generation_loaded_timestamp_seconds` | gauge | |
//! | `palisade_rule_packets_total`, `palisade_rule_bytes_total` | counter | `acl`, `rule` (an ACL's implicit default is rule `default`) |
//! | `palisade_rescue_packets_total`, `palisade_rescue_bytes_total` | counter | `rule` |
//! | `palisade_binding_frames_total` | counter | `acl`, `kind`, `target`, `direction`, `verdict` |
//! | `palisade_stage_frames_total` | counter | `stage`, `verdict` (the stage that decided) |
//! | `palisade_frames_total` | counter | `verdict` |
//! | `palisade_frame_bytes_total` | counter | |
//! | `palisade_flows_active`, `palisade_flows_max` | gauge | (0 while no generation has kept state) |
//! | `palisade_flows_created_total`, `palisade_flows_expired_total`, `palisade_flows_refused_total`, `palisade_flows_cut_total` | counter | flows opened, timed out, refused (table full), cut by a reload |
//! | `palisade_flow_invalid_frames_total` | counter | frames whose flow state was `invalid` |
//! | `palisade_reloads_total` | counter | `outcome`: `ok`, `refused`, `reverted` |
//! | `palisade_control_events_total` | counter | `event`, `outcome` |
//! | `palisade_log_records_total` | counter | `output`: `json`, `pcap` (records written) |
//! | `palisade_log_suppressed_total` | counter | `acl`, `rule` (frames over their rule's rate: not logged) |
//! | `palisade_log_dropped_total` | counter | `output`, `reason`: `queue-full`, `write-error` |
//!
//! Rule counters are kept by rule identity, so they are monotonic across
//! reloads: a rule that a reload keeps keeps counting.
//!
//! ```
//! use palisade_observe::metrics::{Exposition, MetricKind};
//! let mut e = Exposition::default();
//! e.family("demo_frames_total", MetricKind::Counter, "Frames seen.");
//! e.sample("demo_frames_total", &[("port", "lan \"1\"")], 7);
//! assert_eq!(e.finish(), "# HELP demo_frames_total Frames seen.\n# TYPE demo_frames_total counter\n\
//!     demo_frames_total{port=\"lan \\\"1\\\"\"} 7\n");
//! ```

use std::fmt::Write as _;

use palisade_engine::Engine;

use crate::logger::Logger;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A text exposition being written: families, each followed by its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    buf: String,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.buf, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.buf.push_str(name);
        if !labels.is_empty() {
            self.buf.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                self.buf.push_str(k);
                self.buf.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.buf.push_str("\\\\"),
                        '"' => self.buf.push_str("\\\""),
                        '\n' => self.buf.push_str("\\n"),
                        c => self.buf.push(c),
                    }
                }
                self.buf.push('"');
            }
            self.buf.push('}');
        }
        let _ = writeln!(self.buf, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Adds families to a scrape (the data path's interface counters, the flow table, ...).
pub trait MetricsSource: Send + Sync {
    /// Writes this source's families.
    fn write(&self, out: &mut Exposition);
}

/// The whole exposition: the engine's generation and counters, the logger's
/// figures and the control events (when a logger is given), then `extra`.
pub fn render(engine: &Engine, logger: Option<&Logger>, extra: &[&dyn MetricsSource]) -> String {
    use MetricKind::{Counter, Gauge};
    let status = engine.status();
    let mut e = Exposition::default();
    let gen = status.generation.to_string();
    e.family(
        "palisade_generation_info",
        Gauge,
        "The generation the data path enforces (1), with the SHA-256 of its rule file.",
    );
    e.sample(
        "palisade_generation_info",
        &[
            ("generation", &gen),
            ("digest", status.digest.as_deref().unwrap_or("")),
        ],
        1,
    );
    e.family(
        "palisade_generation_state",
        Gauge,
        "The engine's state (1): active, last-known-good, pending-confirm or no-rules.",
    );
    e.sample(
        "palisade_generation_state",
        &[("state", status.state.as_str())],
        1,
    );
    e.family(
        "palisade_generation_loaded_timestamp_seconds",
        Gauge,
        "When the active generation was published, seconds since the Unix epoch.",
    );
    e.sample(
        "palisade_generation_loaded_timestamp_seconds",
        &[],
        engine.current().loaded_at(),
    );

    e.family(
        "palisade_rule_packets_total",
        Counter,
        "Frames each rule decided (an ACL's implicit default is rule \"default\").",
    );
    for a in &status.acls {
        for r in &a.counters.rules {
            e.sample(
                "palisade_rule_packets_total",
                &[("acl", &a.name), ("rule", &r.id)],
                r.hits,
            );
        }
        e.sample(
            "palisade_rule_packets_total",
            &[("acl", &a.name), ("rule", "default")],
            a.counters.default_hits,
        );
    }
    e.family(
        "palisade_rule_bytes_total",
        Counter,
        "Bytes of the frames each rule decided.",
    );
    for a in &status.acls {
        for r in &a.counters.rules {
            e.sample(
                "palisade_rule_bytes_total",
                &[("acl", &a.name), ("rule", &r.id)],
                r.bytes,
            );
        }
        e.sample(
            "palisade_rule_bytes_total",
            &[("acl", &a.name), ("rule", "default")],
            a.counters.default_bytes,
        );
    }
    e.family(
        "palisade_rescue_packets_total",
        Counter,
        "Frames each rescue rule permitted.",
    );
    for r in &status.rescue_hits {
        e.sample("palisade_rescue_packets_total", &[("rule", &r.id)], r.hits);
    }
    e.family(
        "palisade_rescue_bytes_total",
        Counter,
        "Bytes of the frames each rescue rule permitted.",
    );
    for r in &status.rescue_hits {
        e.sample("palisade_rescue_bytes_total", &[("rule", &r.id)], r.bytes);
    }
    e.family(
        "palisade_binding_frames_total",
        Counter,
        "Frames each binding's ACL was evaluated on, by what it said.",
    );
    for a in &status.acls {
        for b in &a.bindings {
            let dir = b.direction.map_or("", |d| d.as_str());
            for (verdict, n) in [("permit", b.counts.permitted), ("deny", b.counts.denied)] {
                e.sample(
                    "palisade_binding_frames_total",
                    &[
                        ("acl", &a.name),
                        ("kind", b.kind.as_str()),
                        ("target", &b.target),
                        ("direction", dir),
                        ("verdict", verdict),
                    ],
                    n,
                );
            }
        }
    }
    e.family(
        "palisade_stage_frames_total",
        Counter,
        "Frames by the stage that decided them (for a permit: the last stage that ran).",
    );
    for s in &status.stages {
        e.sample(
            "palisade_stage_frames_total",
            &[("stage", &s.stage), ("verdict", "permit")],
            s.permitted,
        );
        e.sample(
            "palisade_stage_frames_total",
            &[("stage", &s.stage), ("verdict", "deny")],
            s.denied,
        );
    }
    e.family("palisade_frames_total", Counter, "Frames classified, by verdict.");
    e.sample(
        "palisade_frames_total",
        &[("verdict", "permit")],
        status.frames.permitted,
    );
    e.sample(
        "palisade_frames_total",
        &[("verdict", "deny")],
        status.frames.denied,
    );
    e.family(
        "palisade_frame_bytes_total",
        Counter,
        "Bytes of the frames classified.",
    );
    e.sample("palisade_frame_bytes_total", &[], status.bytes);
    write_flows(&mut e, status.flows.unwrap_or_default());

    if let Some(logger) = logger {
        write_logger(&mut e, logger);
    }
    for source in extra {
        source.write(&mut e);
    }
    e.finish()
}

/// The flow table's figures (all 0 while no generation has kept state; frames
/// denied at stage `flows-full` are in `palisade_stage_frames_total`).
fn write_flows(e: &mut Exposition, f: palisade_engine::status::FlowsStatus) {
    use MetricKind::{Counter, Gauge};
    let gauges = [
        ("palisade_flows_active", "Flow table entries in use.", f.active),
        ("palisade_flows_max", "Flow table capacity ([flows] max).", f.max),
    ];
    let counters = [
        (
            "palisade_flows_created_total",
            "Flows opened by keep_state rules.",
            f.created,
        ),
        (
            "palisade_flows_expired_total",
            "Flows removed after their idle timeout.",
            f.expired,
        ),
        (
            "palisade_flows_refused_total",
            "New flows refused because the table was full (the frame is denied at stage flows-full).",
            f.refused,
        ),
        (
            "palisade_flows_cut_total",
            "Flows cut because a new generation's rules would no longer open them.",
            f.cut,
        ),
        (
            "palisade_flow_invalid_frames_total",
            "Frames whose flow state was invalid (no entry, and unable to open one).",
            f.invalid_frames,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, Gauge, help);
        e.sample(name, &[], v);
    }
    for (name, help, v) in counters {
        e.family(name, Counter, help);
        e.sample(name, &[], v);
    }
}

fn write_logger(e: &mut Exposition, logger: &Logger) {
    use MetricKind::Counter;
    let s = logger.stats();
    let count = |event: &str, outcome: &str| {
        s.events
            .iter()
            .find(|((ev, out), _)| *ev == event && *out == outcome)
            .map_or(0, |(_, n)| *n)
    };
    e.family(
        "palisade_reloads_total",
        Counter,
        "Reloads by outcome: made active (ok), refused, or reverted when not confirmed in time.",
    );
    e.sample(
        "palisade_reloads_total",
        &[("outcome", "ok")],
        count("reload", "ok"),
    );
    e.sample(
        "palisade_reloads_total",
        &[("outcome", "refused")],
        count("reload", "refused"),
    );
    e.sample(
        "palisade_reloads_total",
        &[("outcome", "reverted")],
        count("revert", "ok"),
    );
    e.family(
        "palisade_control_events_total",
        Counter,
        "Control actions (reload, confirm, rollback, revert, set-change) by outcome.",
    );
    for event in ["reload", "confirm", "rollback", "revert", "set-change"] {
        for outcome in ["ok", "refused"] {
            if event == "revert" && outcome == "refused" {
                continue;
            }
            e.sample(
                "palisade_control_events_total",
                &[("event", event), ("outcome", outcome)],
                count(event, outcome),
            );
        }
    }
    e.family(
        "palisade_log_records_total",
        Counter,
        "Log records written, by output (json: frames and control events; pcap: frames).",
    );
    e.sample(
        "palisade_log_records_total",
        &[("output", "json")],
        s.json_frames + s.json_events,
    );
    e.sample("palisade_log_records_total", &[("output", "pcap")], s.pcap_frames);
    e.family(
        "palisade_log_suppressed_total",
        Counter,
        "Frames of logged rules not logged because the rule was over its [logging] rate (the frame was decided all the same).",
    );
    for (acl, rule, n) in &s.suppressed {
        e.sample(
            "palisade_log_suppressed_total",
            &[("acl", acl), ("rule", rule)],
            *n,
        );
    }
    e.family(
        "palisade_log_dropped_total",
        Counter,
        "Log records lost: the writer was behind (queue-full) or the output failed (write-error).",
    );
    let outputs = [("json", s.json.is_some()), ("pcap", s.pcap.is_some())];
    for (output, on) in outputs {
        let (queue_full, errors) = match output {
            "json" => (s.queue_full + s.events_dropped, s.json_errors),
            _ => (s.queue_full, s.pcap_errors),
        };
        let (queue_full, errors) = if on { (queue_full, errors) } else { (0, 0) };
        e.sample(
            "palisade_log_dropped_total",
            &[("output", output), ("reason", "queue-full")],
            queue_full,
        );
        e.sample(
            "palisade_log_dropped_total",
            &[("output", output), ("reason", "write-error")],
            errors,
        );
    }
}
