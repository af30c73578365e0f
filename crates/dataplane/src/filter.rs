//! The frame filter: decides batches of frames with the engine's policy, one
//! snapshot per batch, in the context the [`Topology`] gives each frame.

use std::sync::Arc;

use palisade_engine::policy::{Context, Decision, Verdict};
use palisade_engine::WorkerHandle;
use palisade_observe::WorkerLogger;
use palisade_packet::FlowKey;

use crate::shadow::ShadowSlot;
use crate::topology::Topology;
use crate::MAX_BATCH;

/// Decides batches of frames for one worker.
///
/// `ingress` is the index (0 or 1, in the order of `--bridge IF_A,IF_B`) of
/// the interface the frames arrived on; `permit[i]` receives the verdict for
/// `keys[i]`. Called once per batch; must not block, allocate or panic.
///
/// ```
/// use palisade_dataplane::FrameFilter;
/// use palisade_packet::FlowKey;
/// /// Permits every frame that carries ports.
/// struct PortsOnly;
/// impl FrameFilter for PortsOnly {
///     fn decide(&mut self, _ingress: usize, keys: &[FlowKey], permit: &mut [bool]) {
///         for (p, k) in permit.iter_mut().zip(keys) {
///             *p = k.ports().is_some();
///         }
///     }
/// }
/// let mut f = PortsOnly;
/// let mut permit = [false; 2];
/// f.decide(0, &[FlowKey::new().with_ports(1, 2), FlowKey::new()], &mut permit);
/// assert_eq!(permit, [true, false]);
/// ```
pub trait FrameFilter: Send {
    /// Decides one batch.
    fn decide(&mut self, ingress: usize, keys: &[FlowKey], permit: &mut [bool]);

    /// [`FrameFilter::decide`], with the frames the keys were parsed from
    /// (for byte counters and logging). The default ignores them.
    fn decide_frames(&mut self, ingress: usize, keys: &[FlowKey], frames: Frames<'_>, permit: &mut [bool]) {
        let _ = frames;
        self.decide(ingress, keys, permit);
    }
}

/// The frames of a batch as a packet loop holds them: frame `i` is
/// `bufs[i][..lens[i]]` (buffers allocated once, lengths of this batch).
///
/// ```
/// let bufs = vec![vec![1u8, 2, 3].into_boxed_slice(), vec![4u8; 8].into_boxed_slice()];
/// let frames = palisade_dataplane::Frames::new(&bufs, &[2, 8]);
/// assert_eq!(frames.get(0), &[1, 2]);
/// assert_eq!(frames.get(5), &[] as &[u8]); // past the batch: empty, never a panic
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Frames<'a> {
    bufs: &'a [Box<[u8]>],
    lens: &'a [usize],
}

impl<'a> Frames<'a> {
    /// Frames `bufs[i][..lens[i]]`.
    pub fn new(bufs: &'a [Box<[u8]>], lens: &'a [usize]) -> Self {
        Frames { bufs, lens }
    }

    /// Frame `i` (empty when `i` is past the batch or its length past its buffer).
    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        let len = self.lens.get(i).copied().unwrap_or(0);
        self.bufs.get(i).and_then(|b| b.get(..len)).unwrap_or_default()
    }

    /// The frames' lengths.
    #[inline]
    pub fn lens(&self) -> &'a [usize] {
        self.lens
    }

    /// Frames `start..` of this batch.
    fn from(&self, start: usize) -> Frames<'a> {
        Frames {
            bufs: self.bufs.get(start..).unwrap_or_default(),
            lens: self.lens.get(start..).unwrap_or_default(),
        }
    }
}

/// Decides frames with a worker handle of the running engine.
///
/// Each worker owns one (its own counter shard, its own cached topology).
/// The topology is rebuilt once per generation, never per frame.
///
/// ```
/// use std::sync::Arc;
/// use palisade_dataplane::{EngineFilter, FrameFilter, ShadowSlot};
/// use palisade_engine::{Engine, EngineOptions, ReloadOptions, ReloadSource};
/// use palisade_packet::FlowKey;
/// let dir = std::env::temp_dir().join(format!("palisade-dp-filter-doc-{}", std::process::id()));
/// let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), EngineOptions::default()).unwrap();
/// let rules = b"version = 1\n[[port]]\nname = \"a\"\nvlan = 1\n[[port]]\nname = \"b\"\nvlan = 1\n\
///   [[acl]]\nname = \"in\"\n[[acl.rule]]\naction = \"permit\"\nproto = \"udp\"\n[[bind]]\nacl = \"in\"\nport = \"a\"\n";
/// engine.reload(ReloadSource::Bytes { name: "r.toml".into(), bytes: rules.to_vec() }, &ReloadOptions::default()).unwrap();
/// let mut filter = EngineFilter::new(engine.handle(), vec!["a".into(), "b".into()], 0, Arc::new(ShadowSlot::default()));
/// let udp = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(17).with_ports(1, 53);
/// let mut permit = [false; 2];
/// filter.decide(0, &[udp, udp.with_proto(6)], &mut permit);
/// assert_eq!(permit, [true, false]);
/// drop((filter, engine));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct EngineFilter {
    handle: WorkerHandle,
    ifaces: Vec<String>,
    /// The topology of the generation last seen, rebuilt when the generation changes.
    topology: Option<(u64, Topology)>,
    contexts: Vec<Option<Context>>,
    decisions: Vec<Decision>,
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
            contexts: vec![None; MAX_BATCH],
            decisions: vec![Decision::default(); MAX_BATCH],
            worker,
            shadow,
            shadow_topology: None,
            log: None,
        }
    }

    /// Offers every decided frame to `log` (see [`palisade_observe::logger`]);
    /// only [`FrameFilter::decide_frames`] can log, as it has the frames.
    pub fn with_logger(mut self, log: WorkerLogger) -> Self {
        self.log = Some(log);
        self
    }
}

impl FrameFilter for EngineFilter {
    fn decide(&mut self, ingress: usize, keys: &[FlowKey], permit: &mut [bool]) {
        // Batches longer than the buffers are decided in chunks: no permit slot is left stale.
        for (keys, permit) in keys.chunks(MAX_BATCH).zip(permit.chunks_mut(MAX_BATCH)) {
            self.decide_chunk(ingress, keys, None, permit);
        }
    }

    fn decide_frames(&mut self, ingress: usize, keys: &[FlowKey], frames: Frames<'_>, permit: &mut [bool]) {
        for (i, (keys, permit)) in keys
            .chunks(MAX_BATCH)
            .zip(permit.chunks_mut(MAX_BATCH))
            .enumerate()
        {
            self.decide_chunk(ingress, keys, Some(frames.from(i * MAX_BATCH)), permit);
        }
    }
}

impl EngineFilter {
    /// Decides at most [`MAX_BATCH`] frames with one pinned generation.
    fn decide_chunk(
        &mut self,
        ingress: usize,
        keys: &[FlowKey],
        frames: Option<Frames<'_>>,
        permit: &mut [bool],
    ) {
        let n = keys.len().min(permit.len()).min(self.decisions.len());
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
        for (c, k) in self.contexts.iter_mut().zip(keys).take(n) {
            *c = topology.context(ingress, k);
        }
        // Classify runs of frames that share a context in one call each.
        let lens = frames.map_or(&[][..], |f| f.lens());
        let mut start = 0;
        while start < n {
            let ctx = self.contexts[start];
            let mut end = start + 1;
            while end < n && self.contexts[end] == ctx {
                end += 1;
            }
            match ctx {
                Some(ctx) => batch.classify_frames(
                    &keys[start..end],
                    lens.get(start..end).unwrap_or_default(),
                    &ctx,
                    &mut self.decisions[start..end],
                ),
                None => self.decisions[start..end].fill(Decision::default()),
            }
            start = end;
        }
        for (p, d) in permit.iter_mut().zip(&self.decisions).take(n) {
            *p = d.verdict == Verdict::Permit;
        }
        // Logging: after the decision, which it never changes; it never waits.
        if let (Some(log), Some(frames)) = (self.log.as_mut(), frames) {
            if let Some(mut b) = log.batch(batch.generation()) {
                for (i, (k, d)) in keys.iter().zip(&self.decisions).take(n).enumerate() {
                    if let Some(ctx) = self.contexts[i] {
                        b.frame(ctx.port, k, frames.get(i), d);
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
        for (k, active) in keys.iter().zip(&self.decisions).take(n) {
            let candidate = match topology.context(ingress, k) {
                Some(ctx) => sh.policy.evaluate(k, &ctx),
                None => Decision::default(),
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

    /// A batch longer than the filter's buffers gets a verdict for every frame: none is left
    /// at whatever the caller's slot held before (here: `true`, which would be fail-open).
    #[test]
    fn long_batches_are_decided_whole() {
        let dir = std::env::temp_dir().join(format!("palisade-dp-long-{}", std::process::id()));
        let opts = EngineOptions {
            durable: false,
            ..EngineOptions::default()
        };
        let (engine, _) = Engine::open(&dir.join("none.toml"), &dir.join("state"), opts).unwrap();
        let rules = "version = 1\n[[port]]\nname = \"a\"\nvlan = 1\n[[port]]\nname = \"b\"\nvlan = 1\n\
            [[acl]]\nname = \"in\"\n[[acl.rule]]\naction = \"permit\"\nproto = \"udp\"\n\
            [[bind]]\nacl = \"in\"\nport = \"a\"\n";
        let src = ReloadSource::Bytes {
            name: "r.toml".into(),
            bytes: rules.as_bytes().to_vec(),
        };
        engine.reload(src, &ReloadOptions::default()).unwrap();
        let mut f = EngineFilter::new(
            engine.handle(),
            vec!["a".into(), "b".into()],
            0,
            Arc::new(ShadowSlot::default()),
        );
        let udp = FlowKey::new()
            .with_ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .with_proto(17)
            .with_ports(1, 53);
        let keys: Vec<FlowKey> = (0..3 * MAX_BATCH + 5)
            .map(|i| if i % 3 == 0 { udp } else { udp.with_proto(6) })
            .collect();
        let mut permit = vec![true; keys.len()];
        f.decide(0, &keys, &mut permit);
        for (i, p) in permit.iter().enumerate() {
            assert_eq!(*p, i % 3 == 0, "frame {i}");
        }
        drop((f, engine));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
