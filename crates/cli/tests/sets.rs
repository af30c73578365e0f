//! Named sets through the `palisade` binary: `set add|del` on a running
//! daemon, a `kill -9` in the middle of writing a set file through, and a
//! million-prefix blocklist checked frame by frame against a reference the
//! test computes itself.

mod daemon_support;

#[path = "../../../benches/prefixes.rs"]
#[allow(dead_code)]
mod prefixes;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{code, text, Daemon, Traced, BIN};
use palisade_classify::{IpFamily, Prefix};
use serde_json::Value;

/// Rules with a blocklist in `bl.txt`, an `[[expect]]` that depends on it, and a port set.
const RULES: &str = r#"version = 1
[[port]]
name = "wan0"
[[set]]
name = "bl"
file = "bl.txt"
[[set]]
name = "web"
elements = [80, 443]
[[acl]]
name = "in"
default = "deny"
  [[acl.rule]]
  id = "blocked"
  action = "deny"
  src = "@bl"
  [[acl.rule]]
  id = "web"
  action = "permit"
  proto = "tcp"
  dst_port = "@web"
[[bind]]
acl = "in"
port = "wan0"
[[expect]]
port = "wan0"
packet = { proto = "tcp", src = "203.0.113.5", dst = "198.18.0.1", dst_port = 443 }
verdict = "deny"
rule = "blocked"
"#;

const BL: &str = "# blocklist\n203.0.113.0/24\n2001:db8:bad::/48  # v6 too\n";

fn sha(path: &Path) -> String {
    palisade_rules::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

fn set_status(st: &Value) -> Value {
    st["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bl")
        .unwrap()
        .clone()
}

#[test]
fn set_add_and_del_on_a_running_daemon() {
    let mut d = Daemon::new("sets");
    d.write("rules.toml", RULES);
    let bl = d.write("bl.txt", BL);
    d.start();
    let st0 = d.status();
    assert_eq!(set_status(&st0)["elements"], 2);
    assert_eq!(set_status(&st0)["file_digest"], sha(&bl));
    let probe = "tcp 198.51.100.7:40000 -> 198.18.0.1:443";
    assert_eq!(d.probe("wan0", probe, None), "permit");

    // add: a new generation, the file rewritten (old lines kept), the verdict changed
    let out = d.cli(&["set", "add", "bl", "198.51.100.0/24", "2001:db8:1::1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("2 elements added, 4 now"), "{}", text(&out));
    let st1 = d.status();
    assert_eq!(st1["generation"], st0["generation"].as_u64().unwrap() + 1);
    assert_ne!(st1["digest"], st0["digest"]);
    assert_eq!(
        std::fs::read_to_string(&bl).unwrap(),
        format!("{BL}198.51.100.0/24\n2001:db8:1::1\n")
    );
    assert_eq!(set_status(&st1)["elements"], 4);
    assert_eq!(set_status(&st1)["file_digest"], sha(&bl));
    assert_eq!(d.probe("wan0", probe, None), "deny");

    // a bad element changes nothing, names the element, exits 1 like a refused reload
    let out = d.cli(&["set", "add", "bl", "192.0.2.1", "192.0.2.1/16", "80"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("refused at stage validate; nothing changed"), "{t}");
    assert!(
        t.contains("element \"192.0.2.1/16\": prefix \"192.0.2.1/16\" has host bits set"),
        "{t}"
    );
    assert!(t.contains("element \"80\": the set holds addresses"), "{t}");
    let st2 = d.status();
    assert_eq!(
        (&st2["generation"], &st2["digest"]),
        (&st1["generation"], &st1["digest"])
    );
    assert_eq!(set_status(&st2)["file_digest"], sha(&bl));
    assert_eq!(
        d.probe("wan0", "tcp 192.0.2.1:1 -> 198.18.0.1:443", None),
        "permit"
    );
    // so does a change the [[expect]]s refuse (self-test), and one to a set without a file
    let out = d.cli(&["set", "del", "bl", "203.0.113.0/24"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("refused at stage self-test"),
        "{}",
        text(&out)
    );
    let out = d.cli(&["set", "add", "web", "8080"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("has no file"), "{}", text(&out));
    assert_eq!(d.status()["generation"], st1["generation"]);

    // del: the line goes, the rest stays byte for byte
    let out = d.cli(&["set", "del", "bl", "2001:db8:bad::/48"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&bl).unwrap(),
        "# blocklist\n203.0.113.0/24\n198.51.100.0/24\n2001:db8:1::1\n"
    );
    let st3 = d.status();
    assert_eq!(st3["generation"], st1["generation"].as_u64().unwrap() + 1);
    // --file with a bad line is refused before anything is sent, at its file:line:col
    let more = d.write("more.txt", "# new\n192.0.2.77\n 192.0.2.300\n");
    let out = d.cli(&["set", "add", "bl", "--file", more.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}:3:2: ", more.display())),
        "{}",
        text(&out)
    );
    assert_eq!(d.status()["generation"], st3["generation"]);

    // a restart keeps the change: the config and the set file on disk are the new generation
    let digest = st3["digest"].clone();
    d.stop();
    d.start();
    let st4 = d.status();
    assert_eq!(st4["digest"], digest);
    assert_eq!(d.probe("wan0", probe, None), "deny");
}

#[test]
fn set_add_with_confirm_within_restores_the_file_when_it_reverts() {
    let mut d = Daemon::new("sets-confirm");
    d.write("rules.toml", RULES);
    let bl = d.write("bl.txt", BL);
    d.start();
    let g0 = d.status()["generation"].as_u64().unwrap();
    let out = d.cli(&["set", "add", "bl", "198.51.100.9", "--confirm-within", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("pending-confirm"), "{}", text(&out));
    assert!(std::fs::read_to_string(&bl).unwrap().ends_with("198.51.100.9\n"));
    let t0 = Instant::now();
    while d.status()["generation"].as_u64().unwrap() < g0 + 2 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = d.status();
    assert_eq!(st["generation"], g0 + 2, "reverted as a new generation");
    assert_eq!(
        std::fs::read_to_string(&bl).unwrap(),
        BL,
        "the set file has its old contents back"
    );
    assert_eq!(set_status(&st)["file_digest"], sha(&bl));
}

/// Runs the daemon under strace, held for seconds at the first syscall of
/// `syscalls` that touches `path` (strace's `-P`), so a kill -9 lands exactly there.
fn daemon_held_at(d: &Daemon, path: &Path, syscalls: &str) -> Child {
    let _ = std::fs::remove_file(d.socket());
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(path)
        .arg("-e")
        .arg(format!("trace={syscalls}"))
        .arg("-e")
        .arg(format!("inject={syscalls}:delay_enter=4000000:when=1"))
        .arg(BIN)
        .arg("run")
        .arg("--config")
        .arg(d.config())
        .arg("--control")
        .arg(d.socket())
        .arg("--state-dir")
        .arg(d.state())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.dir.join("daemon.log")).unwrap())
        .spawn()
        .expect("strace (the CI installs it)")
}

/// The daemon strace runs: the child of strace that is `palisade` (strace
/// may fork a helper first, which is not it).
fn traced_pid(strace: &Child) -> u32 {
    let t0 = Instant::now();
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", strace.id(), strace.id()))
                .unwrap_or_default();
        let daemon = children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "palisade")
            });
        if let Some(pid) = daemon {
            return pid;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "strace started no daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_during_the_write_through_leaves_the_old_or_the_new_file_whole() {
    let new = format!("{BL}198.51.100.0/24\n");
    let dir_of = |d: &Daemon| d.dir.clone();
    // (where the daemon is held when it is killed, which file must be there whole)
    let cases = [
        ("write", true),
        ("rename,renameat,renameat2", true),
        ("fsync", false),
    ];
    for (syscalls, old_expected) in cases {
        let mut d = Daemon::new("sets-kill");
        d.write("rules.toml", RULES);
        let bl = d.write("bl.txt", BL);
        let tmp = d.dir.join(".bl.txt.palisade-tmp");
        // Held writing or renaming the temporary file; or fsyncing the directory after the rename.
        let held = if syscalls == "fsync" {
            dir_of(&d)
        } else {
            tmp.clone()
        };
        let mut strace = daemon_held_at(&d, &held, syscalls);
        let t0 = Instant::now();
        while d.ask(serde_json::json!({"cmd": "status"})).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "the daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let daemon = traced_pid(&strace);
        // (Boot fsyncs only the state directory, which `-P` does not match.)
        std::thread::sleep(Duration::from_millis(200));
        let sock = d.socket();
        let client = std::thread::spawn(move || {
            Command::new(BIN)
                .args(["set", "add", "bl", "198.51.100.0/24", "--control"])
                .arg(sock)
                .output()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(1500));
        let alive = Path::new(&format!("/proc/{daemon}")).exists();
        if !alive {
            let st = strace.try_wait();
            let out = client.join().unwrap();
            panic!(
                "held at {syscalls}: the daemon is gone before the kill (strace {st:?}, client {}); log:\n{}",
                text(&out),
                d.log()
            );
        }
        assert!(Command::new("kill")
            .args(["-9", &daemon.to_string()])
            .status()
            .unwrap()
            .success());
        let _ = strace.wait();
        let out = client.join().unwrap();
        assert_ne!(code(&out), 0, "the daemon died before answering: {}", text(&out));
        let now = std::fs::read_to_string(&bl).unwrap();
        let want = if old_expected { BL } else { new.as_str() };
        assert_eq!(now, want, "held at {syscalls}: the set file must be whole");
        // A new daemon runs what ran (the change was never published nor kept),
        // says whether the file on disk differs, and the next change replaces the leftover.
        d.child = None;
        d.start();
        let st = d.status();
        assert_eq!(set_status(&st)["elements"], 2, "held at {syscalls}");
        assert_eq!(
            st["config"]["differs"], !old_expected,
            "held at {syscalls}: {}",
            st["config"]
        );
        let out = d.cli(&["set", "add", "bl", "198.51.100.0/24"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(std::fs::read_to_string(&bl).unwrap(), new);
        assert!(
            !tmp.exists(),
            "the temporary file is gone after a completed write"
        );
    }
}

/// Membership by the definition: the address masked at every length present is listed.
struct Reference {
    v4: HashSet<(u32, u8)>,
    v6: HashSet<(u128, u8)>,
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
}

impl Reference {
    fn new(list: &[Prefix]) -> Self {
        let mut r = Reference {
            v4: HashSet::new(),
            v6: HashSet::new(),
            v4_lens: Vec::new(),
            v6_lens: Vec::new(),
        };
        for p in list {
            match p.family {
                IpFamily::V4 => {
                    r.v4.insert((p.addr as u32, p.len));
                    r.v4_lens.push(p.len);
                }
                IpFamily::V6 => {
                    r.v6.insert((p.addr, p.len));
                    r.v6_lens.push(p.len);
                }
            }
        }
        for l in [&mut r.v4_lens, &mut r.v6_lens] {
            l.sort_unstable();
            l.dedup();
        }
        r
    }

    fn contains(&self, family: IpFamily, a: u128) -> bool {
        match family {
            IpFamily::V4 => self.v4_lens.iter().any(|&l| {
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                self.v4.contains(&(a as u32 & mask, l))
            }),
            IpFamily::V6 => self.v6_lens.iter().any(|&l| {
                let mask = if l == 0 { 0 } else { u128::MAX << (128 - l) };
                self.v6.contains(&(a & mask, l))
            }),
        }
    }
}

fn text_of(p: &Prefix) -> String {
    match p.family {
        IpFamily::V4 => format!("{}/{}", std::net::Ipv4Addr::from(p.addr as u32), p.len),
        IpFamily::V6 => format!("{}/{}", std::net::Ipv6Addr::from(p.addr), p.len),
    }
}

#[test]
fn a_million_prefix_set_decides_200k_frames_like_the_reference() {
    const FRAMES: usize = 200_000;
    let dir = daemon_support::temp_dir("sets-1m");
    let list = prefixes::bgp_like(1_000_000, 5, 0x1_0000);
    let mut file = String::with_capacity(list.len() * 20);
    for p in &list {
        file.push_str(&text_of(p));
        file.push('\n');
    }
    std::fs::write(dir.join("bl.txt"), &file).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "version = 1\n[[port]]\nname = \"wan0\"\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n\
         [[acl]]\nname = \"in\"\ndefault = \"permit\"\n\
         [[acl.rule]]\nid = \"from-listed\"\naction = \"deny\"\nsrc = \"@bl\"\n\
         [[acl.rule]]\nid = \"web-to-unlisted\"\naction = \"permit\"\nproto = \"tcp\"\ndst = \"!@bl\"\ndst_port = 443\n\
         [[acl.rule]]\nid = \"to-listed\"\naction = \"deny\"\ndst = \"@bl\"\n\
         [[bind]]\nacl = \"in\"\nport = \"wan0\"\n",
    )
    .unwrap();

    // Frames: addresses inside listed prefixes half of the time, 5% IPv6 as the list.
    let mut rng = prefixes::Rng(0xfeed);
    let mut pcap: Vec<u8> = Vec::with_capacity(FRAMES * 90);
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    pcap.extend_from_slice(&[0u8; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let mut frames = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES {
        let pick = |rng: &mut prefixes::Rng| {
            let p = list[rng.below(list.len() as u64) as usize];
            match rng.below(2) {
                0 => (p.family, prefixes::inside(rng, &p)),
                _ if p.family == IpFamily::V4 => (p.family, rng.bits() as u32 as u128),
                _ => (p.family, (0x2001u128 << 112) | u128::from(rng.bits()) << 32),
            }
        };
        let (fam, src) = pick(&mut rng);
        let (_, mut dst) = pick(&mut rng);
        if fam == IpFamily::V4 {
            dst &= 0xffff_ffff;
        } else if dst <= u32::MAX as u128 {
            dst |= 0x2001u128 << 112;
        }
        let dport = if i % 3 == 0 { 80 } else { 443 };
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut bytes = Vec::with_capacity(80);
        let b = match fam {
            IpFamily::V4 => builder.ipv4((src as u32).to_be_bytes(), (dst as u32).to_be_bytes(), 64),
            IpFamily::V6 => builder.ipv6(src.to_be_bytes(), dst.to_be_bytes(), 64),
        };
        b.tcp(40000, dport, 1, 1024).syn().write(&mut bytes, &[]).unwrap();
        pcap.extend_from_slice(&(i as u32).to_le_bytes());
        pcap.extend_from_slice(&0u32.to_le_bytes());
        pcap.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&bytes);
        frames.push((fam, src, dst, dport));
    }
    std::fs::write(dir.join("frames.pcap"), &pcap).unwrap();

    let out = Command::new(BIN)
        .arg("classify")
        .arg(dir.join("rules.toml"))
        .arg(dir.join("frames.pcap"))
        .args(["--port", "wan0"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();

    let reference = Reference::new(&list);
    let mut rows = csv.lines().skip(1);
    let mut counts = [0usize; 4];
    for (n, &(fam, src, dst, dport)) in frames.iter().enumerate() {
        let want = if reference.contains(fam, src) {
            ("deny", "from-listed", 0)
        } else if !reference.contains(fam, dst) && dport == 443 {
            ("permit", "web-to-unlisted", 1)
        } else if reference.contains(fam, dst) {
            ("deny", "to-listed", 2)
        } else {
            ("permit", "default", 3)
        };
        counts[want.2] += 1;
        let row = rows
            .next()
            .unwrap_or_else(|| panic!("no row for frame {}", n + 1));
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(
            (cols[1], cols[4]),
            (want.0, want.1),
            "frame {}: {row} ({fam:?} src {src:#x} dst {dst:#x} port {dport})",
            n + 1
        );
    }
    assert!(rows.next().is_none(), "one row per frame");
    // Every outcome occurs, thousands of times: the test decides something.
    assert!(counts.iter().all(|&c| c > FRAMES / 100), "{counts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The uid this test runs as (the owner of /proc/self).
fn my_uid() -> u64 {
    use std::os::unix::fs::MetadataExt;
    u64::from(std::fs::metadata("/proc/self").unwrap().uid())
}

#[test]
fn set_changes_are_control_events_in_the_json_log_with_the_clients_uid() {
    let mut d = Daemon::new("sets-events");
    d.write("rules.toml", RULES);
    d.write("bl.txt", BL);
    let log = d.dir.join("events.jsonl");
    d.start_with(&["--log", log.to_str().unwrap()], None);
    let out = d.cli(&["set", "add", "bl", "198.51.100.9"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = d.status();
    let out = d.cli(&["set", "add", "bl", "not-an-address"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    // Adding what is listed changes nothing: no generation, no event.
    let out = d.cli(&["set", "add", "bl", "198.51.100.9"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t0 = Instant::now();
    let events = loop {
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<Value> = lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("event").is_some())
            .collect();
        if events.len() >= 2 || t0.elapsed() > Duration::from_secs(10) {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("set-change", "ok"), ("set-change", "refused")],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["uid"].as_u64(), Some(my_uid()), "{e}");
    }
    assert_eq!(events[0]["generation"], st["generation"]);
    assert_eq!(events[0]["digest"], st["digest"]);
    assert_eq!(
        events[1]["generation"], st["generation"],
        "a refused change changes nothing"
    );
}

#[test]
fn a_set_file_argument_that_is_a_fifo_is_refused_at_once() {
    let mut d = Daemon::new("sets-fifo-arg");
    d.write("rules.toml", RULES);
    d.write("bl.txt", BL);
    d.start();
    let g = d.status()["generation"].clone();
    let fifo = d.dir.join("bans.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut child = Command::new(BIN)
        .args(["set", "add", "bl", "--file"])
        .arg(&fifo)
        .arg("--control")
        .arg(d.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("set add --file FIFO hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));
    assert_eq!(d.status()["generation"], g);
}

#[test]
fn a_set_client_that_gives_up_is_told_the_change_goes_on() {
    let d = Daemon::new("sets-timeout");
    d.write("rules.toml", RULES);
    d.write("bl.txt", BL);
    // The write-through of the set file is held 4 s, whatever the machine.
    let tmp = d.dir.join(".bl.txt.palisade-tmp");
    let _daemon = Traced {
        strace: daemon_held_at(&d, &tmp, "write"),
    };
    let t0 = Instant::now();
    while d.ask(serde_json::json!({"cmd": "status"})).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = d.status()["generation"].as_u64().unwrap();
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args([
            "set",
            "add",
            "bl",
            "198.51.100.0/24",
            "--timeout",
            "1",
            "--control",
        ])
        .arg(d.socket())
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "gave up on time: {:?}",
        t0.elapsed()
    );
    let msg = text(&out);
    assert!(
        msg.contains("gave up waiting after") && msg.contains("goes on"),
        "{msg}"
    );
    // ...and the change did go on.
    let t0 = Instant::now();
    loop {
        let st = d.status();
        if st["generation"].as_u64().unwrap() > before {
            assert_eq!(set_status(&st)["elements"], 3, "{st}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the change never landed: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bad --timeout is an argument error, nothing sent.
    let out = Command::new(BIN)
        .args(["set", "add", "bl", "203.0.113.7", "--timeout", "0", "--control"])
        .arg(d.socket())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("--timeout must be a positive number"),
        "{}",
        text(&out)
    );
}
