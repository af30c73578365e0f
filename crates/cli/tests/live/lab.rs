//! A network lab for live tests: namespaces and veth pairs created for one
//! test and removed when the [`Lab`] is dropped, even after a panic.
//!
//! Names carry the test process id and a counter, so runs never collide.
//! Only addresses inside these namespaces are used (198.18.0.0/15, the
//! benchmarking range), and every interface is set up with IPv6 off and
//! static neighbour entries, so the only frames on the wire are the ones a
//! test sends.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why a live test cannot run here, or `None` when it can.
pub fn unavailable() -> Option<&'static str> {
    // SAFETY-free check: root owns /proc/self by uid 0.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if uid.as_deref() != Some("0") {
        return Some("not root");
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("ip(8) missing"),
    }
}

/// Runs a command to completion and panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process that is killed when dropped, with its stdout read line by line.
pub struct Proc {
    pub child: Child,
    pub out: Option<BufReader<ChildStdout>>,
    /// Drains stdout once the process is running, so a chatty probe never blocks on a full pipe.
    drain: Option<std::thread::JoinHandle<String>>,
    pub what: String,
}

impl Proc {
    /// Waits for the next line of stdout (e.g. `ready`), panicking after `timeout`; then
    /// keeps reading the rest in the background.
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut out = self.out.take().expect("stdout taken");
        let mut line = String::new();
        // Reads block; the probe prints `ready` within milliseconds or exits.
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap_or(0);
            if line.trim() == want {
                break;
            }
            assert!(
                n > 0 && Instant::now() < deadline,
                "{}: expected {want:?}, got EOF/{line:?}",
                self.what
            );
        }
        self.drain = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }));
    }

    fn rest(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut out) = self.out.take() {
            let _ = out.read_to_string(&mut s);
        }
        if let Some(d) = self.drain.take() {
            s.push_str(&d.join().unwrap_or_default());
        }
        s
    }

    /// Kills the process and returns the rest of its stdout.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.rest()
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its stdout and success.
    pub fn wait(mut self, timeout: Duration) -> (String, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (self.rest(), status.success()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let what = self.what.clone();
                    let s = self.finish();
                    panic!("{what}: did not finish in {timeout:?}; output so far: {s}");
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Namespaces, links and a scratch directory owned by one test.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    pub dir: PathBuf,
}

impl Lab {
    /// A new, empty lab.
    pub fn new(test: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("pal{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("palisade-live-{prefix}-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Lab {
            prefix,
            namespaces: Vec::new(),
            dir,
        }
    }

    /// Creates namespace `short` (IPv6 off, loopback up) and returns its full name.
    pub fn netns(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        self.namespaces.push(name.clone());
        for key in ["all", "default"] {
            run(Command::new("ip")
                .args(["netns", "exec", &name, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1")));
        }
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        name
    }

    /// Turns IPv6 on for `dev` in `ns`, without duplicate address detection or router solicitations.
    pub fn enable_ipv6(&self, ns: &str, dev: &str) {
        for (key, value) in [
            ("accept_dad", 0),
            ("router_solicitations", 0),
            ("disable_ipv6", 0),
        ] {
            run(Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{dev}.{key}={value}")));
        }
    }

    /// A veth pair: `if_a` (MAC `mac_a`) in `ns_a`, `if_b` in `ns_b`, both up.
    pub fn veth(&self, ns_a: &str, if_a: &str, mac_a: &str, ns_b: &str, if_b: &str) {
        run(Command::new("ip").args([
            "link", "add", if_a, "netns", ns_a, "address", mac_a, "type", "veth", "peer", "name", if_b,
            "netns", ns_b,
        ]));
        run(Command::new("ip").args(["-n", ns_a, "link", "set", if_a, "up"]));
        run(Command::new("ip").args(["-n", ns_b, "link", "set", if_b, "up"]));
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(ns).args(args));
    }

    /// A command run inside `ns`.
    pub fn cmd(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Starts a command with stdout piped, killed when the returned [`Proc`] drops.
    pub fn spawn(&self, mut cmd: Command, what: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let out = child.stdout.take().map(BufReader::new);
        Proc {
            child,
            out,
            drain: None,
            what: what.to_string(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Deleting a namespace removes its veth ends, and with them their peers.
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
