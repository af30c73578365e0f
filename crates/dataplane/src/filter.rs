//! The frame filter: decides batches of frames with the engine's policy, one
//! snapshot per batch, in the context the [`Topology`] gives each frame, and
//! says how each permitted frame leaves ([`Forward`]). Each frame's bytes and
//! length come with it: the engine counts bytes per rule and finds the frame's
//! flow state (ICMP identifiers and quoted headers are read from the bytes),
//! and the frames of `log = true` rules are offered to the worker's logger.

use std::sync::Arc;

use palisade_engine::policy::{Context, Decision, RuleRef, Stage, Verdict};
use palisade_engine::WorkerHandle;
use palisade_observe::WorkerLogger;
use palisade_packet::{FlowKey, FlowState};

use crate::shadow::ShadowSlot;
use crate::topology::{Path, Topology};
use crate::MAX_BATCH;

/// What becomes of one frame: dropped, or sent with the outer VLAN tagging
/// its egress port needs (applied to the bytes by [`crate::vlan::retag`]).
///
/// ```
/// use palisade_dataplane::Forward;
/// assert!(!Forward::Drop.is_sent());
/// assert!(Forward::Tagged(20).is_sent());
/// assert_eq!(Forward::default(), Forward::Drop);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Forward {
    /// Not sent: denied, or nowhere to go (fail closed: the default).
    #[default]
    Drop,
    /// Sent exactly as received (a monitor, or a filter that does not deal in VLANs).
    AsReceived,
    /// Sent without its outer VLAN tag: the egress port's access VLAN.
    Untagged,
    /// Sent with outer VLAN id `0..=4095`: a trunk VLAN of the egress port.
    Tagged(u16),
}

impl Forward {
    /// Whether the frame is sent at all (the policy permitted it).
    pub const fn is_sent(self) -> bool {
        !matches!(self, Forward::Drop)
    }
}

/// One received frame, as a [`FrameFilter`] sees it.
///
/// ```
/// let f = palisade_dataplane::Frame::new(&[0u8; 60]);
/// assert_eq!((f.bytes.len(), f.gso_size), (60, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Frame<'a> {
    /// The frame as it was on the wire: a VLAN tag the interface stripped is
    /// back in place, and a GSO/GRO super-frame is whole (its headers stand
    /// for every segment; its length is theirs together).
    pub bytes: &'a [u8],
    /// For a super-frame, the payload bytes per segment; 0 for a plain frame.
    pub gso_size: u16,
}

impl<'a> Frame<'a> {
    /// A plain frame.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Frame { bytes, gso_size: 0 }
    }

    /// A GSO/GRO super-frame carrying `gso_size` payload bytes per segment (0: a plain frame).
    ///
    /// ```
    /// assert_eq!(palisade_dataplane::Frame::super_frame(&[0u8; 9000], 1448).gso_size, 1448);
    /// ```
    pub const fn super_frame(bytes: &'a [u8], gso_size: u16) -> Self {
        Frame { bytes, gso_size }
    }
}

/// Decides batches of frames for one worker.
///
/// `ingress` is the index (0 or 1, in the order of `--bridge IF_A,IF_B`) of
/// the interface the frames arrived on; `out[i]` receives what becomes of
/// `frames[i]`. Called once per batch; must not block, allocate or panic.
///
/// ```
/// use palisade_dataplane::{Forward, Frame, FrameFilter};
/// /// Forwards IPv4 frames unchanged, drops the rest.
/// struct Ipv4Only;
/// impl FrameFilter for Ipv4Only {
///     fn decide(&mut self, _ingress: usize, frames: &[Frame<'_>], out: &mut [Forward]) {
///         for (o, f) in out.iter_mut().zip(frames) {
///             let ipv4 = palisade_packet::parse(f.bytes).ethertype == 0x0800;
///             *o = if ipv4 { Forward::AsReceived } else { Forward::Drop };
///         }
///     }
/// }
/// let mut ipv4 = [0u8; 60];
/// ipv4[12..15].copy_from_slice(&[0x08, 0x00, 0x45]);
/// let mut out = [Forward::Drop; 2];
/// Ipv4Only.decide(0, &[Frame::new(&ipv4), Frame::new(&[0u8; 60])], &mut out);
/// assert_eq!(out, [Forward::AsReceived, Forward::Drop]);
/// ```
pub trait FrameFilter: Send {
    /// Decides one batch.
    fn decide(&mut self, ingress: usize, frames: &[Frame<'_>], out: &mut [Forward]);
}

/// Decides frames with a worker handle of the running engine.
///
/// Each worker owns one (its own counter shard, its own cached topology).
/// The topology is rebuilt once per generation, never per frame. Every frame
/// is counted by the engine, those that cannot cross included
/// ([`palisade_engine::Batch::refuse`]).
///
/// ```
/// use std::sync::Arc;
/// use palisade_dataplane::{EngineFilter, Forward, Frame, FrameFilter, ShadowSlot};
/// use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};
/// let dir = std::env::temp_dir().join(format!("palisade-dp-filter-doc-{}", std::process::id()));
/// let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), EngineOptions::default()).unwrap();
/// let rules = b"version = 1\n[[port]]\nname = \"a\"\nvlan = 1\n[[port]]\nname = \"b\"\nvlan = 1\n\
///   [[acl]]\nname = \"in\"\n[[acl.rule]]\naction = \"permit\"\nproto = \"udp\"\n[[bind]]\nacl = \"in\"\nport = \"a\"\n";
/// engine.reload(ReloadSource::Bytes { name: "r.toml".into(), bytes: rules.to_vec() }, &ReloadOptions::default()).unwrap();
/// let mut filter = EngineFilter::new(engine.handle(), vec!["a".into(), "b".into()], 0, Arc::new(ShadowSlot::default()));
/// // Ethernet + IPv4 + UDP 1 -> 53, and the same as TCP.
/// let mut udp = vec![0u8; 12];
/// udp.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
/// udp.extend_from_slice(&[0, 1, 0, 53, 0, 8, 0, 0]);
/// let mut tcp = udp.clone();
/// tcp[23] = 6;
/// tcp.resize(14 + 20 + 20, 0);
/// tcp[17] = 40;
/// let mut out = [Forward::Drop; 2];
/// filter.decide(0, &[Frame::new(&udp), Frame::new(&tcp)], &mut out);
/// assert_eq!(out, [Forward::Untagged, Forward::Drop]);
/// drop((filter, engine));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct EngineFilter {
    handle: WorkerHandle,
    ifaces: Vec<String>,
    /// The topology of the generation last seen, rebuilt when the generation changes.
    topology: Option<(u64, Topology)>,
    keys: Vec<FlowKey>,
    lens: Vec<usize>,
    paths: Vec<Path>,
    decisions: Vec<Decision>,
    /// The flow state each frame was decided in (what the shadow candidate sees).
    states: Vec<FlowState>,
    worker: usize,
    /// The shadow candidate slot, and the topology of the candidate last seen.
    shadow: Arc<ShadowSlot>,
    shadow_topology: Option<(u64, Topology)>,
    /// This worker's logger (`log = true` rules), when logging is on.
    log: Option<WorkerLogger>,
}

impl EngineFilter {
    /// A filter for worker `worker` bridging `ifaces` (in `--bridge` order).
    pub fn new(handle: WorkerHandle, ifaces: Vec<String>, worker: usize, shadow: Arc<ShadowSlot>) -> Self {
        EngineFilter {
            handle,
            ifaces,
            topology: None,
            keys: vec![FlowKey::new(); MAX_BATCH],
            lens: vec![0; MAX_BATCH],
            paths: vec![Path::Blocked(Stage::Context); MAX_BATCH],
            decisions: vec![Decision::default(); MAX_BATCH],
            states: vec![FlowState::Untracked; MAX_BATCH],
            worker,
            shadow,
            shadow_topology: None,
            log: None,
        }
    }

    /// Offers every decided frame to `log` (see [`palisade_observe::logger`]).
    pub fn with_logger(mut self, log: WorkerLogger) -> Self {
        self.log = Some(log);
        self
    }
}

impl FrameFilter for EngineFilter {
    fn decide(&mut self, ingress: usize, frames: &[Frame<'_>], out: &mut [Forward]) {
        // Batches longer than the buffers are decided in chunks: no slot of `out` is left stale.
        for (frames, out) in frames.chunks(MAX_BATCH).zip(out.chunks_mut(MAX_BATCH)) {
            self.decide_chunk(ingress, frames, out);
        }
    }
}

/// How the engine decides a frame on `path`: in a context, or refused at a stage.
#[inline]
fn how(path: &Path) -> Result<Context, Stage> {
    match *path {
        Path::Cross { context, .. } => Ok(context),
        Path::Blocked(stage) => Err(stage),
    }
}

impl EngineFilter {
    /// Decides at most [`MAX_BATCH`] frames with one pinned generation.
    fn decide_chunk(&mut self, ingress: usize, frames: &[Frame<'_>], out: &mut [Forward]) {
        let n = frames.len().min(out.len()).min(self.decisions.len());
        for ((k, l), f) in self.keys.iter_mut().zip(self.lens.iter_mut()).zip(frames).take(n) {
            *k = palisade_packet::parse(f.bytes);
            *l = f.bytes.len();
        }
        let keys = &self.keys[..n];
        let lens = &self.lens[..n];
        // The bytes too: the flow table reads ICMP identifiers and quoted headers.
        let mut bytes: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        for (b, f) in bytes.iter_mut().zip(frames).take(n) {
            *b = f.bytes;
        }
        let mut batch = self.handle.batch();
        let gen = batch.generation();
        let number = gen.number();
        if self.topology.as_ref().map(|(g, _)| *g) != Some(number) {
            // Once per generation (ids belong to one generation), never per frame.
            let topology = match (gen.policy(), gen.ruleset()) {
                (Some(policy), Some(rs)) => {
                    let (t, problems) = Topology::build(policy, rs, &self.ifaces);
                    if self.worker == 0 {
                        for p in problems {
                            log::warn!("generation {number}: {p}");
                        }
                    }
                    t
                }
                _ => Topology::default(),
            };
            self.topology = Some((number, topology));
        }
        let Some((_, topology)) = self.topology.as_ref() else {
            return;
        };
        for (p, k) in self.paths.iter_mut().zip(keys) {
            *p = topology.path(ingress, k);
        }
        // Decide runs of frames that share a context (or a refusal) in one call each.
        let mut start = 0;
        while start < n {
            let run = how(&self.paths[start]);
            let mut end = start + 1;
            while end < n && how(&self.paths[end]) == run {
                end += 1;
            }
            let (keys, lens) = (&keys[start..end], &lens[start..end]);
            let decisions = &mut self.decisions[start..end];
            let states = &mut self.states[start..end];
            match run {
                Ok(ctx) => batch.classify_tracked_states(keys, &bytes[start..end], &ctx, decisions, states),
                Err(stage) => {
                    batch.refuse(keys, lens, stage, decisions);
                    states.fill(FlowState::Untracked);
                }
            }
            start = end;
        }
        for ((o, d), p) in out.iter_mut().zip(&self.decisions).zip(&self.paths).take(n) {
            *o = match p {
                Path::Cross { forward, .. } if d.verdict == Verdict::Permit => *forward,
                _ => Forward::Drop,
            };
        }
        // Logging: after the decision, which it never changes; it never waits.
        if let Some(log) = self.log.as_mut() {
            if let Some(mut b) = log.batch(batch.generation()) {
                for (i, (f, d)) in frames.iter().zip(&self.decisions).enumerate().take(n) {
                    if let (Some(Path::Cross { context, .. }), Some(k)) = (self.paths.get(i), keys.get(i)) {
                        b.frame(context.port, k, f.bytes, d);
                    }
                }
            }
        }
        // Shadow: the candidate decides the same frames after the real decision; it enforces nothing.
        let guard = self.shadow.current.load();
        let Some(sh) = guard.as_ref() else { return };
        if batch.generation().digest() == Some(sh.digest) {
            return; // promoted: it is the active generation now
        }
        if self.shadow_topology.as_ref().map(|(s, _)| *s) != Some(sh.serial) {
            let (t, _) = Topology::build(&sh.policy, &sh.ruleset, &self.ifaces);
            self.shadow_topology = Some((sh.serial, t));
        }
        let Some((_, topology)) = self.shadow_topology.as_ref() else {
            return;
        };
        sh.count_frames(n as u64);
        // The candidate sees the flow states the active generation found (with no
        // flows tracked: the state a frame has without an entry).
        let tracked = batch.generation().policy().is_some_and(|p| p.is_stateful());
        for ((k, active), state) in keys.iter().zip(&self.decisions).zip(&self.states) {
            let state = if tracked {
                *state
            } else {
                FlowState::without_entry(k)
            };
            let candidate = match topology.path(ingress, k) {
                Path::Cross { context, .. } => sh.policy.evaluate(&k.with_flow_state(state), &context),
                Path::Blocked(stage) => Decision {
                    verdict: Verdict::Deny,
                    stage,
                    acl: None,
                    rule: RuleRef::None,
                },
            };
            if candidate.verdict != active.verdict {
                let ifname = self.ifaces.get(ingress).map_or("", String::as_str);
                sh.record(ifname, k, active, &candidate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};

    /// An engine on `rules` in a scratch directory (removed by the caller).
    fn engine(tag: &str, rules: &str) -> (Engine, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("palisade-dp-{tag}-{}", std::process::id()));
        let opts = EngineOptions {
            durable: false,
            ..EngineOptions::default()
        };
        let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), opts).unwrap();
        let src = ReloadSource::Bytes {
            name: "r.toml".into(),
            bytes: rules.as_bytes().to_vec(),
        };
        engine.reload(src, &ReloadOptions::default()).unwrap();
        (engine, dir)
    }

    /// An Ethernet frame with `vlans` (outer first, 802.1ad outside when two), IPv4, UDP to `dst_port`.
    fn udp(vlans: &[u16], dst_port: u16) -> Vec<u8> {
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = match vlans {
            [] => eth.ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64),
            [v] => eth
                .single_vlan((*v).try_into().unwrap())
                .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64),
            [o, i, ..] => eth
                .double_vlan((*o).try_into().unwrap(), (*i).try_into().unwrap())
                .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64),
        };
        let b = b.udp(40000, dst_port);
        let mut out = Vec::new();
        b.write(&mut out, b"payload").unwrap();
        out
    }

    /// A batch longer than the filter's buffers gets a verdict for every frame: none is left
    /// at whatever the caller's slot held before (here: sent, which would be fail-open).
    #[test]
    fn long_batches_are_decided_whole() {
        let rules = "version = 1\n[[port]]\nname = \"a\"\nvlan = 1\n[[port]]\nname = \"b\"\nvlan = 1\n\
            [[acl]]\nname = \"in\"\n[[acl.rule]]\naction = \"permit\"\nproto = \"udp\"\ndst_port = 53\n\
            [[bind]]\nacl = \"in\"\nport = \"a\"\n";
        let (engine, dir) = engine("long", rules);
        let mut f = EngineFilter::new(
            engine.handle(),
            vec!["a".into(), "b".into()],
            0,
            Arc::new(ShadowSlot::default()),
        );
        let (dns, other) = (udp(&[], 53), udp(&[], 54));
        let frames: Vec<Frame> = (0..3 * MAX_BATCH + 5)
            .map(|i| Frame::new(if i % 3 == 0 { &dns } else { &other }))
            .collect();
        let mut out = vec![Forward::AsReceived; frames.len()];
        f.decide(0, &frames, &mut out);
        for (i, o) in out.iter().enumerate() {
            let want = if i % 3 == 0 {
                Forward::Untagged
            } else {
                Forward::Drop
            };
            assert_eq!(*o, want, "frame {i}");
        }
        drop((f, engine));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every frame the filter decides is counted by the engine: tagged frames of a VLAN the
    /// port does not carry, QinQ frames of an unknown outer VLAN and frames with no way across
    /// are denied at stage vlan-filter and counted (issue 19: they were denied by the filter
    /// alone, and the engine counted none). VLAN ACLs apply to the frames' own VLAN.
    #[test]
    fn every_frame_is_counted_by_the_engine() {
        let rules = r#"
version = 1
[[port]]
name = "a"
trunk = [10, 20, 30]
[[port]]
name = "b"
trunk = [10, 20]
[[acl]]
name = "vlan20"
default = "permit"
  [[acl.rule]]
  id = "no-5000"
  action = "deny"
  proto = "udp"
  dst_port = 5000
[[bind]]
acl = "vlan20"
vlan = 20
"#;
        let (engine, dir) = engine("count", rules);
        let mut f = EngineFilter::new(
            engine.handle(),
            vec!["a".into(), "b".into()],
            0,
            Arc::new(ShadowSlot::default()),
        );
        let frames = [
            udp(&[10], 5000),     // permitted, stays tagged 10
            udp(&[20], 5000),     // denied by the VLAN 20 ACL
            udp(&[20], 5001),     // permitted by it
            udp(&[30], 5000),     // a carries 30, b does not: no way across
            udp(&[40], 5000),     // a does not carry 40
            udp(&[20, 7], 5001),  // QinQ in 20: permitted, both tags kept
            udp(&[300, 7], 5001), // QinQ in an outer VLAN nobody carries
            udp(&[], 5000),       // untagged: a has no access VLAN, b neither: switched in "no VLAN"
        ];
        let batch: Vec<Frame> = frames.iter().map(|f| Frame::new(f)).collect();
        let mut out = [Forward::AsReceived; 8];
        f.decide(0, &batch, &mut out);
        use Forward::*;
        assert_eq!(
            out,
            [
                Tagged(10),
                Drop,
                Tagged(20),
                Drop,
                Drop,
                Tagged(20),
                Drop,
                Untagged
            ]
        );
        let status = engine.status();
        assert_eq!(status.frames.evaluated, 8, "{:?}", status.frames);
        assert_eq!(status.frames.denied, 4);
        let acl = &status.acls[0];
        assert_eq!((acl.counters.evaluated, acl.counters.denied), (3, 1), "{acl:?}");
        let stage = |name: &str| status.stages.iter().find(|s| s.stage == name).map(|s| s.denied);
        assert_eq!(stage("vlan-filter"), Some(3), "{:?}", status.stages);
        assert_eq!(stage("vacl-in"), Some(1), "{:?}", status.stages);
        let bytes: usize = frames.iter().map(Vec::len).sum();
        assert_eq!(status.bytes, bytes as u64, "every frame's bytes counted");
        drop((f, engine));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
