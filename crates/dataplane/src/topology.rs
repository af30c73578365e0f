//! Where a frame stands in the rule set: which `[[port]]` it entered, and
//! whether crossing the bridge is switching within a VLAN or routing between
//! two L3 interfaces (so that Routed ACLs apply).
//!
//! Each bridged interface is the `[[port]]` of the same name, or the one whose
//! `device` names it. A frame's VLAN is its outer tag, or for an untagged
//! frame its port's access VLAN. When the other port carries that VLAN and
//! neither port is a routed port, the frame is switched (no route). Otherwise
//! it is routed from the ingress L3 interface (the routed port, else the SVI
//! of its VLAN) to the egress one; when either is missing the frame cannot
//! cross at all and is dropped, as a switch keeps VLANs apart.
//!
//! A topology is built once per generation (its ids belong to that
//! generation) and then answered without allocating.

use std::collections::HashMap;

use palisade_engine::policy::{Context, InterfaceId, Policy, PortId, Route};
use palisade_packet::FlowKey;
use palisade_rules::{InterfaceTarget, RuleSet};

/// One bridged interface, resolved against one generation.
#[derive(Clone, Debug, Default)]
struct SideTopo {
    port: Option<PortId>,
    vlan: u16,
    trunk: Vec<u16>,
    routed: Option<InterfaceId>,
}

impl SideTopo {
    fn carries(&self, vlan: u16) -> bool {
        self.vlan == vlan || self.trunk.contains(&vlan)
    }
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
                        vlan: p.vlan.unwrap_or(0),
                        trunk: p.trunk.clone(),
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

    /// The policy context of a frame that entered on side `ingress`, or `None`
    /// when it cannot cross (unknown port, VLANs without L3 interfaces).
    #[inline]
    pub fn context(&self, ingress: usize, key: &FlowKey) -> Option<Context> {
        let side = self.sides.get(ingress)?;
        let port = side.port?;
        let Some(out) = self
            .sides
            .get(1 - ingress.min(1))
            .filter(|_| self.sides.len() == 2)
        else {
            // Monitor: the frame goes nowhere, so it is not routed.
            return Some(Context { port, route: None });
        };
        let vlan = if key.vlan_count > 0 && key.outer_vlan != 0 {
            key.outer_vlan
        } else {
            side.vlan
        };
        let out_carries = out.carries(vlan);
        if out_carries && side.routed.is_none() && out.routed.is_none() {
            return Some(Context { port, route: None });
        }
        let from = side.routed.or_else(|| self.svi.get(&vlan).copied())?;
        let out_vlan = if out_carries { vlan } else { out.vlan };
        let to = out.routed.or_else(|| self.svi.get(&out_vlan).copied())?;
        (from != to).then_some(Context {
            port,
            route: Some(Route { from, to }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(text: &str, ifaces: &[&str]) -> (Topology, Policy, Vec<String>) {
        let loaded = palisade_rules::parse("t.toml", text.as_bytes()).unwrap();
        let policy = Policy::compile(&loaded.ruleset).unwrap();
        let names: Vec<String> = ifaces.iter().map(|s| s.to_string()).collect();
        let (t, problems) = Topology::build(&policy, &loaded.ruleset, &names);
        (t, policy, problems)
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

    #[test]
    fn same_vlan_is_switched_by_device_name() {
        let (t, p, problems) = topo(OFFICE, &["lan1", "veth-l2"]);
        assert!(problems.is_empty());
        let untagged = FlowKey::new().with_ipv4([10, 0, 10, 1], [10, 0, 10, 2]);
        let ctx = t.context(0, &untagged).unwrap();
        assert_eq!(ctx.port, p.port("lan1").unwrap());
        assert_eq!(ctx.route, None);
        assert_eq!(t.context(1, &untagged).unwrap().port, p.port("lan2").unwrap());
        // VLAN 20 is not carried by lan2 and has no SVI: it cannot cross.
        assert_eq!(t.context(0, &untagged.with_vlan(20)), None);
    }

    #[test]
    fn routed_port_routes_between_l3_interfaces() {
        let (t, p, _) = topo(OFFICE, &["lan1", "eth1"]);
        let k = FlowKey::new().with_ipv4([10, 0, 10, 1], [198, 51, 100, 7]);
        let lan = p.interface("lan").unwrap();
        let wan = p.interface("wan").unwrap();
        assert_eq!(
            t.context(0, &k).unwrap().route,
            Some(Route { from: lan, to: wan })
        );
        let back = t.context(1, &k).unwrap();
        assert_eq!(back.port, p.port("wan0").unwrap());
        assert_eq!(back.route, Some(Route { from: wan, to: lan }));
    }

    #[test]
    fn unknown_interface_is_reported_and_denied() {
        let (t, _, problems) = topo(OFFICE, &["lan1", "nosuch0"]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("nosuch0"), "{problems:?}");
        assert_eq!(t.context(1, &FlowKey::new()), None);
        // A monitor has no egress: never routed.
        let (m, p, _) = topo(OFFICE, &["eth1"]);
        assert_eq!(
            m.context(0, &FlowKey::new()),
            Some(Context {
                port: p.port("wan0").unwrap(),
                route: None
            })
        );
    }
}
