//! The control protocol's vocabulary: every request and every reply as a Rust
//! type, shared by the server ([`super::handle`]) and the [`super::Client`].
//!
//! On the wire a request is one JSON object line tagged by `cmd`; a reply is
//! one JSON object line with `"ok": true` and the reply's fields, or
//! `"ok": false` with an [`ErrorReply`]. [`Response`] is what a server
//! answers; [`Reply`] is how a client reads one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::generation::GenerationState;
use crate::policy::Verdict;
use crate::reload::{ReloadError, ReloadStage};
use crate::status::Status;

/// A request, as one line on the control socket.
///
/// ```
/// use palisade_engine::control::Request;
/// let req = Request::Rollback { to: Some(7), confirm_within: None };
/// let line = serde_json::to_string(&req).unwrap();
/// assert_eq!(line, r#"{"cmd":"rollback","to":7}"#);
/// let back: Request = serde_json::from_str(&line).unwrap();
/// assert_eq!(back, req);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Read status.
    Status,
    /// Reload: from the config, a path, or inline text.
    Reload {
        /// A rule file path the daemon reads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Inline rule file text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Name for diagnostics with `text`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Commit-confirmed window in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm_within: Option<f64>,
        /// Allow rescue rules to change.
        #[serde(default, skip_serializing_if = "is_false")]
        allow_rescue_change: bool,
    },
    /// Confirm a pending reload.
    Confirm,
    /// Decide one packet with the active generation (not counted).
    Probe {
        /// Ingress port.
        port: String,
        /// The packet, as `palisade explain` writes it: `tcp 10.0.0.1:1234 -> 192.0.2.1:443`.
        packet: String,
        /// `FROM:TO` L3 interfaces when routed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// Roll back to the previous or a kept generation.
    Rollback {
        /// The kept generation; when absent, the one confirmed before the current one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
        /// Commit-confirmed window in seconds: the rollback reverts by itself unless confirmed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm_within: Option<f64>,
    },
    /// Add elements to a set of the active rule set, or remove them: a new
    /// generation, the set's file written through.
    Set {
        /// The set's name.
        set: String,
        /// `add` or `del`.
        op: SetAction,
        /// The elements, as a set file lists them (`203.0.113.0/24`, `22`, `1000-2000`).
        elements: Vec<String>,
        /// Commit-confirmed window in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm_within: Option<f64>,
    },
    /// The data path's mode, interfaces and counters (served by the data path).
    DataPath,
    /// Evaluate a candidate rule file beside the active generation (served by the data path).
    Shadow {
        /// The candidate's path, as the daemon can open it.
        path: String,
    },
    /// The shadow candidate's report, if any (served by the data path).
    ShadowStatus,
    /// Stop evaluating the shadow candidate (served by the data path).
    ShadowClear,
    /// Reopen the log files, as SIGUSR1 does (served by the logger).
    LogReopen,
    /// Logging and metrics figures and the last control events (served by the logger).
    Observe,
    /// The flow table: counters and entries.
    Flows {
        /// At most this many entries (default [`FLOWS_LIMIT`]); the reply says how many there are.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

/// The entries a `flows` request lists by default.
pub const FLOWS_LIMIT: usize = 10_000;

fn is_false(b: &bool) -> bool {
    !*b
}

impl Request {
    /// The request's `cmd` name.
    ///
    /// ```
    /// assert_eq!(palisade_engine::control::Request::ShadowClear.cmd(), "shadow-clear");
    /// ```
    pub fn cmd(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload { .. } => "reload",
            Request::Confirm => "confirm",
            Request::Probe { .. } => "probe",
            Request::Rollback { .. } => "rollback",
            Request::Set { .. } => "set",
            Request::DataPath => "data-path",
            Request::Shadow { .. } => "shadow",
            Request::ShadowStatus => "shadow-status",
            Request::ShadowClear => "shadow-clear",
            Request::LogReopen => "log-reopen",
            Request::Observe => "observe",
            Request::Flows { .. } => "flows",
        }
    }
}

/// What a `set` request does to its set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetAction {
    /// Add the elements (those already listed are skipped).
    Add,
    /// Remove the elements (each must be listed in the set's file).
    Del,
}

impl From<SetAction> for palisade_rules::SetOp {
    fn from(a: SetAction) -> Self {
        match a {
            SetAction::Add => palisade_rules::SetOp::Add,
            SetAction::Del => palisade_rules::SetOp::Del,
        }
    }
}

/// The reply to a `set` request that went through.
///
/// ```
/// use palisade_engine::control::SetReply;
/// let r: SetReply = serde_json::from_str(r#"{"ok":true,"set":"bl","changed":0,"elements":3,"file":"bl.txt",
///     "file_digest":"ab","generation":2,"digest":"cd","state":"active","confirm_deadline":null}"#).unwrap();
/// assert_eq!(r.changed, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetReply {
    /// The set.
    pub set: String,
    /// Elements added or removed (0: nothing to do, no new generation).
    pub changed: usize,
    /// Elements of the set now.
    pub elements: usize,
    /// The set file, as written through.
    pub file: String,
    /// SHA-256 of the set file now.
    pub file_digest: String,
    /// The active generation (the new one when something changed).
    pub generation: u64,
    /// Its digest (over the rule file and its set files).
    pub digest: String,
    /// `active` or `pending-confirm`.
    pub state: GenerationState,
    /// When it reverts unless confirmed (RFC 3339, UTC).
    pub confirm_deadline: Option<String>,
}

/// A failed request: `{"ok":false,"error":...}`, with the stage and every
/// error of a refused reload.
///
/// ```
/// let e = palisade_engine::control::ErrorReply::new("no such thing");
/// assert_eq!(e.to_string(), "no such thing");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// One line saying what failed.
    pub error: String,
    /// The pipeline stage that refused a reload (or a shadow candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<ReloadStage>,
    /// Every cause, `file:line:col: message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ErrorReply {
    /// An error with a message only.
    pub fn new(error: impl Into<String>) -> Self {
        ErrorReply {
            error: error.into(),
            stage: None,
            errors: Vec::new(),
        }
    }

    /// Whether this is a refusal by a pipeline stage (as opposed to a bad request).
    ///
    /// ```
    /// use palisade_engine::{control::ErrorReply, ReloadStage};
    /// let e = ErrorReply { stage: Some(ReloadStage::Parse), ..ErrorReply::new("refused at stage parse") };
    /// assert!(e.is_refusal());
    /// assert!(!ErrorReply::new("x").is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        self.stage.is_some()
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for ErrorReply {}

impl From<&ReloadError> for ErrorReply {
    fn from(e: &ReloadError) -> Self {
        ErrorReply {
            error: format!("refused at stage {}", e.stage),
            stage: Some(e.stage),
            errors: e.errors.clone(),
        }
    }
}

/// The reply to `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReply {
    /// The engine's status.
    pub status: Status,
}

/// The reply to a `reload` or `rollback` that made a generation active.
///
/// ```
/// use palisade_engine::control::GenerationReply;
/// let r: GenerationReply = serde_json::from_str(
///     r#"{"ok":true,"generation":3,"digest":"ab","state":"pending-confirm","confirm_deadline":null,"warnings":[]}"#,
/// ).unwrap();
/// assert_eq!(r.state, palisade_engine::GenerationState::PendingConfirm);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationReply {
    /// The new generation's number.
    pub generation: u64,
    /// SHA-256 of its rule file, lowercase hex.
    pub digest: String,
    /// `active` or `pending-confirm`.
    pub state: GenerationState,
    /// When it reverts unless confirmed (RFC 3339, UTC).
    pub confirm_deadline: Option<String>,
    /// Warnings of the rule file.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The reply to `confirm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReply {
    /// The generation confirmed.
    pub generation: u64,
}

/// The reply to `flows`: the flow table's counters and (some of) its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReply {
    /// The counters (`null` while no generation has kept state).
    pub stats: Option<crate::flow::FlowStats>,
    /// Entries listed, sorted by key.
    pub flows: Vec<crate::stateful::FlowEntry>,
    /// Entries in the table (more than listed when the limit cut the list).
    pub total: usize,
}

/// The reply to `probe`: what the active generation does with one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The generation that decided.
    pub generation: u64,
    /// permit or deny.
    pub verdict: Verdict,
    /// The deciding stage (`no-rules` with no rules).
    pub stage: String,
    /// The deciding ACL.
    pub acl: Option<String>,
    /// The deciding rule's identity (empty when none).
    pub rule: String,
}

/// I/O counters of one interface of the data path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    /// Interface the frames arrived on.
    pub interface: String,
    /// Frames received.
    pub rx: u64,
    /// Frames permitted.
    pub permitted: u64,
    /// Frames denied.
    pub denied: u64,
    /// Permitted frames sent out of the other interface.
    pub forwarded: u64,
    /// Permitted frames that could not be sent.
    pub tx_errors: u64,
    /// Frames too long to handle, dropped.
    pub oversize: u64,
    /// Frames the kernel could not hand over (a kind of offload super-frame a
    /// packet socket cannot describe), dropped.
    #[serde(default)]
    pub rx_errors: u64,
    /// Of the frames received, GSO/GRO super-frames (each decided and sent whole).
    #[serde(default)]
    pub super_frames: u64,
    /// Frames the kernel dropped before the data path saw them (its receive
    /// queue was full: the workers fell behind).
    #[serde(default)]
    pub rx_dropped: u64,
}

/// The data path's mode, interfaces and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPathReport {
    /// `bridge` or `monitor`.
    pub mode: String,
    /// Worker threads.
    pub workers: usize,
    /// Counters per ingress interface.
    pub interfaces: Vec<InterfaceCounters>,
}

/// The reply to `data-path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPathReply {
    /// The report.
    pub data_path: DataPathReport,
}

/// Frames one rule of a shadow candidate decided differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRule {
    /// The rule's identity.
    pub id: String,
    /// Frames it decided differently from the active generation.
    pub differ: u64,
}

/// One ACL of a shadow candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowAcl {
    /// ACL name.
    pub name: String,
    /// Per rule, in order.
    pub rules: Vec<ShadowRule>,
    /// Frames the ACL's default decided differently.
    pub default_differ: u64,
}

/// One frame a shadow candidate decided differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowExample {
    /// Interface it arrived on.
    pub interface: String,
    /// The packet, as `explain` writes it.
    pub packet: String,
    /// The active generation's verdict.
    pub active: Verdict,
    /// The candidate's verdict.
    pub candidate: Verdict,
    /// The candidate's deciding stage.
    pub stage: String,
    /// The candidate's deciding ACL.
    pub acl: Option<String>,
    /// The candidate's deciding rule.
    pub rule: String,
}

/// A shadow candidate's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Where it was read from.
    pub source: String,
    /// SHA-256 of the candidate file.
    pub digest: String,
    /// Whether the active generation now has the candidate's digest.
    pub promoted: bool,
    /// Frames compared.
    pub frames: u64,
    /// Frames decided differently.
    pub differ: u64,
    /// Differences not decided by an ACL of the candidate (rescue, malformed, VLAN, context).
    pub other_differ: u64,
    /// Live flows when the candidate was loaded.
    #[serde(default)]
    pub flows_checked: u64,
    /// Of those, the flows the candidate would cut if it became active (its
    /// rules would not open their opening frame in its context).
    #[serde(default)]
    pub flows_cut: u64,
    /// Per ACL of the candidate.
    pub acls: Vec<ShadowAcl>,
    /// A few differing frames.
    pub examples: Vec<ShadowExample>,
}

/// The reply to `shadow` (the new candidate) and `shadow-status` (`null` without one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowReply {
    /// The candidate's report.
    pub shadow: Option<ShadowReport>,
}

/// What a server answers to one request.
///
/// ```
/// use palisade_engine::control::{ConfirmReply, Response};
/// assert_eq!(Response::Confirmed(ConfirmReply { generation: 4 }).to_line(), "{\"generation\":4,\"ok\":true}\n");
/// assert_eq!(Response::error("bad").to_line(), "{\"error\":\"bad\",\"ok\":false}\n");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Response {
    /// `status`.
    Status(Box<StatusReply>),
    /// `reload`, `rollback`: a generation became active.
    Generation(GenerationReply),
    /// `confirm`.
    Confirmed(ConfirmReply),
    /// `probe`.
    Probe(ProbeReply),
    /// `set`.
    Set(Box<SetReply>),
    /// `data-path`.
    DataPath(DataPathReply),
    /// `shadow`, `shadow-status`.
    Shadow(Box<ShadowReply>),
    /// `observe`.
    Observe(Box<super::observe::ObserveReply>),
    /// `flows`.
    Flows(Box<FlowsReply>),
    /// A request that has nothing to report but success (`shadow-clear`).
    Done,
    /// The request failed.
    Error(ErrorReply),
}

impl Response {
    /// A failed request with a message.
    pub fn error(msg: impl Into<String>) -> Self {
        Response::Error(ErrorReply::new(msg))
    }

    /// The reply as a JSON object with `ok`.
    pub fn to_value(&self) -> Value {
        let (ok, body) = match self {
            Response::Status(r) => (true, serde_json::to_value(r)),
            Response::Generation(r) => (true, serde_json::to_value(r)),
            Response::Confirmed(r) => (true, serde_json::to_value(r)),
            Response::Probe(r) => (true, serde_json::to_value(r)),
            Response::Set(r) => (true, serde_json::to_value(r)),
            Response::DataPath(r) => (true, serde_json::to_value(r)),
            Response::Shadow(r) => (true, serde_json::to_value(r)),
            Response::Observe(r) => (true, serde_json::to_value(r)),
            Response::Flows(r) => (true, serde_json::to_value(r)),
            Response::Done => (true, Ok(Value::Object(Default::default()))),
            Response::Error(e) => (false, serde_json::to_value(e)),
        };
        let mut obj = match body {
            Ok(Value::Object(o)) => o,
            // Every reply type is a struct; a serialization failure is reported, not hidden.
            Ok(_) | Err(_) => {
                let mut o = serde_json::Map::new();
                o.insert("error".into(), "reply could not be serialized".into());
                o.insert("ok".into(), false.into());
                return Value::Object(o);
            }
        };
        obj.insert("ok".into(), ok.into());
        Value::Object(obj)
    }

    /// The reply line, newline included (written with one `write`).
    pub fn to_line(&self) -> String {
        let mut s = self.to_value().to_string();
        s.push('\n');
        s
    }
}

impl From<ErrorReply> for Response {
    fn from(e: ErrorReply) -> Self {
        Response::Error(e)
    }
}

/// How a client reads a reply whose success type it knows: `Ok(T)` for
/// `"ok": true`, `Err(ErrorReply)` for `"ok": false`.
pub type Reply<T> = Result<T, ErrorReply>;

/// Reads a reply line's JSON into a [`Reply`]; `Err` when it is neither.
///
/// ```
/// use palisade_engine::control::{read_reply, ConfirmReply};
/// let v = serde_json::json!({"ok": true, "generation": 2});
/// assert_eq!(read_reply::<ConfirmReply>(v).unwrap().unwrap().generation, 2);
/// let v = serde_json::json!({"ok": false, "error": "nothing to confirm"});
/// assert_eq!(read_reply::<ConfirmReply>(v).unwrap().unwrap_err().error, "nothing to confirm");
/// ```
pub fn read_reply<T: DeserializeOwned>(v: Value) -> Result<Reply<T>, String> {
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => T::deserialize(&v).map(Ok).map_err(|e| format!("bad reply: {e}")),
        Some(false) => ErrorReply::deserialize(&v)
            .map(Err)
            .map_err(|e| format!("bad error reply: {e}")),
        None => Err("bad reply: no boolean \"ok\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every request survives JSON and keeps the wire names older clients and the fuzz corpus use.
    #[test]
    fn requests_round_trip_with_stable_wire_names() {
        let cases = [
            (Request::Status, json!({"cmd": "status"})),
            (
                Request::Reload {
                    path: Some("/r.toml".into()),
                    text: None,
                    name: None,
                    confirm_within: Some(2.5),
                    allow_rescue_change: true,
                },
                json!({"cmd": "reload", "path": "/r.toml", "confirm_within": 2.5, "allow_rescue_change": true}),
            ),
            (
                Request::Reload {
                    path: None,
                    text: Some("version = 1".into()),
                    name: Some("x.toml".into()),
                    confirm_within: None,
                    allow_rescue_change: false,
                },
                json!({"cmd": "reload", "text": "version = 1", "name": "x.toml"}),
            ),
            (Request::Confirm, json!({"cmd": "confirm"})),
            (
                Request::Rollback {
                    to: None,
                    confirm_within: None,
                },
                json!({"cmd": "rollback"}),
            ),
            (
                Request::Rollback {
                    to: Some(4),
                    confirm_within: Some(2.0),
                },
                json!({"cmd": "rollback", "to": 4, "confirm_within": 2.0}),
            ),
            (
                Request::Probe {
                    port: "lan1".into(),
                    packet: "udp 10.0.0.1:1 -> 10.0.0.2:53".into(),
                    route: Some("lan:wan".into()),
                },
                json!({"cmd": "probe", "port": "lan1", "packet": "udp 10.0.0.1:1 -> 10.0.0.2:53", "route": "lan:wan"}),
            ),
            (
                Request::Set {
                    set: "bl".into(),
                    op: SetAction::Del,
                    elements: vec!["203.0.113.0/24".into()],
                    confirm_within: None,
                },
                json!({"cmd": "set", "set": "bl", "op": "del", "elements": ["203.0.113.0/24"]}),
            ),
            (Request::DataPath, json!({"cmd": "data-path"})),
            (
                Request::Shadow {
                    path: "/c.toml".into(),
                },
                json!({"cmd": "shadow", "path": "/c.toml"}),
            ),
            (Request::ShadowStatus, json!({"cmd": "shadow-status"})),
            (Request::ShadowClear, json!({"cmd": "shadow-clear"})),
            (Request::LogReopen, json!({"cmd": "log-reopen"})),
            (Request::Observe, json!({"cmd": "observe"})),
            (Request::Flows { limit: None }, json!({"cmd": "flows"})),
            (
                Request::Flows { limit: Some(5) },
                json!({"cmd": "flows", "limit": 5}),
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_value(&req).unwrap(), wire, "{req:?}");
            assert_eq!(
                serde_json::from_value::<Request>(wire.clone()).unwrap(),
                req,
                "{wire}"
            );
            assert_eq!(wire["cmd"], req.cmd());
        }
        // Unknown fields of requests with fields, and unknown commands, are refused.
        assert!(serde_json::from_value::<Request>(json!({"cmd": "rollback", "too": 1})).is_err());
        assert!(serde_json::from_value::<Request>(json!({"cmd": "format-disk"})).is_err());
    }

    /// What a server writes, a client reads back as the same typed reply.
    #[test]
    fn replies_round_trip_through_the_wire_form() {
        fn back<T: DeserializeOwned>(r: &Response) -> Reply<T> {
            let line = r.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            read_reply::<T>(serde_json::from_str(&line).unwrap()).unwrap()
        }
        let gen = GenerationReply {
            generation: 7,
            digest: "ab".repeat(32),
            state: GenerationState::PendingConfirm,
            confirm_deadline: Some("2026-12-07T11:03:03Z".into()),
            warnings: vec!["r.toml:3:1: rule 2 is shadowed".into()],
        };
        assert_eq!(
            back::<GenerationReply>(&Response::Generation(gen.clone())),
            Ok(gen)
        );
        let probe = ProbeReply {
            generation: 2,
            verdict: Verdict::Deny,
            stage: "pacl".into(),
            acl: Some("in".into()),
            rule: "default".into(),
        };
        assert_eq!(back::<ProbeReply>(&Response::Probe(probe.clone())), Ok(probe));
        let dp = DataPathReply {
            data_path: DataPathReport {
                mode: "bridge".into(),
                workers: 2,
                interfaces: vec![InterfaceCounters {
                    interface: "pa".into(),
                    rx: 5,
                    permitted: 4,
                    denied: 1,
                    forwarded: 4,
                    tx_errors: 0,
                    oversize: 0,
                    rx_errors: 0,
                    super_frames: 2,
                    rx_dropped: 3,
                }],
            },
        };
        assert_eq!(back::<DataPathReply>(&Response::DataPath(dp.clone())), Ok(dp));
        let shadow = ShadowReply {
            shadow: Some(ShadowReport {
                source: "/c.toml".into(),
                digest: "cd".repeat(32),
                promoted: false,
                frames: 10,
                differ: 1,
                other_differ: 0,
                flows_checked: 3,
                flows_cut: 1,
                acls: vec![ShadowAcl {
                    name: "in".into(),
                    rules: vec![ShadowRule {
                        id: "web".into(),
                        differ: 1,
                    }],
                    default_differ: 0,
                }],
                examples: vec![ShadowExample {
                    interface: "pa".into(),
                    packet: "tcp 10.0.0.1:1 -> 10.0.0.2:80".into(),
                    active: Verdict::Permit,
                    candidate: Verdict::Deny,
                    stage: "pacl".into(),
                    acl: Some("in".into()),
                    rule: "web".into(),
                }],
            }),
        };
        assert_eq!(
            back::<ShadowReply>(&Response::Shadow(Box::new(shadow.clone()))),
            Ok(shadow)
        );
        let flows = FlowsReply {
            stats: Some(crate::flow::FlowStats {
                active: 1,
                max: 8,
                created: 2,
                expired: 1,
                refused: 0,
                cut: 0,
            }),
            flows: vec![crate::stateful::FlowEntry {
                key: "udp 10.0.0.1:5 -> 10.0.0.2:53".into(),
                state: "active".into(),
                age: 3,
                idle: 1,
                packets_out: 2,
                bytes_out: 120,
                packets_in: 1,
                bytes_in: 90,
                generation: 4,
                rule: "in/dns".into(),
                checked: 4,
            }],
            total: 1,
        };
        assert_eq!(
            back::<FlowsReply>(&Response::Flows(Box::new(flows.clone()))),
            Ok(flows)
        );
        assert_eq!(
            back::<ConfirmReply>(&Response::Confirmed(ConfirmReply { generation: 3 })),
            Ok(ConfirmReply { generation: 3 })
        );
        let refused = ErrorReply {
            error: "refused at stage parse".into(),
            stage: Some(ReloadStage::Parse),
            errors: vec!["r.toml:1:1: bad".into()],
        };
        assert_eq!(
            back::<GenerationReply>(&Response::Error(refused.clone())),
            Err(refused)
        );
        // A reply that is not of the protocol is an error, not a default value.
        assert!(read_reply::<ConfirmReply>(json!({"generation": 3})).is_err());
        assert!(read_reply::<ConfirmReply>(json!({"ok": true})).is_err());
    }
}
