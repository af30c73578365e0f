//! Flows in the engine: each frame's flow state found before the ACL stages,
//! flows opened by `keep_state` rules, and flows re-checked under a new
//! generation.
//!
//! A generation whose rules keep state or match a flow state
//! ([`Policy::is_stateful`]) carries a [`FlowPlan`] (the `[flows]` timeouts
//! and `max`, and stable numbers for its ports and interfaces) and shares
//! the engine's [`FlowTable`]: the table outlives generations, so flows
//! survive reloads, rollbacks and reverts (a new `max` moves the live
//! flows into a table of the new size). For every frame, [`Batch::classify_tracked`]:
//!
//! 1. looks the frame up ([`FlowTable::lookup_batch`]), which gives its state;
//! 2. re-checks a flow last checked under another generation: its opening
//!    frame, in its original context, through this generation's policy; the
//!    flow stays if that frame would be permitted with a `keep_state` rule
//!    deciding a stage (the rule that opens flows), else it is cut there and
//!    the frame is looked at as one without an entry;
//! 3. evaluates the policy on the key with the state stamped in, so every
//!    stage can match it;
//! 4. opens a flow when the frame was `new`, the verdict is permit and a
//!    `keep_state` rule decided a stage; when the table is full the frame is
//!    denied at stage `flows-full` instead, and counted.
//!
//! Frames found `invalid` and frames denied at `flows-full` are counted like
//! rule hits. A generation that is not stateful skips all of this.

use std::collections::HashMap;
use std::sync::Arc;

use palisade_packet::{FlowKey, FlowState};

use crate::counters::{bump, context_identity, rule_identity, SlotRegistry};
use crate::engine::{Batch, Inner};
use crate::flow::{FlowInfo, FlowStats, FlowTable, Moment, Origin, Seen, Timeouts, LOOKUP_BATCH};
use crate::generation::Compiled;
use crate::policy::{AclId, Context, Decision, InterfaceId, Policy, PortId, Route, RuleRef, Stage, Verdict};

/// "No interface" in a flow's stored context.
const NO_ROUTE: u32 = u32::MAX;

/// What a stateful generation needs to track flows.
#[derive(Debug)]
pub(crate) struct FlowPlan {
    /// `[flows] max`.
    pub max: u32,
    /// `[flows]` timeouts.
    pub timeouts: Timeouts,
    /// Stable number of each port (by [`PortId`]) and interface (by [`InterfaceId`]).
    port_ids: Vec<u32>,
    iface_ids: Vec<u32>,
    /// This generation's port and interface of each stable number.
    port_of: HashMap<u32, PortId>,
    iface_of: HashMap<u32, InterfaceId>,
    /// Per ACL (policy order), per rule: the stable number of a `keep_state`
    /// rule (what a flow keeps as the rule that opened it), `u32::MAX` for the others.
    openers: Vec<Vec<u32>>,
}

impl FlowPlan {
    /// The plan of a compiled rule set, `None` when no rule is stateful.
    /// `registry` numbers names for flows (the engine's `flow_names`, never freed).
    pub(crate) fn of(
        policy: &Policy,
        rs: &palisade_rules::RuleSet,
        registry: &SlotRegistry,
    ) -> Option<FlowPlan> {
        if !policy.is_stateful() {
            return None;
        }
        let openers = policy
            .acls()
            .iter()
            .enumerate()
            .map(|(a, acl)| {
                acl.rule_ids
                    .iter()
                    .enumerate()
                    .map(
                        |(i, id)| match policy.keeps_state(a as AclId, RuleRef::Rule(i as u32)) {
                            true => registry.slot(&rule_identity(&acl.name, id), 1),
                            false => u32::MAX,
                        },
                    )
                    .collect()
            })
            .collect();
        let port_ids: Vec<u32> = rs
            .ports
            .iter()
            .map(|p| registry.slot(&context_identity("port", &p.name), 1))
            .collect();
        let iface_ids: Vec<u32> = rs
            .interfaces
            .iter()
            .map(|i| registry.slot(&context_identity("interface", &i.name), 1))
            .collect();
        let port_of = rs
            .ports
            .iter()
            .zip(&port_ids)
            .filter_map(|(p, &s)| Some((s, policy.port(&p.name)?)))
            .collect();
        let iface_of = rs
            .interfaces
            .iter()
            .zip(&iface_ids)
            .filter_map(|(i, &s)| Some((s, policy.interface(&i.name)?)))
            .collect();
        Some(FlowPlan {
            max: rs.flows.max,
            timeouts: Timeouts::from(&rs.flows.timeouts),
            port_ids: policy_order(policy, rs, port_ids, true),
            iface_ids: policy_order(policy, rs, iface_ids, false),
            port_of,
            iface_of,
            openers,
        })
    }

    /// A context in stable numbers (what a flow keeps).
    fn stable(&self, ctx: &Context) -> [u32; 3] {
        let port = self.port_ids.get(ctx.port as usize).copied().unwrap_or(NO_ROUTE);
        let iface = |i: InterfaceId| self.iface_ids.get(i as usize).copied().unwrap_or(NO_ROUTE);
        match ctx.route {
            Some(r) => [port, iface(r.from), iface(r.to)],
            None => [port, NO_ROUTE, NO_ROUTE],
        }
    }

    /// A stored context in this generation's ids; `None` when a port or
    /// interface of it no longer exists.
    fn context(&self, stable: [u32; 3]) -> Option<Context> {
        let port = *self.port_of.get(&stable[0])?;
        let route = match (stable[1], stable[2]) {
            (NO_ROUTE, NO_ROUTE) => None,
            (from, to) => Some(Route {
                from: *self.iface_of.get(&from)?,
                to: *self.iface_of.get(&to)?,
            }),
        };
        Some(Context { port, route })
    }
}

/// Stable numbers in the policy's id order (ports and interfaces are
/// numbered in file order by both, but say so rather than assume it).
fn policy_order(policy: &Policy, rs: &palisade_rules::RuleSet, ids: Vec<u32>, ports: bool) -> Vec<u32> {
    let mut out = vec![NO_ROUTE; ids.len()];
    for (i, stable) in ids.into_iter().enumerate() {
        let local = match ports {
            true => rs.ports.get(i).and_then(|p| policy.port(&p.name)),
            false => rs.interfaces.get(i).and_then(|x| policy.interface(&x.name)),
        };
        if let Some(slot) = local.and_then(|l| out.get_mut(l as usize)) {
            *slot = stable;
        }
    }
    out
}

/// A worker's buffers for flow lookups, allocated once with its handle.
#[derive(Debug)]
pub(crate) struct FlowScratch {
    seen: Box<[Seen; LOOKUP_BATCH]>,
}

impl Default for FlowScratch {
    fn default() -> Self {
        FlowScratch {
            seen: Box::new([Seen::default(); LOOKUP_BATCH]),
        }
    }
}

/// Whether `policy` would open a flow for `key` in `ctx`: permitted, with a
/// `keep_state` rule deciding a stage.
fn opens(policy: &Policy, key: &FlowKey, ctx: &Context) -> bool {
    let mut keep = false;
    let d = policy.evaluate_traced(key, ctx, |ev| {
        keep |= ev.verdict == Verdict::Permit && policy.keeps_state(ev.acl, ev.rule);
    });
    d.verdict == Verdict::Permit && keep
}

impl Batch<'_> {
    /// Classifies frames with their flow state: `keys[i]` parsed from
    /// `frames[i]` (the bytes are read for ICMP identifiers and quoted
    /// headers, and their lengths counted as [`Batch::classify_frames`]
    /// counts lengths). With a stateful generation each frame's state is
    /// found first, flows are re-checked and opened as the
    /// [module docs](crate::stateful) say; with any other generation this is
    /// [`Batch::classify_frames`]. `out[i]` receives the decision for
    /// `keys[i]` (`min(keys.len(), out.len())` written). Never allocates,
    /// never panics.
    pub fn classify_tracked(
        &mut self,
        keys: &[FlowKey],
        frames: &[&[u8]],
        ctx: &Context,
        out: &mut [Decision],
    ) {
        self.classify_with(keys, &[], frames, ctx, out, &mut []);
    }

    /// [`Batch::classify_tracked`], and `states[i]` receives the flow state
    /// `keys[i]` was decided in (`min` of the lengths written;
    /// [`FlowState::Untracked`] when the generation tracks no flows): what a
    /// shadow candidate decides the same frames in.
    pub fn classify_tracked_states(
        &mut self,
        keys: &[FlowKey],
        frames: &[&[u8]],
        ctx: &Context,
        out: &mut [Decision],
        states: &mut [FlowState],
    ) {
        self.classify_with(keys, &[], frames, ctx, out, states);
    }

    /// The one path of every classify: frame lengths from `frames`, else `lens`.
    pub(crate) fn classify_with(
        &mut self,
        keys: &[FlowKey],
        lens: &[usize],
        frames: &[&[u8]],
        ctx: &Context,
        out: &mut [Decision],
        states: &mut [FlowState],
    ) {
        let gen = &*self.gen;
        let (Some(c), Some(table), Some(plan)) = (
            gen.rules.as_deref(),
            gen.flows.as_deref(),
            gen.rules.as_deref().and_then(|c| c.flows.as_ref()),
        ) else {
            states
                .iter_mut()
                .take(keys.len())
                .for_each(|s| *s = FlowState::Untracked);
            if frames.is_empty() {
                return self.classify_stateless(keys, lens, ctx, out);
            }
            // Lengths from the frames, a chunk at a time (no allocation).
            let mut lens = [0usize; LOOKUP_BATCH];
            let n = keys.len().min(out.len());
            let mut start = 0;
            while start < n {
                let end = (start + LOOKUP_BATCH).min(n);
                for (l, i) in lens.iter_mut().zip(start..end) {
                    *l = frames.get(i).map_or(0, |f| f.len());
                }
                self.classify_stateless(&keys[start..end], &lens[..end - start], ctx, &mut out[start..end]);
                start = end;
            }
            return;
        };
        let m = Moment::new(self.inner.clock.tick(), gen.number as u32, &plan.timeouts);
        let policy = &c.policy;
        let layout = &c.layout;
        let cells = self.cells;
        let n = keys.len().min(out.len());
        let mut start = 0;
        while start < n {
            let end = (start + LOOKUP_BATCH).min(n);
            let len_of = |i: usize| {
                frames
                    .get(i)
                    .map(|f| f.len())
                    .or_else(|| lens.get(i).copied())
                    .unwrap_or(0) as u64
            };
            let seen = &mut self.scratch.seen[..end - start];
            table.lookup_batch(&keys[start..end], frames.get(start..end).unwrap_or(&[]), &m, seen);
            // Each frame's state (flows re-checked under this generation first),
            // then the chunk goes through the stages together with its states.
            let mut stated = [FlowState::Untracked; LOOKUP_BATCH];
            for (j, s) in seen.iter_mut().enumerate() {
                let i = start + j;
                if s.is_stale() {
                    match table.opening(s) {
                        Some(o)
                            if plan
                                .context(o.origin.context)
                                .is_some_and(|cx| opens(policy, &o.key, &cx)) =>
                        {
                            table.mark_checked(s, m.generation)
                        }
                        _ => {
                            table.cut(s);
                            s.state = FlowState::without_entry(&keys[i]);
                        }
                    }
                }
                stated[j] = s.state;
            }
            let stated = &stated[..end - start];
            // The first keep_state rule that permitted each new frame (its flow's
            // opener; only a new frame opens one, so the others skip the search).
            let mut opener: [Option<u32>; LOOKUP_BATCH] = [None; LOOKUP_BATCH];
            policy.evaluate_batch_in_states(&keys[start..end], stated, ctx, &mut out[start..end], |j, ev| {
                crate::engine::count_event(cells, layout, ev, len_of(start + j));
                if stated.get(j) == Some(&FlowState::New)
                    && opener[j].is_none()
                    && ev.verdict == Verdict::Permit
                    && policy.keeps_state(ev.acl, ev.rule)
                {
                    opener[j] = match ev.rule {
                        RuleRef::Rule(r) => plan
                            .openers
                            .get(ev.acl as usize)
                            .and_then(|o| o.get(r as usize))
                            .copied()
                            .or(Some(u32::MAX)),
                        _ => None,
                    };
                }
            });
            for (j, s) in seen.iter().enumerate() {
                let i = start + j;
                out[i] = open_and_count(
                    cells,
                    c,
                    plan,
                    table,
                    &m,
                    &keys[i],
                    s,
                    ctx,
                    out[i],
                    opener[j],
                    len_of(i),
                );
                if let Some(st) = states.get_mut(i) {
                    *st = s.state;
                }
            }
            start = end;
        }
    }
}

/// One frame of a stateful generation after the stages decided `d` in its
/// state: its flow opened when a `keep_state` rule (`opener`) permitted a
/// new one (denied at stage `flows-full` when the table is full), and counted.
#[inline]
#[allow(clippy::too_many_arguments)]
fn open_and_count(
    cells: &[std::sync::atomic::AtomicU64],
    c: &Compiled,
    plan: &FlowPlan,
    table: &FlowTable,
    m: &Moment<'_>,
    key: &FlowKey,
    seen: &Seen,
    ctx: &Context,
    mut d: Decision,
    opener: Option<u32>,
    len: u64,
) -> Decision {
    let layout = &c.layout;
    if seen.state == FlowState::Invalid {
        bump(cells, layout.flows);
    }
    if let (FlowState::New, Verdict::Permit, Some(rule)) = (seen.state, d.verdict, opener) {
        let origin = Origin {
            generation: m.generation,
            rule,
            context: plan.stable(ctx),
        };
        if table.create(seen, key, &origin, m).is_err() {
            bump(cells, layout.flows + 1);
            d = Decision {
                verdict: Verdict::Deny,
                stage: Stage::FlowsFull,
                acl: None,
                rule: RuleRef::None,
            };
        }
    }
    crate::engine::count_decision(cells, layout, &d, len);
    d
}

/// The flow table a generation of `rules` uses: the engine's kept table when
/// its size fits, else a new one of `[flows] max` holding the kept table's
/// live flows (as many as fit); `None` when the rules are not stateful (the
/// kept table stays for a later generation).
pub(crate) fn table_for(inner: &Inner, rules: Option<&Compiled>) -> Option<Arc<FlowTable>> {
    let plan = rules?.flows.as_ref()?;
    let mut kept = inner.flow_table.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = kept.as_ref().filter(|t| t.max() == plan.max) {
        return Some(Arc::clone(t));
    }
    let table = Arc::new(FlowTable::new(plan.max));
    if let Some(old) = kept.as_ref() {
        let moved = table.adopt(old, inner.clock.tick());
        eprintln!(
            "palisade: flow table resized to {} entries: {moved} of {} live flows kept",
            plan.max,
            old.stats().active
        );
    }
    *kept = Some(Arc::clone(&table));
    Some(table)
}

/// A flow, with names, for listings (`palisade flows`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowEntry {
    /// The opening frame (the flow's key), as `explain` writes packets.
    pub key: String,
    /// The TCP phase, or `active` for other protocols.
    pub state: String,
    /// Seconds since it was opened.
    pub age: u64,
    /// Seconds since its last frame.
    pub idle: u64,
    /// Packets from the side that opened it.
    pub packets_out: u64,
    /// Bytes from the side that opened it.
    pub bytes_out: u64,
    /// Packets from the other side.
    pub packets_in: u64,
    /// Bytes from the other side.
    pub bytes_in: u64,
    /// The generation whose rules opened it.
    pub generation: u32,
    /// The rule that opened it: `ACL/RULE`.
    pub rule: String,
    /// The generation it was last checked under.
    pub checked: u32,
}

/// The engine's flows, named (control path).
pub(crate) fn list(inner: &Inner) -> Vec<FlowEntry> {
    let Some(table) = inner.flow_table.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Vec::new();
    };
    let now = inner.clock.tick();
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut out: Vec<FlowEntry> = table
        .entries(now)
        .into_iter()
        .map(|f: FlowInfo| {
            let rule = names
                .entry(f.opening.origin.rule)
                .or_insert_with(|| rule_name(inner, f.opening.origin.rule))
                .clone();
            FlowEntry {
                key: palisade_rules::format_packet(&f.opening.key),
                state: match f.phase.name() {
                    "" => "active",
                    p => p,
                }
                .to_owned(),
                age: f.age_secs,
                idle: f.idle_secs,
                packets_out: f.original.0,
                bytes_out: f.original.1,
                packets_in: f.reply.0,
                bytes_in: f.reply.1,
                generation: f.opening.origin.generation,
                rule,
                checked: f.checked,
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// `ACL/RULE` of a rule's stable number (see [`FlowPlan`]).
fn rule_name(inner: &Inner, slot: u32) -> String {
    match inner.flow_names.identity_of(slot) {
        Some(id) => {
            let mut parts = id.split('\u{0}').skip(1);
            match (parts.next(), parts.next()) {
                (Some(acl), Some(rule)) => format!("{acl}/{rule}"),
                _ => "?".into(),
            }
        }
        None => "?".into(),
    }
}

/// How many live flows a candidate policy would cut: those whose opening frame,
/// in its original context (found by the names of its port and interfaces),
/// it would not open. Returns (flows checked, flows it would cut). Control path.
pub(crate) fn cut_by(inner: &Inner, policy: &Policy) -> (u64, u64) {
    let Some(table) = inner.flow_table.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return (0, 0);
    };
    let name = |slot: u32| -> Option<String> {
        let id = inner.flow_names.identity_of(slot)?;
        id.rsplit('\u{0}').next().map(str::to_owned)
    };
    let mut names: HashMap<u32, Option<String>> = HashMap::new();
    let mut local = |slot: u32, port: bool| -> Option<u32> {
        let n = names.entry(slot).or_insert_with(|| name(slot)).clone()?;
        match port {
            true => policy.port(&n),
            false => policy.interface(&n),
        }
    };
    let (mut checked, mut cut) = (0, 0);
    for f in table.entries(inner.clock.tick()) {
        checked += 1;
        let [port, from, to] = f.opening.origin.context;
        let ctx = local(port, true).and_then(|port| match (from, to) {
            (NO_ROUTE, NO_ROUTE) => Some(Context { port, route: None }),
            _ => Some(Context {
                port,
                route: Some(Route {
                    from: local(from, false)?,
                    to: local(to, false)?,
                }),
            }),
        });
        if !ctx.is_some_and(|ctx| opens(policy, &f.opening.key, &ctx)) {
            cut += 1;
        }
    }
    (checked, cut)
}

/// The flow table's counters (`None` when no generation ever kept state).
pub(crate) fn stats(inner: &Inner) -> Option<FlowStats> {
    inner
        .flow_table
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|t| t.stats())
}

/// Sweeps the kept flow table now and then, from its own thread, so that
/// expired flows leave it (and `active` counts live ones) without traffic.
pub(crate) fn sweeper(inner: &Inner) {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(250);
    /// A full round of the table every 20 periods (5 s).
    const ROUND: usize = 20;
    while !inner.flows_stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::park_timeout(PERIOD);
        let table = inner.flow_table.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(table) = table else { continue };
        let gen = inner.current.load();
        let timeouts = gen
            .rules
            .as_deref()
            .and_then(|c| c.flows.as_ref())
            .map_or_else(Timeouts::default, |p| p.timeouts);
        let m = Moment::new(inner.clock.tick(), gen.number() as u32, &timeouts);
        table.sweep(&m, table.bucket_count().div_ceil(ROUND));
    }
}
