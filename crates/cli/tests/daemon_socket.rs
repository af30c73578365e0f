//! The control socket under hostile local users: never reachable before its
//! mode is final (the race made deterministic with strace delaying every
//! chmod by 1.5 s, under umask 000, while an unprivileged user spins on the
//! socket's directory), and a socket another daemon answers on is never taken over.

mod daemon_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;

const ATTACK_ENV: &str = "PALISADE_SOCKET_ATTACK_DIR";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// Every socket under `dir` (one level of subdirectories deep, where readable).
fn sockets(dir: &Path, seen_dirs: &mut Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_socket() {
            out.push(p);
        } else if meta.is_dir() {
            if !seen_dirs.contains(&p) {
                seen_dirs.push(p.clone());
            }
            // A private directory cannot be listed; try the socket name anyway.
            out.push(p.join("ctl.sock"));
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Not a test of its own: the unprivileged user of
/// `an_unprivileged_user_never_reaches_the_socket_before_its_mode_is_final`.
/// Spins on the directory, connecting to every socket it can see, and reports.
#[test]
fn attacker_child() {
    let Ok(dir) = std::env::var(ATTACK_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let until = Instant::now() + Duration::from_secs(40);
    let (mut attempts, mut denied) = (0u64, 0u64);
    let mut seen_dirs = Vec::new();
    while Instant::now() < until && !dir.join("stop").exists() {
        for p in sockets(&dir, &mut seen_dirs) {
            attempts += 1;
            match UnixStream::connect(&p) {
                Ok(mut s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
                    let mut line = String::new();
                    let _ = BufReader::new(&s).read_line(&mut line);
                    println!("BREACH {} {}", p.display(), line.trim());
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied += 1,
                Err(_) => {}
            }
        }
    }
    println!(
        "HELD attempts={attempts} denied={denied} dirs={}",
        seen_dirs.len()
    );
}

#[test]
fn an_unprivileged_user_never_reaches_the_socket_before_its_mode_is_final() {
    if !is_root() || !have("setpriv") || !have("strace") {
        println!("SKIPPED: needs root, setpriv and strace (.ci/run installs strace)");
        return;
    }
    let d = Daemon::new("sockrace");
    d.write("rules.toml", EDGE);
    // A world-writable, sticky directory for the socket (as /tmp or /run can be).
    let public = std::env::temp_dir().join(format!("palisade-sockrace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&public);
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = public.join("ctl.sock");
    // The attacker: this test binary, run as nobody.
    let exe = public.join("attacker");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let attacker = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "attacker_child", "--nocapture", "--test-threads", "1"])
        .env(ATTACK_ENV, &public)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The daemon, under umask 000, with every chmod held back 1.5 s: the window
    // between creating the socket and restricting it is wide open.
    let log = std::fs::File::create(d.dir.join("daemon.log")).unwrap();
    let daemon = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=chmod,fchmodat"])
        .args(["-e", "inject=chmod,fchmodat:delay_enter=1500000"])
        .args([
            "sh",
            "-c",
            "umask 000; exec \"$0\" \"$@\"",
            BIN,
            "run",
            "--config",
        ])
        .arg(d.config())
        .arg("--control")
        .arg(&socket)
        .arg("--state-dir")
        .arg(d.state())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Dropping it stops the daemon itself (killing strace would only detach it).
    let daemon = Traced { strace: daemon };
    let t0 = Instant::now();
    while !(socket.exists() && UnixStream::connect(&socket).is_ok()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "daemon never served: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500)); // the attacker tries the final socket too
    std::fs::write(public.join("stop"), b"").unwrap();
    let out = attacker.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // Read before the daemon stops (it removes its socket on the way out).
    let mode = std::fs::symlink_metadata(&socket).unwrap().permissions().mode() & 0o777;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&public);
    assert!(
        !report.contains("BREACH"),
        "an unprivileged user reached the daemon: {report}"
    );
    let held = report
        .lines()
        .find_map(|l| l.find("HELD").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("{report}"));
    // The attacker was there during the window: it saw the private directory and was denied.
    assert!(held.contains("dirs=1") || held.contains("dirs=2"), "{held}");
    assert!(!held.contains("denied=0"), "{held}");
    assert_eq!(mode, 0o600);
}

#[test]
fn a_socket_another_daemon_answers_on_is_not_replaced() {
    let mut first = Daemon::new("sock-first");
    first.write("rules.toml", EDGE);
    first.start();
    let other_state = first.dir.join("other-state");
    let out = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(first.config())
        .arg("--control")
        .arg(first.socket())
        .arg("--state-dir")
        .arg(&other_state)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another daemon answers on this socket"), "{err}");
    assert!(
        !other_state.exists(),
        "refused before its state directory was made"
    );
    assert_eq!(
        first.status()["state"],
        "active",
        "the first daemon still serves its socket"
    );
    // A stale socket (nobody listening) is replaced.
    first.kill9();
    assert!(first.socket().exists(), "kill -9 leaves the socket file behind");
    first.child = Some(first.run_command(&[]).stderr(Stdio::null()).spawn().unwrap());
    let t0 = Instant::now();
    while first.ask(serde_json::json!({"cmd": "status"})).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the stale socket was not replaced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(first.status()["state"], "active");
}
