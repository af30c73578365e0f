//! What one log record holds, and how it is written: JSON lines and pcapng comments.
//!
//! A frame record is fixed-size: the plan of its generation (names), the
//! decision, the flow key, the frame length and up to `snaplen` bytes of the
//! frame in a buffer allocated once with its slot. Formatting happens on the
//! writer thread only.
//!
//! The JSON of a frame has exactly DESIGN.md's fields, in this order:
//! `time, generation, digest, port, stage, acl, rule, verdict, family, proto,
//! src, dst, src_port, dst_port, len`; a field the frame does not have
//! (`family` of an ARP frame, ports of ICMP) is `null`. A control event has
//! `time, event, outcome, uid, generation, digest`.
//!
//! ```
//! use palisade_observe::record::rfc3339_micros;
//! assert_eq!(rfc3339_micros(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456Z");
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use palisade_engine::events::ControlEvent;
use palisade_engine::policy::{Stage, Verdict};
use palisade_packet::FlowKey;

use crate::plan::{Plan, RuleLog};

/// One logged frame, as it travels from a worker to the writer.
#[derive(Debug)]
pub(crate) struct FrameRecord {
    /// The plan of the generation that decided it (names, digest).
    pub plan: Option<Arc<Plan>>,
    /// The deciding rule's position in the plan.
    pub position: u32,
    /// Wall-clock time of the batch, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// Ingress port id of that generation.
    pub port: u32,
    /// The deciding stage.
    pub stage: Stage,
    /// The verdict.
    pub verdict: Verdict,
    /// The parsed frame.
    pub key: FlowKey,
    /// The frame's length on the wire.
    pub len: u32,
    /// How many bytes of it `frame` holds.
    pub captured: u32,
    /// The frame's first bytes (allocated once, `snaplen` long; empty without pcapng output).
    pub frame: Box<[u8]>,
}

impl FrameRecord {
    pub(crate) fn new(snaplen: usize) -> Self {
        FrameRecord {
            plan: None,
            position: 0,
            unix_ns: 0,
            port: 0,
            stage: Stage::Passed,
            verdict: Verdict::Deny,
            key: FlowKey::new(),
            len: 0,
            captured: 0,
            frame: vec![0u8; snaplen].into_boxed_slice(),
        }
    }

    /// The names of the plan and rule, when the record has a plan.
    pub(crate) fn names(&self) -> Option<(&Plan, &RuleLog)> {
        let plan = self.plan.as_deref()?;
        Some((plan, plan.rule(self.position)?))
    }

    /// The captured bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.frame.get(..self.captured as usize).unwrap_or(&self.frame)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` for nanoseconds since the Unix epoch.
pub fn rfc3339_micros(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = unix_ns % 1_000_000_000 / 1_000;
    let whole = palisade_engine::status::rfc3339(secs);
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes quotes, backslashes and control characters; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The protocol's name in the rule language's words, or its number.
fn proto_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "icmp",
        2 => "igmp",
        4 => "ipip",
        6 => "tcp",
        17 => "udp",
        41 => "ipv6",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "icmpv6",
        89 => "ospf",
        103 => "pim",
        112 => "vrrp",
        132 => "sctp",
        _ => return None,
    })
}

fn addr(key: &FlowKey, ip: u128) -> String {
    match key.ip_family() {
        Some(4) => Ipv4Addr::from(ip as u32).to_string(),
        _ => Ipv6Addr::from(ip).to_string(),
    }
}

/// Appends one frame record as a JSON line.
pub(crate) fn frame_json(out: &mut Vec<u8>, rec: &FrameRecord, plan: &Plan, rule: &RuleLog) {
    let k = &rec.key;
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(rfc3339_micros(rec.unix_ns).as_bytes());
    let _ = write!(out, "\",\"generation\":{},\"digest\":", plan.generation);
    json_str(out, &plan.digest);
    out.extend_from_slice(b",\"port\":");
    match plan.ports.get(rec.port as usize) {
        Some(p) => json_str(out, p),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"stage\":\"{}\",\"acl\":", rec.stage.as_str());
    json_str(out, &rule.acl);
    out.extend_from_slice(b",\"rule\":");
    json_str(out, &rule.rule);
    let _ = write!(out, ",\"verdict\":\"{}\"", rec.verdict.as_str());
    let family = k.ip_family();
    match family {
        Some(4) => out.extend_from_slice(b",\"family\":\"ipv4\""),
        Some(_) => out.extend_from_slice(b",\"family\":\"ipv6\""),
        None => out.extend_from_slice(b",\"family\":null"),
    }
    let has_proto = k.present.has(palisade_packet::Present::L4_PROTO);
    match (has_proto, proto_name(k.l4_proto)) {
        (true, Some(name)) => {
            let _ = write!(out, ",\"proto\":\"{name}\"");
        }
        (true, None) => {
            let _ = write!(out, ",\"proto\":\"{}\"", k.l4_proto);
        }
        (false, _) => out.extend_from_slice(b",\"proto\":null"),
    }
    if family.is_some() {
        let _ = write!(
            out,
            ",\"src\":\"{}\",\"dst\":\"{}\"",
            addr(k, k.src_ip),
            addr(k, k.dst_ip)
        );
    } else {
        out.extend_from_slice(b",\"src\":null,\"dst\":null");
    }
    match k.ports() {
        Some((s, d)) => {
            let _ = write!(out, ",\"src_port\":{s},\"dst_port\":{d}");
        }
        None => out.extend_from_slice(b",\"src_port\":null,\"dst_port\":null"),
    }
    let _ = writeln!(out, ",\"len\":{}}}", rec.len);
}

/// Appends one control event as a JSON line.
pub(crate) fn event_json(out: &mut Vec<u8>, ev: &ControlEvent) {
    let ns = ev
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(rfc3339_micros(ns).as_bytes());
    let _ = write!(
        out,
        "\",\"event\":\"{}\",\"outcome\":\"{}\",\"uid\":",
        ev.event.as_str(),
        ev.outcome.as_str()
    );
    match ev.uid {
        Some(uid) => {
            let _ = write!(out, "{uid}");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"generation\":{},\"digest\":", ev.generation);
    match ev.digest {
        Some(d) => {
            let _ = write!(out, "\"{d}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// The pcapng comment of a logged frame: why it was logged.
pub(crate) fn pcap_comment(rec: &FrameRecord, plan: &Plan, rule: &RuleLog) -> String {
    format!(
        "palisade: acl {:?} rule {:?} generation {} ({} at {}, digest {})",
        rule.acl,
        rule.rule,
        plan.generation,
        rec.verdict.as_str(),
        rec.stage.as_str(),
        plan.digest
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_microseconds() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_000_001_999),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn events_have_exactly_the_documented_fields() {
        let ev = ControlEvent {
            time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400),
            event: palisade_engine::events::EventKind::Rollback,
            outcome: palisade_engine::events::Outcome::Refused,
            uid: None,
            generation: 3,
            digest: None,
            stage: Some("read"),
            errors: vec!["no previous generation".into()],
        };
        let mut out = Vec::new();
        event_json(&mut out, &ev);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"time\":\"1970-01-02T00:00:00.000000Z\",\"event\":\"rollback\",\"outcome\":\"refused\",\
             \"uid\":null,\"generation\":3,\"digest\":null}\n"
        );
    }
}
