//! Live tests: two hosts in their own network namespaces joined through
//! `palisade run --bridge`, with real ICMP, TCP and UDP traffic.
//!
//! They need root and ip(8) (CI has both) and print `SKIPPED: ...` otherwise.
//! This file has its own harness (`harness = false`): the same binary is also
//! the traffic probe (`live probe KIND ...`), re-executed inside a namespace.
//! Tests run one after another so they do not compete for the CPU.

#[path = "live/lab.rs"]
mod lab;
#[path = "live/observe.rs"]
mod observe;
#[path = "live/probe.rs"]
mod probe;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Lab, Proc};
use observe::logs_metrics_and_control_events_live;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");
const H1: &str = "198.18.0.1";
const H2: &str = "198.18.0.2";
const MAC1: &str = "02:00:00:00:01:01";
const MAC2: &str = "02:00:00:00:02:01";
const BRIDGE: &[&str] = &["--bridge", "pa,pb"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/live")
        .join(name)
}

/// Two hosts and the firewall namespace between them, with the daemon running.
struct Net {
    lab: Lab,
    h1: String,
    h2: String,
    fw: String,
    sock: PathBuf,
    daemon: Option<Proc>,
}

impl Net {
    /// h1 (eth0, 198.18.0.1) -- pa [fw] pb -- h2 (eth0, 198.18.0.2), static neighbours.
    fn new(test: &str) -> Net {
        let net = Net::with_arp(test);
        // Static neighbours: no ARP, so every frame on the wire is one the test sent.
        net.lab.ip(
            &net.h1,
            &[
                "neigh",
                "replace",
                H2,
                "lladdr",
                MAC2,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        net.lab.ip(
            &net.h2,
            &[
                "neigh",
                "replace",
                H1,
                "lladdr",
                MAC1,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        net
    }

    /// The same hosts, finding each other with ARP.
    fn with_arp(test: &str) -> Net {
        let mut lab = Lab::new(test);
        let h1 = lab.netns("h1");
        let h2 = lab.netns("h2");
        let fw = lab.netns("fw");
        lab.veth(&h1, "eth0", MAC1, &fw, "pa");
        lab.veth(&h2, "eth0", MAC2, &fw, "pb");
        lab.ip(&h1, &["addr", "add", &format!("{H1}/24"), "dev", "eth0"]);
        lab.ip(&h2, &["addr", "add", &format!("{H2}/24"), "dev", "eth0"]);
        let sock = lab.dir.join("control.sock");
        Net {
            lab,
            h1,
            h2,
            fw,
            sock,
            daemon: None,
        }
    }

    /// Starts `palisade run` on `rules` with the data-path flags `live` (one worker unless they
    /// say otherwise) and waits
    /// for its control socket.
    fn start(&mut self, rules: &Path, live: &[&str]) {
        let mut cmd = self.lab.cmd(&self.fw, Path::new(PALISADE));
        cmd.arg("run")
            .arg("--config")
            .arg(rules)
            .arg("--control")
            .arg(&self.sock)
            .arg("--state-dir")
            .arg(self.lab.dir.join("state"))
            .args(live);
        if !live.contains(&"--workers") {
            cmd.args(["--workers", "1"]);
        }
        self.daemon = Some(self.lab.spawn(cmd, "palisade run"));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.palisade(&["status"]).status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|d| d.child.try_wait()) {
                panic!("palisade run exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "palisade run: control socket never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `palisade SUBCOMMAND --control SOCK ARGS...`.
    fn palisade(&self, args: &[&str]) -> std::process::Output {
        let (sub, rest) = args.split_first().expect("subcommand");
        Command::new(PALISADE)
            .arg(sub)
            .arg("--control")
            .arg(&self.sock)
            .args(rest)
            .output()
            .expect("palisade client")
    }

    fn status(&self) -> serde_json::Value {
        let out = self.palisade(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Starts a probe in namespace `ns` and waits until it is ready.
    fn probe(&self, ns: &str, args: &[&str]) -> Proc {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = self.lab.cmd(ns, &exe);
        cmd.arg("probe").args(args);
        let mut p = self.lab.spawn(cmd, &format!("probe {args:?}"));
        p.expect_line("ready", Duration::from_secs(10));
        p
    }

    fn tcp_ping(&self, ns: &str, dst: &str, port: u16) -> bool {
        let p = self.probe(ns, &["tcp-ping", dst, &port.to_string(), "700"]);
        let (out, _) = p.wait(Duration::from_secs(10));
        out.lines().any(|l| l == "ok")
    }

    fn icmp_ping(&self, ns: &str, dst: &str, count: u16) -> u64 {
        let p = self.probe(ns, &["icmp-ping", dst, &count.to_string(), "500"]);
        let (out, _) = p.wait(Duration::from_secs(20));
        out.lines()
            .find_map(|l| l.strip_prefix("replies "))
            .and_then(|n| n.parse().ok())
            .expect("icmp-ping prints replies N")
    }

    /// Sends `count` datagrams to each port (1 ms apart) and returns what arrived per port.
    fn udp(
        &self,
        from: &str,
        to_ns: &str,
        to: &str,
        ports: &[u16],
        count: u32,
        interval_us: u64,
    ) -> Vec<Vec<u32>> {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let sink = self.probe(to_ns, &["udp-sink", to, &list.join(",")]);
        let senders: Vec<Proc> = list
            .iter()
            .map(|p| {
                self.probe(
                    from,
                    &["udp-send", to, p, &count.to_string(), &interval_us.to_string()],
                )
            })
            .collect();
        for s in senders {
            let (out, _) = s.wait(Duration::from_secs(60));
            assert!(out.contains(&format!("sent {count}")), "sender: {out}");
        }
        std::thread::sleep(Duration::from_millis(300));
        received(&sink.finish(), ports)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            drop(d);
        }
    }
}

/// Parses `PORT SEQ` lines into one list of sequence numbers per port, in arrival order.
fn received(out: &str, ports: &[u16]) -> Vec<Vec<u32>> {
    let mut per = vec![Vec::new(); ports.len()];
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let (Some(p), Some(s)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(p), Ok(s)) = (p.parse::<u16>(), s.parse::<u32>()) else {
            continue;
        };
        if let Some(i) = ports.iter().position(|&x| x == p) {
            per[i].push(s);
        }
    }
    per
}

/// The missing ranges of `0..count` in sorted `got`, for failure messages.
fn gaps(got: &[u32], count: u32) -> String {
    let mut out = Vec::new();
    let mut next = 0;
    for &s in got.iter().chain(std::iter::once(&count)) {
        if s > next {
            out.push(format!("{next}..{s}"));
        }
        next = next.max(s + 1);
    }
    let shown: Vec<&String> = out.iter().take(20).collect();
    format!("{} ranges {shown:?}", out.len())
}

fn rule_hits(status: &serde_json::Value, acl: &str, rule: &str) -> u64 {
    status["acls"]
        .as_array()
        .and_then(|acls| acls.iter().find(|a| a["name"] == acl))
        .and_then(|a| a["counters"]["rules"].as_array())
        .and_then(|rules| rules.iter().find(|r| r["id"] == rule))
        .and_then(|r| r["hits"].as_u64())
        .unwrap_or_else(|| panic!("status has no counter for {acl}/{rule}: {status}"))
}

// ---------------------------------------------------------------------------------------------

/// Permitted ICMP, TCP and UDP get through in both directions, denied ones do
/// not, and the rule counters in status match the frames sent.
fn bridge_passes_permitted_and_drops_denied() {
    let mut net = Net::new("e2e");
    // Two workers: frames are spread over them by the kernel's fanout, counters are summed.
    net.start(&fixture("gen-a.toml"), &["--bridge", "pa,pb", "--workers", "2"]);

    // ICMP both ways: requests and replies are permitted by both ACLs.
    assert_eq!(net.icmp_ping(&net.h1, H2, 3), 3, "h1 -> h2 ping");
    assert_eq!(net.icmp_ping(&net.h2, H1, 3), 3, "h2 -> h1 ping");

    // TCP: h1 may reach h2's echo port; nothing else, and h2 may not open connections to h1.
    let echo_h2 = net.probe(&net.h2, &["tcp-echo", H2, "7001"]);
    let echo_h1 = net.probe(&net.h1, &["tcp-echo", H1, "7001"]);
    let echo_h2_other = net.probe(&net.h2, &["tcp-echo", H2, "7003"]);
    assert!(net.tcp_ping(&net.h1, H2, 7001), "h1 -> h2:7001 permitted");
    assert!(
        !net.tcp_ping(&net.h1, H2, 7003),
        "h1 -> h2:7003 denied by the default"
    );
    assert!(
        !net.tcp_ping(&net.h2, H1, 7001),
        "h2 -> h1:7001 denied (only replies from 7001 pass)"
    );
    drop((echo_h2, echo_h1, echo_h2_other));

    // UDP: 7000 permitted, 7009 denied by an explicit rule; h2 -> h1 denied by the default.
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7009], 20, 2000);
    assert_eq!(
        got[0],
        (0..20).collect::<Vec<u32>>(),
        "every permitted datagram, in order"
    );
    assert!(got[1].is_empty(), "denied datagrams delivered: {:?}", got[1]);
    let back = net.udp(&net.h2, &net.h1, H1, &[7000], 5, 2000);
    assert!(back[0].is_empty(), "h2 -> h1 udp must be denied: {:?}", back[0]);

    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    assert_eq!(
        rule_hits(&status, "from-h1", "ping"),
        6,
        "3 requests + 3 replies from h1: {status}"
    );
    assert_eq!(
        rule_hits(&status, "from-h2", "ping"),
        6,
        "3 replies + 3 requests from h2"
    );
    assert_eq!(rule_hits(&status, "from-h1", "stream"), 20);
    assert_eq!(rule_hits(&status, "from-h1", "blocked"), 20);
    assert!(
        rule_hits(&status, "from-h1", "echo") >= 3,
        "handshake, data and close of the echo"
    );
    assert!(rule_hits(&status, "from-h2", "echo-reply") >= 2);
    let frames = &status["frames"];
    let (ev, per, den) = (
        frames["evaluated"].as_u64(),
        frames["permitted"].as_u64(),
        frames["denied"].as_u64(),
    );
    assert_eq!(ev, Some(per.unwrap_or(0) + den.unwrap_or(0)), "{frames}");
    // The bridge's own counters agree with the engine's and with each other.
    let sides = status["data_path"]["interfaces"]
        .as_array()
        .expect("data_path in status");
    let mut rx = 0;
    for side in sides {
        let n = |k: &str| side[k].as_u64().unwrap_or(u64::MAX);
        assert_eq!(n("rx"), n("permitted") + n("denied"), "{side}");
        assert_eq!(
            n("forwarded"),
            n("permitted"),
            "every permitted frame sent: {side}"
        );
        assert_eq!(n("tx_errors"), 0, "{side}");
        rx += n("rx");
    }
    assert_eq!(
        Some(rx),
        ev,
        "engine evaluated exactly the frames the bridge received"
    );
    assert!(
        den.unwrap_or(0) >= 25,
        "20 udp/7009 + 5 udp from h2 + tcp SYNs denied: {frames}"
    );
}

/// 100 reloads between two generations under a steady UDP stream: not one
/// denied datagram gets through, not one datagram of the flow both permit is
/// lost; a refused reload changes nothing.
fn reload_under_traffic_never_leaks_or_stalls() {
    let mut net = Net::new("reload");
    let (a, b) = (fixture("gen-a.toml"), fixture("gen-b.toml"));
    net.start(&a, BRIDGE);
    let ports = [7000u16, 7002, 7009];
    let list = "7000,7002,7009";
    let sink = net.probe(&net.h2, &["udp-sink", H2, list]);
    // 1000 datagrams a second per flow, from before the first reload until after the last.
    let stop = net.lab.dir.join("stop-senders");
    let stop_arg = stop.to_str().expect("utf-8 path");
    let senders: Vec<Proc> = ports
        .iter()
        .map(|p| {
            net.probe(
                &net.h1,
                &["udp-send", H2, &p.to_string(), "120000", "1000", stop_arg],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut generations = BTreeSet::new();
    for i in 0..100 {
        let file = if i % 2 == 0 { &b } else { &a };
        let out = net.palisade(&["reload", file.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        generations.insert(net.status()["generation"].as_u64().expect("generation"));
    }
    assert!(
        generations.len() >= 100,
        "every reload made a new generation: {generations:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&stop, b"").expect("stop file");
    let mut sent = Vec::new();
    for s in senders {
        let (out, _) = s.wait(Duration::from_secs(30));
        let n: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("sent "))
            .and_then(|n| n.parse().ok())
            .expect("sent N");
        sent.push(n);
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = received(&sink.finish(), &ports);
    let count = sent[0];
    assert!(
        count >= 200,
        "the stream ran through the reloads: {count} datagrams"
    );
    let expect: Vec<u32> = (0..count).collect();
    let mut stream = got[0].clone();
    stream.sort_unstable();
    assert_eq!(
        stream.len(),
        expect.len(),
        "datagrams of the always-permitted flow lost or duplicated; missing: {}",
        gaps(&stream, count)
    );
    assert_eq!(stream, expect);
    assert!(
        got[2].is_empty(),
        "{} denied datagrams leaked during reloads",
        got[2].len()
    );
    // Each sender counts its own datagrams (they start and stop a little apart).
    assert!(
        got[1].iter().all(|&s| s < sent[1]),
        "flip flow: only real datagrams (sent {})",
        sent[1]
    );

    // A refused reload changes nothing: same generation, same digest, same enforcement.
    let before = net.status();
    let out = net.palisade(&["reload", fixture("bad.toml").to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "refused reload exits 1");
    let after = net.status();
    assert_eq!(before["generation"], after["generation"]);
    assert_eq!(before["digest"], after["digest"]);
    assert_eq!(after["last_reload"]["ok"], false, "{after}");
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7009], 10, 2000);
    assert_eq!(got[0].len(), 10);
    assert!(got[1].is_empty());
}

/// A shadow candidate that would block one flow is reported with the right
/// counts and examples while traffic follows the active generation; once
/// promoted it is enforced.
fn shadow_reports_without_enforcing() {
    let mut net = Net::new("shadow");
    net.start(&fixture("gen-a.toml"), BRIDGE);
    let before = net.status();
    let out = net.palisade(&[
        "reload",
        "--shadow",
        fixture("gen-b.toml").to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "reload --shadow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = net.palisade(&[
        "reload",
        "--shadow",
        fixture("bad.toml").to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "a candidate that fails validation is refused"
    );

    // Not enforced: 7002 (denied by the candidate) still flows, 7000 too.
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7002], 15, 2000);
    assert_eq!(got[0].len(), 15);
    assert_eq!(got[1].len(), 15, "the shadow candidate must not enforce");
    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    assert_eq!(
        status["generation"], before["generation"],
        "shadow is no generation"
    );
    let sh = &status["shadow"];
    assert_eq!(sh["differ"], 15, "{sh}");
    assert_eq!(sh["frames"], 30, "{sh}");
    let acl = sh["acls"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "from-h1"))
        .expect("acl");
    let flip = acl["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == "flip"))
        .expect("rule");
    assert_eq!(flip["differ"], 15, "{sh}");
    let examples = sh["examples"].as_array().expect("examples");
    assert!(!examples.is_empty() && examples.len() <= 5);
    assert!(
        examples[0]["packet"]
            .as_str()
            .is_some_and(|p| p.contains(":7002")),
        "{sh}"
    );
    assert_eq!(examples[0]["active"], "permit");
    assert_eq!(examples[0]["candidate"], "deny");

    // Promote: the candidate becomes active through the normal pipeline and is enforced.
    let out = net.palisade(&["reload", "--promote"]);
    assert!(
        out.status.success(),
        "reload --promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = net.status();
    assert_eq!(
        after["generation"].as_u64(),
        before["generation"].as_u64().map(|g| g + 1)
    );
    assert_ne!(after["digest"], before["digest"]);
    assert!(
        after.get("shadow").is_none(),
        "promoted candidate is cleared: {after}"
    );
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7002], 10, 2000);
    assert_eq!(got[0].len(), 10);
    assert!(got[1].is_empty(), "udp 7002 is denied once promoted");
}

/// The README walkthrough: ARP, ping and a web port through the bridge, the rest denied.
fn walkthrough_rules_work_end_to_end() {
    let mut net = Net::with_arp("walk");
    net.start(&fixture("walkthrough.toml"), BRIDGE);
    assert_eq!(
        net.icmp_ping(&net.h1, H2, 2),
        2,
        "h1 pings h2 (ARP resolved through the bridge)"
    );
    assert_eq!(net.icmp_ping(&net.h2, H1, 1), 0, "h2 may not ping h1");
    let _web = net.probe(&net.h2, &["tcp-echo", H2, "8080"]);
    let _ssh = net.probe(&net.h2, &["tcp-echo", H2, "7003"]);
    assert!(net.tcp_ping(&net.h1, H2, 8080));
    assert!(!net.tcp_ping(&net.h1, H2, 7003));
    let status = net.status();
    assert!(rule_hits(&status, "from-h1", "arp") >= 1, "{status}");
    assert!(rule_hits(&status, "from-h2", "web-replies") >= 2);
}

/// Ports that are routed ports of L3 interfaces: crossing the bridge is routing,
/// and the Routed ACLs of both interfaces apply in their directions.
fn routed_ports_apply_routed_acls() {
    let mut net = Net::new("routed");
    net.start(&fixture("routed.toml"), BRIDGE);
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7009], 10, 2000);
    assert_eq!(
        got[0].len(),
        10,
        "permitted by the default of the outbound Routed ACL"
    );
    assert!(
        got[1].is_empty(),
        "denied by rule no-7009 of the outbound Routed ACL"
    );
    assert_eq!(
        net.icmp_ping(&net.h1, H2, 2),
        2,
        "replies come in through the inbound Routed ACL"
    );
    assert_eq!(
        net.icmp_ping(&net.h2, H1, 1),
        0,
        "requests from outside are denied"
    );
    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    assert_eq!(rule_hits(&status, "egress", "no-7009"), 10, "{status}");
    assert_eq!(rule_hits(&status, "ingress", "replies"), 2, "{status}");
    let kinds: Vec<&serde_json::Value> = status["acls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["bindings"].as_array())
        .flatten()
        .map(|b| &b["kind"])
        .collect();
    assert!(
        kinds.iter().all(|k| *k == "routed") && kinds.len() == 2,
        "{status}"
    );
}

/// IPv6 (unique local addresses inside the namespaces): UDP is filtered by the same rules and
/// arrives intact (its checksum, partial as the sending veth leaves it, still marked so).
fn ipv6_udp_is_filtered_and_arrives_intact() {
    const V6_1: &str = "fd00:5a1:15ad::1";
    const V6_2: &str = "fd00:5a1:15ad::2";
    let mut net = Net::new("v6");
    for (ns, me, peer, mac) in [(&net.h1, V6_1, V6_2, MAC2), (&net.h2, V6_2, V6_1, MAC1)] {
        net.lab.enable_ipv6(ns, "eth0");
        net.lab.ip(
            ns,
            &["-6", "addr", "add", &format!("{me}/64"), "dev", "eth0", "nodad"],
        );
        net.lab.ip(
            ns,
            &[
                "-6",
                "neigh",
                "replace",
                peer,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
    net.start(&fixture("gen-a.toml"), BRIDGE);
    let got = net.udp(&net.h1, &net.h2, V6_2, &[7000, 7009], 10, 2000);
    assert_eq!(
        got[0],
        (0..10).collect::<Vec<u32>>(),
        "every permitted IPv6 datagram, intact"
    );
    assert!(got[1].is_empty(), "denied IPv6 datagrams delivered: {:?}", got[1]);
    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    assert_eq!(rule_hits(&status, "from-h1", "stream"), 10, "{status}");
    assert_eq!(rule_hits(&status, "from-h1", "blocked"), 10);
}

/// `--monitor` classifies and counts, and forwards nothing.
fn monitor_counts_without_forwarding() {
    let mut net = Net::new("monitor");
    net.start(&fixture("gen-a.toml"), &["--monitor", "pa"]);
    let got = net.udp(&net.h1, &net.h2, H2, &[7000, 7009], 12, 2000);
    assert!(
        got[0].is_empty() && got[1].is_empty(),
        "a monitor forwards nothing: {got:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    assert_eq!(rule_hits(&status, "from-h1", "stream"), 12, "{status}");
    assert_eq!(rule_hits(&status, "from-h1", "blocked"), 12);
    let dp = &status["data_path"];
    assert_eq!(dp["mode"], "monitor", "{dp}");
    let side = &dp["interfaces"][0];
    assert_eq!(
        (side["interface"].as_str(), side["rx"].as_u64()),
        (Some("pa"), Some(24)),
        "{dp}"
    );
    assert_eq!(side["forwarded"], 0);
}

/// An interface that goes away is a logged event: the daemon keeps running,
/// the other interface is still read and decided (its frames for the vanished
/// side are counted as send errors), and traffic flows again once it returns.
fn vanished_interface_is_survived() {
    let mut net = Net::new("vanish");
    net.start(&fixture("gen-a.toml"), BRIDGE);
    assert_eq!(net.icmp_ping(&net.h1, H2, 1), 1);
    net.lab.ip(&net.h1, &["link", "del", "eth0"]); // takes its peer, pa, with it
    std::thread::sleep(Duration::from_millis(300));
    let side =
        |st: &serde_json::Value, i: usize, k: &str| st["data_path"]["interfaces"][i][k].as_u64().unwrap_or(0);
    let before = net.status();
    assert_eq!(net.icmp_ping(&net.h2, H1, 3), 0, "nowhere to go");
    let during = net.status();
    assert_eq!(
        side(&during, 1, "permitted") - side(&before, 1, "permitted"),
        3,
        "pb still decided: {during}"
    );
    assert_eq!(
        side(&during, 1, "tx_errors") - side(&before, 1, "tx_errors"),
        3,
        "{during}"
    );
    let alive = net
        .daemon
        .as_mut()
        .map(|d| d.child.try_wait().ok().flatten().is_none());
    assert_eq!(alive, Some(true), "the daemon survives a vanished interface");

    net.lab.veth(&net.h1, "eth0", MAC1, &net.fw, "pa");
    net.lab
        .ip(&net.h1, &["addr", "add", &format!("{H1}/24"), "dev", "eth0"]);
    net.lab.ip(
        &net.h1,
        &[
            "neigh",
            "replace",
            H2,
            "lladdr",
            MAC2,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.icmp_ping(&net.h1, H2, 1) != 1 {
        assert!(
            Instant::now() < deadline,
            "traffic never resumed after the interface returned"
        );
    }
}

/// A bridge naming an interface that does not exist is refused with a clear error.
fn missing_interface_is_a_clear_error() {
    let mut lab = Lab::new("missing");
    let fw = lab.netns("fw");
    let mut cmd = lab.cmd(&fw, Path::new(PALISADE));
    cmd.arg("run")
        .arg("--config")
        .arg(fixture("gen-a.toml"))
        .arg("--control")
        .arg(lab.dir.join("c.sock"))
        .arg("--state-dir")
        .arg(lab.dir.join("state"))
        .args(["--bridge", "pa,nosuch0"]);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("palisade run");
    assert_eq!(out.status.code(), Some(2), "I/O error exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pa") || err.contains("nosuch0"),
        "names the interface: {err}"
    );
}

/// A UDP frame h1 -> h2 (198.18.0.1:40000 -> 198.18.0.2:`dst_port`, MACs of the two hosts)
/// carrying `payload`, with `tags` (TPID, TCI; outer first) after the MAC addresses.
fn udp_frame(tags: &[(u16, u16)], dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mac = |s: &str| -> [u8; 6] {
        let v: Vec<u8> = s
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).expect("mac"))
            .collect();
        v.try_into().expect("6 bytes")
    };
    let b = etherparse::PacketBuilder::ethernet2(mac(MAC1), mac(MAC2))
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(40000, dst_port);
    let mut plain = Vec::new();
    b.write(&mut plain, payload).expect("frame");
    let mut out = plain[..12].to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&plain[12..]);
    out
}

/// The same frame sent the other way: MACs and IP addresses swapped (checksums unchanged:
/// both sums are symmetric in the addresses).
fn reversed(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (dst, src) = (frame[..6].to_vec(), frame[6..12].to_vec());
    f[..6].copy_from_slice(&src);
    f[6..12].copy_from_slice(&dst);
    let ip = frame
        .windows(4)
        .position(|w| w == [198, 18, 0, 1])
        .expect("source address");
    f[ip..ip + 4].copy_from_slice(&[198, 18, 0, 2]);
    f[ip + 4..ip + 8].copy_from_slice(&[198, 18, 0, 1]);
    f
}

/// Sends `frames` raw from `ns` (interface eth0), each `copies` times, and returns every
/// frame with `marker` that arrived on eth0 of `to_ns`, as it was on the wire (hex).
fn raw_exchange(
    net: &Net,
    ns: &str,
    to_ns: &str,
    frames: &[Vec<u8>],
    copies: usize,
    marker: &str,
) -> Vec<String> {
    let sniffer = net.probe(to_ns, &["sniff", "eth0", marker]);
    let mut args = vec!["raw-send".to_string(), "eth0".to_string()];
    for f in frames {
        for _ in 0..copies {
            args.push(probe::to_hex(f));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sender = net.probe(ns, &args);
    let (out, _) = sender.wait(Duration::from_secs(30));
    assert!(
        out.contains(&format!("sent {}", frames.len() * copies)),
        "raw-send: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    sniffer.finish().lines().map(str::to_owned).collect()
}

/// A frame written raw on one side, and what must arrive on the other (`None`: nothing).
struct WireCase {
    what: &'static str,
    sent: Vec<u8>,
    arrives: Option<Vec<u8>>,
}

/// VLANs on the wire as they are, judged by what arrives at the far side (sniffed with
/// PACKET_AUXDATA, which reports the tag the receiving veth stripped): tagged frames keep
/// their tags both ways, a VLAN ACL's deny holds on tagged frames, VLANs a port does not carry
/// are dropped, untagged frames stay untagged, the native VLAN leaves the access port
/// untagged, QinQ frames keep both tags, and a wrong checksum arrives as wrong as it left.
/// Every frame the data path decided is counted by the engine.
fn vlans_are_kept_filtered_and_counted() {
    const MARK: &str = "pal-vlan";
    let mut net = Net::new("vlan");
    net.start(&fixture("vlan.toml"), BRIDGE);
    let q = 0x8100u16;
    let ad = 0x88a8u16;
    let p = |label: &str| format!("{MARK} {label} ............").into_bytes();
    let untagged = udp_frame(&[], 5001, &p("untagged"));
    let mut bad_sum = udp_frame(&[], 5001, &p("bad-checksum"));
    let at = 14 + 20 + 6;
    bad_sum[at..at + 2].copy_from_slice(&[0xbe, 0xef]);
    let arrives = |what, f: Vec<u8>| WireCase {
        what,
        arrives: Some(f.clone()),
        sent: f,
    };
    let blocked = |what, sent| WireCase {
        what,
        sent,
        arrives: None,
    };
    let changed = |what, sent, arrives| WireCase {
        what,
        sent,
        arrives: Some(arrives),
    };
    let cases = [
        arrives("vlan 10 keeps its tag", udp_frame(&[(q, 10)], 5000, &p("vlan10"))),
        blocked(
            "vlan 20 udp 5000: the VLAN ACL denies",
            udp_frame(&[(q, 20)], 5000, &p("vlan20-deny")),
        ),
        arrives(
            "vlan 20 (priority 3) keeps its tag",
            udp_frame(&[(q, 0x6014)], 5001, &p("vlan20")),
        ),
        blocked(
            "vlan 40: pb does not carry it",
            udp_frame(&[(q, 40)], 5001, &p("vlan40")),
        ),
        blocked(
            "vlan 50: pa does not carry it",
            udp_frame(&[(q, 50)], 5001, &p("vlan50")),
        ),
        arrives("untagged stays untagged", untagged),
        changed(
            "native vlan 30 tagged leaves pb's access vlan untagged",
            udp_frame(&[(q, 30)], 5001, &p("native")),
            udp_frame(&[], 5001, &p("native")),
        ),
        changed(
            "priority-tagged (vid 0) takes the native vlan: untagged",
            udp_frame(&[(q, 0xa000)], 5001, &p("priority")),
            udp_frame(&[], 5001, &p("priority")),
        ),
        arrives(
            "qinq in vlan 20 keeps both tags",
            udp_frame(&[(ad, 20), (q, 7)], 5001, &p("qinq")),
        ),
        blocked(
            "qinq in vlan 300: nobody carries it",
            udp_frame(&[(ad, 300), (q, 7)], 5001, &p("qinq300")),
        ),
        arrives("a wrong checksum arrives as wrong as it left", bad_sum),
    ];
    const COPIES: usize = 3;
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.sent.clone()).collect();
    let got = raw_exchange(&net, &net.h1, &net.h2, &frames, COPIES, MARK);
    for case in &cases {
        if let Some(e) = &case.arrives {
            let hex = probe::to_hex(e);
            let n = got.iter().filter(|g| **g == hex).count();
            assert_eq!(
                n, COPIES,
                "{}: expected {hex} {COPIES} times; arrived: {got:#?}",
                case.what
            );
        }
    }
    let expected: usize = cases.iter().filter(|c| c.arrives.is_some()).count() * COPIES;
    assert_eq!(got.len(), expected, "only the expected frames arrive: {got:#?}");

    // The other way: h2 -> h1, tagged and untagged.
    let back = [
        reversed(&udp_frame(&[(q, 10)], 5000, &p("back10"))),
        reversed(&udp_frame(&[], 5001, &p("back-untagged"))),
    ];
    let got = raw_exchange(&net, &net.h2, &net.h1, &back, COPIES, MARK);
    for f in &back {
        let hex = probe::to_hex(f);
        assert_eq!(
            got.iter().filter(|g| **g == hex).count(),
            COPIES,
            "{hex} at h1: {got:#?}"
        );
    }

    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    let frames = &status["frames"];
    let sides = status["data_path"]["interfaces"].as_array().expect("data_path");
    let sum = |k: &str| {
        sides
            .iter()
            .map(|s| s[k].as_u64().unwrap_or(u64::MAX))
            .sum::<u64>()
    };
    assert_eq!(frames["evaluated"].as_u64(), Some(sum("rx")), "{status}");
    assert_eq!(frames["denied"].as_u64(), Some(sum("denied")), "{status}");
    assert_eq!(frames["permitted"].as_u64(), Some(sum("permitted")), "{status}");
    assert!(sum("denied") >= 4 * COPIES as u64, "{status}");
    assert_eq!(sum("forwarded"), sum("permitted"), "{status}");
    let acl = &status["acls"][0];
    assert_eq!(acl["name"], "vlan20");
    assert_eq!(acl["counters"]["evaluated"], 3 * COPIES as u64, "{acl}");
    assert_eq!(rule_hits(&status, "vlan20", "no-5000"), COPIES as u64, "{acl}");
}

/// TCP between the namespaces with the kernel's default offloads (TSO/GSO on the veths): the
/// bridge moves GSO super-frames whole and the data arrives intact.
fn tcp_with_default_offloads_passes() {
    let mut net = Net::new("offload");
    net.start(&fixture("walkthrough.toml"), BRIDGE);
    let sink = net.probe(&net.h2, &["tcp-sink", H2, "8080"]);
    const BYTES: u64 = 64 << 20;
    let bulk = net.probe(&net.h1, &["tcp-bulk", H2, "8080", &BYTES.to_string()]);
    let (out, _) = bulk.wait(Duration::from_secs(120));
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .unwrap_or_else(|| panic!("tcp-bulk: {out}"));
    std::thread::sleep(Duration::from_millis(200));
    let got = sink.finish();
    let received = got
        .lines()
        .find_map(|l| l.strip_prefix("bytes "))
        .expect("sink line");
    let (sent_n, sent_sum) = {
        let f: Vec<&str> = sent.split_whitespace().collect();
        (f[0].to_string(), f[2].to_string())
    };
    assert_eq!(
        received,
        format!("{sent_n} sum {sent_sum}"),
        "every byte, in order"
    );
    assert_eq!(sent_n, BYTES.to_string());
    let status = net.status();
    let pa = &status["data_path"]["interfaces"][0];
    assert!(
        pa["super_frames"].as_u64().unwrap_or(0) > 0,
        "GSO super-frames moved whole: {pa}"
    );
    assert_eq!(pa["forwarded"], pa["permitted"], "{pa}");
    assert_eq!(pa["tx_errors"], 0, "{pa}");
    assert!(rule_hits(&status, "from-h1", "web") > 0);
}

/// ARP is no IP: with Routed ACLs bound and no rule about ARP, the hosts still resolve each
/// other through routed ports, and the Routed ACLs see only the IP frames.
fn routed_acls_leave_arp_alone() {
    let mut net = Net::with_arp("arp");
    net.start(&fixture("routed.toml"), BRIDGE);
    assert_eq!(
        net.icmp_ping(&net.h1, H2, 2),
        2,
        "ARP resolved, ping routed both ways"
    );
    std::thread::sleep(Duration::from_millis(200));
    let status = net.status();
    let acl = |name: &str| {
        status["acls"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == name))
            .unwrap_or_else(|| panic!("acl {name}: {status}"))
            .clone()
    };
    assert_eq!(
        acl("ingress")["counters"]["evaluated"],
        2,
        "only the echo replies: {status}"
    );
    assert_eq!(
        acl("egress")["counters"]["evaluated"],
        2,
        "only the echo requests: {status}"
    );
    let sides = status["data_path"]["interfaces"].as_array().expect("data_path");
    let rx: u64 = sides.iter().map(|s| s["rx"].as_u64().unwrap_or(0)).sum();
    assert!(rx >= 6, "ARP request and reply crossed too: {status}");
}

/// ARP routed between two VLANs with SVIs, judged on the wire: the Routed ACL (IP only) never
/// sees it, the egress VLAN's ACL does. With VLAN 30's ARP deny, h1's ARP requests (sent raw,
/// entering in VLAN 10) never reach h2; with it lifted by a reload they arrive unchanged and
/// h1 resolves h2 and pings it through the Routed ACL.
fn vlan_acls_hold_arp_routed_between_vlans() {
    const MARK: &str = "pal-arp-vacl";
    let mut net = Net::with_arp("arpvl");
    let rules = fixture("routed-vlans.toml");
    net.start(&rules, BRIDGE);
    // An ARP request h1 -> h2, its padding carrying the marker the sniffer looks for.
    let mac = |m: &str| -> Vec<u8> { m.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect() };
    let ip = |a: &str| a.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let mut arp = vec![0xff; 6];
    arp.extend(mac(MAC1));
    arp.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp.extend(mac(MAC1));
    arp.extend(ip(H1));
    arp.extend([0; 6]);
    arp.extend(ip(H2));
    arp.extend(format!("{MARK}......").bytes());
    const COPIES: usize = 3;
    let acl = |status: &serde_json::Value, name: &str| {
        status["acls"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == name))
            .unwrap_or_else(|| panic!("acl {name}: {status}"))["counters"]
            .clone()
    };

    let got = raw_exchange(&net, &net.h1, &net.h2, std::slice::from_ref(&arp), COPIES, MARK);
    assert!(
        got.is_empty(),
        "VLAN 30's ACL denies ARP leaving into VLAN 30; arrived: {got:#?}"
    );
    let status = net.status();
    assert_eq!(
        acl(&status, "vlan30")["denied"],
        COPIES as u64,
        "denied at vacl-out: {status}"
    );
    assert_eq!(
        acl(&status, "v10-in")["evaluated"],
        0,
        "the Routed ACL never saw ARP: {status}"
    );

    // The same rules with ARP permitted.
    let text = std::fs::read_to_string(&rules).expect("fixture");
    let open = text
        .replace(
            "  action = \"deny\"\n  ethertype = \"arp\"",
            "  action = \"permit\"\n  ethertype = \"arp\"",
        )
        .replace("verdict = \"deny\"", "verdict = \"permit\"");
    assert_ne!(open, text, "the fixture's ARP deny");
    let file = net.lab.dir.join("arp-open.toml");
    std::fs::write(&file, open).expect("write rules");
    let out = net.palisade(&["reload", file.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = raw_exchange(&net, &net.h1, &net.h2, std::slice::from_ref(&arp), COPIES, MARK);
    let hex = probe::to_hex(&arp);
    assert_eq!(
        got.iter().filter(|g| **g == hex).count(),
        COPIES,
        "arrived unchanged: {got:#?}"
    );
    assert_eq!(
        net.icmp_ping(&net.h1, H2, 2),
        2,
        "ARP resolved, pings routed both ways"
    );
    let status = net.status();
    assert_eq!(
        acl(&status, "v10-in")["evaluated"],
        2,
        "only the echo requests: {status}"
    );
}

// ---------------------------------------------------------------------------------------------

type Test = (&'static str, fn());

/// `(name, function)` for each test function named.
macro_rules! tests {
    ($($f:ident),* $(,)?) => { &[$((stringify!($f), $f as fn())),*] };
}

const TESTS: &[Test] = tests![
    bridge_passes_permitted_and_drops_denied,
    reload_under_traffic_never_leaks_or_stalls,
    shadow_reports_without_enforcing,
    walkthrough_rules_work_end_to_end,
    routed_ports_apply_routed_acls,
    ipv6_udp_is_filtered_and_arrives_intact,
    monitor_counts_without_forwarding,
    vlans_are_kept_filtered_and_counted,
    tcp_with_default_offloads_passes,
    routed_acls_leave_arp_alone,
    vlan_acls_hold_arp_routed_between_vlans,
    vanished_interface_is_survived,
    missing_interface_is_a_clear_error,
    logs_metrics_and_control_events_live,
    flows_let_back_only_what_the_lan_opened,
    flows_expire_and_a_late_udp_reply_is_dropped,
    flows_survive_a_reload_that_keeps_access_and_not_one_that_revokes_it,
    flows_full_table_refuses_new_flows_and_keeps_old_ones,
    flows_syn_flood_leaves_memory_flat_and_established_flows_passing,
];

// --------------------------------------------------------------------------------- flows ---

/// h1 (port pa) is the LAN: whatever it opens keeps state. h2 (port pb) is the
/// internet: only the frames of h1's flows, and ICMP errors about them, come back.
/// `open` narrows what h1 may open; `extra` goes into the file (e.g. `[flows]`).
fn stateful_rules(open: &str, extra: &str) -> String {
    format!(
        r#"version = 1
[[port]]
name = "pa"
[[port]]
name = "pb"
{extra}
[[acl]]
name = "from-h1"
  [[acl.rule]]
  id = "open"
  action = "permit"
  keep_state = true
  {open}
[[acl]]
name = "from-h2"
  [[acl.rule]]
  id = "replies"
  action = "permit"
  state = ["established", "related"]
[[bind]]
acl = "from-h1"
port = "pa"
[[bind]]
acl = "from-h2"
port = "pb"
"#
    )
}

impl Net {
    /// Writes a rule file into the lab's directory.
    fn rules(&self, name: &str, text: &str) -> PathBuf {
        let p = self.lab.dir.join(name);
        std::fs::write(&p, text).expect("write rules");
        p
    }

    /// `udp-ping` from `ns` to `dst:port`: (replies, refused).
    fn udp_ping(&self, ns: &str, dst: &str, port: u16, count: u32, timeout_ms: u32) -> (u32, u32) {
        let p = self.probe(
            ns,
            &[
                "udp-ping",
                dst,
                &port.to_string(),
                &count.to_string(),
                &timeout_ms.to_string(),
            ],
        );
        let (out, _) = p.wait(Duration::from_secs(60));
        let line = out
            .lines()
            .find(|l| l.starts_with("replies "))
            .expect("udp-ping prints replies");
        let f: Vec<u32> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (f[0], f[1])
    }

    /// Starts a `tcp-session` of `rounds` echoes `interval_ms` apart from `ns` to `dst:port`.
    fn session(&self, ns: &str, dst: &str, port: u16, rounds: u32, interval_ms: u32) -> Proc {
        self.probe(
            ns,
            &[
                "tcp-session",
                dst,
                &port.to_string(),
                &rounds.to_string(),
                &interval_ms.to_string(),
            ],
        )
    }

    /// The daemon's resident memory in KiB.
    fn daemon_rss_kib(&self) -> u64 {
        let pid = self.daemon.as_ref().expect("daemon").child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }
}

/// How a `tcp-session` ended: `Ok(rounds)` when every echo came back, `Err(round)` where it broke.
fn session_result(p: Proc) -> Result<u32, u32> {
    let (out, _) = p.wait(Duration::from_secs(60));
    let word = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix)?.split_whitespace().next()?.parse().ok())
    };
    match (word("done "), word("broken ")) {
        (Some(n), _) => Ok(n),
        (None, Some(k)) => Err(k),
        _ => panic!("tcp-session printed neither done nor broken: {out}"),
    }
}

/// What the LAN opens (TCP, UDP, ICMP) gets its replies, what the internet opens
/// does not, and an ICMP port unreachable for a LAN UDP flow comes back; with two workers.
fn flows_let_back_only_what_the_lan_opened() {
    let mut net = Net::new("flows");
    let rules = net.rules("stateful.toml", &stateful_rules("", ""));
    net.start(&rules, &["--bridge", "pa,pb", "--workers", "2"]);
    let echo_h2 = net.probe(&net.h2, &["tcp-echo", H2, "7001"]);
    let echo_h1 = net.probe(&net.h1, &["tcp-echo", H1, "7001"]);
    assert!(
        net.tcp_ping(&net.h1, H2, 7001),
        "h1 opens TCP to h2: its replies come back"
    );
    assert!(!net.tcp_ping(&net.h2, H1, 7001), "h2 opens TCP to h1: denied");
    drop((echo_h2, echo_h1));
    assert_eq!(net.icmp_ping(&net.h1, H2, 3), 3, "h1 pings h2: replies come back");
    assert_eq!(net.icmp_ping(&net.h2, H1, 3), 0, "h2 pings h1: denied");
    let udp_h2 = net.probe(&net.h2, &["udp-echo", H2, "7100", "0"]);
    let udp_h1 = net.probe(&net.h1, &["udp-echo", H1, "7100", "0"]);
    assert_eq!(
        net.udp_ping(&net.h1, H2, 7100, 5, 500),
        (5, 0),
        "h1's UDP gets its echoes"
    );
    assert_eq!(net.udp_ping(&net.h2, H1, 7100, 3, 300).0, 0, "h2's UDP is denied");
    drop((udp_h2, udp_h1));
    let (replies, refused) = net.udp_ping(&net.h1, H2, 7199, 1, 1000);
    assert_eq!(
        (replies, refused),
        (0, 1),
        "the port unreachable about h1's flow came back (related)"
    );
    std::thread::sleep(Duration::from_millis(300));
    let st = net.status();
    let flows = &st["flows"];
    assert!(flows["created"].as_u64() >= Some(4), "tcp, icmp, udp flows: {st}");
    assert_eq!(flows["max"].as_u64(), Some(1 << 20));
    assert!(rule_hits(&st, "from-h2", "replies") >= 12, "{st}");
    // palisade flows: the entries, with their keys, counts and the rule that opened them.
    let out = net.palisade(&["flows", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("flows --json");
    let entries = listed["flows"].as_array().expect("flows");
    let keyed = |proto: &str, to: String| {
        entries.iter().find(|f| {
            f["key"]
                .as_str()
                .is_some_and(|k| k.starts_with(proto) && k.ends_with(&to))
        })
    };
    let udp =
        keyed("udp", format!("{H2}:7100")).unwrap_or_else(|| panic!("the UDP flow is listed: {listed}"));
    assert_eq!(
        (udp["packets_out"].as_u64(), udp["packets_in"].as_u64()),
        (Some(5), Some(5)),
        "{udp}"
    );
    assert_eq!(udp["rule"], "from-h1/open");
    assert!(
        keyed("tcp", format!("{H2}:7001")).is_some(),
        "the TCP flow is listed: {listed}"
    );
    let text = net.palisade(&["flows"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with("flows: ") && text.contains("rule from-h1/open"),
        "{text}"
    );
}

/// A UDP reply that comes after the flow's idle timeout is dropped.
fn flows_expire_and_a_late_udp_reply_is_dropped() {
    let mut net = Net::new("flowsexp");
    let rules = net.rules("stateful.toml", &stateful_rules("", "[flows]\nudp = 2\n"));
    net.start(&rules, BRIDGE);
    let slow = net.probe(&net.h2, &["udp-echo", H2, "7100", "3000"]);
    assert_eq!(
        net.udp_ping(&net.h1, H2, 7100, 1, 4500).0,
        0,
        "answered 3 s later: the flow was gone"
    );
    drop(slow);
    let quick = net.probe(&net.h2, &["udp-echo", H2, "7101", "1000"]);
    assert_eq!(
        net.udp_ping(&net.h1, H2, 7101, 1, 4500).0,
        1,
        "answered 1 s later: still there"
    );
    drop(quick);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(net.status()["flows"]["expired"].as_u64() >= Some(1));
}

/// A reload that keeps access keeps a live TCP connection; one whose rules would
/// no longer open it cuts it at its next frame.
fn flows_survive_a_reload_that_keeps_access_and_not_one_that_revokes_it() {
    let mut net = Net::new("flowsrl");
    let same = net.rules("same.toml", &stateful_rules("", ""));
    let again = net.rules(
        "again.toml",
        &stateful_rules("", "# the same access, another digest\n"),
    );
    let revoked = net.rules("revoked.toml", &stateful_rules("proto = \"udp\"", ""));
    net.start(&same, BRIDGE);
    let _echo = net.probe(&net.h2, &["tcp-echo", H2, "7001"]);
    let session = net.session(&net.h1, H2, 7001, 20, 150);
    std::thread::sleep(Duration::from_millis(1000));
    let out = net.palisade(&["reload", again.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        session_result(session),
        Ok(20),
        "kept access: the connection lost nothing"
    );
    let session = net.session(&net.h1, H2, 7001, 20, 150);
    std::thread::sleep(Duration::from_millis(1000));
    // Shadow evaluation first: it says the candidate would cut the live connection, and cuts nothing.
    let out = net.palisade(&["reload", "--shadow", revoked.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = net.status();
    let sh = &st["shadow"];
    assert!(
        sh["flows_cut"].as_u64() >= Some(1) && sh["flows_checked"].as_u64() >= sh["flows_cut"].as_u64(),
        "{sh}"
    );
    assert_eq!(st["flows"]["cut"].as_u64(), Some(0), "shadow cuts nothing");
    let out = net.palisade(&["reload", revoked.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    match session_result(session) {
        Err(k) => assert!((3..20).contains(&k), "cut at round {k}, after the reload"),
        Ok(n) => panic!("the revoked connection went on for {n} rounds"),
    }
    assert!(net.status()["flows"]["cut"].as_u64() >= Some(1));
}

/// A full table refuses new flows (their frames are denied at flows-full, never
/// reach the far side) and keeps the flows it has.
fn flows_full_table_refuses_new_flows_and_keeps_old_ones() {
    let mut net = Net::new("flowsfull");
    let rules = net.rules("small.toml", &stateful_rules("", "[flows]\nmax = 3\n"));
    net.start(&rules, BRIDGE);
    let _echo = net.probe(&net.h2, &["tcp-echo", H2, "7001"]);
    let _udp = net.probe(&net.h2, &["udp-echo", H2, "7100", "0"]);
    let session = net.session(&net.h1, H2, 7001, 25, 150);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(net.udp_ping(&net.h1, H2, 7100, 2, 500).0, 2, "second flow");
    assert_eq!(net.udp_ping(&net.h1, H2, 7100, 2, 500).0, 2, "third flow");
    assert_eq!(
        net.udp_ping(&net.h1, H2, 7100, 2, 500).0,
        0,
        "a fourth is refused"
    );
    assert_eq!(session_result(session), Ok(25), "the first flow kept working");
    let f = &net.status()["flows"];
    assert_eq!(f["active"].as_u64(), Some(3), "{f}");
    assert!(
        f["refused"].as_u64() >= Some(2) && f["full_frames"].as_u64() >= Some(2),
        "{f}"
    );
}

/// A million distinct SYNs from the LAN: the table fills and refuses, memory stays
/// flat, an established connection keeps passing, the daemon answers status.
fn flows_syn_flood_leaves_memory_flat_and_established_flows_passing() {
    let mut net = Net::new("flowsflood");
    let rules = net.rules("flood.toml", &stateful_rules("", "[flows]\nmax = 100000\n"));
    net.start(&rules, &["--bridge", "pa,pb", "--workers", "2"]);
    let _echo = net.probe(&net.h2, &["tcp-echo", H2, "7001"]);
    let session = net.session(&net.h1, H2, 7001, 60, 150);
    std::thread::sleep(Duration::from_millis(300));
    let before = net.daemon_rss_kib();
    let flood = net.probe(
        &net.h1,
        &["syn-flood", "eth0", MAC1, MAC2, H1, "198.18.0.99", "1000000"],
    );
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        net.palisade(&["status"]).status.success(),
        "status during the flood"
    );
    let (out, _) = flood.wait(Duration::from_secs(120));
    assert!(out.contains("sent 1000000"), "flood: {out}");
    let flood_time = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = net.daemon_rss_kib();
    assert_eq!(
        session_result(session),
        Ok(60),
        "the established connection passed throughout"
    );
    let f = net.status()["flows"].clone();
    assert!(f["active"].as_u64() <= Some(100_000), "{f}");
    assert!(f["refused"].as_u64() > Some(0), "the full table refused: {f}");
    assert!(
        after < before + 8 * 1024,
        "memory grew from {before} to {after} KiB under the flood"
    );
    println!("flood: 1000000 SYNs in {flood_time:.1?}; rss {before} -> {after} KiB; flows {f}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        std::process::exit(probe::main(&args[1..]));
    }
    // Accept libtest's usual flags; a free argument filters tests by substring.
    let filter: Option<&String> = args.iter().find(|a| !a.starts_with('-'));
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    if let Some(why) = lab::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut failed = Vec::new();
    for (name, test) in TESTS
        .iter()
        .filter(|(n, _)| filter.is_none_or(|f| n.contains(f.as_str())))
    {
        let start = Instant::now();
        let ok = std::panic::catch_unwind(test).is_ok();
        println!(
            "test {name} ... {} ({:.1?})",
            if ok { "ok" } else { "FAILED" },
            start.elapsed()
        );
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(101);
    }
}
