//! The client side of the control socket: one typed call per request.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::proto::{read_reply, ErrorReply, Request, StatusReply};
use crate::status::Status;

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
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(e) => write!(f, "cannot talk to the daemon: {e}"),
            ClientError::Protocol(e) => write!(f, "unexpected reply from the daemon: {e}"),
            ClientError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Unreachable(e) => Some(e),
            ClientError::Protocol(_) => None,
            ClientError::Refused(e) => Some(e),
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
