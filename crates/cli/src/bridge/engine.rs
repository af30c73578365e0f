//! The [`FrameFilter`] of `palisade run`: the engine's policy, one snapshot per batch.

use std::sync::Arc;

use palisade_engine::policy::{Context, Decision, Verdict};
use palisade_engine::WorkerHandle;
use palisade_packet::FlowKey;

use super::shadow::ShadowSlot;
use super::topology::Topology;
use super::worker::BATCH;
use super::FrameFilter;

/// Decides frames with a worker handle of the running engine.
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
}

impl EngineFilter {
    /// A filter for worker `worker` bridging `ifaces` (in `--bridge` order).
    pub fn new(handle: WorkerHandle, ifaces: Vec<String>, worker: usize, shadow: Arc<ShadowSlot>) -> Self {
        EngineFilter {
            handle,
            ifaces,
            topology: None,
            contexts: vec![None; BATCH],
            decisions: vec![Decision::default(); BATCH],
            worker,
            shadow,
            shadow_topology: None,
        }
    }
}

impl FrameFilter for EngineFilter {
    fn decide(&mut self, ingress: usize, keys: &[FlowKey], permit: &mut [bool]) {
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
                            eprintln!("palisade run: generation {number}: {p}");
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
        let mut start = 0;
        while start < n {
            let ctx = self.contexts[start];
            let mut end = start + 1;
            while end < n && self.contexts[end] == ctx {
                end += 1;
            }
            match ctx {
                Some(ctx) => batch.classify(&keys[start..end], &ctx, &mut self.decisions[start..end]),
                None => self.decisions[start..end].fill(Decision::default()),
            }
            start = end;
        }
        for (p, d) in permit.iter_mut().zip(&self.decisions).take(n) {
            *p = d.verdict == Verdict::Permit;
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
