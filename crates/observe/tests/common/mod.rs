//! Shared fixtures: an engine with a logged deny rule, frames that hit it, and a driver
//! that runs batches through the engine and the logger as the data path does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_engine::policy::Decision;
use palisade_engine::{Engine, EngineOptions, WorkerHandle};
use palisade_observe::WorkerLogger;
use palisade_packet::FlowKey;

/// A fresh, empty temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("palisade-observe-{tag}-{}-{n}", std::process::id()));
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

/// `wan-in` on port wan0: telnet denied and logged, ssh permitted (not logged),
/// the default (deny) logged; `[logging]` as given.
pub fn rules(rate: u32, burst: u32) -> String {
    format!(
        r#"version = 1
[logging]
rate = {rate}
burst = {burst}
[[port]]
name = "wan0"
[[port]]
name = "lan1"
[[acl]]
name = "wan-in"
log_default = true
  [[acl.rule]]
  id = "no-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23
  log = true
  [[acl.rule]]
  id = "ssh"
  action = "permit"
  proto = "tcp"
  dst_port = 22
[[bind]]
acl = "wan-in"
port = "wan0"
"#
    )
}

pub fn engine(dir: &TempDir, text: &str) -> Engine {
    std::fs::write(dir.join("rules.toml"), text).unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap();
    assert!(boot.config_error.is_none(), "{:?}", boot.config_error);
    engine
}

pub fn telnet(i: u16) -> FlowKey {
    FlowKey::new()
        .with_ipv4([198, 18, 0, 1], [198, 18, 0, 2])
        .with_proto(6)
        .with_ports(40000 + i, 23)
}

pub fn ssh(i: u16) -> FlowKey {
    telnet(i).with_ports(40000 + i, 22)
}

/// A frame for `key`: bytes whose first two hold `i` so frames can be told apart.
pub fn frame(i: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..2].copy_from_slice(&i.to_be_bytes());
    f
}

/// Runs `keys` (with their frames) through the engine and the logger as one batch entering `port`.
pub fn run_batch(
    handle: &mut WorkerHandle,
    log: &mut WorkerLogger,
    port: &str,
    keys: &[FlowKey],
    frames: &[Vec<u8>],
) -> Vec<Decision> {
    let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
    let mut out = vec![Decision::default(); keys.len()];
    let mut batch = handle.batch();
    let ctx = batch.context(port, None).unwrap();
    batch.classify_frames(keys, &lens, &ctx, &mut out);
    if let Some(mut b) = log.batch(batch.generation()) {
        for ((k, f), d) in keys.iter().zip(frames).zip(&out) {
            b.frame(ctx.port, k, f, d);
        }
    }
    out
}

pub const FLUSH: Duration = Duration::from_secs(20);

/// The JSON lines of a log file, parsed.
pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// The frames of a pcapng file: (interface name, original length, data, comment).
pub fn pcap_frames(path: &Path) -> Vec<(String, u32, Vec<u8>, String)> {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let bytes = std::fs::read(path).unwrap();
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut r = PcapNgReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    // Interface names of the current section (a new section header starts a new list).
    let mut ifaces: Vec<String> = Vec::new();
    while let Some(block) = r.next_block() {
        let block = block.unwrap_or_else(|e| panic!("{}: unreadable block: {e}", path.display()));
        if let Block::SectionHeader(_) = block {
            ifaces.clear();
        }
        if let Block::InterfaceDescription(i) = &block {
            let name = i.options.iter().find_map(|o| match o {
                InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                _ => None,
            });
            ifaces.push(name.unwrap_or_default());
        }
        if let Block::EnhancedPacket(p) = block {
            let name = ifaces.get(p.interface_id as usize).cloned().unwrap_or_default();
            let comment = p
                .options
                .iter()
                .find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            out.push((name, p.original_len, p.data.to_vec(), comment));
        }
    }
    out
}
