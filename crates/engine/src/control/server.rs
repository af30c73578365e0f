//! The server side of the control socket: bind, serve connections, answer
//! each request line (see the module above for the protocol).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Engine, ReloadSource, RollbackOptions};
use crate::reload::ReloadOptions;

use super::proto::{
    ConfirmReply, ErrorReply, GenerationReply, ProbeReply, Request, Response, SetReply, StatusReply,
};

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 1 << 20;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many connections are served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 32;

/// Answers the requests the engine does not serve itself (the data path's:
/// `data-path`, `shadow`, ...); returns `None` for a request it does not serve.
pub type Extension = Arc<dyn Fn(&Engine, &Request) -> Option<Response> + Send + Sync>;

/// Parses one request line into a [`Request`], without an engine (pure; the
/// entry point of the fuzz target `control`).
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
pub fn handle_line(engine: &Engine, line: &str, ext: Option<&Extension>) -> Response {
    match parse_request(line) {
        Ok(req) => handle(engine, req, ext),
        Err(e) => Response::error(e),
    }
}

/// Answers one parsed request: the engine's own requests here, the data
/// path's through `ext`.
pub fn handle(engine: &Engine, req: Request, ext: Option<&Extension>) -> Response {
    handle_as(engine, req, ext, None)
}

/// [`handle`] on behalf of the client with `uid` (from `SO_PEERCRED`), who
/// is named in the control events of reloads, confirms and rollbacks.
pub fn handle_as(engine: &Engine, req: Request, ext: Option<&Extension>, uid: Option<u32>) -> Response {
    match req {
        Request::Status => Response::Status(Box::new(StatusReply {
            status: engine.status(),
        })),
        Request::Reload {
            path,
            text,
            name,
            confirm_within,
            allow_rescue_change,
        } => {
            let source = match (path, text) {
                (Some(_), Some(_)) => return Response::error("give either path or text, not both"),
                (Some(p), None) => ReloadSource::Path(p.into()),
                (None, Some(t)) => ReloadSource::Bytes {
                    name: name.unwrap_or_else(|| "control".into()),
                    bytes: t.into_bytes(),
                },
                (None, None) => ReloadSource::Config,
            };
            let confirm_within = match window(confirm_within) {
                Ok(w) => w,
                Err(e) => return e,
            };
            let opts = ReloadOptions {
                confirm_within,
                allow_rescue_change,
                fail_at: None,
                hold_at: None,
            };
            generation_reply(engine.reload_by(source, &opts, uid))
        }
        Request::Set {
            set,
            op,
            elements,
            confirm_within,
        } => {
            let confirm_within = match window(confirm_within) {
                Ok(w) => w,
                Err(e) => return e,
            };
            let opts = ReloadOptions {
                confirm_within,
                ..ReloadOptions::default()
            };
            match engine.change_set_by(&set, op.into(), &elements, &opts, uid) {
                Ok(ch) => Response::Set(Box::new(SetReply {
                    set: ch.set,
                    changed: ch.changed,
                    elements: ch.elements,
                    file: ch.file.display().to_string(),
                    file_digest: ch.file_digest.to_string(),
                    generation: ch.reload.generation,
                    digest: ch.reload.digest.to_string(),
                    state: ch.reload.state,
                    confirm_deadline: ch.reload.confirm_deadline.map(crate::status::rfc3339),
                })),
                Err(e) => Response::Error(ErrorReply::from(&e)),
            }
        }
        Request::Confirm => match engine.confirm_by(uid) {
            Ok(generation) => Response::Confirmed(ConfirmReply { generation }),
            Err(e) => Response::error(e),
        },
        Request::Rollback { to, confirm_within } => {
            let confirm_within = match window(confirm_within) {
                Ok(w) => w,
                Err(e) => return e,
            };
            generation_reply(engine.rollback_with_by(to, &RollbackOptions { confirm_within }, uid))
        }
        Request::Flows { limit } => {
            let mut flows = engine.flows();
            let total = flows.len();
            flows.truncate(limit.unwrap_or(super::proto::FLOWS_LIMIT));
            Response::Flows(Box::new(super::proto::FlowsReply {
                stats: engine.flow_stats(),
                flows,
                total,
            }))
        }
        Request::Probe { port, packet, route } => {
            let key = match palisade_rules::parse_packet_spec(&packet) {
                Ok(k) => k,
                Err(e) => return Response::error(e),
            };
            let route = match route.as_deref().map(|r| r.split_once(':')) {
                None => None,
                Some(Some(r)) => Some(r),
                Some(None) => return Response::error("route must be FROM:TO"),
            };
            match engine.probe(&port, route, &key) {
                Ok(p) => Response::Probe(ProbeReply {
                    generation: p.generation,
                    verdict: p.verdict,
                    stage: p.stage,
                    acl: p.acl,
                    rule: p.rule,
                }),
                Err(e) => Response::error(e),
            }
        }
        other => {
            let cmd = other.cmd();
            let missing = match other {
                Request::LogReopen | Request::Observe => "no logger",
                _ => "no data path",
            };
            match ext.and_then(|f| f(engine, &other)) {
                Some(reply) => reply,
                None => Response::error(format!("{cmd}: this daemon has {missing}")),
            }
        }
    }
}

/// A commit-confirmed window in seconds, checked.
fn window(secs: Option<f64>) -> Result<Option<Duration>, Response> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Response::error(format!(
            "confirm_within must be a positive number of seconds, not {s}"
        ))),
    }
}

fn generation_reply(res: Result<crate::ReloadOk, crate::ReloadError>) -> Response {
    match res {
        Ok(ok) => Response::Generation(GenerationReply {
            generation: ok.generation,
            digest: ok.digest.to_string(),
            state: ok.state,
            confirm_deadline: ok.confirm_deadline.map(crate::status::rfc3339),
            warnings: ok.warnings,
        }),
        Err(e) => Response::Error(ErrorReply::from(&e)),
    }
}

/// Binds the control socket at `path` with mode 0600.
///
/// The socket is never reachable by anyone else before its mode is final: it
/// is bound inside a private directory (mode 0700, made next to `path`),
/// restricted to 0600 there, and only then renamed into place; the umask
/// plays no part. A socket at `path` that answers (another daemon serving
/// it) is never replaced: that is an error naming it. A stale socket (nobody
/// listening) is replaced; anything else at `path` is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    refuse_live_socket(path)?;
    let file = path
        .file_name()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a socket path", path.display()),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let private = parent.join(format!(".{file}.{}.{nonce:09}.d", std::process::id()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    }
    let placed = (|| {
        // Ours and private whatever the umask (made by us just now: create fails on anything already there).
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let tmp = private.join(&file);
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        // Checked again right before the rename: a daemon that started meanwhile is not replaced.
        refuse_live_socket(path)?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(private.join(&file));
    let _ = std::fs::remove_dir(&private);
    placed
}

/// Fails when `path` is a socket that answers, or something other than a
/// socket; removes a stale socket.
fn refuse_live_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: exists and is not a socket", path.display()),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: another daemon answers on this socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{}: cannot tell whether another daemon serves this socket: {e}",
                path.display()
            ),
        )),
    }
}

/// Whether a daemon answers on the socket at `path` (for a check before
/// anything else is started).
pub fn answers(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && UnixStream::connect(path).is_ok()
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
            let _ = stream.write_all(Response::error("too many connections").to_line().as_bytes());
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
    // Who is asking: named in the control events of what this connection changes.
    let uid = super::peer_uid(&stream);
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
            let reply = Response::error(format!("request longer than {MAX_REQUEST} bytes"));
            let _ = writer.write_all(reply.to_line().as_bytes());
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
        let reply = match parse_request(line.trim()) {
            Ok(req) => handle_as(engine, req, ext, uid),
            Err(e) => Response::error(e),
        }
        .to_line();
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
