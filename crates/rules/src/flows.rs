//! Flow state in the rule language: the `state` match key, `keep_state`,
//! and the `[flows]` table (the flow table's size and idle timeouts).
//!
//! ```toml
//! [flows]
//! max = 1048576          # entries; 1 to MAX_FLOWS
//! tcp_handshake = 30     # idle timeouts, seconds, 1 to MAX_FLOW_TIMEOUT
//! tcp_established = 86400
//! tcp_closing = 60
//! udp = 60
//! icmp = 10
//! other = 60
//! ```

use palisade_packet::{FlowState, FlowStates};
use toml::de::DeValue;

use crate::model::{Action, Span};
use crate::parse::{fields, list, string, suggest, Cx, Fields, V};

/// The flow table's capacity when `[flows]` gives no `max` (1,048,576).
pub const DEFAULT_MAX_FLOWS: u32 = 1 << 20;

/// The largest `max` accepted (16,777,216 flows; about 2 GiB of table).
pub const MAX_FLOWS: u32 = 1 << 24;

/// The longest idle timeout accepted, in seconds (30 days).
pub const MAX_FLOW_TIMEOUT: u32 = 30 * 86_400;

/// Idle timeouts of flow entries, in seconds, by protocol and TCP phase.
///
/// ```
/// let t = palisade_rules::FlowTimeouts::default();
/// assert_eq!((t.tcp_handshake, t.tcp_established, t.udp), (30, 86_400, 60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTimeouts {
    /// A TCP flow until its handshake completes (SYN, SYN-ACK, ACK).
    pub tcp_handshake: u32,
    /// A TCP flow whose handshake completed.
    pub tcp_established: u32,
    /// A TCP flow after a FIN or RST.
    pub tcp_closing: u32,
    /// A UDP flow.
    pub udp: u32,
    /// An ICMP/ICMPv6 query flow (echo ...).
    pub icmp: u32,
    /// A flow of any other protocol.
    pub other: u32,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_handshake: 30,
            tcp_established: 86_400,
            tcp_closing: 60,
            udp: 60,
            icmp: 10,
            other: 60,
        }
    }
}

/// `[flows]`: the flow table of stateful rules.
///
/// ```
/// let rs = palisade_rules::parse("f.toml", b"version = 1\n[flows]\nmax = 1000\nudp = 5\n").unwrap().ruleset;
/// assert_eq!((rs.flows.max, rs.flows.timeouts.udp, rs.flows.timeouts.icmp), (1000, 5, 10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowsDef {
    /// Capacity: a new flow past it is refused (denied at stage `flows-full`).
    pub max: u32,
    /// Idle timeouts.
    pub timeouts: FlowTimeouts,
    /// Where `[flows]` is written, if it is.
    pub span: Option<Span>,
}

impl Default for FlowsDef {
    fn default() -> Self {
        FlowsDef {
            max: DEFAULT_MAX_FLOWS,
            timeouts: FlowTimeouts::default(),
            span: None,
        }
    }
}

/// The names a `state` key accepts, for messages.
fn state_names() -> String {
    FlowState::NAMED.map(|s| s.name()).join(", ")
}

/// One state name.
fn one_state(cx: &mut Cx, ctx: &str, key: &str, v: &V) -> Option<FlowState> {
    let name = string(cx, ctx, key, v)?;
    let state = FlowState::from_name(name);
    if state.is_none() {
        let names = FlowState::NAMED.map(|s| s.name());
        let hint = suggest(name, &names).map_or(String::new(), |s| format!(" (did you mean \"{s}\"?)"));
        cx.error(
            v.span().start,
            format!("{ctx}: state \"{name}\" is not one of {}{hint}", state_names()),
        );
    }
    state
}

/// A rule's `state`: one name or a list of them; `Some(None)` for `"any"`,
/// `None` after an error.
pub(crate) fn states(cx: &mut Cx, ctx: &str, v: &V) -> Option<Option<FlowStates>> {
    let items = list(cx, ctx, "state", v)?;
    if items.is_empty() {
        return Some(None);
    }
    let mut set = FlowStates(0);
    let mut ok = true;
    for e in items {
        match one_state(cx, ctx, "state", e) {
            Some(s) => set.0 |= s.bit(),
            None => ok = false,
        }
    }
    ok.then_some(Some(set))
}

/// An `[[expect]]` packet's `state`: exactly one name.
pub(crate) fn packet_state(cx: &mut Cx, ctx: &str, v: &V) -> Option<FlowState> {
    if let DeValue::Array(_) = v.get_ref() {
        cx.error(
            v.span().start,
            format!("{ctx}: a packet is in one state, not a list"),
        );
        return None;
    }
    one_state(cx, ctx, "state", v)
}

/// A rule's `keep_state`, checked against its action and its `state`.
pub(crate) fn keep_state(
    cx: &mut Cx,
    ctx: &str,
    f: &Fields,
    action: Option<Action>,
    state: Option<FlowStates>,
) -> bool {
    let Some(v) = f.get("keep_state") else {
        return false;
    };
    let keep = match v.get_ref() {
        DeValue::Boolean(b) => *b,
        other => {
            cx.error(
                v.span().start,
                format!(
                    "{ctx}: keep_state must be true or false, found {}",
                    other.type_str()
                ),
            );
            return false;
        }
    };
    if keep && action == Some(Action::Deny) {
        cx.error(
            v.span().start,
            format!("{ctx}: keep_state applies only to permit rules (a denied frame opens no flow)"),
        );
        return false;
    }
    if keep && state.is_some_and(|s| !s.contains(FlowState::New)) {
        cx.warn(
            v.span().start,
            format!("{ctx}: keep_state on a rule whose state excludes \"new\" never opens a flow (only new frames do)"),
        );
    }
    keep
}

/// A number of `[flows]` between `lo` and `hi`, with the cause named.
fn number(cx: &mut Cx, key: &str, v: &V, lo: u32, hi: u32, why_hi: &str) -> Option<u32> {
    let n = match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    };
    let Some(n) = n else {
        cx.error(
            v.span().start,
            format!(
                "[flows]: {key} must be an integer, found {}",
                v.get_ref().type_str()
            ),
        );
        return None;
    };
    if n < lo as i128 {
        let why = match key {
            "max" => "a flow table needs at least one entry (to track no flows, drop keep_state)".to_owned(),
            _ => format!("an idle timeout of {n} s would expire every {key} flow at once"),
        };
        cx.error(v.span().start, format!("[flows]: {key} {n}: {why}"));
        return None;
    }
    if n > hi as i128 {
        cx.error(
            v.span().start,
            format!("[flows]: {key} {n} is more than the limit of {hi} ({why_hi})"),
        );
        return None;
    }
    Some(n as u32)
}

/// `[flows]`.
pub(crate) fn table(cx: &mut Cx, v: &V) -> FlowsDef {
    const TIMEOUTS: [&str; 6] = [
        "tcp_handshake",
        "tcp_established",
        "tcp_closing",
        "udp",
        "icmp",
        "other",
    ];
    let mut out = FlowsDef {
        span: Some(cx.span(v.span().start)),
        ..FlowsDef::default()
    };
    let mut allowed = vec!["max", "description"];
    allowed.extend(TIMEOUTS);
    let Some(f) = fields(cx, v, "[flows]", &allowed) else {
        return out;
    };
    if let Some(m) = f.get("max") {
        if let Some(n) = number(cx, "max", m, 1, MAX_FLOWS, "MAX_FLOWS, about 2 GiB of table") {
            out.max = n;
        }
    }
    let t = &mut out.timeouts;
    let slots = [
        &mut t.tcp_handshake,
        &mut t.tcp_established,
        &mut t.tcp_closing,
        &mut t.udp,
        &mut t.icmp,
        &mut t.other,
    ];
    for (key, slot) in TIMEOUTS.into_iter().zip(slots) {
        if let Some(x) = f.get(key) {
            if let Some(n) = number(cx, key, x, 1, MAX_FLOW_TIMEOUT, "seconds, 30 days") {
                *slot = n;
            }
        }
    }
    out
}

/// Warns about a `[flows]` table that no rule uses.
pub(crate) fn unused_table(cx: &mut Cx, flows: &FlowsDef, at: usize, any_keep_state: bool) {
    if flows.span.is_some() && !any_keep_state {
        cx.warn(
            at,
            "[flows]: no rule has keep_state = true, so the flow table stays empty",
        );
    }
}
