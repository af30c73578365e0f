//! The flow state of a frame, as a flow tracker finds it before any ACL runs.
//!
//! The parser never sets it: a key straight from [`crate::parse`] is
//! [`FlowState::Untracked`]. A flow tracker (the engine's flow table) or a
//! caller that assumes a state (`palisade explain`, `[[expect]]`) stamps it
//! with [`crate::FlowKey::with_flow_state`], and rules match it by
//! [`FlowStates`], the set of states a rule accepts.

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
