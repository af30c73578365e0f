//! Walks the catalogue of bad inputs (tests/bad-inputs/catalogue.toml): for
//! each case, the expected exit code and message, and proof that the running
//! daemon's active generation and its counters are unchanged.
//!
//! Large and binary inputs are generated here at test time (see `generate`),
//! so the repository keeps only small files.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad-inputs");
/// The daemon's compiled-memory cap for the walk (the catalogue's memory-cap case passes it).
const MEMORY_CAP: usize = 262_144;
/// The daemon's idle timeout for the walk, in seconds.
const IDLE_SECS: u64 = 1;
const MAX_RULE_FILE_BYTES: u64 = palisade_rules::MAX_RULE_FILE_BYTES as u64;

/// The daemon's config: one ACL with three rules, bound to a port.
const CONFIG: &str = r#"version = 1
[[port]]
name = "lan1"
vlan = 10
[[acl]]
name = "in"
default = "permit"
  [[acl.rule]]
  id = "no-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23
  [[acl.rule]]
  id = "dns"
  action = "permit"
  proto = "udp"
  dst_port = 53
  [[acl.rule]]
  id = "no-smb"
  action = "deny"
  proto = "tcp"
  dst_port = [139, 445]
[[bind]]
acl = "in"
port = "lan1"
"#;

struct Daemon {
    dir: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        std::fs::write(dir.join("rules.toml"), CONFIG).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.join("rules.toml"))
            .arg("--control")
            .arg(dir.join("ctl.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--memory-cap", &MEMORY_CAP.to_string()])
            .args(["--idle-timeout", &IDLE_SECS.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir: dir.to_path_buf(),
            child,
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if d.socket().exists() && ask(&d.socket(), "{\"cmd\":\"status\"}").is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not start: {}", d.log());
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// What must not change: `status --json` without the last reload's record and times.
    fn fingerprint(&self) -> Value {
        let out = palisade(&["status", "--json", "--control", self.socket().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "status: {}", text(&out));
        let mut st: Value = serde_json::from_slice(&out.stdout).unwrap();
        let obj = st.as_object_mut().unwrap();
        // `observe` lists recent control events: a refused reload is one, by design.
        for volatile in ["last_reload", "kept", "observe"] {
            obj.remove(volatile);
        }
        st
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn palisade(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One request, one reply line.
fn ask(socket: &Path, line: &str) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Makes a generated input in `dir`; returns its path.
fn generate(kind: &str, dir: &Path) -> PathBuf {
    let p = dir.join(format!("{kind}.toml"));
    match kind {
        "binary" => {
            // xorshift noise: invalid UTF-8 within the first bytes, deterministic.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let bytes: Vec<u8> = (0..65_536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8 | 0x80
                })
                .collect();
            std::fs::write(&p, bytes).unwrap();
        }
        "huge" => {
            // Sparse: one byte past the limit costs no disk.
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(MAX_RULE_FILE_BYTES + 1).unwrap();
        }
        "missing" => {}
        "deep" => {
            let n = 100_000;
            std::fs::write(
                &p,
                format!("version = 1\nx = {}1{}\n", "[".repeat(n), "]".repeat(n)),
            )
            .unwrap();
        }
        "errors" => {
            let mut t = String::from("version = 1\n[[acl]]\nname = \"a\"\n");
            for _ in 0..5000 {
                t.push_str("[[acl.rule]]\naction = \"maybe\"\n");
            }
            std::fs::write(&p, t).unwrap();
        }
        "too-many-rules" => {
            let mut t = String::from("version = 1\n[[acl]]\nname = \"a\"\n");
            for _ in 0..65_537 {
                t.push_str("[[acl.rule]]\naction = \"deny\"\n");
            }
            std::fs::write(&p, t).unwrap();
        }
        "past-memory-cap" => {
            // Each rule carries a list of 64 prefixes: well past 262,144 bytes compiled,
            // far below every file-size and rule-count limit.
            let mut t = String::from("version = 1\n[[port]]\nname = \"lan1\"\n[[acl]]\nname = \"big\"\n");
            for i in 0..200 {
                let list: Vec<String> = (0..64).map(|j| format!("\"10.{i}.{j}.0/24\"")).collect();
                t.push_str(&format!(
                    "[[acl.rule]]\naction = \"deny\"\nsrc = [{}]\n",
                    list.join(", ")
                ));
            }
            t.push_str("[[bind]]\nacl = \"big\"\nport = \"lan1\"\n");
            std::fs::write(&p, t).unwrap();
        }
        other => panic!("unknown generated input {other}"),
    }
    p
}

/// Runs a raw control-socket case; returns what happened, for the message check.
fn control_case(kind: &str, socket: &Path) -> String {
    match kind {
        "request-10mb" => {
            let mut s = UnixStream::connect(socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let writer = {
                let mut s = s.try_clone().unwrap();
                // The server stops reading after 1 MiB and closes: the rest may fail (EPIPE).
                std::thread::spawn(move || {
                    let chunk = vec![b'x'; 1 << 20];
                    for _ in 0..10 {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                    let _ = s.write_all(b"\n");
                })
            };
            let mut reply = String::new();
            BufReader::new(&mut s).read_line(&mut reply).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest); // the server closed the connection
            writer.join().unwrap();
            reply
        }
        "idle-client" => {
            let mut idle = UnixStream::connect(socket).unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(IDLE_SECS + 10)))
                .unwrap();
            // Served while the idle client waits.
            let st = ask(socket, "{\"cmd\":\"status\"}").unwrap();
            assert_eq!(st["ok"], true, "{st}");
            let t0 = Instant::now();
            let mut buf = [0u8; 16];
            let n = idle.read(&mut buf).expect("the daemon closes an idle client");
            assert_eq!(n, 0, "an idle client gets nothing but the close");
            let waited = t0.elapsed();
            assert!(
                waited < Duration::from_secs(IDLE_SECS + 5),
                "closed after {waited:?}"
            );
            "closed after idle timeout; others served meanwhile".to_string()
        }
        "slow-client" => {
            let mut slow = UnixStream::connect(socket).unwrap();
            let mut watch = slow.try_clone().unwrap();
            let t0 = Instant::now();
            let closed = std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let n = watch.read(&mut buf).unwrap_or(0);
                (n, t0.elapsed())
            });
            // A byte every 200 ms: never idle for a whole second, never done.
            for b in b"{\"cmd\":\"status\"".iter().cycle().take(100) {
                if closed.is_finished() || slow.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let st = ask(socket, "{\"cmd\":\"status\"}").unwrap();
            assert_eq!(st["ok"], true, "{st}");
            let (n, waited) = closed.join().unwrap();
            assert_eq!(n, 0, "the trickling client got a reply instead of the close");
            assert!(
                waited < Duration::from_secs(IDLE_SECS + 5),
                "closed after {waited:?}"
            );
            "closed before the request completed; others served meanwhile".to_string()
        }
        "hundred-clients" => {
            let socket = socket.to_path_buf();
            let clients: Vec<_> = (0..100)
                .map(|_| {
                    let socket = socket.clone();
                    std::thread::spawn(move || -> std::io::Result<Value> {
                        let mut s = UnixStream::connect(&socket)?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        // A refused client may find the connection closed before it writes.
                        let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
                        let mut reply = String::new();
                        BufReader::new(s).read_line(&mut reply)?;
                        serde_json::from_str(&reply)
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    })
                })
                .collect();
            let mut served = 0;
            for c in clients {
                let reply = c.join().unwrap().expect("every client gets a reply line");
                if reply["ok"] == true {
                    served += 1;
                } else {
                    assert_eq!(reply["error"], "too many connections", "{reply}");
                }
            }
            assert!(served >= 1, "no client was served");
            // And the daemon answers again once the connection threads have wound down.
            let t0 = Instant::now();
            while ask(&socket, "{\"cmd\":\"status\"}").unwrap()["ok"] != true {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "still refusing after 10 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            "every client answered".to_string()
        }
        "set-unknown" => {
            let reply = ask(
                socket,
                r#"{"cmd":"set","set":"blocklist","op":"add","elements":["203.0.113.9"]}"#,
            )
            .unwrap();
            assert_eq!(reply["ok"], false, "{reply}");
            reply.to_string()
        }
        other => panic!("unknown control case {other}"),
    }
}

#[test]
fn every_bad_input_is_refused_and_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("palisade-bad-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&dir);
    let manifest: toml::Table = std::fs::read_to_string(Path::new(HERE).join("catalogue.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let cases = manifest["case"].as_array().unwrap();
    assert!(cases.len() >= 12, "the catalogue lost cases");
    let first = daemon.fingerprint();
    assert_eq!(first["generation"], 1, "{first}");
    for case in cases {
        let field = |k: &str| {
            case.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (name, input, run, message) = (field("name"), field("input"), field("run"), field("message"));
        let before = daemon.fingerprint();
        let path = match input.strip_prefix("generated:") {
            Some(_) if run == "control" => PathBuf::new(),
            Some(kind) => generate(kind, &dir),
            None if input.starts_with('/') => PathBuf::from(&input),
            None => Path::new(HERE).join(&input),
        };
        let started = Instant::now();
        let said = if run == "control" {
            control_case(input.strip_prefix("generated:").unwrap(), &daemon.socket())
        } else {
            let p = path.to_str().unwrap();
            let sock = daemon.socket();
            let out = match run.as_str() {
                "reload" => palisade(&["reload", "--control", sock.to_str().unwrap(), p]),
                "check" => palisade(&["check", p]),
                "inspect" => palisade(&["inspect", p]),
                other => panic!("{name}: unknown run {other}"),
            };
            let want = case["exit"].as_integer().unwrap() as i32;
            assert_eq!(out.status.code(), Some(want), "{name}: {}", text(&out));
            text(&out)
        };
        assert!(
            said.contains(&message),
            "{name}: expected {message:?} in:\n{said}"
        );
        assert!(!said.contains("panicked"), "{name}: {said}");
        let after = daemon.fingerprint();
        assert_eq!(
            after, before,
            "{name}: the active generation or its counters changed"
        );
        eprintln!("ok: {name} ({:?})", started.elapsed());
        if input.starts_with("generated:") && run != "control" {
            let _ = std::fs::remove_file(&path);
        }
    }
    assert_eq!(daemon.fingerprint(), first);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The figures the catalogue quotes are the crates' limits.
#[test]
fn catalogue_quotes_the_crates_limits() {
    let manifest = std::fs::read_to_string(Path::new(HERE).join("catalogue.toml")).unwrap();
    for quoted in [
        format!("limit of {} bytes", palisade_rules::MAX_RULE_FILE_BYTES),
        format!(
            "limit of {} (MAX_RULES_PER_ACL)",
            palisade_rules::MAX_RULES_PER_ACL
        ),
        format!("has {} rules", palisade_rules::MAX_RULES_PER_ACL + 1),
        format!(
            "request longer than {} bytes",
            palisade_engine::control::MAX_REQUEST
        ),
        format!("memory cap of {MEMORY_CAP} bytes"),
    ] {
        assert!(
            manifest.contains(&quoted),
            "catalogue.toml does not quote {quoted:?}"
        );
    }
}
