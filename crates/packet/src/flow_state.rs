//! The flow state of a frame, as a flow tracker finds it before any ACL runs.
//!
//! The parser never sets it: a key straight from [`crate::parse`] is
//! [`FlowState::Untracked`]. A flow tracker (the engine's flow table) or a
//! caller that assumes a state (`palisade explain`, `[[expect]]`) stamps it
//! with [`crate::FlowKey::with_flow_state`], and rules match it by
//! [`FlowStates`], the set of states a rule accepts.

use crate::icmp::IcmpRole;
use crate::{FlowKey, FragmentState, Present};

/// A frame's flow state, as nftables' `ct state` names them.
///
/// ```
/// use palisade_packet::FlowState;
/// assert_eq!(FlowState::from_name("established"), Some(FlowState::Established));
/// assert_eq!(FlowState::Related.name(), "related");
/// assert_eq!(FlowState::from_name("untracked"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum FlowState {
    /// No state was looked up: a key straight from the parser, a frame that is
    /// not IP, or a caller that tracks no flows. No `state` rule matches it.
    #[default]
    Untracked = 0,
    /// No entry, and a frame that may open one: a TCP SYN without ACK (nor
    /// RST or FIN), any UDP datagram, an ICMP/ICMPv6 query (echo request ...),
    /// a frame of another IP protocol.
    New = 1,
    /// A frame of a flow that has an entry, in either direction.
    Established = 2,
    /// An ICMP/ICMPv6 error whose quoted header belongs to a flow with an entry.
    Related = 4,
    /// No entry, and a frame that cannot open one: TCP without SYN, an ICMP
    /// error quoting no known flow, an ICMP reply with no query, a non-first
    /// fragment (it carries no ports to find its flow by), a malformed frame.
    Invalid = 8,
}

impl FlowState {
    /// The four states a rule can name, in their usual order.
    pub const NAMED: [FlowState; 4] = [
        FlowState::New,
        FlowState::Established,
        FlowState::Related,
        FlowState::Invalid,
    ];

    /// The state's bit in a [`FlowStates`] set (0 for `Untracked`).
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowState::Related.bit(), 4);
    /// ```
    #[inline]
    pub const fn bit(self) -> u8 {
        self as u8
    }

    /// `new`, `established`, `related`, `invalid`, or `untracked`.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowState::Untracked.name(), "untracked");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            FlowState::Untracked => "untracked",
            FlowState::New => "new",
            FlowState::Established => "established",
            FlowState::Related => "related",
            FlowState::Invalid => "invalid",
        }
    }

    /// The state of a frame whose flow has no entry: `New` when the frame may
    /// open a flow, `Invalid` when it cannot, `Untracked` when it is not IP.
    /// What a tracker answers on a miss, and what `explain` and `[[expect]]`
    /// assume when no state is given.
    ///
    /// May open: a TCP segment with SYN and none of ACK, RST, FIN; any UDP
    /// datagram; an ICMP/ICMPv6 query (echo, timestamp, information, mask
    /// request) or a message that is neither a query, a reply nor an error
    /// (router or neighbour discovery, ...); any other IP protocol. Cannot: a
    /// malformed frame, a non-first fragment (no ports to find its flow by),
    /// any other TCP segment, an ICMP reply or error (an error quoting a
    /// known flow is `Related`, which only a tracker can tell).
    ///
    /// ```
    /// use palisade_packet::{FlowKey, FlowState};
    /// let syn = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(1, 2).with_tcp_flags(0x002);
    /// assert_eq!(FlowState::without_entry(&syn), FlowState::New);
    /// assert_eq!(FlowState::without_entry(&syn.with_tcp_flags(0x010)), FlowState::Invalid);
    /// assert_eq!(FlowState::without_entry(&FlowKey::new()), FlowState::Untracked);
    /// ```
    pub fn without_entry(key: &FlowKey) -> FlowState {
        if key.ip_family().is_none() {
            return match key.status.is_ok() {
                true => FlowState::Untracked,
                false => FlowState::Invalid,
            };
        }
        if !key.status.is_ok() || key.fragment == FragmentState::NonFirst {
            return FlowState::Invalid;
        }
        match key.l4_proto {
            6 => {
                const SYN: u16 = 0x002;
                const CLOSING_OR_ACK: u16 = 0x001 | 0x004 | 0x010; // FIN, RST, ACK
                let f = key.tcp_flags;
                match key.present.has(Present::TCP_FLAGS) && f & SYN != 0 && f & CLOSING_OR_ACK == 0 {
                    true => FlowState::New,
                    false => FlowState::Invalid,
                }
            }
            1 | 58 => {
                let version = if key.l4_proto == 1 { 4 } else { 6 };
                match key.icmp().map(|(t, _)| IcmpRole::of(version, t)) {
                    Some(IcmpRole::Query | IcmpRole::Other) => FlowState::New,
                    _ => FlowState::Invalid,
                }
            }
            _ => FlowState::New,
        }
    }

    /// The state a rule or packet names (`new`, `established`, `related`,
    /// `invalid`); `None` for anything else, `untracked` included.
    ///
    /// ```
    /// assert_eq!(palisade_packet::FlowState::from_name("new"), Some(palisade_packet::FlowState::New));
    /// ```
    pub fn from_name(name: &str) -> Option<FlowState> {
        FlowState::NAMED.into_iter().find(|s| s.name() == name)
    }
}

/// A set of flow states: what a rule's `state` key accepts.
///
/// ```
/// use palisade_packet::{FlowState, FlowStates};
/// let s = FlowStates::of(&[FlowState::Established, FlowState::Related]);
/// assert!(s.contains(FlowState::Related));
/// assert!(!s.contains(FlowState::New));
/// assert!(!s.contains(FlowState::Untracked));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowStates(pub u8);

impl FlowStates {
    /// Every named state.
    pub const ALL: FlowStates = FlowStates(0x0f);

    /// The set of the given states.
    ///
    /// ```
    /// use palisade_packet::{FlowState, FlowStates};
    /// assert_eq!(FlowStates::of(&[FlowState::New]).0, 1);
    /// ```
    pub const fn of(states: &[FlowState]) -> FlowStates {
        let mut bits = 0;
        let mut i = 0;
        while i < states.len() {
            bits |= states[i].bit();
            i += 1;
        }
        FlowStates(bits)
    }

    /// Whether `state` is in the set (never for `Untracked`).
    ///
    /// ```
    /// use palisade_packet::{FlowState, FlowStates};
    /// assert!(FlowStates::ALL.contains(FlowState::Invalid));
    /// ```
    #[inline]
    pub const fn contains(self, state: FlowState) -> bool {
        self.0 & state.bit() != 0
    }

    /// Whether every state of `other` is in this set.
    ///
    /// ```
    /// use palisade_packet::{FlowState, FlowStates};
    /// assert!(FlowStates::ALL.includes(FlowStates::of(&[FlowState::New])));
    /// ```
    pub const fn includes(self, other: FlowStates) -> bool {
        other.0 & !self.0 == 0
    }

    /// The states a frame like `key` can be found in by a flow tracker:
    /// [`FlowState::without_entry`] (no entry), `Established` when it can be
    /// part of a flow (every keyable frame but an ICMP error), `Related` for
    /// an ICMP error. Empty for a frame that is not IP.
    ///
    /// ```
    /// use palisade_packet::{FlowKey, FlowState, FlowStates};
    /// let ack = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(1, 2).with_tcp_flags(0x010);
    /// assert_eq!(FlowStates::possible(&ack), FlowStates::of(&[FlowState::Established, FlowState::Invalid]));
    /// let unreachable = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(1).with_icmp(3, 3);
    /// assert!(FlowStates::possible(&unreachable).contains(FlowState::Related));
    /// ```
    pub fn possible(key: &FlowKey) -> FlowStates {
        let first = FlowState::without_entry(key);
        if first != FlowState::Invalid || key.ip_family().is_none() {
            // Untracked (no state), or New: such a frame can also be a flow's.
            return match first {
                FlowState::Untracked => FlowStates(0),
                s => FlowStates(s.bit() | FlowState::Established.bit()),
            };
        }
        if !key.status.is_ok() || key.fragment == FragmentState::NonFirst {
            return FlowStates::of(&[FlowState::Invalid]);
        }
        let icmp_error = match (key.l4_proto, key.icmp()) {
            (1, Some((t, _))) => IcmpRole::of(4, t) == IcmpRole::Error,
            (58, Some((t, _))) => IcmpRole::of(6, t) == IcmpRole::Error,
            _ => false,
        };
        match icmp_error {
            true => FlowStates::of(&[FlowState::Related, FlowState::Invalid]),
            false => FlowStates::of(&[FlowState::Established, FlowState::Invalid]),
        }
    }

    /// The states of the set, in [`FlowState::NAMED`] order.
    ///
    /// ```
    /// use palisade_packet::{FlowState, FlowStates};
    /// let s = FlowStates::of(&[FlowState::Related, FlowState::New]);
    /// assert_eq!(s.iter().collect::<Vec<_>>(), [FlowState::New, FlowState::Related]);
    /// ```
    pub fn iter(self) -> impl Iterator<Item = FlowState> {
        FlowState::NAMED.into_iter().filter(move |s| self.contains(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_takes_one_spare_byte_of_the_key() {
        assert_eq!(core::mem::size_of::<crate::FlowKey>(), 64);
        assert_eq!(core::mem::size_of::<FlowState>(), 1);
    }

    #[test]
    fn names_round_trip_and_bits_are_distinct() {
        let mut seen = 0u8;
        for s in FlowState::NAMED {
            assert_eq!(FlowState::from_name(s.name()), Some(s));
            assert_eq!(seen & s.bit(), 0);
            seen |= s.bit();
        }
        assert_eq!(seen, FlowStates::ALL.0);
        assert!(!FlowStates::ALL.contains(FlowState::Untracked));
    }
}
