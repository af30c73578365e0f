//! `GET /metrics` over HTTP/1.1, served by `tiny_http`.
//!
//! Why `tiny_http`: one endpoint needs neither an async runtime nor a
//! framework. `tiny_http` is a small synchronous HTTP/1.1 server (four small
//! dependencies, MIT/Apache-2.0) in wide use for exactly this (exporters,
//! `rouille`); `hyper` would bring `tokio` and a large build into a firewall
//! binary for one page. Requests are answered by two threads of ours, so a
//! slow scraper does not hold up the next one; scraping never touches the
//! data path (see [`crate::metrics`]).
//!
//! Bind it where only the scraper can reach it: the loopback address
//! (`127.0.0.1:9469`, `[::1]:9469`) is the one to use unless a firewall rule
//! of the box restricts the port. The endpoint has no authentication.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! let server = palisade_observe::http::MetricsServer::start("127.0.0.1:0", Arc::new(|| "up 1\n".to_string())).unwrap();
//! let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
//! s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
//! let mut reply = String::new();
//! s.read_to_string(&mut reply).unwrap();
//! assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
//! assert!(reply.ends_with("\r\n\r\nup 1\n"), "{reply}");
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Renders the exposition for one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Threads answering requests.
const HANDLERS: usize = 2;

/// Scrape figures (for status).
#[derive(Debug, Default)]
pub struct ScrapeStats {
    /// `GET /metrics` answered.
    pub scrapes: AtomicU64,
    /// Other requests (answered 404 or 405).
    pub other: AtomicU64,
    /// The last scrape: when (Unix seconds) and how long rendering took (microseconds).
    pub last: Mutex<Option<(u64, u64)>>,
}

/// A running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<ScrapeStats>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and serves
    /// `GET /metrics` with what `render` returns. Fails, naming the address,
    /// when it cannot bind.
    pub fn start(addr: &str, render: Render) -> Result<MetricsServer, String> {
        let server =
            tiny_http::Server::http(addr).map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?;
        let bound = match server.server_addr() {
            tiny_http::ListenAddr::IP(a) => a,
            _ => return Err(format!("--metrics {addr}: not an IP address")),
        };
        let server = Arc::new(server);
        let stats = Arc::new(ScrapeStats::default());
        let mut threads = Vec::new();
        for i in 0..HANDLERS {
            let (server, render, stats) = (Arc::clone(&server), Arc::clone(&render), Arc::clone(&stats));
            let t = std::thread::Builder::new()
                .name(format!("palisade-metrics{i}"))
                .spawn(move || serve(&server, &render, &stats))
                .map_err(|e| format!("cannot start the metrics server: {e}"))?;
            threads.push(t);
        }
        Ok(MetricsServer {
            server,
            addr: bound,
            threads,
            stats,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scrape figures.
    pub fn stats(&self) -> &ScrapeStats {
        &self.stats
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A response with one header (both fixed ASCII strings of ours, which `from_bytes` accepts).
fn with_header<R: std::io::Read>(
    mut r: tiny_http::Response<R>,
    name: &str,
    value: &str,
) -> tiny_http::Response<R> {
    if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        r.add_header(h);
    }
    r
}

fn serve(server: &tiny_http::Server, render: &Render, stats: &ScrapeStats) {
    // recv fails once the server is unblocked (dropped).
    while let Ok(req) = server.recv() {
        let path = req.url().split('?').next().unwrap_or("");
        let get = matches!(req.method(), tiny_http::Method::Get | tiny_http::Method::Head);
        let response = match (get, path) {
            (true, "/metrics") => {
                let started = Instant::now();
                let body = render();
                let took = started.elapsed().as_micros() as u64;
                stats.scrapes.fetch_add(1, Ordering::Relaxed);
                *stats.last.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((crate::logger::palisade_now(), took));
                with_header(
                    tiny_http::Response::from_string(body),
                    "Content-Type",
                    CONTENT_TYPE,
                )
            }
            (true, _) => {
                stats.other.fetch_add(1, Ordering::Relaxed);
                let r = tiny_http::Response::from_string("palisade: the metrics are at /metrics\n")
                    .with_status_code(404);
                with_header(r, "Content-Type", "text/plain; charset=utf-8")
            }
            (false, _) => {
                stats.other.fetch_add(1, Ordering::Relaxed);
                let r = tiny_http::Response::from_string("palisade: only GET\n").with_status_code(405);
                with_header(r, "Allow", "GET, HEAD")
            }
        };
        let _ = req.respond(response);
    }
}
