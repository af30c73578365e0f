//! The validated rule-set model: what a rule file means, names still unresolved.

use palisade_classify::RuleMatch;
use palisade_packet::FlowKey;

/// A position in the rule file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based, in characters.
    pub col: u32,
}

/// What a rule (or a default) does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the frame pass this stage.
    Permit,
    /// Drop the frame; the first deny ends evaluation.
    Deny,
}

impl Action {
    /// `"permit"` or `"deny"`.
    ///
    /// ```
    /// assert_eq!(palisade_rules::Action::Deny.as_str(), "deny");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Permit => "permit",
            Action::Deny => "deny",
        }
    }
}

/// Direction of a Routed ACL binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Frames entering the box through the L3 interface.
    In,
    /// Frames leaving the box through the L3 interface.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`.
    ///
    /// ```
    /// assert_eq!(palisade_rules::Direction::Out.as_str(), "out");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// `[defaults]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Verdict for frames that cannot be parsed far enough (default deny).
    pub malformed: Action,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            malformed: Action::Deny,
        }
    }
}

/// `[[port]]`: a physical or logical port of the box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDef {
    /// Unique port name.
    pub name: String,
    /// Access/native VLAN for untagged frames.
    pub vlan: Option<u16>,
    /// Tagged VLANs accepted.
    pub trunk: Vec<u16>,
    /// The OS interface this port is (default: its name).
    pub device: Option<String>,
    /// Where the `[[port]]` table starts.
    pub span: Span,
}

/// What an L3 interface sits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceTarget {
    /// An SVI for this VLAN.
    Vlan(u16),
    /// A routed port, by port name.
    Port(String),
}

/// `[[interface]]`: an L3 interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceDef {
    /// Unique interface name.
    pub name: String,
    /// The VLAN or port it sits on.
    pub target: InterfaceTarget,
    /// Where the table starts.
    pub span: Span,
}

/// One `[[acl.rule]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclRule {
    /// Optional stable identity; counters follow it across reloads.
    pub id: Option<String>,
    /// permit or deny.
    pub action: Action,
    /// What the rule matches.
    pub matcher: RuleMatch,
    /// `log = true`: the frames this rule decides are logged (rate-limited by [`Logging`]).
    pub log: bool,
    /// `keep_state = true`: a frame whose final verdict is permit and whose
    /// stage this rule decided creates a flow entry (permit rules only).
    pub keep_state: bool,
    /// Where the rule table starts.
    pub span: Span,
}

/// `[[acl]]`: an ordered list of rules with a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclDef {
    /// Unique ACL name.
    pub name: String,
    /// The implicit last rule.
    pub default: Action,
    /// Rules in priority order.
    pub rules: Vec<AclRule>,
    /// `log_default = true`: the frames the implicit default decides are logged.
    pub log_default: bool,
    /// Where the table starts.
    pub span: Span,
}

impl AclDef {
    /// The identity of rule `index`: its `id`, or `#N` (1-based) when it has none.
    ///
    /// ```
    /// use palisade_rules::{AclDef, Action, Span};
    /// let acl = AclDef { name: "a".into(), default: Action::Deny, rules: vec![], log_default: false, span: Span::default() };
    /// assert_eq!(acl.rule_identity(2), "#3");
    /// ```
    pub fn rule_identity(&self, index: usize) -> String {
        match self.rules.get(index).and_then(|r| r.id.clone()) {
            Some(id) => id,
            None => format!("#{}", index + 1),
        }
    }
}

/// Where a `[[bind]]` attaches an ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindTarget {
    /// Port ACL: frames entering this port.
    Port(String),
    /// VLAN ACL: frames in this VLAN.
    Vlan(u16),
    /// Routed ACL: frames routed in or out of this L3 interface.
    Interface {
        /// L3 interface name.
        name: String,
        /// in or out.
        direction: Direction,
    },
}

/// `[[bind]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingDef {
    /// ACL name.
    pub acl: String,
    /// What it is bound to.
    pub target: BindTarget,
    /// Where the table starts.
    pub span: Span,
}

/// `[[rescue]]`: an always-permitted flow, checked before every stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescueDef {
    /// Optional identity.
    pub id: Option<String>,
    /// What it matches.
    pub matcher: RuleMatch,
    /// Where the table starts.
    pub span: Span,
}

/// `[[expect]]`: a self-test vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectDef {
    /// Ingress port name.
    pub port: String,
    /// The packet, as a flow key (tagged with `vlan` when given).
    pub packet: FlowKey,
    /// Optional routing: from and to L3 interface names.
    pub route: Option<(String, String)>,
    /// Expected verdict.
    pub verdict: Action,
    /// Optional expected deciding stage (`pacl`, `vacl-in`, ... as the engine names them).
    pub stage: Option<String>,
    /// Optional expected deciding rule: its id, `#N`, `default`, or a rescue id.
    pub rule: Option<String>,
    /// Where the table starts.
    pub span: Span,
}

/// `[logging]`: how many records a second each logged rule may produce.
///
/// Each rule with `log = true` (and each ACL default with `log_default =
/// true`) has its own token bucket: `burst` records at once, refilled at
/// `rate` records a second. A frame over the limit is decided exactly as
/// without logging; only its record is dropped (and counted).
///
/// ```
/// let l = palisade_rules::Logging::default();
/// assert_eq!((l.rate, l.burst), (10, 20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logging {
    /// Records a second per rule (default 10).
    pub rate: u32,
    /// Records a rule may produce at once after a quiet spell (default 20).
    pub burst: u32,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { rate: 10, burst: 20 }
    }
}

/// A whole, validated rule set: one generation's worth of configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Rule-language version (only 1 exists).
    pub version: u32,
    /// Semver requirement on the engine, as written.
    pub requires: Option<String>,
    /// `[defaults]`.
    pub defaults: Defaults,
    /// `[logging]`.
    pub logging: Logging,
    /// `[[port]]`s.
    pub ports: Vec<PortDef>,
    /// `[[interface]]`s.
    pub interfaces: Vec<InterfaceDef>,
    /// `[[acl]]`s.
    pub acls: Vec<AclDef>,
    /// `[[bind]]`s.
    pub bindings: Vec<BindingDef>,
    /// `[[rescue]]`s.
    pub rescue: Vec<RescueDef>,
    /// `[[expect]]`s.
    pub expects: Vec<ExpectDef>,
    /// `[[set]]`s, in file order.
    pub sets: Vec<crate::SetDef>,
    /// The set tests the rules make: test `i` is bit `i` of a key's set
    /// membership and of the rules' `RuleMatch::sets`.
    pub set_tests: Vec<crate::SetTest>,
    /// `[flows]` (its defaults when the file has none).
    pub flows: crate::flows::FlowsDef,
}
