//! The policy: rescue rules, then PACL -> VACL in -> RACL in -> RACL out -> VACL out.
//!
//! A [`Policy`] is compiled once from a validated [`RuleSet`] and is then
//! immutable and shared by every reader. [`Policy::evaluate`] walks one key
//! through the stages of DESIGN.md's pipeline, in this fixed order:
//!
//! 1. **VLAN stamping.** The VLAN a frame belongs to is its outer tag, or
//!    for an untagged or priority-tagged (VID 0) frame the ingress port's
//!    access VLAN. It is stamped into a *copy* of the key's `outer_vlan`, so
//!    rules with a `vlan` constraint see it. An untagged frame on a port
//!    without `vlan` (a routed port) is in no VLAN: no VLAN ACL applies.
//! 2. **Rescue** ([`Stage::Rescue`]): a key that matches any `[[rescue]]`
//!    rule is permitted, no ACL consulted.
//! 3. **Malformed** ([`Stage::Malformed`]): a key whose parse status is not
//!    `Ok` gets `defaults.malformed`.
//! 4. **VLAN membership** ([`Stage::VlanFilter`]): a tagged frame whose VID
//!    is neither in the port's `trunk` list nor its access/native `vlan` is
//!    dropped, as a switch drops it. No ACL decides, so `acl` is `None`.
//! 5. **PACL** (ingress port) -> **VACL in** (ingress VLAN) -> **RACL in**
//!    (`route.from`) -> **RACL out** (`route.to`) -> **VACL out** (the VLAN
//!    of `route.to` when it is an SVI; only for routed frames, which are
//!    matched with that egress VLAN stamped into the key). The first deny
//!    ends evaluation; a stage with no ACL bound passes the frame on.
//!    Routed ACLs are for IP: a frame that is not IPv4 or IPv6
//!    ([`FlowKey::is_ip`]: ARP, LLDP, ...) skips both RACL stages, but a
//!    routed one still meets the egress VLAN's ACL.
//!
//! When nothing denies, the verdict is permit and the decision names the
//! last ACL that permitted it, or [`Stage::Passed`] when no ACL was bound on
//! the frame's path. A [`Context`] naming a port or interface id this policy
//! does not have is denied with [`Stage::Context`] (fail closed: ids belong
//! to one generation).
//!
//! Evaluation never allocates and never panics.
//!
//! ```
//! use palisade_engine::policy::{Context, Policy, Stage, Verdict};
//! use palisade_packet::FlowKey;
//! let loaded = palisade_rules::parse("t.toml", br#"
//! version = 1
//! [[port]]
//! name = "lan1"
//! vlan = 10
//! [[acl]]
//! name = "lan-in"
//!   [[acl.rule]]
//!   id = "web"
//!   action = "permit"
//!   proto = "tcp"
//!   dst_port = 443
//! [[bind]]
//! acl = "lan-in"
//! port = "lan1"
//! "#).unwrap();
//! let policy = Policy::compile(&loaded.ruleset).unwrap();
//! let ctx = Context { port: policy.port("lan1").unwrap(), route: None };
//! let web = FlowKey::new().with_ipv4([10, 0, 10, 5], [198, 51, 100, 7]).with_proto(6).with_ports(40000, 443);
//! let d = policy.evaluate(&web, &ctx);
//! assert_eq!((d.verdict, d.stage), (Verdict::Permit, Stage::PortAcl));
//! assert_eq!(policy.rule_name(&d), "web");
//! let ssh = web.with_ports(40000, 22);
//! assert_eq!(policy.evaluate(&ssh, &ctx).verdict, Verdict::Deny);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use palisade_classify::{BuildConfig, BuildError, Classifier, CompiledClassifier, RuleMatch, NO_MATCH};
use palisade_packet::FlowKey;
use palisade_rules::{Action, BindTarget, Diagnostic, Direction, InterfaceTarget, Loaded, RuleSet, Severity};

/// A port of one policy (index into its port table).
pub type PortId = u32;
/// An L3 interface of one policy.
pub type InterfaceId = u32;
/// An ACL of one policy (index into [`Policy::acls`]).
pub type AclId = u32;
/// A binding of one policy (index into [`Policy::bindings`], in file order).
pub type BindingId = u32;

/// The classifier every ACL (and the rescue list) is compiled into.
///
/// The ONE place that chooses the classifier implementation.
pub type BoxedClassifier = Box<dyn Classifier + Send + Sync>;

/// Default cap on the memory of one policy's compiled classifiers, all ACLs
/// and the rescue rules together (256 MiB); see [`Policy::compile_with_cap`].
pub const DEFAULT_MEMORY_CAP: usize = 256 << 20;

/// Builds the classifier for one ordered rule list: the compiled classifier,
/// whose build stops with an error before its tables pass `memory_cap` bytes.
/// (The reload self-test checks it against [`palisade_classify::LinearClassifier`], the oracle.)
fn build_classifier(rules: Vec<RuleMatch>, memory_cap: usize) -> Result<BoxedClassifier, String> {
    let config = BuildConfig {
        memory_cap_bytes: memory_cap,
        ..BuildConfig::default()
    };
    CompiledClassifier::build(&rules, &config)
        .map(|c| Box::new(c) as BoxedClassifier)
        .map_err(|e| match e {
            // Same wording as the cap on all classifiers together, so operators see one message.
            BuildError::MemoryCap { needed, cap } => {
                format!("compiled classifiers reach {needed} bytes, more than the memory cap of {cap} bytes")
            }
            other => other.to_string(),
        })
}

/// What happens to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The frame passes.
    Permit,
    /// The frame is dropped.
    Deny,
}

impl Verdict {
    /// `"permit"` or `"deny"`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::policy::Verdict::Permit.as_str(), "permit");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Permit => "permit",
            Verdict::Deny => "deny",
        }
    }
}

impl From<Action> for Verdict {
    fn from(a: Action) -> Self {
        match a {
            Action::Permit => Verdict::Permit,
            Action::Deny => Verdict::Deny,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage of the pipeline that decided (or, for events, that ran).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A `[[rescue]]` rule matched: permitted before any ACL.
    Rescue,
    /// The frame could not be parsed far enough: `defaults.malformed`.
    Malformed,
    /// A tagged frame whose VLAN the ingress port does not carry: dropped. A
    /// data path also decides here a frame whose VLAN has no way across (the
    /// egress port does not carry it and no L3 interface routes it there; see
    /// [`crate::Batch::refuse`]).
    VlanFilter,
    /// The caller's context names a port or interface id the policy lacks, or
    /// a data path found no `[[port]]` for the interface the frame entered.
    Context,
    /// Port ACL of the ingress port.
    PortAcl,
    /// VLAN ACL of the ingress VLAN.
    VlanAclIn,
    /// Routed ACL, direction in, of the ingress L3 interface.
    RoutedAclIn,
    /// Routed ACL, direction out, of the egress L3 interface.
    RoutedAclOut,
    /// VLAN ACL of the egress VLAN (routed frames only).
    VlanAclOut,
    /// No stage had an ACL on the frame's path; permitted.
    Passed,
    /// A new flow that a `keep_state` rule opened found the flow table full:
    /// the frame is denied (and counted) rather than passed without state.
    FlowsFull,
}

impl Stage {
    /// Short name used in CSV/JSON output.
    ///
    /// ```
    /// assert_eq!(palisade_engine::policy::Stage::VlanAclIn.as_str(), "vacl-in");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Rescue => "rescue",
            Stage::Malformed => "malformed",
            Stage::VlanFilter => "vlan-filter",
            Stage::Context => "context",
            Stage::PortAcl => "pacl",
            Stage::VlanAclIn => "vacl-in",
            Stage::RoutedAclIn => "racl-in",
            Stage::RoutedAclOut => "racl-out",
            Stage::VlanAclOut => "vacl-out",
            Stage::Passed => "none",
            Stage::FlowsFull => "flows-full",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// Rule at this 0-based index of the ACL.
    Rule(u32),
    /// The ACL's default.
    Default,
    /// Rescue rule at this 0-based index.
    Rescue(u32),
    /// No rule (malformed, VLAN filter, context, passed).
    None,
}

/// The answer for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// permit or deny.
    pub verdict: Verdict,
    /// The stage that decided (for a permit: the last ACL stage that ran).
    pub stage: Stage,
    /// The ACL that decided, if any.
    pub acl: Option<AclId>,
    /// The rule that decided.
    pub rule: RuleRef,
}

impl Default for Decision {
    /// A fail-closed placeholder (deny, stage `Context`) for sizing output buffers.
    fn default() -> Self {
        Decision {
            verdict: Verdict::Deny,
            stage: Stage::Context,
            acl: None,
            rule: RuleRef::None,
        }
    }
}

/// A routed frame's L3 interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Ingress L3 interface.
    pub from: InterfaceId,
    /// Egress L3 interface.
    pub to: InterfaceId,
}

/// Where a frame came from and whether the caller routes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Context {
    /// Ingress port.
    pub port: PortId,
    /// `Some` when the frame is routed between two L3 interfaces.
    pub route: Option<Route>,
}

/// One ACL evaluated on a frame's path (for counters and `explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StageEvent {
    /// The stage.
    pub stage: Stage,
    /// The binding that put the ACL there.
    pub binding: BindingId,
    /// The ACL.
    pub acl: AclId,
    /// The rule that matched, or `Default`.
    pub rule: RuleRef,
    /// What this ACL said.
    pub verdict: Verdict,
}

/// Kind of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    /// Port ACL.
    Port,
    /// VLAN ACL.
    Vlan,
    /// Routed ACL.
    Routed,
}

impl BindingKind {
    /// `"port"`, `"vlan"` or `"routed"`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::policy::BindingKind::Routed.as_str(), "routed");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            BindingKind::Port => "port",
            BindingKind::Vlan => "vlan",
            BindingKind::Routed => "routed",
        }
    }
}

/// A binding, for status and explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// Its id (file order).
    pub id: BindingId,
    /// The ACL bound.
    pub acl: AclId,
    /// Port, VLAN or Routed.
    pub kind: BindingKind,
    /// Port name, VLAN id in decimal, or interface name.
    pub target: String,
    /// Direction of a Routed binding.
    pub direction: Option<Direction>,
}

/// An ACL, for status and explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclInfo {
    /// ACL name.
    pub name: String,
    /// Each rule's identity: its `id`, or `#N` (1-based).
    pub rule_ids: Vec<String>,
    /// The implicit last rule.
    pub default: Verdict,
    /// Where the ACL is bound.
    pub bindings: Vec<BindingInfo>,
}

/// A port, for explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// Port name.
    pub name: String,
    /// Access/native VLAN.
    pub vlan: Option<u16>,
    /// Tagged VLANs accepted.
    pub trunk: Vec<u16>,
}

/// An L3 interface, for explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// The VLAN of an SVI.
    pub vlan: Option<u16>,
}

/// A name [`Policy::resolve`] did not find in the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownName {
    /// No `[[port]]` has this name.
    Port(String),
    /// No `[[interface]]` has this name.
    Interface(String),
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownName::Port(name) => write!(f, "no port \"{name}\""),
            UnknownName::Interface(name) => write!(f, "no interface \"{name}\""),
        }
    }
}

impl std::error::Error for UnknownName {}

/// Why [`Policy::compile`] refused a rule set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The ACL concerned, if any.
    pub acl: Option<String>,
    /// The rule concerned (identity), if any.
    pub rule: Option<String>,
    /// The cause.
    pub cause: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compile: ")?;
        match (&self.acl, &self.rule) {
            (Some(acl), Some(rule)) => write!(f, "acl \"{acl}\" rule {rule}: ")?,
            (Some(acl), None) => write!(f, "acl \"{acl}\": ")?,
            (None, Some(rule)) => write!(f, "rule {rule}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.cause)
    }
}

impl std::error::Error for PolicyError {}

/// Sentinel for "no binding" in the compact tables.
const NONE: u32 = u32::MAX;
/// Number of VLAN ids (0-4095).
const VLANS: usize = 4096;

#[derive(Clone)]
struct CompiledAcl {
    classifier: Arc<BoxedClassifier>,
    actions: Box<[Verdict]>,
    /// Per rule: `keep_state = true`.
    keep_state: Box<[bool]>,
    default: Verdict,
}

#[derive(Clone)]
struct PortEntry {
    /// Access/native VLAN, 0 when none.
    vlan: u16,
    /// Bitset of accepted tagged VIDs (trunk plus the native VLAN).
    tagged: Box<[u64; VLANS / 64]>,
    /// Port ACL binding, or NONE.
    pacl: u32,
}

#[derive(Clone)]
struct InterfaceEntry {
    /// SVI VLAN, 0 for a routed port.
    vlan: u16,
    racl_in: u32,
    racl_out: u32,
}

/// An immutable, compiled rule set: the data-path view of one generation.
///
/// Cloning shares the compiled classifiers and sets (a set change clones
/// the policy and replaces one set).
#[derive(Clone)]
pub struct Policy {
    /// Some rule keeps state or matches a flow state.
    stateful: bool,
    malformed: Verdict,
    rescue: Arc<BoxedClassifier>,
    rescue_ids: Vec<String>,
    acls: Vec<CompiledAcl>,
    acl_info: Vec<AclInfo>,
    bindings: Vec<BindingInfo>,
    ports: Vec<PortEntry>,
    port_info: Vec<PortInfo>,
    port_by_name: HashMap<String, PortId>,
    interfaces: Vec<InterfaceEntry>,
    interface_info: Vec<InterfaceInfo>,
    interface_by_name: HashMap<String, InterfaceId>,
    /// VLAN id -> VLAN ACL binding, or NONE.
    vacl: Box<[u32]>,
    /// Set tests, looked up for every key before the stages.
    sets: sets::PolicySets,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("acls", &self.acl_info)
            .field("ports", &self.port_info)
            .field("interfaces", &self.interface_info)
            .field("rescue", &self.rescue_ids)
            .finish_non_exhaustive()
    }
}

fn err(acl: Option<&str>, cause: String) -> PolicyError {
    PolicyError {
        acl: acl.map(str::to_owned),
        rule: None,
        cause,
    }
}

impl Policy {
    /// Compiles a rule set. Fails when a binding names something missing,
    /// when two ACLs are bound to the same place, or when a classifier
    /// cannot be built.
    pub fn compile(rs: &RuleSet) -> Result<Policy, PolicyError> {
        Policy::compile_with_cap(rs, DEFAULT_MEMORY_CAP)
    }

    /// [`Policy::compile`] with a cap on the bytes of all its compiled
    /// classifiers together (ACLs and rescue rules): the compile fails at
    /// the ACL that passes it, naming the cap and the figure reached.
    ///
    /// ```
    /// let rs = palisade_rules::parse("r.toml", b"version = 1\n[[acl]]\nname = \"a\"\n[[acl.rule]]\naction = \"deny\"\n")
    ///     .unwrap()
    ///     .ruleset;
    /// let e = palisade_engine::policy::Policy::compile_with_cap(&rs, 16).unwrap_err();
    /// assert!(e.to_string().contains("memory cap of 16 bytes"), "{e}");
    /// ```
    pub fn compile_with_cap(rs: &RuleSet, memory_cap: usize) -> Result<Policy, PolicyError> {
        // Sets first: the ACLs' rules see long address lists as set tests.
        let (set_tables, mut acl_matchers) =
            sets::PolicySets::build(rs).map_err(|cause| err(None, format!("sets: {cause}")))?;
        let mut used = set_tables.memory_bytes();
        if used > memory_cap {
            return Err(err(
                None,
                format!("compiled sets reach {used} bytes, more than the memory cap of {memory_cap} bytes"),
            ));
        }
        let mut charge = |acl: Option<&str>, c: &BoxedClassifier| -> Result<(), PolicyError> {
            used = used.saturating_add(c.memory_bytes());
            if used > memory_cap {
                return Err(err(
                    acl,
                    format!(
                        "compiled classifiers reach {used} bytes, more than the memory cap of {memory_cap} bytes"
                    ),
                ));
            }
            Ok(())
        };
        let mut port_by_name = HashMap::new();
        let mut ports = Vec::with_capacity(rs.ports.len());
        let mut port_info = Vec::with_capacity(rs.ports.len());
        for p in &rs.ports {
            let id = ports.len() as PortId;
            if port_by_name.insert(p.name.clone(), id).is_some() {
                return Err(err(None, format!("duplicate port \"{}\"", p.name)));
            }
            let mut tagged = Box::new([0u64; VLANS / 64]);
            for &v in p.trunk.iter().chain(p.vlan.iter()) {
                if v != 0 && (v as usize) < VLANS {
                    tagged[v as usize / 64] |= 1 << (v % 64);
                }
            }
            ports.push(PortEntry {
                vlan: p.vlan.unwrap_or(0) & 0x0fff,
                tagged,
                pacl: NONE,
            });
            port_info.push(PortInfo {
                name: p.name.clone(),
                vlan: p.vlan,
                trunk: p.trunk.clone(),
            });
        }
        let mut interface_by_name = HashMap::new();
        let mut interfaces = Vec::with_capacity(rs.interfaces.len());
        let mut interface_info = Vec::with_capacity(rs.interfaces.len());
        for i in &rs.interfaces {
            let id = interfaces.len() as InterfaceId;
            if interface_by_name.insert(i.name.clone(), id).is_some() {
                return Err(err(None, format!("duplicate interface \"{}\"", i.name)));
            }
            let vlan = match &i.target {
                InterfaceTarget::Vlan(v) => Some(*v & 0x0fff),
                InterfaceTarget::Port(p) => {
                    if !port_by_name.contains_key(p) {
                        return Err(err(
                            None,
                            format!("interface \"{}\" names missing port \"{p}\"", i.name),
                        ));
                    }
                    None
                }
            };
            interfaces.push(InterfaceEntry {
                vlan: vlan.unwrap_or(0),
                racl_in: NONE,
                racl_out: NONE,
            });
            interface_info.push(InterfaceInfo {
                name: i.name.clone(),
                vlan,
            });
        }

        let mut acl_by_name: HashMap<&str, AclId> = HashMap::new();
        let mut acls = Vec::with_capacity(rs.acls.len());
        let mut acl_info = Vec::with_capacity(rs.acls.len());
        for (ai, a) in rs.acls.iter().enumerate() {
            if acl_by_name.insert(&a.name, acls.len() as AclId).is_some() {
                return Err(err(None, format!("duplicate acl \"{}\"", a.name)));
            }
            let matchers = acl_matchers.get_mut(ai).map(std::mem::take).unwrap_or_default();
            let classifier =
                build_classifier(matchers, memory_cap).map_err(|cause| err(Some(&a.name), cause))?;
            charge(Some(&a.name), &classifier)?;
            acls.push(CompiledAcl {
                classifier: Arc::new(classifier),
                actions: a.rules.iter().map(|r| Verdict::from(r.action)).collect(),
                keep_state: a.rules.iter().map(|r| r.keep_state).collect(),
                default: a.default.into(),
            });
            acl_info.push(AclInfo {
                name: a.name.clone(),
                rule_ids: (0..a.rules.len()).map(|i| a.rule_identity(i)).collect(),
                default: a.default.into(),
                bindings: Vec::new(),
            });
        }

        let mut vacl = vec![NONE; VLANS].into_boxed_slice();
        let mut bindings = Vec::with_capacity(rs.bindings.len());
        for (n, b) in rs.bindings.iter().enumerate() {
            let id = n as BindingId;
            let acl = *acl_by_name
                .get(b.acl.as_str())
                .ok_or_else(|| err(None, format!("binding names missing acl \"{}\"", b.acl)))?;
            let (slot, kind, target, direction) = match &b.target {
                BindTarget::Port(p) => {
                    let pid = *port_by_name
                        .get(p)
                        .ok_or_else(|| err(Some(&b.acl), format!("binding names missing port \"{p}\"")))?;
                    (&mut ports[pid as usize].pacl, BindingKind::Port, p.clone(), None)
                }
                BindTarget::Vlan(v) => {
                    let slot = vacl
                        .get_mut(*v as usize)
                        .ok_or_else(|| err(Some(&b.acl), format!("binding names VLAN {v} outside 1-4094")))?;
                    (slot, BindingKind::Vlan, v.to_string(), None)
                }
                BindTarget::Interface { name, direction } => {
                    let iid = *interface_by_name.get(name).ok_or_else(|| {
                        err(
                            Some(&b.acl),
                            format!("binding names missing interface \"{name}\""),
                        )
                    })?;
                    let e = &mut interfaces[iid as usize];
                    let slot = match direction {
                        Direction::In => &mut e.racl_in,
                        Direction::Out => &mut e.racl_out,
                    };
                    (slot, BindingKind::Routed, name.clone(), Some(*direction))
                }
            };
            if *slot != NONE {
                let other = &acl_info[bindings_acl(&bindings, *slot) as usize].name;
                return Err(err(
                    Some(&b.acl),
                    format!(
                        "{} {}{} already has acl \"{other}\" bound",
                        kind.as_str(),
                        target,
                        direction.map_or(String::new(), |d| format!(" ({})", d.as_str()))
                    ),
                ));
            }
            *slot = id;
            let info = BindingInfo {
                id,
                acl,
                kind,
                target,
                direction,
            };
            acl_info[acl as usize].bindings.push(info.clone());
            bindings.push(info);
        }

        let rescue_ids = rs
            .rescue
            .iter()
            .enumerate()
            .map(|(i, r)| r.id.clone().unwrap_or_else(|| format!("rescue#{}", i + 1)))
            .collect();
        let rescue = build_classifier(rs.rescue.iter().map(|r| r.matcher.clone()).collect(), memory_cap)
            .map_err(|cause| err(None, format!("rescue rules: {cause}")))?;
        charge(None, &rescue)?;

        let stateful = rs
            .acls
            .iter()
            .flat_map(|a| &a.rules)
            .any(|r| r.keep_state || r.matcher.state.is_some())
            || rs.rescue.iter().any(|r| r.matcher.state.is_some());
        Ok(Policy {
            stateful,
            malformed: rs.defaults.malformed.into(),
            rescue: Arc::new(rescue),
            rescue_ids,
            acls,
            acl_info,
            bindings,
            ports,
            port_info,
            port_by_name,
            interfaces,
            interface_info,
            interface_by_name,
            vacl,
            sets: set_tables,
        })
    }

    /// The context of a frame entering port `port`, routed `from` -> `to` when
    /// `route` names two L3 interfaces: the one place where names become this
    /// policy's ids (`explain`, `classify`, `[[expect]]`, [`crate::Engine::probe`]
    /// and [`crate::Batch::context`] all resolve through it).
    ///
    /// ```
    /// use palisade_engine::policy::{Policy, UnknownName};
    /// let rs = palisade_rules::parse("r.toml", b"version = 1\n[[port]]\nname = \"p\"\n[[interface]]\nname = \"i\"\nport = \"p\"\n")
    ///     .unwrap()
    ///     .ruleset;
    /// let policy = Policy::compile(&rs).unwrap();
    /// let ctx = policy.resolve("p", Some(("i", "i"))).unwrap();
    /// assert_eq!(ctx.port, policy.port("p").unwrap());
    /// assert_eq!(policy.resolve("q", None), Err(UnknownName::Port("q".into())));
    /// assert_eq!(policy.resolve("p", Some(("i", "x"))), Err(UnknownName::Interface("x".into())));
    /// ```
    pub fn resolve(&self, port: &str, route: Option<(&str, &str)>) -> Result<Context, UnknownName> {
        let port = self
            .port(port)
            .ok_or_else(|| UnknownName::Port(port.to_owned()))?;
        let interface = |name: &str| {
            self.interface(name)
                .ok_or_else(|| UnknownName::Interface(name.to_owned()))
        };
        let route = match route {
            None => None,
            Some((from, to)) => Some(Route {
                from: interface(from)?,
                to: interface(to)?,
            }),
        };
        Ok(Context { port, route })
    }

    /// Whether some rule keeps state or matches a flow state: frames then need
    /// their flow state found before they are evaluated (see [`crate::flow`]).
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Whether the rule `rule` of ACL `acl` has `keep_state = true` (never for a default).
    #[inline]
    pub fn keeps_state(&self, acl: AclId, rule: RuleRef) -> bool {
        match rule {
            RuleRef::Rule(i) => self
                .acls
                .get(acl as usize)
                .and_then(|a| a.keep_state.get(i as usize))
                .copied()
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The id of the port named `name`.
    pub fn port(&self, name: &str) -> Option<PortId> {
        self.port_by_name.get(name).copied()
    }

    /// The id of the L3 interface named `name`.
    pub fn interface(&self, name: &str) -> Option<InterfaceId> {
        self.interface_by_name.get(name).copied()
    }

    /// Port details by id.
    pub fn port_info(&self, id: PortId) -> Option<&PortInfo> {
        self.port_info.get(id as usize)
    }

    /// Interface details by id.
    pub fn interface_info(&self, id: InterfaceId) -> Option<&InterfaceInfo> {
        self.interface_info.get(id as usize)
    }

    /// Every ACL, in file order (index = [`AclId`]).
    pub fn acls(&self) -> &[AclInfo] {
        &self.acl_info
    }

    /// Every binding, in file order (index = [`BindingId`]).
    pub fn bindings(&self) -> &[BindingInfo] {
        &self.bindings
    }

    /// Number of rescue rules.
    pub fn rescue_count(&self) -> usize {
        self.rescue_ids.len()
    }

    /// Identity of each rescue rule: its `id`, or `rescue#N`.
    pub fn rescue_ids(&self) -> &[String] {
        &self.rescue_ids
    }

    /// Total number of ACL rules (defaults not counted).
    pub fn rule_count(&self) -> usize {
        self.acl_info.iter().map(|a| a.rule_ids.len()).sum()
    }

    /// The name of an ACL, if the id is valid.
    pub fn acl_name(&self, acl: Option<AclId>) -> Option<&str> {
        acl.and_then(|a| self.acl_info.get(a as usize))
            .map(|a| a.name.as_str())
    }

    /// The label of the rule that decided: the rule's id or `#N`, `default`,
    /// the rescue rule's id or `rescue#N`, or `""` when no rule decided.
    pub fn rule_name(&self, d: &Decision) -> &str {
        self.rule_label(d.acl, d.rule)
    }

    /// Like [`Policy::rule_name`] for an ACL and rule reference (e.g. of a [`StageEvent`]).
    pub fn rule_label(&self, acl: Option<AclId>, rule: RuleRef) -> &str {
        match rule {
            RuleRef::Rule(i) => acl
                .and_then(|a| self.acl_info.get(a as usize))
                .and_then(|a| a.rule_ids.get(i as usize))
                .map_or("", String::as_str),
            RuleRef::Default => "default",
            RuleRef::Rescue(i) => self.rescue_ids.get(i as usize).map_or("", String::as_str),
            RuleRef::None => "",
        }
    }

    /// Evaluates one key.
    #[inline]
    pub fn evaluate(&self, key: &FlowKey, ctx: &Context) -> Decision {
        self.evaluate_traced(key, ctx, |_| {})
    }

    /// Evaluates a batch with one context; `out[i]` receives the decision for
    /// `keys[i]` (only `min(keys.len(), out.len())` are written).
    /// The batch goes through the stages together (see
    /// [`Policy::evaluate_batch_traced`]), so each ACL classifies many keys
    /// at once.
    pub fn evaluate_batch(&self, keys: &[FlowKey], ctx: &Context, out: &mut [Decision]) {
        self.evaluate_batch_traced(keys, ctx, out, |_, _| {});
    }

    /// Whether the policy has set tests (else [`Policy::fill_sets`] does nothing).
    #[inline]
    pub fn has_sets(&self) -> bool {
        !self.sets.membership.is_empty()
    }

    /// Looks up every set test for a whole batch, writing each key's
    /// `set_bits` (what [`Policy::evaluate`] does for one key before the
    /// stages). Never allocates, never panics.
    #[inline]
    pub fn fill_sets(&self, keys: &mut [FlowKey]) {
        self.sets.membership.fill(keys);
    }

    /// `keys` with their set bits looked up: `keys` itself when the policy
    /// has no set tests, else a copy in `buf` (at most `buf.len()` keys).
    #[inline]
    pub fn with_sets<'k>(&self, keys: &'k [FlowKey], buf: &'k mut [FlowKey]) -> &'k [FlowKey] {
        if !self.has_sets() {
            return keys;
        }
        let n = keys.len().min(buf.len());
        let out = &mut buf[..n];
        out.copy_from_slice(&keys[..n]);
        self.fill_sets(out);
        out
    }

    /// Evaluates one key and calls `trace` once per ACL evaluated, in order.
    pub fn evaluate_traced<F: FnMut(&StageEvent)>(&self, key: &FlowKey, ctx: &Context, trace: F) -> Decision {
        let mut k = *key;
        self.fill_sets(std::slice::from_mut(&mut k));
        self.evaluate_filled(&k, ctx, trace)
    }

    /// [`Policy::evaluate_traced`] for a key whose set bits
    /// [`Policy::fill_sets`] has written (the batch path looks sets up for
    /// many keys at once, then evaluates them one by one).
    pub fn evaluate_filled<F: FnMut(&StageEvent)>(
        &self,
        key: &FlowKey,
        ctx: &Context,
        mut trace: F,
    ) -> Decision {
        let Some(port) = self.ports.get(ctx.port as usize) else {
            return fixed(Verdict::Deny, Stage::Context);
        };
        if let Some(r) = ctx.route {
            if r.from as usize >= self.interfaces.len() || r.to as usize >= self.interfaces.len() {
                return fixed(Verdict::Deny, Stage::Context);
            }
        }

        // VLAN stamping: the frame's VLAN is its outer tag, or the port's access VLAN.
        let vid = key.outer_vlan & 0x0fff;
        let tagged = key.vlan_count > 0 && vid != 0;
        let mut k = *key;
        k.outer_vlan = if tagged { vid } else { port.vlan };

        let r = self.rescue.classify(&k);
        if r != NO_MATCH {
            return Decision {
                verdict: Verdict::Permit,
                stage: Stage::Rescue,
                acl: None,
                rule: RuleRef::Rescue(r),
            };
        }
        if !k.status.is_ok() {
            return fixed(self.malformed, Stage::Malformed);
        }
        if tagged && port.tagged[vid as usize / 64] & (1 << (vid % 64)) == 0 {
            return fixed(Verdict::Deny, Stage::VlanFilter);
        }

        let mut last = fixed(Verdict::Permit, Stage::Passed);
        let vacl_in = if k.outer_vlan != 0 {
            self.vacl[k.outer_vlan as usize]
        } else {
            NONE
        };
        let ingress = [(Stage::PortAcl, port.pacl), (Stage::VlanAclIn, vacl_in)];
        for (stage, binding) in ingress {
            if let Some(d) = self.run(stage, binding, &k, &mut last, &mut trace) {
                return d;
            }
        }
        if let Some(route) = ctx.route {
            let from = &self.interfaces[route.from as usize];
            let to = &self.interfaces[route.to as usize];
            // Routed ACLs are for IP; a non-IP frame still meets the egress VLAN's ACL.
            let racls = [
                (Stage::RoutedAclIn, from.racl_in),
                (Stage::RoutedAclOut, to.racl_out),
            ];
            for (stage, binding) in racls.into_iter().filter(|_| k.is_ip()) {
                if let Some(d) = self.run(stage, binding, &k, &mut last, &mut trace) {
                    return d;
                }
            }
            if to.vlan != 0 {
                k.outer_vlan = to.vlan;
                let binding = self.vacl[to.vlan as usize];
                if let Some(d) = self.run(Stage::VlanAclOut, binding, &k, &mut last, &mut trace) {
                    return d;
                }
            }
        }
        last
    }

    /// Runs one stage; returns the decision when it denies, else records it in `last`.
    #[inline]
    fn run<F: FnMut(&StageEvent)>(
        &self,
        stage: Stage,
        binding: u32,
        key: &FlowKey,
        last: &mut Decision,
        trace: &mut F,
    ) -> Option<Decision> {
        let b = self.bindings.get(binding as usize)?;
        let acl = self.acls.get(b.acl as usize)?;
        let idx = acl.classifier.classify(key);
        let (rule, verdict) = match acl.actions.get(idx as usize) {
            Some(v) => (RuleRef::Rule(idx), *v),
            None => (RuleRef::Default, acl.default),
        };
        trace(&StageEvent {
            stage,
            binding,
            acl: b.acl,
            rule,
            verdict,
        });
        let d = Decision {
            verdict,
            stage,
            acl: Some(b.acl),
            rule,
        };
        match verdict {
            Verdict::Deny => Some(d),
            Verdict::Permit => {
                *last = d;
                None
            }
        }
    }

    /// Runs every `[[expect]]` of `loaded` through this policy; one error per
    /// vector that does not hold (or names a port or interface that does not
    /// exist), at the vector's `file:line:col`.
    pub fn check_expects(&self, loaded: &Loaded) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (n, e) in loaded.ruleset.expects.iter().enumerate() {
            let diag = |message: String| Diagnostic {
                file: loaded.file.clone(),
                span: e.span,
                severity: Severity::Error,
                message: format!("expect {}: {message}", n + 1),
            };
            let route = e.route.as_ref().map(|(from, to)| (from.as_str(), to.as_str()));
            let ctx = match self.resolve(&e.port, route) {
                Ok(ctx) => ctx,
                Err(UnknownName::Port(name)) => {
                    out.push(diag(format!("names missing port \"{name}\"")));
                    continue;
                }
                Err(UnknownName::Interface(name)) => {
                    out.push(diag(format!("route names missing interface \"{name}\"")));
                    continue;
                }
            };
            let d = self.evaluate(&e.packet, &ctx);
            let want = Verdict::from(e.verdict);
            let stage_ok = e.stage.as_deref().is_none_or(|s| s == d.stage.as_str());
            let rule_ok = e.rule.as_deref().is_none_or(|r| r == self.rule_name(&d));
            if d.verdict != want || !stage_ok || !rule_ok {
                let mut expected = want.as_str().to_owned();
                if let Some(s) = &e.stage {
                    expected.push_str(&format!(" at stage {s}"));
                }
                if let Some(r) = &e.rule {
                    expected.push_str(&format!(" by rule {r}"));
                }
                out.push(diag(format!(
                    "{}: expected {expected}, got {} ({})",
                    palisade_rules::format_packet(&e.packet),
                    d.verdict,
                    self.describe_with_sets(&d, &e.packet)
                )));
            }
        }
        out
    }

    /// A one-line human description of a decision: stage, ACL and rule.
    pub fn describe(&self, d: &Decision) -> String {
        let mut s = format!("stage {}", d.stage);
        if let Some(name) = self.acl_name(d.acl) {
            s.push_str(&format!(", acl \"{name}\""));
        }
        let rule = self.rule_name(d);
        if !rule.is_empty() {
            s.push_str(&format!(", rule {rule}"));
        }
        s
    }
}

/// Set tests: what they look at, and which decided.
impl Policy {
    /// The set tests, in bit order (named sets first, then rules' long lists).
    pub fn set_tests(&self) -> &[SetTestInfo] {
        &self.sets.tests
    }

    /// Bytes of the compiled sets.
    pub fn sets_memory_bytes(&self) -> usize {
        self.sets.memory_bytes()
    }

    /// The compiled named set `index` (of the rule set's `sets`).
    pub fn named_set(&self, index: usize) -> Option<&palisade_classify::CompiledSet> {
        self.sets.named.get(index).map(|s| &**s)
    }

    /// The set tests of rule `rule` of ACL `acl` and how `key` fared in each,
    /// one line a test: `src 203.0.113.9 in set "blocklist"`, `dst_port 22
    /// not in set "ssh"`, or for a long list compiled as a set, `src 10.0.0.5
    /// in its src list (40 elements)`. Empty for a rule without set tests.
    pub fn set_reasons(&self, acl: Option<AclId>, rule: RuleRef, key: &FlowKey) -> Vec<String> {
        let (Some(acl), RuleRef::Rule(i)) = (acl, rule) else {
            return Vec::new();
        };
        let Some(m) = self
            .sets
            .rule_sets
            .get(acl as usize)
            .and_then(|r| r.get(i as usize))
        else {
            return Vec::new();
        };
        let mut k = *key;
        self.fill_sets(std::slice::from_mut(&mut k));
        let mut out = Vec::new();
        for (bit, t) in self.sets.tests.iter().enumerate().take(32) {
            let mask = 1u32 << bit;
            if (m.member | m.non_member) & mask == 0 {
                continue;
            }
            let value = match t.field {
                palisade_classify::SetField::Src | palisade_classify::SetField::Dst => {
                    let a = if t.field == palisade_classify::SetField::Src {
                        k.src_ip
                    } else {
                        k.dst_ip
                    };
                    match k.ip_family() {
                        Some(4) => std::net::Ipv4Addr::from(a as u32).to_string(),
                        Some(6) => std::net::Ipv6Addr::from(a).to_string(),
                        _ => "(no address)".into(),
                    }
                }
                palisade_classify::SetField::SrcPort => {
                    k.ports().map_or("(no port)".into(), |p| p.0.to_string())
                }
                palisade_classify::SetField::DstPort => {
                    k.ports().map_or("(no port)".into(), |p| p.1.to_string())
                }
            };
            let inside = if k.set_bits & mask != 0 { "in" } else { "not in" };
            let field = t.field.as_str();
            out.push(if t.anonymous {
                format!(
                    "{field} {value} {inside} its {field} list ({} elements)",
                    t.elements
                )
            } else {
                format!("{field} {value} {inside} set \"{}\"", t.set)
            });
        }
        out
    }

    /// [`Policy::describe`], followed by the deciding rule's set tests on `key`.
    pub fn describe_with_sets(&self, d: &Decision, key: &FlowKey) -> String {
        let mut s = self.describe(d);
        for r in self.set_reasons(d.acl, d.rule, key) {
            s.push_str(", ");
            s.push_str(&r);
        }
        s
    }

    /// This policy with named set `index` (of its rule set's `sets`) now
    /// holding `elements`, after the elements `touched` were added or removed:
    /// every classifier and every other set is shared, and only the parts of
    /// the changed set that `touched` reaches are rebuilt. Fails past `memory_cap`.
    pub fn with_set(
        &self,
        index: usize,
        elements: &palisade_rules::SetElements,
        touched: &palisade_rules::SetElements,
        memory_cap: usize,
    ) -> Result<Policy, PolicyError> {
        let set = Arc::new(match (self.sets.named.get(index), elements, touched) {
            (
                Some(old),
                palisade_rules::SetElements::Addresses(list),
                palisade_rules::SetElements::Addresses(changed),
            ) if !old.is_ports() => old.updated(list, changed),
            _ => sets::compile(elements),
        });
        let tables = self
            .sets
            .with_named(index, set)
            .map_err(|cause| err(None, format!("sets: {cause}")))?;
        let classifiers: usize = self
            .acls
            .iter()
            .map(|a| a.classifier.memory_bytes())
            .sum::<usize>()
            + self.rescue.memory_bytes();
        let used = classifiers.saturating_add(tables.memory_bytes());
        if used > memory_cap {
            return Err(err(
                None,
                format!("compiled sets reach {used} bytes, more than the memory cap of {memory_cap} bytes"),
            ));
        }
        let mut p = self.clone();
        p.sets = tables;
        Ok(p)
    }
}

fn bindings_acl(bindings: &[BindingInfo], id: u32) -> AclId {
    bindings.get(id as usize).map_or(0, |b| b.acl)
}

const fn fixed(verdict: Verdict, stage: Stage) -> Decision {
    Decision {
        verdict,
        stage,
        acl: None,
        rule: RuleRef::None,
    }
}

/// Self-test hook for the reload pipeline (added by the engine's reload module).
impl Policy {
    /// The compiled classifier's first-match answer for ACL `acl` on `key`
    /// (a rule index or `NO_MATCH`; `None` for an unknown ACL), with no VLAN
    /// stamping and the key's set bits as given (look them up with
    /// [`Policy::fill_sets`]): the reload self-test compares it with the
    /// reference classifier.
    pub fn acl_first_match(&self, acl: AclId, key: &FlowKey) -> Option<u32> {
        self.acls.get(acl as usize).map(|a| a.classifier.classify(key))
    }

    /// The compiled rescue classifier's first-match answer on `key` (as [`Policy::acl_first_match`]).
    pub fn rescue_first_match(&self, key: &FlowKey) -> u32 {
        self.rescue.classify(key)
    }
}

mod sets;
pub use sets::{SetTestInfo, ANONYMOUS_MIN};
mod staged;
pub use staged::STAGE_BATCH;

#[cfg(test)]
mod model_check;
#[cfg(test)]
mod tests;
