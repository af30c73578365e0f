//! Runs the real `palisade` binary as a daemon in a temp directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A temp directory with a running daemon (config `rules.toml`, socket `ctl.sock`, state `state/`).
pub struct Daemon {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("palisade-cli-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

impl Daemon {
    /// A directory for a daemon, not started yet.
    pub fn new(tag: &str) -> Self {
        Daemon {
            dir: temp_dir(tag),
            child: None,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("rules.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts `palisade run` and waits until the socket answers.
    pub fn start(&mut self) {
        self.start_with(&[], None);
    }

    /// The `palisade run` command line of this daemon, plus `extra` arguments.
    pub fn run_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(self.config())
            .arg("--control")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state())
            .args(extra);
        cmd
    }

    /// Starts `palisade run` with `extra` arguments (under `umask` when given,
    /// through `sh -c 'umask U; exec ...'`) and waits until the socket answers.
    /// The log is appended to, so restarts keep the earlier lines.
    pub fn start_with(&mut self, extra: &[&str], umask: Option<&str>) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut cmd = match umask {
            None => self.run_command(extra),
            Some(u) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {u}; exec \"$0\" \"$@\""))
                    .arg(BIN)
                    .arg("run")
                    .arg("--config")
                    .arg(self.config())
                    .arg("--control")
                    .arg(self.socket())
                    .arg("--state-dir")
                    .arg(self.state())
                    .args(extra);
                sh
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if self.socket().exists() && self.ask(json!({"cmd": "status"})).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not open its socket; log:\n{}", self.log());
    }

    /// Stops the daemon (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the daemon with SIGKILL (a crash: nothing runs on the way out) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// One raw request on the socket.
    pub fn ask(&self, req: Value) -> std::io::Result<Value> {
        palisade_engine::control::request(&self.socket(), &req, Duration::from_secs(30))
    }

    /// Runs `palisade ARGS... --control SOCK`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--control")
            .arg(self.socket())
            .output()
            .unwrap()
    }

    /// `palisade status --json`, parsed.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The active generation's verdict for `packet` entering `port` (optionally routed `FROM:TO`).
    pub fn probe(&self, port: &str, packet: &str, route: Option<&str>) -> String {
        let mut req = json!({"cmd": "probe", "port": port, "packet": packet});
        if let Some(r) = route {
            req["route"] = json!(r);
        }
        let reply = self.ask(req).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
        reply["verdict"].as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Status fields a refused update must not change.
pub fn enforced(st: &Value) -> Value {
    let acls: Vec<Value> = st["acls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!({"name": a["name"], "rules": a["rules"], "bindings": a["bindings"].as_array().unwrap().iter().map(|b| json!([b["kind"], b["target"], b["direction"]])).collect::<Vec<_>>()}))
        .collect();
    json!({"generation": st["generation"], "digest": st["digest"], "source": st["source"], "state": st["state"], "acls": acls, "rescue": st["rescue"]})
}

/// An edge rule set with a Port ACL, a VLAN ACL and Routed ACLs in and out, plus rescue SSH.
pub const EDGE: &str = r#"version = 1

[[port]]
name = "lan1"
vlan = 10

[[port]]
name = "wan0"

[[interface]]
name = "lan"
vlan = 10

[[interface]]
name = "wan"
port = "wan0"

[[rescue]]
id = "mgmt-ssh"
proto = "tcp"
dst_port = 22
src = "192.0.2.0/28"

[[acl]]
name = "lan-in"
default = "deny"
  [[acl.rule]]
  id = "web"
  action = "permit"
  proto = "tcp"
  dst_port = [80, 443]
  [[acl.rule]]
  id = "dns"
  action = "permit"
  proto = "udp"
  dst_port = 53

[[acl]]
name = "vlan10"
default = "permit"
  [[acl.rule]]
  id = "no-smb"
  action = "deny"
  proto = "tcp"
  dst_port = 445

[[acl]]
name = "wan-in"
default = "deny"
  [[acl.rule]]
  id = "replies"
  action = "permit"
  proto = "tcp"
  tcp_flags = "ack"

[[acl]]
name = "wan-out"
default = "permit"
  [[acl.rule]]
  id = "no-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23

[[bind]]
acl = "lan-in"
port = "lan1"

[[bind]]
acl = "vlan10"
vlan = 10

[[bind]]
acl = "wan-in"
interface = "wan"
direction = "in"

[[bind]]
acl = "wan-out"
interface = "wan"
direction = "out"

[[expect]]
port = "lan1"
packet = { proto = "tcp", src = "10.0.10.5", dst = "198.51.100.7", dst_port = 443 }
verdict = "permit"
"#;

/// EDGE with web denied instead of permitted (a second valid generation).
pub fn edge_b() -> String {
    EDGE.replace(
        "  id = \"web\"\n  action = \"permit\"",
        "  id = \"web\"\n  action = \"deny\"",
    )
    .replace("verdict = \"permit\"\n", "verdict = \"deny\"\n")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    palisade_rules::Digest::of(bytes).to_string()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// strace and the daemon it runs: dropping it stops the daemon (SIGTERM; a
/// SIGTERM to strace would only detach it) and then strace.
pub struct Traced {
    /// The strace process (the daemon is its child).
    pub strace: std::process::Child,
}

impl Drop for Traced {
    fn drop(&mut self) {
        let id = self.strace.id();
        let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "palisade") {
                let _ = std::process::Command::new("kill").args(["-TERM", pid]).status();
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.strace.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}
