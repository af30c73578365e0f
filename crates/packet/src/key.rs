//! The fixed-size flow key every classifier reads.

use crate::flow_state::FlowState;

/// The layer at which a parse stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// The Ethernet II header (or 802.3 length/LLC header).
    Ethernet,
    /// An 802.1Q / 802.1ad VLAN tag.
    Vlan,
    /// The IPv4 header.
    Ipv4,
    /// The fixed IPv6 header.
    Ipv6,
    /// An IPv6 extension header (hop-by-hop, routing, destination options, AH).
    Ipv6Extension,
    /// The IPv4 fragment fields or the IPv6 Fragment header.
    Fragment,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
    /// The ICMP header.
    Icmp,
    /// The ICMPv6 header.
    Icmpv6,
}

impl Layer {
    /// A short lowercase name, as used in `palisade inspect`'s `status` column.
    ///
    /// ```
    /// assert_eq!(palisade_packet::Layer::Ipv6Extension.name(), "ipv6-ext");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Extension => "ipv6-ext",
            Layer::Fragment => "fragment",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
            Layer::Icmpv6 => "icmpv6",
        }
    }
}

/// How far a frame could be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ParseStatus {
    /// Every header the key describes was complete and consistent.
    #[default]
    Ok,
    /// The frame ended inside this layer's header.
    Truncated(Layer),
    /// This layer's header is inconsistent (bad version, bad length field, ...).
    Malformed(Layer),
}

impl ParseStatus {
    /// True for [`ParseStatus::Ok`].
    ///
    /// ```
    /// assert!(palisade_packet::ParseStatus::Ok.is_ok());
    /// ```
    pub const fn is_ok(self) -> bool {
        matches!(self, ParseStatus::Ok)
    }
}

/// Fragment state of the outer IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FragmentState {
    /// Not a fragment (an IPv6 atomic fragment, offset 0 and M 0, counts as not a fragment).
    #[default]
    None,
    /// Offset 0 with more-fragments set: carries the L4 header.
    First,
    /// Offset > 0: carries no L4 header, so never any ports.
    NonFirst,
}

/// Bit set saying which optional fields of a [`FlowKey`] hold a value.
///
/// A field whose bit is clear is absent (an empty cell in `palisade inspect`)
/// and its value in the key is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Present(pub u16);

impl Present {
    /// The type after the last VLAN tag (absent for 802.3 length frames).
    pub const ETHERTYPE: u16 = 1 << 0;
    /// `ip_version` holds the version nibble of an IP header.
    pub const IP_VERSION: u16 = 1 << 1;
    /// `src_ip` / `dst_ip` hold addresses.
    pub const ADDRS: u16 = 1 << 2;
    /// `l4_proto` holds the protocol reached.
    pub const L4_PROTO: u16 = 1 << 3;
    /// `src_port` / `dst_port` hold TCP or UDP ports.
    pub const PORTS: u16 = 1 << 4;
    /// `icmp_type` / `icmp_code` hold ICMP or ICMPv6 type and code.
    pub const ICMP: u16 = 1 << 5;
    /// `tcp_flags` holds the TCP flags.
    pub const TCP_FLAGS: u16 = 1 << 6;
    /// `dscp` holds the DSCP of the outer IP header.
    pub const DSCP: u16 = 1 << 7;
    /// The first fragment is too short to hold the L4 ports (a fragment attack).
    pub const TINY_FIRST_FRAGMENT: u16 = 1 << 8;

    /// Whether every bit of `bits` is set.
    ///
    /// ```
    /// use palisade_packet::Present;
    /// assert!(Present(Present::PORTS | Present::ADDRS).has(Present::PORTS));
    /// ```
    pub const fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
}

/// The fixed-size, `Copy` description of one frame that classifiers read.
///
/// IP addresses are stored as `u128` in network-order numeric form: an IPv4
/// address `a.b.c.d` is `a<<24 | b<<16 | c<<8 | d` (upper 96 bits zero), an
/// IPv6 address is its 128-bit big-endian value. `ip_version` says which.
///
/// `outer_vlan` is also the VLAN the policy classifies on: for an untagged
/// frame the policy stamps the ingress port's access VLAN into a copy of the
/// key (leaving `vlan_count` at 0) before ACLs see it.
///
/// ```
/// use palisade_packet::{FlowKey, FragmentState};
/// let k = FlowKey::new().with_ipv6(1, 2).with_proto(58).with_icmp(128, 0);
/// assert_eq!(k.ip_version, 6);
/// assert_eq!(k.icmp(), Some((128, 0)));
/// assert_eq!(k.fragment, FragmentState::None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address (see the type docs for the encoding).
    pub src_ip: u128,
    /// Destination address.
    pub dst_ip: u128,
    /// TCP/UDP source port (valid when `present` has [`Present::PORTS`]).
    pub src_port: u16,
    /// TCP/UDP destination port.
    pub dst_port: u16,
    /// VID of the first VLAN tag (0 when untagged or priority-tagged).
    pub outer_vlan: u16,
    /// VID of the second VLAN tag, if `vlan_count >= 2`.
    pub inner_vlan: u16,
    /// The ethertype after the last tag.
    pub ethertype: u16,
    /// TCP flags, 12 bits (0x001 FIN ... 0x100 AE/NS).
    pub tcp_flags: u16,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Number of VLAN tags directly after the Ethernet header.
    pub vlan_count: u8,
    /// The version nibble of the IP header after L2 (also a bogus one), 0 if none.
    pub ip_version: u8,
    /// IPv4 Protocol, or IPv6 Next Header after walking the extension chain.
    pub l4_proto: u8,
    /// ICMP / ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code.
    pub icmp_code: u8,
    /// DSCP (upper 6 bits of the IPv4 TOS / IPv6 traffic class).
    pub dscp: u8,
    /// Fragment state of the outer IP packet.
    pub fragment: FragmentState,
    /// The MF (IPv4) / M (IPv6) flag.
    pub more_fragments: bool,
    /// Which optional fields hold a value.
    pub present: Present,
    /// How far the parse got.
    pub status: ParseStatus,
    /// Set membership, written by the policy before the ACL stages (the parser
    /// leaves it 0): bit `i` is set when the field that the generation's set
    /// test `i` looks at (source or destination address or port) is in that
    /// test's set. Its meaning belongs to one generation, like rule indices.
    pub set_bits: u32,
    /// The frame's flow state, stamped by a flow tracker before classification
    /// (the parser leaves it [`FlowState::Untracked`]).
    pub flow_state: FlowState,
}

// The key is one cache line; the set bits took 4 of its spare bytes.
const _: () = assert!(core::mem::size_of::<FlowKey>() == 64);

impl FlowKey {
    /// An empty key: nothing present, status ok.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().present.0, 0);
    /// ```
    pub const fn new() -> Self {
        FlowKey {
            src_ip: 0,
            dst_ip: 0,
            src_port: 0,
            dst_port: 0,
            outer_vlan: 0,
            inner_vlan: 0,
            ethertype: 0,
            tcp_flags: 0,
            frag_offset: 0,
            vlan_count: 0,
            ip_version: 0,
            l4_proto: 0,
            icmp_type: 0,
            icmp_code: 0,
            dscp: 0,
            fragment: FragmentState::None,
            more_fragments: false,
            present: Present(0),
            status: ParseStatus::Ok,
            set_bits: 0,
            flow_state: FlowState::Untracked,
        }
    }

    /// Sets IPv4 addresses, version 4 and ethertype 0x0800.
    ///
    /// ```
    /// let k = palisade_packet::FlowKey::new().with_ipv4([10, 0, 0, 1], [192, 0, 2, 1]);
    /// assert_eq!(k.src_ip, 0x0a00_0001);
    /// ```
    pub const fn with_ipv4(mut self, src: [u8; 4], dst: [u8; 4]) -> Self {
        self.src_ip = u32::from_be_bytes(src) as u128;
        self.dst_ip = u32::from_be_bytes(dst) as u128;
        self.ip_version = 4;
        self.ethertype = 0x0800;
        self.present.0 |= Present::ADDRS | Present::IP_VERSION | Present::ETHERTYPE | Present::DSCP;
        self
    }

    /// Sets IPv6 addresses (as 128-bit values), version 6 and ethertype 0x86dd.
    ///
    /// ```
    /// let k = palisade_packet::FlowKey::new().with_ipv6(1, 2);
    /// assert_eq!(k.ethertype, 0x86dd);
    /// ```
    pub const fn with_ipv6(mut self, src: u128, dst: u128) -> Self {
        self.src_ip = src;
        self.dst_ip = dst;
        self.ip_version = 6;
        self.ethertype = 0x86dd;
        self.present.0 |= Present::ADDRS | Present::IP_VERSION | Present::ETHERTYPE | Present::DSCP;
        self
    }

    /// Whether the frame is IPv4 or IPv6 by its ethertype (after the VLAN
    /// tags): the frames Routed ACLs apply to.
    ///
    /// ```
    /// use palisade_packet::{FlowKey, Present};
    /// assert!(FlowKey::new().with_ipv4([198, 18, 0, 1], [198, 18, 0, 2]).is_ip());
    /// let mut arp = FlowKey::new();
    /// arp.ethertype = 0x0806;
    /// arp.present.0 |= Present::ETHERTYPE;
    /// assert!(!arp.is_ip());
    /// ```
    pub const fn is_ip(&self) -> bool {
        self.present.has(Present::ETHERTYPE) && matches!(self.ethertype, 0x0800 | 0x86dd)
    }

    /// Sets the L4 protocol.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_proto(17).l4_proto, 17);
    /// ```
    pub const fn with_proto(mut self, proto: u8) -> Self {
        self.l4_proto = proto;
        self.present.0 |= Present::L4_PROTO;
        self
    }

    /// Sets TCP/UDP ports.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_ports(1, 2).ports(), Some((1, 2)));
    /// ```
    pub const fn with_ports(mut self, src: u16, dst: u16) -> Self {
        self.src_port = src;
        self.dst_port = dst;
        self.present.0 |= Present::PORTS;
        self
    }

    /// Sets ICMP / ICMPv6 type and code.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_icmp(8, 0).icmp(), Some((8, 0)));
    /// ```
    pub const fn with_icmp(mut self, icmp_type: u8, icmp_code: u8) -> Self {
        self.icmp_type = icmp_type;
        self.icmp_code = icmp_code;
        self.present.0 |= Present::ICMP;
        self
    }

    /// Sets TCP flags (12 bits).
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_tcp_flags(0x002).tcp_flags, 2);
    /// ```
    pub const fn with_tcp_flags(mut self, flags: u16) -> Self {
        self.tcp_flags = flags & 0x0fff;
        self.present.0 |= Present::TCP_FLAGS;
        self
    }

    /// Sets one VLAN tag.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_vlan(10).vlan_count, 1);
    /// ```
    pub const fn with_vlan(mut self, vid: u16) -> Self {
        self.outer_vlan = vid;
        self.vlan_count = 1;
        self
    }

    /// Sets the DSCP.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_dscp(46).dscp, 46);
    /// ```
    pub const fn with_dscp(mut self, dscp: u8) -> Self {
        self.dscp = dscp & 0x3f;
        self.present.0 |= Present::DSCP;
        self
    }

    /// Sets the fragment state and offset in bytes.
    ///
    /// ```
    /// use palisade_packet::{FlowKey, FragmentState};
    /// let k = FlowKey::new().with_fragment(FragmentState::NonFirst, 1480, false);
    /// assert_eq!(k.frag_offset, 1480);
    /// ```
    pub const fn with_fragment(mut self, state: FragmentState, offset: u16, more: bool) -> Self {
        self.fragment = state;
        self.frag_offset = offset;
        self.more_fragments = more;
        self
    }

    /// Sets the flow state (what a flow tracker found, or what a caller assumes).
    ///
    /// ```
    /// use palisade_packet::{FlowKey, FlowState};
    /// assert_eq!(FlowKey::new().with_flow_state(FlowState::New).flow_state, FlowState::New);
    /// ```
    pub const fn with_flow_state(mut self, state: FlowState) -> Self {
        self.flow_state = state;
        self
    }

    /// TCP/UDP ports when present.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().ports(), None);
    /// ```
    #[inline]
    pub const fn ports(&self) -> Option<(u16, u16)> {
        if self.present.has(Present::PORTS) {
            Some((self.src_port, self.dst_port))
        } else {
            None
        }
    }

    /// ICMP type and code when present.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().icmp(), None);
    /// ```
    #[inline]
    pub const fn icmp(&self) -> Option<(u8, u8)> {
        if self.present.has(Present::ICMP) {
            Some((self.icmp_type, self.icmp_code))
        } else {
            None
        }
    }

    /// Whether the key carries an IPv4 (4) or IPv6 (6) address pair.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowKey::new().with_ipv4([1, 1, 1, 1], [2, 2, 2, 2]).ip_family(), Some(4));
    /// ```
    #[inline]
    pub const fn ip_family(&self) -> Option<u8> {
        if self.present.has(Present::ADDRS) {
            Some(self.ip_version)
        } else {
            None
        }
    }
}
