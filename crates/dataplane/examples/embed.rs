//! A minimal embedding: the packet loop of another program filters its own
//! frames with Palisade.
//!
//! The program opens an engine on a rule file, reads frames from wherever it
//! gets them (here: frames it builds itself with etherparse, standing in for a
//! NIC ring or a capture), asks an [`EngineFilter`] for a batch of verdicts at
//! a time, "sends" what is permitted with the VLAN tagging its egress port
//! needs, and reloads the rule file while the loop runs. A reload is atomic:
//! each batch is decided by one generation, the old one or the new one.
//!
//! ```sh
//! cargo run -p palisade-dataplane --example embed            # rule file in a scratch directory
//! cargo run -p palisade-dataplane --example embed -- DIR      # ... in DIR (kept)
//! ```
//!
//! `crates/dataplane/tests/embed.rs` runs it and checks what it reports.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use palisade_dataplane::vlan::{self, Span, HEADROOM};
use palisade_dataplane::{EngineFilter, Forward, Frame, FrameFilter, ShadowSlot, MAX_BATCH};
use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};

/// The rule set: LAN hosts may reach the WAN with DNS, HTTPS and (until the reload) SSH.
/// The LAN port is the access port of VLAN 10; the WAN side is a trunk carrying it tagged.
const RULES: &str = r#"
version = 1
[[port]]
name = "lan"
vlan = 10
[[port]]
name = "wan"
trunk = [10]
[[acl]]
name = "lan-out"
  [[acl.rule]]
  id = "dns"
  action = "permit"
  proto = "udp"
  dst_port = 53
  [[acl.rule]]
  id = "https"
  action = "permit"
  proto = "tcp"
  dst_port = 443
  [[acl.rule]]
  id = "ssh"
  action = "permit"
  proto = "tcp"
  dst_port = 22
[[bind]]
acl = "lan-out"
port = "lan"
"#;

/// What one run of the loop saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames decided before the reload: (permitted, denied).
    pub before: (u64, u64),
    /// Frames decided after it.
    pub after: (u64, u64),
    /// Generation numbers before and after.
    pub generations: (u64, u64),
    /// Frames the engine counted (all generations).
    pub engine_frames: u64,
    /// Hits of rule `ssh` in the first generation (the second no longer has it).
    pub ssh_hits_before: u64,
    /// Permitted frames that left tagged with VLAN 10 on the trunk.
    pub tagged_out: u64,
}

/// An Ethernet frame from a LAN host to `dst_port` over `proto` ("udp" or "tcp").
fn frame(proto: &str, dst_port: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        [10, 0, 10, 5],
        [198, 51, 100, 7],
        64,
    );
    let mut out = Vec::new();
    let written = match proto {
        "udp" => b.udp(40000, dst_port).write(&mut out, b"query"),
        _ => b.tcp(40000, dst_port, 1, 65535).syn().write(&mut out, &[]),
    };
    written.map(|_| out).unwrap_or_default()
}

/// Decides `rounds` batches of [`MAX_BATCH`] frames taken in turn from `traffic`, each copied
/// into a receive buffer (with room for a VLAN tag in front) as a NIC would deliver it.
fn packet_loop(
    filter: &mut EngineFilter,
    traffic: &[Vec<u8>],
    rounds: usize,
    summary_counts: &mut (u64, u64),
    tagged_out: &mut u64,
) {
    let mut bufs: Vec<Vec<u8>> = (0..MAX_BATCH).map(|_| vec![0u8; HEADROOM + 2048]).collect();
    let mut spans = [Span { start: 0, len: 0 }; MAX_BATCH];
    let mut out = [Forward::Drop; MAX_BATCH];
    for round in 0..rounds {
        // "Receive" a batch.
        let n = MAX_BATCH;
        for i in 0..n {
            let f = &traffic[(round + i) % traffic.len()];
            bufs[i][HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            spans[i] = Span {
                start: HEADROOM,
                len: f.len(),
            };
        }
        // Decide it in one call; ingress 0 is the "lan" interface.
        // Like the rest of the loop, it allocates nothing.
        {
            let mut frames = [Frame::default(); MAX_BATCH];
            for (f, (buf, span)) in frames.iter_mut().zip(bufs.iter().zip(&spans)) {
                *f = Frame::new(span.of(buf));
            }
            filter.decide(0, &frames[..n], &mut out[..n]);
        }
        // "Send" what is permitted, tagged as the egress port needs.
        for i in 0..n {
            match vlan::retag(&mut bufs[i], spans[i], out[i]) {
                Some(sent) => {
                    summary_counts.0 += 1;
                    if vlan::outer_tag(sent.of(&bufs[i])).map(|t| t.vid()) == Some(10) {
                        *tagged_out += 1;
                    }
                }
                None => summary_counts.1 += 1,
            }
        }
    }
}

/// Runs the example in `dir`: rule file, state directory, two loops around one reload.
pub fn run(dir: &Path) -> Result<Summary, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("rules.toml");
    std::fs::write(&config, RULES)?;
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&config, &dir.join("state"), opts)?;
    if let Some(e) = boot.config_error {
        return Err(format!("rule file refused at stage {}: {:?}", e.stage.as_str(), e.errors).into());
    }
    // One filter per packet-loop thread; this program has one. Interface names are the
    // rule file's [[port]] names (or their `device`).
    let mut filter = EngineFilter::new(
        engine.handle(),
        vec!["lan".into(), "wan".into()],
        0,
        Arc::new(ShadowSlot::default()),
    );
    let traffic = [
        frame("udp", 53),
        frame("tcp", 443),
        frame("tcp", 22),
        frame("tcp", 25),
    ];
    let mut summary = Summary {
        generations: (engine.status().generation, 0),
        ..Summary::default()
    };
    let mut tagged = 0;
    packet_loop(&mut filter, &traffic, 10, &mut summary.before, &mut tagged);
    summary.ssh_hits_before = engine
        .status()
        .acls
        .first()
        .and_then(|a| a.counters.rules.iter().find(|r| r.id == "ssh"))
        .map_or(0, |r| r.hits);

    // SSH is withdrawn: the new file goes through the whole reload pipeline and becomes the
    // next generation; the loop's very next batch is decided by it.
    let without_ssh = RULES.replace(
        "id = \"ssh\"\n  action = \"permit\"",
        "id = \"ssh\"\n  action = \"deny\"",
    );
    std::fs::write(&config, without_ssh)?;
    let ok = engine.reload(ReloadSource::Config, &ReloadOptions::default())?;
    summary.generations.1 = ok.generation;
    packet_loop(&mut filter, &traffic, 10, &mut summary.after, &mut tagged);
    summary.tagged_out = tagged;
    summary.engine_frames = engine.status().frames.evaluated;
    Ok(summary)
}

#[allow(dead_code)] // `tests/embed.rs` includes this file and calls `run` only
fn main() -> Result<(), Box<dyn Error>> {
    let (dir, keep) = match std::env::args_os().nth(1) {
        Some(d) => (std::path::PathBuf::from(d), true),
        None => (
            std::env::temp_dir().join(format!("palisade-embed-{}", std::process::id())),
            false,
        ),
    };
    let summary = run(&dir);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let s = summary?;
    println!(
        "generation {}: permitted {} denied {} (ssh hits {})",
        s.generations.0, s.before.0, s.before.1, s.ssh_hits_before
    );
    println!(
        "generation {}: permitted {} denied {}",
        s.generations.1, s.after.0, s.after.1
    );
    println!(
        "engine counted {} frames; {} left tagged with VLAN 10",
        s.engine_frames, s.tagged_out
    );
    Ok(())
}
