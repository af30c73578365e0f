//! The control socket: line-delimited JSON requests to a running [`Engine`].
//!
//! One request per line, one reply line per request. A request is a JSON
//! object with a `cmd`:
//!
//! | request | reply (besides `"ok"`) |
//! |---|---|
//! | `{"cmd":"status"}` | `"status"`: the [`crate::Status`] |
//! | `{"cmd":"reload"}` (from the config), `{"cmd":"reload","path":"/abs/rules.toml"}`, or `{"cmd":"reload","name":"x.toml","text":"..."}`; optional `"confirm_within"` (seconds), `"allow_rescue_change"` | `"generation"`, `"digest"`, `"state"`, `"confirm_deadline"`, `"warnings"`; refused: `"stage"`, `"errors"` |
//! | `{"cmd":"confirm"}` | `"generation"` |
//! | `{"cmd":"rollback"}` or `{"cmd":"rollback","to":7}` | as reload |
//! | `{"cmd":"probe","port":"lan1","packet":"tcp 10.0.0.1:1234 -> 192.0.2.1:443","route":"lan:wan"}` | `"verdict"`, `"stage"`, `"acl"`, `"rule"`, `"generation"` (not counted) |
//!
//! A failed request answers `{"ok":false,"error":"..."}` (plus `stage` and
//! `errors` for a refused reload). A line longer than [`MAX_REQUEST`] bytes
//! is answered with an error and the connection closed; a connection that
//! does not complete a request line within [`IDLE_TIMEOUT`] (idle, or
//! trickling bytes) is closed. Malformed requests never stop the server.
//! The socket file is created with mode 0600 (bound under a temporary name,
//! restricted, then renamed into place, so it is never reachable with wider
//! permissions).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Engine, ReloadSource};
use crate::reload::ReloadOptions;

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 1 << 20;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many connections are served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 32;

/// A request, as the socket receives it.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Read status.
    Status,
    /// Reload: from the config, a path, or inline text.
    Reload {
        /// A rule file path the daemon reads.
        #[serde(default)]
        path: Option<String>,
        /// Inline rule file text.
        #[serde(default)]
        text: Option<String>,
        /// Name for diagnostics with `text`.
        #[serde(default)]
        name: Option<String>,
        /// Commit-confirmed window in seconds.
        #[serde(default)]
        confirm_within: Option<f64>,
        /// Allow rescue rules to change.
        #[serde(default)]
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
        #[serde(default)]
        route: Option<String>,
    },
    /// Roll back to the previous or a kept generation.
    Rollback {
        /// The kept generation; the previous rules when absent.
        #[serde(default)]
        to: Option<u64>,
    },
}

/// Extra commands served beside the built-in ones (e.g. shadow evaluation by
/// a data-path front end): gets every request whose `cmd` is not built in;
/// returns `None` to let it be answered "unknown command".
pub type Extension = Arc<dyn Fn(&Engine, &Value) -> Option<Value> + Send + Sync>;

/// Parses one request line into a built-in [`Request`], without an engine
/// (pure; the entry point of the fuzz target `control`). Extension commands
/// are not known here: they fail like any unknown `cmd`.
///
/// ```
/// use palisade_engine::control::{parse_request, Request};
/// assert!(matches!(parse_request(r#"{"cmd":"status"}"#), Ok(Request::Status)));
/// assert!(parse_request(r#"{"cmd":"reload","bogus":1}"#).unwrap_err().contains("bogus"));
/// ```
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str::<Request>(line).map_err(|e| format!("malformed request: {e}"))
}

/// Answers one request line; never panics on any input.
pub fn handle_line(engine: &Engine, line: &str, ext: Option<&Extension>) -> Value {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error(format!("malformed request: {e}")),
    };
    // Deserializes from the borrowed tree, so an extension request keeps it without a copy.
    match Request::deserialize(&value) {
        Ok(req) => handle(engine, req),
        Err(e) => {
            let builtin = matches!(
                value.get("cmd").and_then(Value::as_str),
                Some("status" | "reload" | "confirm" | "rollback" | "probe")
            );
            if !builtin {
                if let Some(reply) = ext.and_then(|f| f(engine, &value)) {
                    return reply;
                }
            }
            error(format!("malformed request: {e}"))
        }
    }
}

fn error(msg: String) -> Value {
    json!({ "ok": false, "error": msg })
}

/// Answers one parsed request.
pub fn handle(engine: &Engine, req: Request) -> Value {
    match req {
        Request::Status => json!({ "ok": true, "status": engine.status() }),
        Request::Reload {
            path,
            text,
            name,
            confirm_within,
            allow_rescue_change,
        } => {
            let source = match (path, text) {
                (Some(_), Some(_)) => return error("give either path or text, not both".into()),
                (Some(p), None) => ReloadSource::Path(p.into()),
                (None, Some(t)) => ReloadSource::Bytes {
                    name: name.unwrap_or_else(|| "control".into()),
                    bytes: t.into_bytes(),
                },
                (None, None) => ReloadSource::Config,
            };
            let confirm_within = match confirm_within {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
                Some(s) => {
                    return error(format!(
                        "confirm_within must be a positive number of seconds, not {s}"
                    ))
                }
            };
            let opts = ReloadOptions {
                confirm_within,
                allow_rescue_change,
                fail_at: None,
            };
            reload_reply(engine.reload(source, &opts))
        }
        Request::Confirm => match engine.confirm() {
            Ok(g) => json!({ "ok": true, "generation": g }),
            Err(e) => error(e),
        },
        Request::Rollback { to } => reload_reply(engine.rollback(to)),
        Request::Probe { port, packet, route } => {
            let key = match palisade_rules::parse_packet_spec(&packet) {
                Ok(k) => k,
                Err(e) => return error(e),
            };
            let route = match route.as_deref().map(|r| r.split_once(':')) {
                None => None,
                Some(Some(r)) => Some(r),
                Some(None) => return error("route must be FROM:TO".into()),
            };
            match engine.probe(&port, route, &key) {
                Ok(p) => json!({
                    "ok": true, "generation": p.generation, "verdict": p.verdict.as_str(),
                    "stage": p.stage, "acl": p.acl, "rule": p.rule,
                }),
                Err(e) => error(e),
            }
        }
    }
}

fn reload_reply(res: Result<crate::ReloadOk, crate::ReloadError>) -> Value {
    match res {
        Ok(ok) => json!({
            "ok": true,
            "generation": ok.generation,
            "digest": ok.digest.to_string(),
            "state": ok.state.as_str(),
            "confirm_deadline": ok.confirm_deadline.map(crate::status::rfc3339),
            "warnings": ok.warnings,
        }),
        Err(e) => json!({
            "ok": false,
            "error": format!("refused at stage {}", e.stage),
            "stage": e.stage.as_str(),
            "errors": e.errors,
        }),
    }
}

/// Binds the control socket at `path` with mode 0600, replacing a stale socket
/// (but never a regular file or directory).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
    }
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Serves connections on `listener` until the process ends, one thread per
/// connection (at most [`MAX_CONNECTIONS`]).
pub fn serve(engine: Arc<Engine>, listener: UnixListener, ext: Option<Extension>) {
    serve_with(engine, listener, ext, IDLE_TIMEOUT);
}

/// [`serve`], closing connections idle for `idle` instead of [`IDLE_TIMEOUT`].
pub fn serve_with(engine: Arc<Engine>, listener: UnixListener, ext: Option<Extension>, idle: Duration) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else {
            // Out of descriptors or similar: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            let _ = writeln!(stream, "{}", error("too many connections".into()));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (engine, active, ext) = (Arc::clone(&engine), Arc::clone(&active), ext.clone());
        let spawned = std::thread::Builder::new()
            .name("palisade-control".into())
            .spawn({
                let active = Arc::clone(&active);
                move || {
                    serve_connection_with(&engine, stream, ext.as_ref(), idle);
                    active.fetch_sub(1, Ordering::Relaxed);
                }
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves one connection: a reply line per request line.
pub fn serve_connection(engine: &Engine, stream: UnixStream, ext: Option<&Extension>) {
    serve_connection_with(engine, stream, ext, IDLE_TIMEOUT);
}

/// [`serve_connection`], closing the connection when idle for `idle`.
pub fn serve_connection_with(engine: &Engine, stream: UnixStream, ext: Option<&Extension>, idle: Duration) {
    let _ = stream.set_read_timeout(Some(idle));
    let _ = stream.set_write_timeout(Some(idle));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(Deadline {
        inner: stream,
        until: Instant::now() + idle,
    });
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // The whole next request line must arrive within `idle`: a client
        // trickling a byte now and then is closed like an idle one.
        reader.get_mut().until = Instant::now() + idle;
        let n = match (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return, // closed, idle or broken
            Ok(n) => n,
        };
        if n > MAX_REQUEST {
            let _ = writeln!(
                writer,
                "{}",
                error(format!("request longer than {MAX_REQUEST} bytes"))
            );
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        // One write per reply: `writeln!` on a `Value` would send every JSON
        // token in its own write(2), and a client that sends several requests
        // before reading filled the socket buffer with those tiny writes, so
        // the server blocked and timed out halfway through a reply.
        let mut reply = handle_line(engine, line.trim(), ext).to_string();
        reply.push('\n');
        if writer
            .write_all(reply.as_bytes())
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

/// A reader that fails with `TimedOut` once `until` has passed.
struct Deadline<R> {
    inner: R,
    until: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.until {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.inner.read(buf)
    }
}

/// Sends one request and reads its reply (a client for tools and tests).
pub fn request(socket: &Path, req: &Value, timeout: Duration) -> io::Result<Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    writeln!(stream, "{req}")?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}")))
}
