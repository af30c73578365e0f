//! The engine with flows: states found before the ACL stages, flows opened
//! by keep_state rules, re-checked under new generations (reload, rollback,
//! commit-confirmed revert), a full table, counters and status.

mod common;
#[allow(dead_code)]
#[path = "common/frames.rs"]
mod frames;

use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use frames::{tcp, udp, Addr, Spec, ACK, SYN};
use palisade_engine::flow::ManualClock;
use palisade_engine::policy::{Decision, RuleRef, Stage, Verdict};
use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource, WorkerHandle};

const LAN_HOST: Addr = Addr::V4([198, 18, 10, 5]);
const LAN_HOST2: Addr = Addr::V4([198, 18, 10, 6]);
const SERVER: Addr = Addr::V4([198, 19, 0, 7]);

/// A gateway: the LAN opens flows (web and DNS, or anything with `OPEN`),
/// the WAN gets their replies and nothing else.
fn rules(open: &str, extra: &str) -> String {
    format!(
        r#"version = 1
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
{extra}
[[acl]]
name = "lan-in"
  [[acl.rule]]
  id = "out"
  action = "permit"
  keep_state = true
  src = "198.18.10.0/24"
  {open}
[[acl]]
name = "wan-in"
  [[acl.rule]]
  id = "replies"
  action = "permit"
  state = ["established", "related"]
  [[acl.rule]]
  id = "no-invalid"
  action = "deny"
  state = "invalid"
[[bind]]
acl = "lan-in"
interface = "lan"
direction = "in"
[[bind]]
acl = "wan-in"
interface = "wan"
direction = "in"
"#
    )
}

struct Gateway {
    engine: Engine,
    worker: WorkerHandle,
    clock: ManualClock,
    _dir: TempDir,
}

impl Gateway {
    fn new(text: &str) -> Self {
        Self::with_files(text, &[])
    }

    /// A gateway whose rule file names other files (set files) beside it.
    fn with_files(text: &str, files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("stateful");
        let config = dir.join("rules.toml");
        std::fs::write(&config, text).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let clock = ManualClock::new();
        let options = EngineOptions {
            durable: false,
            clock: Some(Arc::new(clock.clone())),
            ..EngineOptions::default()
        };
        let (engine, boot) = Engine::open(&config, &dir.join("state"), options).unwrap();
        assert!(boot.config_error.is_none(), "{:?}", boot.config_error);
        let worker = engine.handle();
        Gateway {
            engine,
            worker,
            clock,
            _dir: dir,
        }
    }

    /// One frame from the LAN (`out`) or the WAN, routed.
    fn send(&mut self, spec: &Spec, out: bool) -> Decision {
        let bytes = spec.frame();
        let key = palisade_packet::parse(&bytes);
        let mut batch = self.worker.batch();
        let ctx = match out {
            true => batch.context("lan1", Some(("lan", "wan"))),
            false => batch.context("wan0", Some(("wan", "lan"))),
        }
        .unwrap();
        let mut d = [Decision::default()];
        batch.classify_tracked(&[key], &[&bytes], &ctx, &mut d);
        d[0]
    }

    fn passes(&mut self, spec: &Spec, out: bool) -> bool {
        self.send(spec, out).verdict == Verdict::Permit
    }

    fn reload(&self, text: &str) -> u64 {
        let src = ReloadSource::Bytes {
            name: "push.toml".into(),
            bytes: text.as_bytes().to_vec(),
        };
        self.engine
            .reload(src, &ReloadOptions::default())
            .unwrap()
            .generation
    }
}

#[test]
fn replies_to_what_the_lan_opened_pass_and_nothing_else() {
    let mut g = Gateway::new(&rules("", ""));
    // WAN-opened: denied (new, no rule permits it; an ACK is invalid).
    assert!(!g.passes(&tcp(SERVER, LAN_HOST, 443, 40000, SYN), false));
    let d = g.send(&tcp(SERVER, LAN_HOST, 5555, 3389, ACK), false);
    assert_eq!(
        (d.verdict, d.rule),
        (Verdict::Deny, RuleRef::Rule(1)),
        "rule no-invalid"
    );
    assert!(!g.passes(&udp(SERVER, LAN_HOST, 443, 40000), false));
    // LAN-opened TCP, UDP and ICMP get their replies.
    assert!(g.passes(&tcp(LAN_HOST, SERVER, 40000, 443, SYN), true));
    assert!(g.passes(&tcp(SERVER, LAN_HOST, 443, 40000, SYN | ACK), false));
    assert!(g.passes(&tcp(LAN_HOST, SERVER, 40000, 443, ACK), true));
    assert!(g.passes(&tcp(SERVER, LAN_HOST, 443, 40000, ACK), false));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 40000, 443), true));
    assert!(g.passes(&udp(SERVER, LAN_HOST, 443, 40000), false));
    let ping = Spec::Echo {
        from: LAN_HOST,
        to: SERVER,
        id: 7,
        request: true,
    };
    let pong = Spec::Echo {
        from: SERVER,
        to: LAN_HOST,
        id: 7,
        request: false,
    };
    assert!(!g.passes(&pong, false), "a reply before its request");
    assert!(g.passes(&ping, true));
    assert!(g.passes(&pong, false));
    // A port unreachable for a LAN UDP flow comes back (related).
    let unreachable = Spec::Unreachable {
        from: SERVER,
        to: LAN_HOST,
        quoted: Box::new(udp(LAN_HOST, SERVER, 40001, 53)),
    };
    assert!(!g.passes(&unreachable, false));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 40001, 53), true));
    assert!(g.passes(&unreachable, false));
    // Another LAN host's port is not the flow's.
    assert!(!g.passes(&udp(SERVER, LAN_HOST2, 443, 40000), false));
    let st = g.engine.status();
    let flows = st.flows.expect("flows in status");
    assert_eq!((flows.active, flows.created, flows.max), (4, 4, 1 << 20));
    assert_eq!(
        flows.invalid_frames, 3,
        "the unsolicited ACK, the early echo reply, the early error"
    );
    let listed = g.engine.flows();
    assert_eq!(listed.len(), 4);
    assert!(
        listed.iter().all(|f| f.rule == "lan-in/out" && f.generation == 1),
        "{listed:?}"
    );
}

#[test]
fn a_udp_reply_after_the_timeout_is_dropped() {
    let mut g = Gateway::new(&rules("", "[flows]\nudp = 5\n"));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 5353, 53), true));
    g.clock.advance_secs(4);
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 5353), false));
    g.clock.advance_secs(6);
    assert!(!g.passes(&udp(SERVER, LAN_HOST, 53, 5353), false));
    assert_eq!(g.engine.flow_stats().unwrap().expired, 1);
}

#[test]
fn a_reload_that_keeps_access_keeps_the_flow_and_one_that_revokes_it_cuts_it() {
    let mut g = Gateway::new(&rules("", ""));
    assert!(g.passes(&tcp(LAN_HOST, SERVER, 40000, 22, SYN), true));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 40000, 53), true));
    assert!(g.passes(&tcp(SERVER, LAN_HOST, 22, 40000, SYN | ACK), false));
    // Same access, other text: both flows pass on.
    g.reload(&rules("", "# a comment\n"));
    assert!(g.passes(&tcp(SERVER, LAN_HOST, 22, 40000, ACK), false));
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 40000), false));
    assert_eq!(g.engine.flow_stats().unwrap().cut, 0);
    // The LAN may no longer open SSH: the SSH flow is cut at its next frame, DNS stays.
    g.reload(&rules("dst_port = [53, 443]\n  proto = \"udp\"", ""));
    assert!(!g.passes(&tcp(SERVER, LAN_HOST, 22, 40000, ACK), false));
    assert!(!g.passes(&tcp(LAN_HOST, SERVER, 40000, 22, ACK), true));
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 40000), false));
    let stats = g.engine.flow_stats().unwrap();
    assert_eq!((stats.cut, stats.active), (1, 1));
    // A rollback re-checks the same way: SSH is allowed again, but that flow is gone.
    g.engine.rollback(None).unwrap();
    assert!(!g.passes(&tcp(SERVER, LAN_HOST, 22, 40000, ACK), false));
    assert!(g.passes(&tcp(LAN_HOST, SERVER, 40001, 22, SYN), true));
    assert!(g.passes(&tcp(SERVER, LAN_HOST, 22, 40001, SYN | ACK), false));
}

#[test]
fn a_refused_reload_changes_nothing_and_a_reverted_one_rechecks() {
    let mut g = Gateway::new(&rules("", ""));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 1000, 53), true));
    let bad = ReloadSource::Bytes {
        name: "bad.toml".into(),
        bytes: b"version = 1\n[[bind]]\nacl = \"x\"\nport = \"p\"\n".to_vec(),
    };
    assert!(g.engine.reload(bad, &ReloadOptions::default()).is_err());
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
    // Commit-confirmed to rules that revoke DNS; the flow is cut; the revert does not bring it back.
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_millis(300)),
        ..ReloadOptions::default()
    };
    let src = ReloadSource::Bytes {
        name: "tight.toml".into(),
        bytes: rules("proto = \"tcp\"", "").into_bytes(),
    };
    g.engine.reload(src, &opts).unwrap();
    assert!(!g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(g.engine.status().state.as_str(), "active", "reverted");
    assert!(!g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
    assert!(
        g.passes(&udp(LAN_HOST, SERVER, 1000, 53), true),
        "the old rules open it again"
    );
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
}

#[test]
fn a_full_table_refuses_new_flows_at_stage_flows_full_and_keeps_the_old_ones() {
    let mut g = Gateway::new(&rules("", "[flows]\nmax = 3\n"));
    for p in 0..3 {
        assert!(g.passes(&udp(LAN_HOST, SERVER, 1000 + p, 53), true));
    }
    let d = g.send(&udp(LAN_HOST, SERVER, 2000, 53), true);
    assert_eq!((d.verdict, d.stage), (Verdict::Deny, Stage::FlowsFull));
    assert_eq!(d.stage.as_str(), "flows-full");
    for p in 0..3 {
        assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000 + p), false));
    }
    let f = g.engine.status().flows.unwrap();
    assert_eq!((f.active, f.refused, f.full_frames), (3, 1, 1));
}

#[test]
fn a_new_max_moves_the_live_flows_into_a_table_of_that_size() {
    let mut g = Gateway::new(&rules("", "[flows]\nmax = 100\n"));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 1000, 53), true));
    g.reload(&rules("", "[flows]\nmax = 200\n"));
    assert_eq!(g.engine.flow_stats().unwrap().max, 200);
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
    // A stateless generation in between keeps the table for the next stateful one.
    g.reload(
        &rules("", "[flows]\nmax = 200\n")
            .replace("  keep_state = true\n", "")
            .replace("  state = [\"established\", \"related\"]\n", "")
            .replace("  state = \"invalid\"\n", "  proto = 250\n"),
    );
    assert!(g.engine.flow_stats().is_some());
    g.reload(&rules("", "[flows]\nmax = 200\n"));
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
}

#[test]
fn stateless_rule_sets_are_untouched() {
    let text = rules("", "")
        .replace("  keep_state = true\n", "")
        .replace(
            "  state = [\"established\", \"related\"]\n",
            "  src = \"198.19.0.0/16\"\n",
        )
        .replace("  state = \"invalid\"\n", "  proto = 250\n");
    let mut g = Gateway::new(&text);
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1000), false));
    assert!(g.engine.status().flows.is_none());
}

#[test]
fn the_flows_request_lists_entries_up_to_its_limit_and_counts_them_all() {
    use palisade_engine::control::{handle_line, Response};
    let mut g = Gateway::new(&rules("", ""));
    let before = match handle_line(&g.engine, r#"{"cmd":"flows"}"#, None) {
        Response::Flows(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((before.flows.len(), before.total), (0, 0));
    assert_eq!(
        before.stats.map(|s| s.active),
        Some(0),
        "a stateful generation has a table"
    );
    for p in [1002, 1001, 1000] {
        assert!(g.passes(&udp(LAN_HOST, SERVER, p, 53), true));
    }
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 1001), false));
    let r = match handle_line(&g.engine, r#"{"cmd":"flows","limit":2}"#, None) {
        Response::Flows(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.flows.len(), r.total), (2, 3));
    let keys: Vec<&str> = r.flows.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "udp 198.18.10.5:1000 -> 198.19.0.7:53",
            "udp 198.18.10.5:1001 -> 198.19.0.7:53"
        ],
        "sorted by key"
    );
    assert_eq!((r.flows[1].packets_out, r.flows[1].packets_in), (1, 1));
    assert_eq!((r.flows[0].packets_out, r.flows[0].packets_in), (1, 0));
    assert_eq!(r.stats.unwrap().created, 3);
    match handle_line(&g.engine, r#"{"cmd":"flows","limit":-1}"#, None) {
        Response::Error(e) => assert!(e.error.contains("malformed request"), "{e:?}"),
        other => panic!("{other:?}"),
    }
}

/// A flow names the rule that opened it however many generations later: its
/// number is not a counter slot, which a freed identity gives to another.
#[test]
fn a_flow_keeps_its_rule_name_after_its_rule_and_counters_are_gone() {
    let mut g = Gateway::new(&rules("", ""));
    assert!(g.passes(&udp(LAN_HOST, SERVER, 40000, 53), true));
    // Reloads with a new id for the opening rule each time: the old
    // generations are pruned and their counter slots freed and handed to the new ids.
    for n in 0..15 {
        g.reload(&rules("", "").replace("id = \"out\"", &format!("id = \"out{n}\"")));
        assert!(g.passes(&udp(LAN_HOST2, SERVER, 41000 + n, 53), true));
    }
    let flows = g.engine.flows();
    let first = flows
        .iter()
        .find(|f| f.key == "udp 198.18.10.5:40000 -> 198.19.0.7:53")
        .expect("the first flow is still there");
    assert_eq!(first.rule, "lan-in/out");
    let last = flows
        .iter()
        .find(|f| f.key == "udp 198.18.10.6:41014 -> 198.19.0.7:53")
        .expect("the last flow");
    assert_eq!(last.rule, "lan-in/out14");
    // And the first flow is still re-checked and kept (the new rule opens it too).
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 40000), false));
}

/// A set change is a generation like a reload: a flow its new rules would not
/// open is cut on its next frame, the others are kept.
#[test]
fn a_set_change_rechecks_the_flows_and_cuts_those_it_no_longer_opens() {
    use palisade_rules::SetOp;
    let servers = "198.19.0.7\n198.19.0.8\n";
    let mut g = Gateway::with_files(
        &rules(
            "dst = \"@servers\"",
            "[[set]]\nname = \"servers\"\nfile = \"servers.txt\"\n",
        ),
        &[("servers.txt", servers)],
    );
    const OTHER: Addr = Addr::V4([198, 19, 0, 8]);
    assert!(g.passes(&udp(LAN_HOST, SERVER, 40000, 53), true));
    assert!(g.passes(&udp(LAN_HOST, OTHER, 40001, 53), true));
    assert!(g.passes(&udp(SERVER, LAN_HOST, 53, 40000), false));
    let ch = g
        .engine
        .change_set(
            "servers",
            SetOp::Del,
            &["198.19.0.7".into()],
            &ReloadOptions::default(),
        )
        .unwrap();
    assert_eq!(ch.changed, 1);
    assert!(
        !g.passes(&udp(SERVER, LAN_HOST, 53, 40000), false),
        "the flow to a server no longer in the set is cut"
    );
    assert!(
        g.passes(&udp(OTHER, LAN_HOST, 53, 40001), false),
        "the other flow is kept"
    );
    assert_eq!(g.engine.flow_stats().unwrap().cut, 1);
}
