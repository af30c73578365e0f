//! What one rule matches: the definition of Palisade's match semantics.
//!
//! Every field is a constraint; an empty list or `None` is "any". The rules:
//!
//! * A rule with any L3/L4 constraint (family, addresses, protocol, ports,
//!   ICMP, TCP flags, fragment, DSCP) matches only frames with a parsed IP
//!   header. A rule with none of them also matches non-IP frames (ARP, ...).
//! * A prefix matches only addresses of its own family; a list matches when
//!   any of its prefixes does.
//! * Port constraints match only keys that carry ports. Non-first fragments
//!   never carry ports, so they can never match a port-specific rule.
//! * ICMP type/code match only keys that carry ICMP/ICMPv6 type and code;
//!   TCP flags only keys that carry TCP flags: `(flags & mask) == value`.
//! * Protocol, ICMP type and ICMP code take one value or a list of several
//!   (`protos`, `icmp_types`, `icmp_codes`): the key's value must be one of them.
//! * `vlan` matches the key's `outer_vlan` (the policy stamps the port's
//!   access VLAN into untagged keys).
//! * Set requirements ([`SetMatch`]) match the key's `set_bits`, written by
//!   [`crate::Membership::fill`]; like a prefix or port list, a set test
//!   matches only keys that carry its field (an IP header, ports), for "in"
//!   and "not in" alike.
//! * `state` matches the key's `flow_state`, which a flow tracker stamps
//!   before classification; an untracked key matches no `state` rule.

use alloc::vec::Vec;

use palisade_packet::{FlowKey, FlowStates, FragmentState, Present};

use crate::set::SetMatch;

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The version nibble of this family's header.
    ///
    /// ```
    /// assert_eq!(palisade_classify::IpFamily::V6.version(), 6);
    /// ```
    pub const fn version(self) -> u8 {
        match self {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        }
    }

    /// Address width in bits.
    ///
    /// ```
    /// assert_eq!(palisade_classify::IpFamily::V4.bits(), 32);
    /// ```
    pub const fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

/// An address prefix, in the encoding of [`FlowKey::src_ip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Address family.
    pub family: IpFamily,
    /// The prefix's address; bits beyond `len` are zero.
    pub addr: u128,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub len: u8,
}

impl Prefix {
    /// An IPv4 prefix; host bits beyond `len` are cleared, `len` is capped at 32.
    ///
    /// ```
    /// let p = palisade_classify::Prefix::v4([10, 1, 2, 3], 8);
    /// assert_eq!(p.addr, 0x0a00_0000);
    /// ```
    pub const fn v4(addr: [u8; 4], len: u8) -> Self {
        let len = if len > 32 { 32 } else { len };
        let raw = u32::from_be_bytes(addr) as u128;
        Prefix {
            family: IpFamily::V4,
            addr: raw & Self::mask_of(IpFamily::V4, len),
            len,
        }
    }

    /// An IPv6 prefix from its 128-bit value; host bits are cleared, `len` capped at 128.
    ///
    /// ```
    /// let p = palisade_classify::Prefix::v6(0x2001_0db8 << 96 | 1, 32);
    /// assert_eq!(p.addr, 0x2001_0db8 << 96);
    /// ```
    pub const fn v6(addr: u128, len: u8) -> Self {
        let len = if len > 128 { 128 } else { len };
        Prefix {
            family: IpFamily::V6,
            addr: addr & Self::mask_of(IpFamily::V6, len),
            len,
        }
    }

    /// The network mask of a prefix of `len` bits in `family`, in key encoding.
    ///
    /// ```
    /// use palisade_classify::{IpFamily, Prefix};
    /// assert_eq!(Prefix::mask_of(IpFamily::V4, 24), 0xffff_ff00);
    /// assert_eq!(Prefix::mask_of(IpFamily::V6, 0), 0);
    /// ```
    pub const fn mask_of(family: IpFamily, len: u8) -> u128 {
        let bits = family.bits() as u32;
        let len = if len as u32 > bits { bits } else { len as u32 };
        if len == 0 {
            0
        } else {
            let ones: u128 = if bits == 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            (ones >> (bits - len)) << (bits - len)
        }
    }

    /// The mask of this prefix.
    ///
    /// ```
    /// assert_eq!(palisade_classify::Prefix::v4([0, 0, 0, 0], 0).mask(), 0);
    /// ```
    pub const fn mask(&self) -> u128 {
        Self::mask_of(self.family, self.len)
    }

    /// Lowest and highest address covered.
    ///
    /// ```
    /// let p = palisade_classify::Prefix::v4([10, 0, 0, 0], 24);
    /// assert_eq!(p.range(), (0x0a00_0000, 0x0a00_00ff));
    /// ```
    pub const fn range(&self) -> (u128, u128) {
        let full: u128 = if self.family.bits() == 128 {
            u128::MAX
        } else {
            (1u128 << self.family.bits()) - 1
        };
        (self.addr, self.addr | (full & !self.mask()))
    }

    /// Whether `addr` of `family` lies inside the prefix.
    ///
    /// ```
    /// use palisade_classify::{IpFamily, Prefix};
    /// let p = Prefix::v4([10, 0, 0, 0], 8);
    /// assert!(p.contains(IpFamily::V4, 0x0a01_0203));
    /// assert!(!p.contains(IpFamily::V6, 0x0a01_0203));
    /// ```
    #[inline]
    pub const fn contains(&self, family: IpFamily, addr: u128) -> bool {
        matches!(
            (self.family, family),
            (IpFamily::V4, IpFamily::V4) | (IpFamily::V6, IpFamily::V6)
        ) && addr & self.mask() == self.addr
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Lowest port.
    pub lo: u16,
    /// Highest port (>= `lo`).
    pub hi: u16,
}

impl PortRange {
    /// A range of one port.
    ///
    /// ```
    /// assert!(palisade_classify::PortRange::single(53).contains(53));
    /// ```
    pub const fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    /// Whether `port` lies in the range.
    ///
    /// ```
    /// let r = palisade_classify::PortRange { lo: 1024, hi: 65535 };
    /// assert!(!r.contains(80));
    /// ```
    #[inline]
    pub const fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Whether the range is 0-65535.
    ///
    /// ```
    /// assert!(palisade_classify::PortRange { lo: 0, hi: 65535 }.is_full());
    /// ```
    pub const fn is_full(&self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

/// A TCP flags constraint: matches when `(flags & mask) == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpFlagsMatch {
    /// Required values of the bits in `mask`.
    pub value: u16,
    /// Which bits are checked.
    pub mask: u16,
}

/// A fragment-state constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FragmentMatch {
    /// Not a fragment.
    None,
    /// A first fragment (offset 0, more-fragments set).
    First,
    /// A non-first fragment (offset > 0).
    NonFirst,
    /// Any fragment, first or not.
    Any,
}

/// What one rule matches. `RuleMatch::any()` matches every frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct RuleMatch {
    /// Required IP family, if any.
    pub family: Option<IpFamily>,
    /// Source prefixes (empty = any).
    pub src: Vec<Prefix>,
    /// Destination prefixes (empty = any).
    pub dst: Vec<Prefix>,
    /// L4 protocol number.
    pub proto: Option<u8>,
    /// Source port ranges (empty = any).
    pub src_port: Vec<PortRange>,
    /// Destination port ranges (empty = any).
    pub dst_port: Vec<PortRange>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// TCP flags value/mask.
    pub tcp_flags: Option<TcpFlagsMatch>,
    /// VLAN ids (empty = any).
    pub vlan: Vec<u16>,
    /// Fragment state.
    pub fragment: Option<FragmentMatch>,
    /// DSCP values (empty = any).
    pub dscp: Vec<u8>,
    /// Ethertype after the last VLAN tag.
    pub ethertype: Option<u16>,
    /// Protocols, when the rule lists several (`proto = ["tcp", "udp"]`): the
    /// key's protocol must be one of them. Empty = no list. One value is
    /// always written in `proto` instead, so a constraint has one form.
    pub protos: Vec<u8>,
    /// ICMP / ICMPv6 types, when the rule lists several: the key's type must
    /// be one of them. Empty = no list (see `protos`).
    pub icmp_types: Vec<u8>,
    /// ICMP / ICMPv6 codes, when the rule lists several. Empty = no list.
    pub icmp_codes: Vec<u8>,
    /// Set requirements (none by default): bits of [`FlowKey::set_bits`].
    pub sets: SetMatch,
    /// Flow states the frame must be in (`None` = any, untracked included).
    pub state: Option<FlowStates>,
}

impl RuleMatch {
    /// A rule that matches every frame.
    ///
    /// ```
    /// use palisade_packet::FlowKey;
    /// assert!(palisade_classify::RuleMatch::any().matches(&FlowKey::new()));
    /// ```
    pub const fn any() -> Self {
        RuleMatch {
            family: None,
            src: Vec::new(),
            dst: Vec::new(),
            proto: None,
            src_port: Vec::new(),
            dst_port: Vec::new(),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: None,
            vlan: Vec::new(),
            fragment: None,
            dscp: Vec::new(),
            ethertype: None,
            protos: Vec::new(),
            icmp_types: Vec::new(),
            icmp_codes: Vec::new(),
            sets: SetMatch {
                member: 0,
                non_member: 0,
                needs_ports: false,
            },
            state: None,
        }
    }

    /// Whether the rule constrains the ICMP / ICMPv6 type or code (one value or a list).
    ///
    /// ```
    /// let mut r = palisade_classify::RuleMatch::any();
    /// r.icmp_types = vec![0, 8];
    /// assert!(r.matches_icmp());
    /// ```
    pub fn matches_icmp(&self) -> bool {
        self.icmp_type.is_some()
            || self.icmp_code.is_some()
            || !self.icmp_types.is_empty()
            || !self.icmp_codes.is_empty()
    }

    /// Whether the rule constrains anything at L3 or above (and so needs an IP header).
    ///
    /// ```
    /// let mut r = palisade_classify::RuleMatch::any();
    /// assert!(!r.needs_ip());
    /// r.proto = Some(6);
    /// assert!(r.needs_ip());
    /// ```
    pub fn needs_ip(&self) -> bool {
        self.family.is_some()
            || !self.src.is_empty()
            || !self.dst.is_empty()
            || self.proto.is_some()
            || !self.protos.is_empty()
            || !self.src_port.is_empty()
            || !self.dst_port.is_empty()
            || self.matches_icmp()
            || self.tcp_flags.is_some()
            || self.fragment.is_some()
            || !self.dscp.is_empty()
            || !self.sets.is_any()
    }

    /// The reference semantics: whether this rule matches `key`.
    ///
    /// ```
    /// use palisade_classify::{Prefix, RuleMatch};
    /// use palisade_packet::FlowKey;
    /// let mut r = RuleMatch::any();
    /// r.src = vec![Prefix::v4([10, 0, 0, 0], 8)];
    /// assert!(r.matches(&FlowKey::new().with_ipv4([10, 9, 9, 9], [1, 1, 1, 1])));
    /// assert!(!r.matches(&FlowKey::new().with_ipv6(1, 2)));
    /// ```
    pub fn matches(&self, key: &FlowKey) -> bool {
        let present = key.present;
        if let Some(states) = self.state {
            if !states.contains(key.flow_state) {
                return false;
            }
        }
        if let Some(et) = self.ethertype {
            if !present.has(Present::ETHERTYPE) || key.ethertype != et {
                return false;
            }
        }
        if !self.vlan.is_empty() && !self.vlan.contains(&key.outer_vlan) {
            return false;
        }
        if !self.needs_ip() {
            return true;
        }
        let family = match key.ip_family() {
            Some(4) => IpFamily::V4,
            Some(6) => IpFamily::V6,
            _ => return false,
        };
        if let Some(f) = self.family {
            if f != family {
                return false;
            }
        }
        if !self.src.is_empty() && !self.src.iter().any(|p| p.contains(family, key.src_ip)) {
            return false;
        }
        if !self.dst.is_empty() && !self.dst.iter().any(|p| p.contains(family, key.dst_ip)) {
            return false;
        }
        if !self.sets.is_any() {
            if self.sets.needs_ports && !present.has(Present::PORTS) {
                return false;
            }
            if !self.sets.holds(key.set_bits) {
                return false;
            }
        }
        if let Some(proto) = self.proto {
            if !present.has(Present::L4_PROTO) || key.l4_proto != proto {
                return false;
            }
        }
        if !self.protos.is_empty()
            && (!present.has(Present::L4_PROTO) || !self.protos.contains(&key.l4_proto))
        {
            return false;
        }
        if !self.src_port.is_empty() || !self.dst_port.is_empty() {
            let Some((sp, dp)) = key.ports() else {
                return false;
            };
            if !self.src_port.is_empty() && !self.src_port.iter().any(|r| r.contains(sp)) {
                return false;
            }
            if !self.dst_port.is_empty() && !self.dst_port.iter().any(|r| r.contains(dp)) {
                return false;
            }
        }
        if self.matches_icmp() {
            let Some((t, c)) = key.icmp() else {
                return false;
            };
            if self.icmp_type.is_some_and(|want| want != t) || self.icmp_code.is_some_and(|want| want != c) {
                return false;
            }
            if (!self.icmp_types.is_empty() && !self.icmp_types.contains(&t))
                || (!self.icmp_codes.is_empty() && !self.icmp_codes.contains(&c))
            {
                return false;
            }
        }
        if let Some(f) = self.tcp_flags {
            if !present.has(Present::TCP_FLAGS) || key.tcp_flags & f.mask != f.value {
                return false;
            }
        }
        if let Some(frag) = self.fragment {
            let ok = match frag {
                FragmentMatch::None => key.fragment == FragmentState::None,
                FragmentMatch::First => key.fragment == FragmentState::First,
                FragmentMatch::NonFirst => key.fragment == FragmentState::NonFirst,
                FragmentMatch::Any => key.fragment != FragmentState::None,
            };
            if !ok {
                return false;
            }
        }
        if !self.dscp.is_empty() && (!present.has(Present::DSCP) || !self.dscp.contains(&key.dscp)) {
            return false;
        }
        true
    }

    /// Heap bytes held by the rule's lists (for memory reports).
    ///
    /// ```
    /// assert_eq!(palisade_classify::RuleMatch::any().heap_bytes(), 0);
    /// ```
    pub fn heap_bytes(&self) -> usize {
        self.src.capacity() * core::mem::size_of::<Prefix>()
            + self.dst.capacity() * core::mem::size_of::<Prefix>()
            + (self.src_port.capacity() + self.dst_port.capacity()) * core::mem::size_of::<PortRange>()
            + self.vlan.capacity() * 2
            + self.dscp.capacity()
            + self.protos.capacity()
            + self.icmp_types.capacity()
            + self.icmp_codes.capacity()
    }
}
