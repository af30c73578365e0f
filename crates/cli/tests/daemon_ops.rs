//! Operations on the real daemon: a restart keeps what ran, one daemon per
//! state directory, private state whatever the umask, rollback that never
//! surprises, FIFOs and devices refused without a hang.

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

const WEB: &str = "tcp 10.0.10.5:40000 -> 198.51.100.7:443";

fn wait_for(
    d: &Daemon,
    secs: u64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let st = d.status();
        if done(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "{what}: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_restart_keeps_the_pushed_rules_and_sighup_applies_the_config() {
    let mut d = Daemon::new("restart");
    d.write("rules.toml", EDGE); // A: web permitted
    d.start();
    assert_eq!(d.probe("lan1", WEB, None), "permit");
    let b = d.write("b.toml", &edge_b()); // B: web denied
    let out = d.cli(&["reload", b.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let pushed = d.status();
    d.kill9();
    d.start(); // still --config A
    let st = d.status();
    assert_eq!(st["generation"], pushed["generation"], "the same generation runs");
    assert_eq!(st["digest"], sha256_hex(edge_b().as_bytes()));
    assert_eq!(
        d.probe("lan1", WEB, None),
        "deny",
        "B is enforced after the restart"
    );
    assert_eq!(st["config"]["differs"], true, "{st}");
    assert_eq!(st["config"]["digest"], sha256_hex(EDGE.as_bytes()));
    assert!(
        d.log()
            .contains("differs from the running generation and is NOT applied"),
        "{}",
        d.log()
    );
    // SIGHUP applies --config, through the full pipeline.
    d.signal("HUP");
    let st = wait_for(&d, 20, "SIGHUP applies A", |s| {
        s["digest"] == sha256_hex(EDGE.as_bytes())
    });
    assert!(st["generation"].as_u64() > pushed["generation"].as_u64());
    assert_eq!(st["config"]["differs"], false);
    assert_eq!(d.probe("lan1", WEB, None), "permit");
}

#[test]
fn a_restart_with_a_confirm_window_open_does_not_boot_the_unconfirmed_generation() {
    let mut d = Daemon::new("restart-window");
    d.write("rules.toml", EDGE);
    d.start();
    let a = d.status();
    let b = d.write("b.toml", &edge_b());
    let out = d.cli(&["reload", b.to_str().unwrap(), "--confirm-within", "3600"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(d.status()["state"], "pending-confirm");
    d.kill9();
    d.start();
    let st = d.status();
    assert_eq!(
        (&st["digest"], &st["state"]),
        (&a["digest"], &json!("active")),
        "{st}"
    );
    assert_eq!(d.probe("lan1", WEB, None), "permit");
    let kept = st["kept"].as_array().unwrap();
    let unconfirmed = kept
        .iter()
        .find(|k| k["digest"] == sha256_hex(edge_b().as_bytes()))
        .unwrap();
    assert_eq!(unconfirmed["outcome"], "unconfirmed", "{kept:?}");
    for k in kept {
        for key in ["generation", "digest", "source", "time", "outcome"] {
            assert!(!k[key].is_null(), "kept generations are objects with {key}: {k}");
        }
    }
}

#[test]
fn a_second_daemon_on_the_same_state_directory_exits_with_a_clear_message() {
    let mut d = Daemon::new("second");
    d.write("rules.toml", EDGE);
    d.start();
    let pid = d.child.as_ref().unwrap().id();
    let out = std::process::Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(d.config())
        .arg("--control")
        .arg(d.dir.join("other.sock"))
        .arg("--state-dir")
        .arg(d.state())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another palisade process") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(!d.dir.join("other.sock").exists());
    assert_eq!(d.status()["state"], "active", "the first daemon carries on");
}

#[test]
fn state_and_socket_are_private_under_umask_000() {
    let mut d = Daemon::new("umask");
    d.write("rules.toml", EDGE);
    d.start_with(&[], Some("000"));
    let b = d.write("b.toml", &edge_b());
    assert_eq!(code(&d.cli(&["reload", b.to_str().unwrap()])), 0);
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&d.state()), 0o700);
    let mut files = 0;
    for e in std::fs::read_dir(d.state()).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        files += 1;
    }
    assert!(files >= 3, "generations, lock, high-water mark");
    assert_eq!(mode(&d.socket()), 0o600);
}

#[test]
fn a_symlinked_state_directory_is_refused() {
    let d = Daemon::new("symlinked");
    d.write("rules.toml", EDGE);
    std::fs::create_dir(d.dir.join("real")).unwrap();
    std::os::unix::fs::symlink(d.dir.join("real"), d.state()).unwrap();
    let out = d.run_command(&[]).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(d.dir.join("real")).unwrap().count(), 0);
}

#[test]
fn bad_arguments_are_refused_before_the_state_directory_is_touched() {
    let d = Daemon::new("args");
    d.write("rules.toml", EDGE);
    for extra in [
        &["--bridge", "onlyone"][..],
        &["--bridge", "palisade-nosuch0,palisade-nosuch1"],
        &["--monitor", "palisade-nosuch0"],
        &["--idle-timeout", "0"],
    ] {
        let out = d.run_command(extra).output().unwrap();
        assert_eq!(code(&out), 2, "{extra:?}: {}", text(&out));
        assert!(!d.state().exists(), "{extra:?}: the state directory was created");
    }
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(d.config())
        .arg("--control")
        .arg(d.dir.join("no/such/dir/ctl.sock"))
        .arg("--state-dir")
        .arg(d.state())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        text(&out)
    );
    assert!(!d.state().exists());
}

#[test]
fn rollback_after_an_auto_revert_and_to_a_generation_not_kept() {
    let mut d = Daemon::new("rollback");
    d.write("rules.toml", EDGE);
    d.start();
    let a = d.status();
    let c = d.write("c.toml", &EDGE.replace("dst_port = 23", "dst_port = 2323"));
    assert_eq!(code(&d.cli(&["reload", c.to_str().unwrap()])), 0);
    let b = d.write("b.toml", &edge_b());
    assert_eq!(
        code(&d.cli(&["reload", b.to_str().unwrap(), "--confirm-within", "1"])),
        0
    );
    let reverted = wait_for(&d, 20, "auto-revert", |s| s["state"] == "active");
    assert_eq!(reverted["digest"], sha256_hex(&std::fs::read(&c).unwrap()));
    // Rollback lands on A (confirmed before C), never on the reverted B.
    let out = d.cli(&["rollback", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = d.status();
    assert_eq!(st["digest"], a["digest"]);
    assert_ne!(st["digest"], sha256_hex(edge_b().as_bytes()));
    // --to a generation that is not kept says so.
    let out = d.cli(&["rollback", "--to", "99"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).contains("generation 99 is not kept"), "{}", text(&out));
}

#[test]
fn a_fifo_or_device_as_rule_file_is_refused_at_once_and_sighup_on_a_fifo_config_does_not_wedge() {
    let mut d = Daemon::new("fifo");
    d.write("rules.toml", EDGE);
    d.start();
    let before = enforced(&d.status());
    let fifo = d.dir.join("pipe.toml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [fifo.to_str().unwrap(), "/dev/zero"] {
        let t0 = Instant::now();
        let out = d.cli(&["reload", path]);
        assert_eq!(code(&out), 1, "{path}: {}", text(&out));
        assert!(text(&out).contains("not a regular file"), "{}", text(&out));
        assert!(t0.elapsed() < Duration::from_secs(20), "{path}: the reload hung");
    }
    assert_eq!(enforced(&d.status()), before);
    // The config replaced by a FIFO, then SIGHUP: the daemon keeps answering,
    // a commit-confirmed window still reverts on time, and SIGTERM ends it.
    std::fs::remove_file(d.config()).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(d.config())
        .status()
        .unwrap()
        .success());
    let b = d.write("b.toml", &edge_b());
    assert_eq!(
        code(&d.cli(&["reload", b.to_str().unwrap(), "--confirm-within", "2"])),
        0
    );
    d.signal("HUP");
    let st = wait_for(&d, 20, "the window reverts", |s| s["state"] == "active");
    assert_eq!(st["digest"], before["digest"]);
    assert!(st["last_reload"]["errors"].to_string().len() > 2);
    let t0 = Instant::now();
    d.signal("TERM");
    let mut child = d.child.take().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "SIGTERM ignored");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rollback_with_a_confirm_window_reverts_by_itself() {
    let mut d = Daemon::new("rollback-window");
    d.write("rules.toml", EDGE);
    d.start();
    let b = d.write("b.toml", &edge_b());
    assert_eq!(code(&d.cli(&["reload", b.to_str().unwrap()])), 0);
    let out = d.cli(&["rollback", "--confirm-within", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("reverts at"), "{}", text(&out));
    let st = d.status();
    assert_eq!(
        (&st["state"], &st["digest"]),
        (&json!("pending-confirm"), &json!(sha256_hex(EDGE.as_bytes())))
    );
    let back = wait_for(&d, 20, "the rollback reverts", |s| s["state"] == "active");
    assert_eq!(
        back["digest"],
        sha256_hex(edge_b().as_bytes()),
        "back to B, by itself"
    );
    assert_eq!(code(&d.cli(&["rollback", "--confirm-within", "-1"])), 2);
}

#[test]
fn status_text_lists_kept_generations_and_says_the_config_differs() {
    let mut d = Daemon::new("status-text");
    d.write("rules.toml", EDGE);
    d.start();
    let b = d.write("b.toml", &edge_b());
    assert_eq!(code(&d.cli(&["reload", b.to_str().unwrap()])), 0);
    let human = text(&d.cli(&["status"]));
    assert!(human.contains("DIFFERS from the running rules"), "{human}");
    assert!(
        human.contains("palisade reload --control SOCK (no file), or SIGHUP"),
        "{human}"
    );
    assert!(human.contains("kept generations"), "{human}");
    assert!(human.contains("b.toml") && human.contains("confirmed"), "{human}");
}

/// Starts `d`'s daemon under strace, each open of one of `paths` held `secs` seconds
/// (a reload that takes that long however fast the machine validates and compiles).
fn start_with_slow_opens(d: &Daemon, paths: &[&std::path::Path], secs: u64) -> Traced {
    let _ = std::fs::remove_file(d.socket());
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null"]);
    for p in paths {
        cmd.arg("-P").arg(p);
    }
    cmd.args(["-e", "trace=open,openat", "-e"])
        .arg(format!("inject=open,openat:delay_enter={}", secs * 1_000_000))
        .arg(BIN)
        .arg("run")
        .arg("--config")
        .arg(d.config())
        .arg("--control")
        .arg(d.socket())
        .arg("--state-dir")
        .arg(d.state());
    let log = std::fs::File::create(d.dir.join("daemon.log")).unwrap();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("strace (the CI installs it)");
    let t0 = Instant::now();
    while d.ask(json!({"cmd": "status"})).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no daemon: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    Traced { strace: child }
}

/// Rule set EDGE plus an ACL of `n` rules with ids `tag-N`.
fn big(n: usize, tag: &str) -> String {
    let mut t = String::from(EDGE);
    t += "\n[[acl]]\nname = \"big\"\ndefault = \"permit\"\n";
    for i in 0..n {
        t += &format!(
            "  [[acl.rule]]\n  id = \"{tag}-{i}\"\n  action = \"deny\"\n  proto = \"tcp\"\n  src = \"10.{}.{}.0/24\"\n  dst_port = {}\n",
            (i / 256) % 256,
            i % 256,
            1 + (i * 7919) % 65000
        );
    }
    t += "[[bind]]\nacl = \"big\"\ninterface = \"lan\"\ndirection = \"in\"\n";
    t
}

#[test]
fn a_long_reload_reports_progress_and_a_client_that_gives_up_is_told_it_goes_on() {
    let d = Daemon::new("long-reload");
    d.write("rules.toml", EDGE);
    let first = d.write("big1.toml", &big(12_000, "a"));
    let second = d.write("big2.toml", &big(12_000, "b"));
    // A reload takes seconds whatever the machine: opening either file is held 4 s.
    let _daemon = start_with_slow_opens(&d, &[&first, &second], 4);
    let before = d.status()["generation"].as_u64().unwrap();
    // Gives up after 1 s: exit 3, and the message says the reload goes on.
    let t0 = Instant::now();
    let out = d.cli(&["reload", first.to_str().unwrap(), "--timeout", "1"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(15), "gave up on time");
    let msg = text(&out);
    assert!(
        msg.contains("gave up waiting after") && msg.contains("goes on"),
        "{msg}"
    );
    // ...and it did go on.
    let st = wait_for(&d, 300, "the abandoned reload becomes active", |s| {
        s["digest"] == sha256_hex(&std::fs::read(&first).unwrap())
    });
    assert!(st["generation"].as_u64().unwrap() > before);
    // Without --timeout the client waits as long as the daemon works, saying what it does.
    let out = d.cli(&["reload", second.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("the daemon is working on") && msg.contains("stage "),
        "{msg}"
    );
    assert_eq!(d.status()["digest"], sha256_hex(&std::fs::read(&second).unwrap()));
}
