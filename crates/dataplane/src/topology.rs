//! Where a frame stands in the rule set and where it goes: which `[[port]]`
//! it entered, whether crossing the bridge is switching within a VLAN or
//! routing between two L3 interfaces (so that Routed ACLs apply), and which
//! VLAN tag it carries when it leaves.
//!
//! Each bridged interface is the `[[port]]` of the same name, or the one whose
//! `device` names it. A frame's VLAN is its outer tag, or for an untagged (or
//! priority-tagged) frame its port's access VLAN; 0 is "no VLAN" (a port
//! without `vlan`). When the other port carries that VLAN (it is the port's
//! `vlan` or in its `trunk`) and neither port is a routed port, the frame is
//! switched: no route. Otherwise it is routed from the ingress L3 interface
//! (the routed port, else the SVI of its VLAN) to the egress one (the routed
//! port, else the SVI of the VLAN it leaves in: its own when the egress port
//! carries it, else the egress port's access VLAN). When either is missing
//! the frame has no way across; the engine denies it at stage `vlan-filter`
//! ([`palisade_engine::Batch::refuse`]), as a switch keeps VLANs apart.
//!
//! Routed ACLs are for IP: a frame that is not IPv4 or IPv6 (ARP, LLDP, ...)
//! crosses where IP would, with the same route, and the policy decides it by
//! Port and VLAN ACLs only: the ingress VLAN's and, when it leaves in another
//! VLAN, the egress VLAN's ([`Policy`] skips Routed ACLs for non-IP frames).
//!
//! A frame leaves untagged in the egress port's access VLAN, tagged on its
//! trunk VLANs ([`egress_tagging`]); a QinQ frame keeps its inner tag either
//! way. A topology is built once per generation (its ids belong to that
//! generation) and then answered without allocating.

use std::collections::HashMap;

use palisade_engine::policy::{Context, InterfaceId, Policy, PortId, Route, Stage};
use palisade_packet::FlowKey;
use palisade_rules::{InterfaceTarget, RuleSet};

use crate::filter::Forward;

/// What a port carries: its access/native VLAN and its tagged VLANs.
///
/// ```
/// use palisade_dataplane::topology::{egress_tagging, PortVlans};
/// use palisade_dataplane::Forward;
/// let hybrid = PortVlans { vlan: 10, trunk: vec![20] };
/// assert_eq!(egress_tagging(&hybrid, 10), Some(Forward::Untagged));
/// assert_eq!(egress_tagging(&hybrid, 20), Some(Forward::Tagged(20)));
/// assert_eq!(egress_tagging(&hybrid, 30), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortVlans {
    /// Access/native VLAN (untagged frames), 0 for none.
    pub vlan: u16,
    /// Tagged VLANs.
    pub trunk: Vec<u16>,
}

impl PortVlans {
    /// Whether frames of `vlan` may enter or leave this port (0: untagged, no VLAN).
    pub fn carries(&self, vlan: u16) -> bool {
        self.vlan == vlan || (vlan != 0 && self.trunk.contains(&vlan))
    }
}

/// How a frame of VLAN `vlan` leaves `port`: untagged in its access VLAN
/// (or, with VLAN 0, on a port without one), tagged on its trunk VLANs, and
/// not at all (`None`) in a VLAN the port does not carry.
pub fn egress_tagging(port: &PortVlans, vlan: u16) -> Option<Forward> {
    if port.vlan == vlan {
        Some(Forward::Untagged)
    } else if port.carries(vlan) {
        Some(Forward::Tagged(vlan))
    } else {
        None
    }
}

/// One bridged interface, resolved against one generation.
#[derive(Clone, Debug, Default)]
struct SideTopo {
    port: Option<PortId>,
    vlans: PortVlans,
    routed: Option<InterfaceId>,
}

/// Where a frame goes (see [`Topology::path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// It can cross: decide it in `context`; when permitted it leaves as `forward` says.
    Cross {
        /// The policy context of the frame.
        context: Context,
        /// Its tagging on the egress port ([`Forward::AsReceived`] on a monitor).
        forward: Forward,
    },
    /// It cannot cross: the engine denies it at this stage (`context`: its
    /// interface is no `[[port]]`; `vlan-filter`: its VLAN has no way across).
    Blocked(Stage),
}

/// The bridged interfaces of one generation.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    sides: Vec<SideTopo>,
    svi: HashMap<u16, InterfaceId>,
}

impl Topology {
    /// Resolves `ifaces` (OS interface names) against a generation's policy and rule set.
    ///
    /// Also returns one message per interface that is no `[[port]]` of it (its frames are denied).
    pub fn build(policy: &Policy, rs: &RuleSet, ifaces: &[String]) -> (Topology, Vec<String>) {
        let mut problems = Vec::new();
        let mut svi = HashMap::new();
        let mut routed_by_port = HashMap::new();
        for i in &rs.interfaces {
            let Some(id) = policy.interface(&i.name) else {
                continue;
            };
            match &i.target {
                InterfaceTarget::Vlan(v) => {
                    svi.insert(*v, id);
                }
                InterfaceTarget::Port(p) => {
                    routed_by_port.insert(p.as_str(), id);
                }
            }
        }
        let sides = ifaces
            .iter()
            .map(|ifname| {
                let def = rs
                    .ports
                    .iter()
                    .find(|p| p.device.as_deref() == Some(ifname.as_str()))
                    .or_else(|| rs.ports.iter().find(|p| p.device.is_none() && p.name == *ifname));
                match def {
                    Some(p) => SideTopo {
                        port: policy.port(&p.name),
                        vlans: PortVlans {
                            vlan: p.vlan.unwrap_or(0),
                            trunk: p.trunk.clone(),
                        },
                        routed: routed_by_port.get(p.name.as_str()).copied(),
                    },
                    None => {
                        problems.push(format!(
                            "interface {ifname} is no [[port]] of this rule set (by name or device): \
                             its frames are denied"
                        ));
                        SideTopo::default()
                    }
                }
            })
            .collect();
        (Topology { sides, svi }, problems)
    }

    /// Where a frame that entered on side `ingress` (parsed as it was on the
    /// wire) goes: its policy context and egress tagging, or the stage at
    /// which it is blocked.
    #[inline]
    pub fn path(&self, ingress: usize, key: &FlowKey) -> Path {
        let Some(side) = self.sides.get(ingress) else {
            return Path::Blocked(Stage::Context);
        };
        let Some(port) = side.port else {
            return Path::Blocked(Stage::Context);
        };
        let Some(out) = self
            .sides
            .get(1 - ingress.min(1))
            .filter(|_| self.sides.len() == 2)
        else {
            // Monitor: the frame goes nowhere, so it is not routed.
            return Path::Cross {
                context: Context { port, route: None },
                forward: Forward::AsReceived,
            };
        };
        let vid = key.outer_vlan & 0x0fff;
        let vlan = if key.vlan_count > 0 && vid != 0 {
            vid
        } else {
            side.vlans.vlan
        };
        let out_carries = out.vlans.carries(vlan);
        if out_carries && side.routed.is_none() && out.routed.is_none() {
            return match egress_tagging(&out.vlans, vlan) {
                Some(forward) => Path::Cross {
                    context: Context { port, route: None },
                    forward,
                },
                None => Path::Blocked(Stage::VlanFilter),
            };
        }
        let out_vlan = if out_carries { vlan } else { out.vlans.vlan };
        let from = side.routed.or_else(|| self.svi.get(&vlan).copied());
        let to = out.routed.or_else(|| self.svi.get(&out_vlan).copied());
        let (Some(from), Some(to)) = (from, to) else {
            return Path::Blocked(Stage::VlanFilter);
        };
        // A routed port sends untagged frames unless it carries the VLAN tagged.
        let forward = egress_tagging(&out.vlans, out_vlan).unwrap_or(Forward::Untagged);
        if from == to {
            return Path::Blocked(Stage::VlanFilter);
        }
        Path::Cross {
            context: Context {
                port,
                route: Some(Route { from, to }),
            },
            forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::policy::Verdict;

    const ETHERTYPE_IPV4: u16 = 0x0800;
    const ETHERTYPE_IPV6: u16 = 0x86dd;

    fn topo(text: &str, ifaces: &[&str]) -> (Topology, Policy, Vec<String>) {
        let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
        let policy = Policy::compile(&loaded.ruleset).unwrap();
        let names: Vec<String> = ifaces.iter().map(|s| s.to_string()).collect();
        let (t, problems) = Topology::build(&policy, &loaded.ruleset, &names);
        (t, policy, problems)
    }

    fn cross(port: PortId, route: Option<Route>, forward: Forward) -> Path {
        Path::Cross {
            context: Context { port, route },
            forward,
        }
    }

    const OFFICE: &str = r#"
version = 1
[[port]]
name = "lan1"
vlan = 10
trunk = [20]
[[port]]
name = "lan2"
device = "veth-l2"
vlan = 10
[[port]]
name = "wan0"
device = "eth1"
[[interface]]
name = "lan"
vlan = 10
[[interface]]
name = "wan"
port = "wan0"
"#;

    fn udp4() -> FlowKey {
        let mut k = FlowKey::new().with_ipv4([10, 0, 10, 1], [10, 0, 10, 2]);
        k.ethertype = ETHERTYPE_IPV4;
        k
    }

    fn arp() -> FlowKey {
        let mut k = FlowKey::new();
        k.ethertype = 0x0806;
        k.present.0 |= palisade_packet::Present::ETHERTYPE;
        k
    }

    /// The egress tagging decision, for every kind of port: access, trunk
    /// without a native VLAN, trunk with one (hybrid), a port without VLANs.
    #[test]
    fn egress_tagging_for_every_port_kind() {
        let access = PortVlans {
            vlan: 10,
            trunk: vec![],
        };
        let trunk = PortVlans {
            vlan: 0,
            trunk: vec![10, 20],
        };
        let hybrid = PortVlans {
            vlan: 10,
            trunk: vec![20, 30],
        };
        let plain = PortVlans::default();
        let cases: [(&PortVlans, u16, Option<Forward>); 14] = [
            (&access, 10, Some(Forward::Untagged)),
            (&access, 20, None),
            (&access, 0, None),
            (&trunk, 10, Some(Forward::Tagged(10))),
            (&trunk, 20, Some(Forward::Tagged(20))),
            (&trunk, 30, None),
            (&trunk, 0, Some(Forward::Untagged)),
            (&hybrid, 10, Some(Forward::Untagged)),
            (&hybrid, 20, Some(Forward::Tagged(20))),
            (&hybrid, 30, Some(Forward::Tagged(30))),
            (&hybrid, 40, None),
            (&plain, 0, Some(Forward::Untagged)),
            (&plain, 10, None),
            (&plain, 4095, None),
        ];
        for (port, vlan, want) in cases {
            assert_eq!(egress_tagging(port, vlan), want, "{port:?} vlan {vlan}");
        }
    }

    #[test]
    fn same_vlan_is_switched_by_device_name() {
        let (t, p, problems) = topo(OFFICE, &["lan1", "veth-l2"]);
        assert!(problems.is_empty());
        let (lan1, lan2) = (p.port("lan1").unwrap(), p.port("lan2").unwrap());
        let untagged = udp4();
        assert_eq!(t.path(0, &untagged), cross(lan1, None, Forward::Untagged));
        assert_eq!(t.path(1, &untagged), cross(lan2, None, Forward::Untagged));
        // Tagged with the native VLAN: leaves lan2 (access 10) untagged.
        assert_eq!(
            t.path(0, &untagged.with_vlan(10)),
            cross(lan1, None, Forward::Untagged)
        );
        // VLAN 20 is not carried by lan2 and has no SVI: it cannot cross.
        assert_eq!(
            t.path(0, &untagged.with_vlan(20)),
            Path::Blocked(Stage::VlanFilter)
        );
        // Untagged from lan2 into lan1 (native 10): untagged.
        assert_eq!(t.path(1, &arp()), cross(lan2, None, Forward::Untagged));
    }

    #[test]
    fn trunks_keep_tags_and_qinq_keeps_both() {
        let rules = r#"
version = 1
[[port]]
name = "a"
trunk = [10, 20]
[[port]]
name = "b"
vlan = 30
trunk = [10, 20]
"#;
        let (t, p, _) = topo(rules, &["a", "b"]);
        let (a, b) = (p.port("a").unwrap(), p.port("b").unwrap());
        for vid in [10, 20] {
            assert_eq!(
                t.path(0, &udp4().with_vlan(vid)),
                cross(a, None, Forward::Tagged(vid))
            );
            assert_eq!(
                t.path(1, &udp4().with_vlan(vid)),
                cross(b, None, Forward::Tagged(vid))
            );
        }
        // QinQ: the outer tag decides; the inner one is not touched by any tagging.
        let mut qinq = udp4().with_vlan(20);
        qinq.vlan_count = 2;
        qinq.inner_vlan = 99;
        assert_eq!(t.path(0, &qinq), cross(a, None, Forward::Tagged(20)));
        // b's untagged frames are in VLAN 30, which a does not carry.
        assert_eq!(t.path(1, &udp4()), Path::Blocked(Stage::VlanFilter));
        // A VLAN neither carries: blocked; one only b carries is left to the engine's
        // ingress vlan-filter (which may let a rescue rule through first).
        assert_eq!(t.path(0, &udp4().with_vlan(40)), Path::Blocked(Stage::VlanFilter));
        assert_eq!(t.path(1, &udp4().with_vlan(30)), Path::Blocked(Stage::VlanFilter));
        assert_eq!(
            t.path(0, &udp4().with_vlan(30)),
            cross(a, None, Forward::Untagged)
        );
    }

    #[test]
    fn routed_port_routes_ip_and_switches_the_rest() {
        let (t, p, _) = topo(OFFICE, &["lan1", "eth1"]);
        let lan = p.interface("lan").unwrap();
        let wan = p.interface("wan").unwrap();
        let (lan1, wan0) = (p.port("lan1").unwrap(), p.port("wan0").unwrap());
        let k = FlowKey::new().with_ipv4([10, 0, 10, 1], [198, 51, 100, 7]);
        let mut k6 = k;
        k6.ethertype = ETHERTYPE_IPV6;
        let mut k4 = k;
        k4.ethertype = ETHERTYPE_IPV4;
        let out = Some(Route { from: lan, to: wan });
        assert_eq!(t.path(0, &k4), cross(lan1, out, Forward::Untagged));
        assert_eq!(t.path(0, &k6), cross(lan1, out, Forward::Untagged));
        // Back in: VLAN 10 is lan1's access VLAN, so untagged.
        let back = Some(Route { from: wan, to: lan });
        assert_eq!(t.path(1, &k4), cross(wan0, back, Forward::Untagged));
        // ARP crosses where IP would, on the same route (the policy skips
        // Routed ACLs for it; see `non_ip_meets_vlan_acls_not_routed_acls`).
        assert_eq!(t.path(0, &arp()), cross(lan1, out, Forward::Untagged));
        assert_eq!(t.path(1, &arp()), cross(wan0, back, Forward::Untagged));
        // VLAN 20 (lan1's trunk) has no SVI: no way to the wan.
        assert_eq!(t.path(0, &k4.with_vlan(20)), Path::Blocked(Stage::VlanFilter));
    }

    #[test]
    fn routed_svi_to_trunk_leaves_tagged() {
        let rules = r#"
version = 1
[[port]]
name = "a"
vlan = 10
[[port]]
name = "b"
trunk = [20]
vlan = 30
[[interface]]
name = "v10"
vlan = 10
[[interface]]
name = "v30"
vlan = 30
"#;
        let (t, p, _) = topo(rules, &["a", "b"]);
        let (v10, v30) = (p.interface("v10").unwrap(), p.interface("v30").unwrap());
        let k = udp4();
        // a's VLAN 10 is not on b: routed into b's access VLAN 30, untagged.
        assert_eq!(
            t.path(0, &k),
            cross(
                p.port("a").unwrap(),
                Some(Route { from: v10, to: v30 }),
                Forward::Untagged
            )
        );
        // VLAN 20 from b has no SVI: blocked.
        assert_eq!(t.path(1, &k.with_vlan(20)), Path::Blocked(Stage::VlanFilter));
    }

    #[test]
    fn non_ip_meets_vlan_acls_not_routed_acls() {
        // ARP routed from VLAN 10 into VLAN 30: the Routed ACLs (deny all)
        // do not apply to it, VLAN 30's ACL (deny ARP) does, on the way out.
        let rules = r#"
version = 1
[[port]]
name = "a"
vlan = 10
[[port]]
name = "b"
vlan = 30
[[interface]]
name = "v10"
vlan = 10
[[interface]]
name = "v30"
vlan = 30
[[acl]]
name = "racl"
default = "deny"
[[acl]]
name = "no-arp"
default = "permit"
  [[acl.rule]]
  id = "arp"
  action = "deny"
  ethertype = "arp"
[[bind]]
acl = "racl"
interface = "v10"
direction = "in"
[[bind]]
acl = "no-arp"
vlan = 30
"#;
        let (t, p, _) = topo(rules, &["a", "b"]);
        let arp_a_to_b = t.path(0, &arp());
        let Path::Cross { context, .. } = arp_a_to_b else {
            panic!("ARP must cross like IP: {arp_a_to_b:?}");
        };
        let d = p.evaluate(&arp(), &context);
        assert_eq!((d.verdict, d.stage), (Verdict::Deny, Stage::VlanAclOut));
        assert_eq!(p.rule_name(&d), "arp");
        // The other way, VLAN 30's ACL is the ingress one: denied there.
        let Path::Cross { context, .. } = t.path(1, &arp()) else {
            panic!("ARP must cross like IP");
        };
        let d = p.evaluate(&arp(), &context);
        assert_eq!((d.verdict, d.stage), (Verdict::Deny, Stage::VlanAclIn));
        // IP from a to b meets the Routed ACL and is denied there.
        let Path::Cross { context, .. } = t.path(0, &udp4()) else {
            panic!("IP must be routed");
        };
        let d = p.evaluate(&udp4(), &context);
        assert_eq!((d.verdict, d.stage), (Verdict::Deny, Stage::RoutedAclIn));
    }

    #[test]
    fn unknown_interface_is_reported_and_blocked() {
        let (t, _, problems) = topo(OFFICE, &["lan1", "nosuch0"]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("nosuch0"), "{problems:?}");
        assert_eq!(t.path(1, &FlowKey::new()), Path::Blocked(Stage::Context));
        assert_eq!(t.path(7, &FlowKey::new()), Path::Blocked(Stage::Context));
        // A monitor has no egress: never routed, frames kept as received.
        let (m, p, _) = topo(OFFICE, &["eth1"]);
        assert_eq!(
            m.path(0, &udp4()),
            cross(p.port("wan0").unwrap(), None, Forward::AsReceived)
        );
    }
}
