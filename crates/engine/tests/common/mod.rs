//! Shared fixtures: two rule sets A and B that disagree on many packets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use palisade_engine::policy::{Decision, Verdict};
use palisade_engine::{Engine, EngineOptions, ReloadSource};
use palisade_packet::FlowKey;

/// A fresh, empty temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("palisade-engine-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TOPOLOGY: &str = r#"version = 1

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
"#;

/// Rule set A: web permitted, DNS denied, default deny; routed out to wan: only 443.
pub fn rules_a() -> String {
    format!(
        r#"{TOPOLOGY}
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
  action = "deny"
  proto = "udp"
  dst_port = 53
  [[acl.rule]]
  id = "high"
  action = "permit"
  proto = "udp"
  dst_port = "1024-65535"

[[acl]]
name = "wan-out"
default = "permit"
  [[acl.rule]]
  id = "no-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23

[[acl]]
name = "vlan10"
default = "permit"
  [[acl.rule]]
  id = "no-smb"
  action = "deny"
  proto = "tcp"
  dst_port = 445

[[bind]]
acl = "lan-in"
port = "lan1"

[[bind]]
acl = "vlan10"
vlan = 10

[[bind]]
acl = "wan-out"
interface = "wan"
direction = "out"

[[expect]]
port = "lan1"
packet = {{ proto = "tcp", src = "10.0.10.5", dst = "198.51.100.7", dst_port = 443 }}
verdict = "permit"
"#
    )
}

/// Rule set B: the opposite of A on web and DNS, default permit.
pub fn rules_b() -> String {
    rules_a()
        .replace("default = \"deny\"", "default = \"permit\"")
        .replace(
            "  id = \"web\"\n  action = \"permit\"",
            "  id = \"web\"\n  action = \"deny\"",
        )
        .replace(
            "  id = \"dns\"\n  action = \"deny\"",
            "  id = \"dns\"\n  action = \"permit\"",
        )
        .replace("verdict = \"permit\"\n", "verdict = \"deny\"\n")
}

/// A fixed packet set: tcp/udp to many ports, plus rescue traffic.
pub fn packets() -> Vec<FlowKey> {
    let mut keys = Vec::new();
    for (i, port) in [22u16, 23, 53, 80, 443, 445, 8080, 1023, 1024, 65535, 5353, 123]
        .iter()
        .enumerate()
    {
        for proto in [6u8, 17] {
            keys.push(
                FlowKey::new()
                    .with_ipv4([10, 0, 10, 5 + i as u8], [198, 51, 100, 7])
                    .with_proto(proto)
                    .with_ports(40000 + i as u16, *port),
            );
        }
    }
    // Management SSH from the rescue prefix.
    keys.push(
        FlowKey::new()
            .with_ipv4([192, 0, 2, 3], [10, 0, 10, 1])
            .with_proto(6)
            .with_ports(50000, 22),
    );
    keys
}

pub fn bytes(name: &str, text: &str) -> ReloadSource {
    ReloadSource::Bytes {
        name: name.to_string(),
        bytes: text.as_bytes().to_vec(),
    }
}

/// An engine booted from `config_text` (written to `dir/rules.toml`), state in `dir/state`.
pub fn engine_with(dir: &TempDir, config_text: &str, durable: bool) -> Engine {
    let config = dir.join("rules.toml");
    std::fs::write(&config, config_text).unwrap();
    let opts = EngineOptions {
        durable,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&config, &dir.join("state"), opts).unwrap();
    assert!(boot.config_error.is_none(), "{:?}", boot.config_error);
    engine
}

/// Verdicts of `keys` entering port lan1 under the engine's current generation.
pub fn verdicts(engine: &Engine, keys: &[FlowKey]) -> Vec<Verdict> {
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let mut b = h.batch();
    let ctx = b.context("lan1", None).expect("port lan1");
    b.classify(keys, &ctx, &mut out);
    out.iter().map(|d| d.verdict).collect()
}

/// Runs `f` on a thread and fails the test if it has not returned within `secs`
/// (a hang is a failure, not a stuck CI run).
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s"),
    }
}

/// Makes a FIFO at `path` with `mkfifo`.
pub fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// An engine on `dir/rules.toml` (not rewritten) and `dir/state`.
pub fn reopen(dir: &TempDir) -> (Engine, palisade_engine::BootReport) {
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap()
}

/// Rule set A with `n` extra rules whose ids start with `tag` (a variant with new rule ids).
pub fn with_ids(tag: &str, n: usize) -> String {
    let mut extra = String::new();
    for i in 0..n {
        extra += &format!(
            "  [[acl.rule]]\n  id = \"{tag}-{i}\"\n  action = \"deny\"\n  proto = \"udp\"\n  dst_port = {}\n",
            2000 + i
        );
    }
    rules_a().replacen(
        "  [[acl.rule]]\n  id = \"web\"",
        &format!("{extra}  [[acl.rule]]\n  id = \"web\""),
        1,
    )
}
