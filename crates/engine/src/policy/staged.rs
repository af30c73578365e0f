//! Batch evaluation stage by stage.
//!
//! [`Policy::evaluate_traced`] walks one key through every stage, so each
//! ACL's classifier sees one key at a time and cannot overlap the memory
//! loads of many lookups (its batch lookup, with AVX-512 where the CPU has
//! it, is several times faster per key). Here a batch goes through the
//! stages together: its set tests are looked up together, the rescue rules
//! classify the whole batch, then each ACL
//! stage classifies, in one batch call, the keys no earlier stage denied.
//! Decisions and stage events are the same as key by key (checked by
//! `tests::staged_batches_decide_as_one_key_at_a_time`).

use super::*;
use palisade_packet::FlowState;

/// Keys decided together (the data path's batch). Longer slices are cut
/// into chunks of this many.
pub const STAGE_BATCH: usize = 64;

/// Indices into a chunk (below [`STAGE_BATCH`]).
type Lanes = [u8; STAGE_BATCH];

/// The lanes `lanes[..n]` that `pred` holds for, and the others, each in
/// their order: `(yes, n_yes, no, n_no)`.
fn partition(lanes: &Lanes, n: usize, pred: impl Fn(u8) -> bool) -> (Lanes, usize, Lanes, usize) {
    let (mut yes, mut no): (Lanes, Lanes) = ([0; STAGE_BATCH], [0; STAGE_BATCH]);
    let (mut n_yes, mut n_no) = (0, 0);
    for &i in &lanes[..n] {
        if pred(i) {
            yes[n_yes] = i;
            n_yes += 1;
        } else {
            no[n_no] = i;
            n_no += 1;
        }
    }
    (yes, n_yes, no, n_no)
}

/// The lanes marked in `kept`, in ascending order, into `live`; returns how many.
fn ascending(kept: &[bool; STAGE_BATCH], live: &mut Lanes) -> usize {
    let mut n = 0;
    for (i, _) in kept.iter().enumerate().filter(|(_, &kept)| kept) {
        live[n] = i as u8;
        n += 1;
    }
    n
}

impl Policy {
    /// Evaluates a batch with one context, stage by stage, and calls
    /// `trace(i, event)` for every ACL evaluated on `keys[i]` (the events of
    /// [`Policy::evaluate_traced`], per key in stage order). `out[i]` receives
    /// the decision for `keys[i]` (only `min(keys.len(), out.len())` are
    /// written). Never allocates.
    ///
    /// ```
    /// use palisade_engine::policy::{Decision, Policy, Verdict};
    /// use palisade_packet::FlowKey;
    /// let loaded = palisade_rules::parse(
    ///     "r.toml",
    ///     b"version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\ndefault = \"permit\"\n\
    ///       [[acl.rule]]\nid = \"ssh\"\naction = \"deny\"\nproto = \"tcp\"\ndst_port = 22\n\
    ///       [[bind]]\nacl = \"a\"\nport = \"p\"\n",
    /// )
    /// .unwrap();
    /// let policy = Policy::compile(&loaded.ruleset).unwrap();
    /// let ctx = policy.resolve("p", None).unwrap();
    /// let tcp = |port| FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(40000, port);
    /// let keys = [tcp(22), tcp(443)];
    /// let mut out = [Decision::default(); 2];
    /// let mut events = 0;
    /// policy.evaluate_batch_traced(&keys, &ctx, &mut out, |_, _| events += 1);
    /// assert_eq!((out[0].verdict, out[1].verdict), (Verdict::Deny, Verdict::Permit));
    /// assert_eq!(events, 2);
    /// ```
    pub fn evaluate_batch_traced<F: FnMut(usize, &StageEvent)>(
        &self,
        keys: &[FlowKey],
        ctx: &Context,
        out: &mut [Decision],
        trace: F,
    ) {
        self.evaluate_batch_in_states(keys, &[], ctx, out, trace);
    }

    /// [`Policy::evaluate_batch_traced`] with each key's flow state given
    /// beside it: `keys[i]` is evaluated as `keys[i].with_flow_state(states[i])`
    /// (keys past the end of `states` in their own state), without the
    /// caller copying the batch to stamp them. Never allocates.
    ///
    /// ```
    /// use palisade_engine::policy::{Decision, Policy, Verdict};
    /// use palisade_packet::{FlowKey, FlowState};
    /// let loaded = palisade_rules::parse(
    ///     "r.toml",
    ///     b"version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\ndefault = \"deny\"\n\
    ///       [[acl.rule]]\nid = \"replies\"\naction = \"permit\"\nstate = \"established\"\n\
    ///       [[bind]]\nacl = \"a\"\nport = \"p\"\n",
    /// )
    /// .unwrap();
    /// let policy = Policy::compile(&loaded.ruleset).unwrap();
    /// let ctx = policy.resolve("p", None).unwrap();
    /// let udp = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(17).with_ports(53, 40000);
    /// let mut out = [Decision::default(); 2];
    /// let states = [FlowState::Established, FlowState::New];
    /// policy.evaluate_batch_in_states(&[udp, udp], &states, &ctx, &mut out, |_, _| {});
    /// assert_eq!((out[0].verdict, out[1].verdict), (Verdict::Permit, Verdict::Deny));
    /// ```
    pub fn evaluate_batch_in_states<F: FnMut(usize, &StageEvent)>(
        &self,
        keys: &[FlowKey],
        states: &[FlowState],
        ctx: &Context,
        out: &mut [Decision],
        mut trace: F,
    ) {
        let n = keys.len().min(out.len());
        let mut start = 0;
        while start < n {
            let end = (start + STAGE_BATCH).min(n);
            let states = states.get(start..end.min(states.len())).unwrap_or(&[]);
            self.staged_chunk(
                &keys[start..end],
                states,
                ctx,
                &mut out[start..end],
                &mut |i, ev| trace(start + i, ev),
            );
            start = end;
        }
    }

    /// One chunk of at most [`STAGE_BATCH`] keys (`out` as long as `keys`).
    fn staged_chunk(
        &self,
        keys: &[FlowKey],
        states: &[FlowState],
        ctx: &Context,
        out: &mut [Decision],
        trace: &mut dyn FnMut(usize, &StageEvent),
    ) {
        let m = keys.len();
        let Some(port) = self.ports.get(ctx.port as usize) else {
            out.fill(fixed(Verdict::Deny, Stage::Context));
            return;
        };
        if let Some(r) = ctx.route {
            if r.from as usize >= self.interfaces.len() || r.to as usize >= self.interfaces.len() {
                out.fill(fixed(Verdict::Deny, Stage::Context));
                return;
            }
        }

        // The set tests of the whole chunk, then VLAN stamping as for one
        // key: the outer tag, or the port's access VLAN.
        let mut k = [FlowKey::new(); STAGE_BATCH];
        let k = &mut k[..m];
        k.copy_from_slice(keys);
        for (key, &state) in k.iter_mut().zip(states) {
            key.flow_state = state;
        }
        if self.has_sets() {
            self.fill_sets(k);
        }
        let mut tagged = [false; STAGE_BATCH];
        for (key, t) in k.iter_mut().zip(tagged.iter_mut()) {
            let vid = key.outer_vlan & 0x0fff;
            *t = key.vlan_count > 0 && vid != 0;
            key.outer_vlan = if *t { vid } else { port.vlan };
        }

        let mut idx = [NO_MATCH; STAGE_BATCH];
        if self.rescue.rule_count() > 0 {
            self.rescue.classify_batch(k, &mut idx[..m]);
        }
        let mut live: Lanes = [0; STAGE_BATCH];
        let mut n_live = 0;
        for (i, key) in k.iter().enumerate() {
            out[i] = if idx[i] != NO_MATCH {
                Decision {
                    verdict: Verdict::Permit,
                    stage: Stage::Rescue,
                    acl: None,
                    rule: RuleRef::Rescue(idx[i]),
                }
            } else if !key.status.is_ok() {
                fixed(self.malformed, Stage::Malformed)
            } else if tagged[i]
                && port.tagged[key.outer_vlan as usize / 64] & (1 << (key.outer_vlan % 64)) == 0
            {
                fixed(Verdict::Deny, Stage::VlanFilter)
            } else {
                live[n_live] = i as u8;
                n_live += 1;
                // What a frame that no stage denies ends with.
                fixed(Verdict::Permit, Stage::Passed)
            };
        }

        n_live = self.stage(Stage::PortAcl, port.pacl, k, &mut live, n_live, out, trace);
        n_live = self.vlan_in_stage(k, &mut live, n_live, out, trace);
        if let Some(route) = ctx.route {
            let from = &self.interfaces[route.from as usize];
            let to = &self.interfaces[route.to as usize];
            n_live = self.routed_stages(from.racl_in, to.racl_out, k, &mut live, n_live, out, trace);
            if to.vlan != 0 {
                for &i in &live[..n_live] {
                    k[i as usize].outer_vlan = to.vlan;
                }
                let binding = self.vacl[to.vlan as usize];
                self.stage(Stage::VlanAclOut, binding, k, &mut live, n_live, out, trace);
            }
        }
    }

    /// The two Routed ACL stages, on the live keys that are IP (Routed ACLs
    /// are for IP); the others pass them untouched and stay live for the
    /// egress VLAN ACL. Returns how many stay, in ascending order.
    #[allow(clippy::too_many_arguments)]
    fn routed_stages(
        &self,
        racl_in: u32,
        racl_out: u32,
        k: &[FlowKey],
        live: &mut Lanes,
        n_live: usize,
        out: &mut [Decision],
        trace: &mut dyn FnMut(usize, &StageEvent),
    ) -> usize {
        if live[..n_live].iter().all(|&i| k[i as usize].is_ip()) {
            let n = self.stage(Stage::RoutedAclIn, racl_in, k, live, n_live, out, trace);
            return self.stage(Stage::RoutedAclOut, racl_out, k, live, n, out, trace);
        }
        let (mut ip, n_ip, other, n_other) = partition(live, n_live, |i| k[i as usize].is_ip());
        let n_ip = self.stage(Stage::RoutedAclIn, racl_in, k, &mut ip, n_ip, out, trace);
        let n_ip = self.stage(Stage::RoutedAclOut, racl_out, k, &mut ip, n_ip, out, trace);
        // Ascending again (what `stage` relies on).
        let mut kept = [false; STAGE_BATCH];
        for &i in ip[..n_ip].iter().chain(&other[..n_other]) {
            kept[i as usize] = true;
        }
        ascending(&kept, live)
    }

    /// The ingress VLAN ACL stage: each key's binding is its VLAN's, so the
    /// live keys are taken in groups that share one (usually a single group).
    fn vlan_in_stage(
        &self,
        k: &[FlowKey],
        live: &mut Lanes,
        n_live: usize,
        out: &mut [Decision],
        trace: &mut dyn FnMut(usize, &StageEvent),
    ) -> usize {
        let binding_of = |i: u8| {
            let vlan = k[i as usize].outer_vlan;
            if vlan != 0 {
                self.vacl.get(vlan as usize).copied().unwrap_or(NONE)
            } else {
                NONE
            }
        };
        // Usually one binding for all (or none at all): the stage as it is.
        if n_live == 0 {
            return 0;
        }
        let first = binding_of(live[0]);
        if live[1..n_live].iter().all(|&i| binding_of(i) == first) {
            return self.stage(Stage::VlanAclIn, first, k, live, n_live, out, trace);
        }
        let mut pending: Lanes = *live;
        let mut n_pending = n_live;
        let mut kept = [false; STAGE_BATCH];
        while n_pending > 0 {
            let binding = binding_of(pending[0]);
            let (mut group, n_group, rest, n_rest) =
                partition(&pending, n_pending, |i| binding_of(i) == binding);
            (pending, n_pending) = (rest, n_rest);
            let n_group = self.stage(Stage::VlanAclIn, binding, k, &mut group, n_group, out, trace);
            for &i in &group[..n_group] {
                kept[i as usize] = true;
            }
        }
        // Ascending again (what `stage` relies on).
        ascending(&kept, live)
    }

    /// Runs one stage on the live keys `live[..n_live]` of `k` with one
    /// binding: a key the ACL denies is decided (and leaves `live`), one it
    /// permits records the decision and stays. Returns how many stay. A
    /// missing binding runs nothing.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        stage: Stage,
        binding: u32,
        k: &[FlowKey],
        live: &mut Lanes,
        n_live: usize,
        out: &mut [Decision],
        trace: &mut dyn FnMut(usize, &StageEvent),
    ) -> usize {
        let Some(b) = self.bindings.get(binding as usize) else {
            return n_live;
        };
        let Some(acl) = self.acls.get(b.acl as usize) else {
            return n_live;
        };
        if n_live == 0 {
            return 0;
        }
        let mut idx = [NO_MATCH; STAGE_BATCH];
        if n_live == k.len() {
            // Every key still live, and lanes are kept in ascending order: the keys as they are.
            acl.classifier.classify_batch(k, &mut idx[..n_live]);
        } else {
            let mut gathered = [FlowKey::new(); STAGE_BATCH];
            for (g, &i) in gathered.iter_mut().zip(&live[..n_live]) {
                *g = k[i as usize];
            }
            acl.classifier
                .classify_batch(&gathered[..n_live], &mut idx[..n_live]);
        }
        let mut n_kept = 0;
        for j in 0..n_live {
            let i = live[j];
            let (rule, verdict) = match acl.actions.get(idx[j] as usize) {
                Some(v) => (RuleRef::Rule(idx[j]), *v),
                None => (RuleRef::Default, acl.default),
            };
            trace(
                i as usize,
                &StageEvent {
                    stage,
                    binding,
                    acl: b.acl,
                    rule,
                    verdict,
                },
            );
            out[i as usize] = Decision {
                verdict,
                stage,
                acl: Some(b.acl),
                rule,
            };
            if verdict == Verdict::Permit {
                live[n_kept] = i;
                n_kept += 1;
            }
        }
        n_kept
    }
}
