//! The client side of the control socket: one typed call per request.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::proto::{read_reply, ErrorReply, Request, StatusReply};
use crate::status::{ReloadProgress, Status};

/// Why a [`Client`] call did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached, or the daemon did not answer in time.
    Unreachable(io::Error),
    /// The daemon answered something that is not a reply of the protocol.
    Protocol(String),
    /// The daemon answered with an error (a refused reload carries its stage and errors).
    Refused(ErrorReply),
    /// The caller's own time limit passed while the daemon was still working
    /// on a long request ([`Client::call_long`]). The request goes on in the
    /// daemon; `status` is the daemon's latest status (its `reloading` says
    /// whether the work is still running; `last_reload`, how it ended).
    GaveUp {
        /// How long the caller waited.
        waited: Duration,
        /// The latest status the daemon answered with, if any.
        status: Option<Box<Status>>,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(e) => write!(f, "cannot talk to the daemon: {e}"),
            ClientError::Protocol(e) => write!(f, "unexpected reply from the daemon: {e}"),
            ClientError::Refused(e) => write!(f, "{e}"),
            ClientError::GaveUp { waited, status } => {
                write!(f, "gave up waiting after {} s; ", waited.as_secs())?;
                match status.as_deref() {
                    Some(Status {
                        reloading: Some(p), ..
                    }) => write!(
                        f,
                        "the daemon is still working on it (at stage {} of {}): it goes on, and becomes active if every stage passes; `palisade status` shows the outcome",
                        p.stage, p.source
                    ),
                    Some(st) => match &st.last_reload {
                        Some(lr) if lr.ok => write!(
                            f,
                            "the request went on in the daemon: generation {} is active",
                            lr.generation.unwrap_or(st.generation)
                        ),
                        Some(lr) => write!(
                            f,
                            "the request went on in the daemon and was refused at stage {}",
                            lr.stage.map_or("-", |s| s.as_str())
                        ),
                        None => f.write_str("the request goes on in the daemon; `palisade status` shows the outcome"),
                    },
                    None => f.write_str("the request goes on in the daemon (which did not answer status meanwhile)"),
                }
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Unreachable(e) => Some(e),
            ClientError::Protocol(_) => None,
            ClientError::Refused(e) => Some(e),
            ClientError::GaveUp { .. } => None,
        }
    }
}

/// A client of one daemon's control socket.
///
/// ```
/// use palisade_engine::control::{Client, ClientError, Request};
/// let missing = std::env::temp_dir().join("palisade-no-such-daemon.sock");
/// let client = Client::new(&missing);
/// assert!(matches!(client.status(), Err(ClientError::Unreachable(_))));
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// How long a call waits for its reply unless told otherwise (a large rule set compiles for a while).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    /// How often [`Client::call_long`] looks at the daemon's progress.
    pub const POLL: Duration = Duration::from_secs(1);
    /// [`Client::call_long`] gives up on a daemon that has answered nothing for this long.
    pub const SILENT_LIMIT: Duration = Duration::from_secs(60);

    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The same client, waiting at most `timeout` for each reply.
    ///
    /// ```
    /// let c = palisade_engine::control::Client::new("/run/palisade.sock").with_timeout(std::time::Duration::from_secs(5));
    /// assert_eq!(c.socket(), std::path::Path::new("/run/palisade.sock"));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and reads its reply as a `T` (the reply type of that request).
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ClientError> {
        let line = serde_json::to_value(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = request(&self.socket, &line, self.timeout).map_err(ClientError::Unreachable)?;
        match read_reply::<T>(reply) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClientError::Refused(e)),
            Err(e) => Err(ClientError::Protocol(e)),
        }
    }

    /// The engine's status.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call::<StatusReply>(&Request::Status).map(|r| r.status)
    }

    /// Sends a request that may take long (a reload, a rollback) and waits
    /// for its reply as long as the daemon works on it: meanwhile it asks for
    /// the status every [`Client::POLL`] and hands the running reload's
    /// progress to `progress` (with the time waited so far). It gives up with
    /// [`ClientError::GaveUp`] when `limit` passes (the request goes on in
    /// the daemon), and with [`ClientError::Unreachable`] when the daemon
    /// answers neither the request nor status for [`Client::SILENT_LIMIT`].
    ///
    /// ```
    /// use palisade_engine::control::{Client, ClientError, GenerationReply, Request};
    /// let client = Client::new(std::env::temp_dir().join("palisade-no-such-daemon.sock"));
    /// let req = Request::Rollback { to: None, confirm_within: None };
    /// let res = client.call_long::<GenerationReply>(&req, None, |_, _| {});
    /// assert!(matches!(res, Err(ClientError::Unreachable(_))));
    /// ```
    pub fn call_long<T: DeserializeOwned>(
        &self,
        req: &Request,
        limit: Option<Duration>,
        mut progress: impl FnMut(&ReloadProgress, Duration),
    ) -> Result<T, ClientError> {
        let unreachable = ClientError::Unreachable;
        let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream.write_all(line.as_bytes()).map_err(unreachable)?;
        stream.set_read_timeout(Some(Self::POLL)).map_err(unreachable)?;
        let start = Instant::now();
        let mut heard = Instant::now();
        let mut latest: Option<Box<Status>> = None;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    return Err(unreachable(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection without a reply",
                    )))
                }
                Ok(_) if buf.ends_with(b"\n") => {
                    let v: Value = serde_json::from_slice(&buf)
                        .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
                    return match read_reply::<T>(v) {
                        Ok(Ok(v)) => Ok(v),
                        Ok(Err(e)) => Err(ClientError::Refused(e)),
                        Err(e) => Err(ClientError::Protocol(e)),
                    };
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(unreachable(e)),
            }
            // No reply yet: is the daemon still working on it?
            let waited = start.elapsed();
            let poll = self.clone().with_timeout(Self::POLL.max(Duration::from_secs(5)));
            match poll.status() {
                Ok(st) => {
                    heard = Instant::now();
                    if let Some(p) = &st.reloading {
                        progress(p, waited);
                    }
                    latest = Some(Box::new(st));
                }
                Err(_) if heard.elapsed() > Self::SILENT_LIMIT => {
                    return Err(unreachable(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the daemon has answered nothing for {} s",
                            Self::SILENT_LIMIT.as_secs()
                        ),
                    )))
                }
                Err(_) => {}
            }
            if limit.is_some_and(|l| waited >= l) {
                return Err(ClientError::GaveUp {
                    waited,
                    status: latest,
                });
            }
        }
    }
}

/// Sends one raw JSON request line and reads the reply line as JSON, without
/// interpreting it (for tools and tests that speak to the socket directly;
/// programs use [`Client`]).
pub fn request(socket: &Path, req: &Value, timeout: Duration) -> io::Result<Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = req.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    stream.flush()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}")))
}
