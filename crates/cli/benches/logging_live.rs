//! What logging costs the real data path: `palisade run --bridge` between two
//! namespaces, flooded with 64-byte frames (60 bytes + FCS) that a deny rule
//! decides, with `log = true` on that rule (candidate) or without it
//! (baseline), alternating by reload in the same daemon and the same run.
//!
//! `cargo bench -p palisade --bench logging_live` (root, ip(8); prints
//! `SKIPPED: ...` otherwise). Per round and variant it floods for 3 s and
//! measures, over the last 2 s, the frames the data path received per
//! second and the data-path worker's CPU time per frame (from
//! `/proc/PID/task/TID/schedstat`: independent of whether the sender or the
//! worker is the bottleneck). It prints the medians of both and their ratio.

// The live tests' lab; this bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/live/lab.rs"]
mod lab;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::Lab;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");
const MAC1: &str = "02:00:00:00:01:01";
const MAC2: &str = "02:00:00:00:02:01";
const ROUNDS: usize = 7;

fn rules(log: bool) -> String {
    format!(
        "version = 1\n[logging]\nrate = 10\nburst = 20\n[[port]]\nname = \"pa\"\n[[port]]\nname = \"pb\"\n\
         [[acl]]\nname = \"from-h1\"\ndefault = \"permit\"\n  [[acl.rule]]\n  id = \"flood\"\n  action = \"deny\"\n\
         proto = \"udp\"\n  dst_port = 7009\n{}\
         [[bind]]\nacl = \"from-h1\"\nport = \"pa\"\n",
        if log { "  log = true\n" } else { "" }
    )
}

/// `blast IFACE SECONDS`: sends one 60-byte UDP frame to 198.18.0.2:7009 over and over, 64 per
/// `sendmmsg`, on a packet socket, for SECONDS.
fn blast(iface: &str, secs: f64) -> i32 {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 2, 1])
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(40000, 7009);
    let mut frame = Vec::new();
    b.write(&mut frame, &[0u8; 18]).unwrap();
    assert_eq!(frame.len(), 60);
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain libc calls with valid arguments; every pointer handed over points to a
    // live local for the duration of the call.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut iov = libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: frame.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..64)
            .map(|_| {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        println!("ready");
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        while Instant::now() < end {
            let n = libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0);
            if n > 0 {
                sent += n as u64;
            }
        }
        println!("sent {sent}");
        libc::close(fd);
    }
    0
}

/// The data-path worker thread's CPU time (ns), from schedstat.
fn worker_cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "palisade-dp0" {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            return s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    panic!("no palisade-dp0 thread in {pid}");
}

fn palisade(sock: &Path, args: &[&str]) -> std::process::Output {
    let (sub, rest) = args.split_first().unwrap();
    Command::new(PALISADE)
        .arg(sub)
        .arg("--control")
        .arg(sock)
        .args(rest)
        .output()
        .unwrap()
}

fn rx(sock: &Path) -> u64 {
    let out = palisade(sock, &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    st["data_path"]["interfaces"][0]["rx"].as_u64().unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("blast") {
        std::process::exit(blast(&args[1], args[2].parse().unwrap()));
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("logging_live: run with `cargo bench -p palisade --bench logging_live`");
        return;
    }
    if let Some(why) = lab::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("logbench");
    let h1 = lab.netns("h1");
    let h2 = lab.netns("h2");
    let fw = lab.netns("fw");
    lab.veth(&h1, "eth0", MAC1, &fw, "pa");
    lab.veth(&h2, "eth0", MAC2, &fw, "pb");
    let dir = lab.dir.clone();
    let (with_log, without) = (dir.join("log.toml"), dir.join("nolog.toml"));
    std::fs::write(&with_log, rules(true)).unwrap();
    std::fs::write(&without, rules(false)).unwrap();
    let sock = dir.join("control.sock");
    let mut cmd = lab.cmd(&fw, Path::new(PALISADE));
    cmd.arg("run")
        .arg("--config")
        .arg(&without)
        .arg("--control")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--bridge", "pa,pb", "--workers", "1", "--log"])
        .arg(dir.join("log.json"))
        .arg("--log-pcap")
        .arg(dir.join("log.pcapng"));
    let daemon = lab.spawn(cmd, "palisade run");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !palisade(&sock, &["status"]).status.success() {
        assert!(Instant::now() < deadline, "daemon never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = daemon.child.id();
    let exe = std::env::current_exe().unwrap();
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..ROUNDS {
        // Alternate which variant goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for variant in order {
            let file = if variant == 0 { &without } else { &with_log };
            let out = palisade(&sock, &["reload", file.to_str().unwrap()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut blaster = lab.cmd(&h1, &exe);
            blaster.args(["blast", "eth0", "3"]);
            let mut p = lab.spawn(blaster, "blast");
            p.expect_line("ready", Duration::from_secs(10));
            std::thread::sleep(Duration::from_secs(1));
            let (r0, c0, t0) = (rx(&sock), worker_cpu_ns(pid), Instant::now());
            std::thread::sleep(Duration::from_secs(2));
            let (r1, c1, t1) = (rx(&sock), worker_cpu_ns(pid), Instant::now());
            p.wait(Duration::from_secs(30));
            let frames = (r1 - r0) as f64;
            results[variant].0.push(frames / (t1 - t0).as_secs_f64());
            results[variant].1.push((c1 - c0) as f64 / frames.max(1.0));
        }
    }
    let names = ["log off (rule without log)", "log on (log = true)"];
    for (name, (rate, cpu)) in names.iter().zip(&results) {
        println!(
            "{name}: median {:.3} Mframes/s received, {:.1} ns worker CPU per frame (rounds: {:?})",
            median(rate.clone()) / 1e6,
            median(cpu.clone()),
            rate.iter().map(|r| (r / 1e3).round() / 1e3).collect::<Vec<_>>()
        );
    }
    let (base, cand) = (&results[0], &results[1]);
    println!(
        "log on / log off: frame rate {:.1}%, worker CPU per frame {:.1}%",
        100.0 * median(cand.0.clone()) / median(base.0.clone()),
        100.0 * median(cand.1.clone()) / median(base.1.clone())
    );
    let st = palisade(&sock, &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    println!("logger: {}", st["observe"]["log"]);
    drop(daemon);
}
