//! The control socket: line-delimited JSON requests to a running [`crate::Engine`].
//!
//! One request per line, one reply line per request. Requests and replies are
//! Rust types ([`proto`]); the [`server`] answers them and the [`Client`]
//! sends them, so the CLI, tests and embedders speak one typed protocol. A
//! request is a JSON object with a `cmd`:
//!
//! | request ([`Request`]) | reply (besides `"ok"`) |
//! |---|---|
//! | `{"cmd":"status"}` | `"status"`: the [`crate::Status`] ([`StatusReply`]) |
//! | `{"cmd":"reload"}` (from the config), `{"cmd":"reload","path":"/abs/rules.toml"}`, or `{"cmd":"reload","name":"x.toml","text":"..."}`; optional `"confirm_within"` (seconds), `"allow_rescue_change"` | `"generation"`, `"digest"`, `"state"`, `"confirm_deadline"`, `"warnings"` ([`GenerationReply`]); refused: `"stage"`, `"errors"` |
//! | `{"cmd":"confirm"}` | `"generation"` ([`ConfirmReply`]) |
//! | `{"cmd":"rollback"}` or `{"cmd":"rollback","to":7}`; optional `"confirm_within"` (seconds) | as reload |
//! | `{"cmd":"probe","port":"lan1","packet":"tcp 10.0.0.1:1234 -> 192.0.2.1:443","route":"lan:wan"}` | `"verdict"`, `"stage"`, `"acl"`, `"rule"`, `"generation"` (not counted; [`ProbeReply`]) |
//! | `{"cmd":"set","set":"blocklist","op":"add","elements":["203.0.113.9"]}` (`op` `add` or `del`; optional `"confirm_within"`) | `"set"`, `"changed"`, `"elements"`, `"file"`, `"file_digest"`, `"generation"`, `"digest"`, `"state"`, `"confirm_deadline"` ([`SetReply`]); refused like a reload |
//! | `{"cmd":"data-path"}` | `"data_path"`: mode, workers, per-interface counters ([`DataPathReply`]) |
//! | `{"cmd":"shadow","path":"/abs/candidate.toml"}`, `{"cmd":"shadow-status"}` | `"shadow"`: the candidate's report or `null` ([`ShadowReply`]); refused like a reload |
//! | `{"cmd":"shadow-clear"}` | nothing but `"ok"` |
//! | `{"cmd":"log-reopen"}` | nothing but `"ok"`: the log files were reopened (as on SIGUSR1) |
//! | `{"cmd":"observe"}` | `"observe"`: logging and metrics figures, the last control events ([`ObserveReply`]) |
//! | `{"cmd":"flows"}`, optional `"limit"` (default [`FLOWS_LIMIT`]) | `"stats"`, `"flows"` (key, state, age, idle, packets and bytes each way, generation and rule that opened it, generation last checked), `"total"` ([`FlowsReply`]) |
//!
//! The engine answers the first six and `flows` itself; the data-path requests are
//! answered by the [`Extension`] a data path installs (see the
//! `palisade-dataplane` crate), and without one they fail with "this daemon
//! has no data path"; `log-reopen` and `observe` likewise by the logger's
//! (the `palisade-observe` crate).
//!
//! The server reads each client's uid from the socket (`SO_PEERCRED`) and
//! names it in the control event of every reload, confirm and rollback
//! ([`crate::events`]).
//!
//! A failed request answers `{"ok":false,"error":"..."}` (plus `stage` and
//! `errors` for a refused reload; [`ErrorReply`]). A line longer than
//! [`MAX_REQUEST`] bytes is answered with an error and the connection closed;
//! a connection that does not complete a request line within
//! [`IDLE_TIMEOUT`] (idle, or trickling bytes) is closed. Malformed requests
//! never stop the server. The socket file is created with mode 0600 (bound
//! inside a private 0700 directory, restricted, then renamed into place, so
//! it is never reachable with wider permissions whatever the umask), and a
//! socket another daemon answers on is never replaced ([`bind`]).
//!
//! A reload or rollback may take minutes (a huge rule set compiles for a
//! while); the reply comes when it is done. Meanwhile `status` answers at
//! once and says what is running (`reloading`: stage, source, start), which
//! is how [`Client::call_long`] reports progress, waits as long as the daemon
//! works, and tells a caller that gives up whether the reload went on.
//!
//! ```
//! use palisade_engine::control::{handle, Request, Response};
//! let dir = std::env::temp_dir().join(format!("palisade-control-doc-{}", std::process::id()));
//! let (engine, _) = palisade_engine::Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
//! let Response::Status(reply) = handle(&engine, Request::Status, None) else { panic!() };
//! assert_eq!(reply.status.state, palisade_engine::GenerationState::NoRules);
//! assert!(matches!(handle(&engine, Request::DataPath, None), Response::Error(_)));
//! drop(engine);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod client;
pub mod observe;
mod peer;
pub mod proto;
pub mod server;

pub use client::{request, Client, ClientError};
pub use observe::{EventReport, LogReport, MetricsReport, ObserveReply, ObserveReport, TimedError};
pub use peer::peer_uid;
pub use proto::{
    read_reply, ConfirmReply, DataPathReply, DataPathReport, ErrorReply, FlowsReply, GenerationReply,
    InterfaceCounters, ProbeReply, Reply, Request, Response, SetAction, SetReply, ShadowAcl, ShadowExample,
    ShadowReply, ShadowReport, ShadowRule, StatusReply, FLOWS_LIMIT,
};
pub use server::{
    answers, bind, handle, handle_as, handle_line, parse_request, serve, serve_connection,
    serve_connection_with, serve_with, Extension, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST,
};
