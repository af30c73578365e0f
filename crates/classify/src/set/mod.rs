//! Named sets: membership structures looked up for a whole batch of keys.
//!
//! A set is a list of address prefixes (IPv4 and IPv6 together) or of ports
//! and port ranges ([`AddrList`], [`PortList`]). It is compiled into a
//! [`CompiledSet`]: per address family a structure built for membership (a
//! 16-8-8 bitmap trie for IPv4, sorted intervals with a bucket index for
//! IPv6, plain sorted intervals for small sets), a 65,536-bit map for ports.
//! Overlapping elements are merged there, so a lookup costs the same however
//! the elements overlap.
//!
//! Rules do not scan sets. A generation has up to [`MAX_SET_TESTS`] *set
//! tests*, each a (set, field) pair; [`Membership::fill`] looks every test up
//! for a whole batch before the ACL stages and writes the answers as bits
//! into [`FlowKey::set_bits`], and a rule's [`SetMatch`] asks for some bits
//! set (`"@name"`) and some clear (`"!@name"`). Membership is then one more
//! field of the classification, checked by [`crate::RuleMatch::matches`]
//! like any other.
//!
//! Building may allocate; looking up never allocates and never panics.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_classify::{AddrList, CompiledSet, Membership, Prefix, RuleMatch, SetField, SetMatch};
//! use palisade_packet::FlowKey;
//!
//! let blocklist = AddrList::from_prefixes([Prefix::v4([203, 0, 113, 0], 24), Prefix::v6(0x2001_0db8_0bad << 80, 48)]);
//! let set = Arc::new(CompiledSet::addresses(&blocklist));
//! // Test 0: is the source address in the blocklist?
//! let membership = Membership::new(vec![(set, SetField::Src)]).unwrap();
//! let mut keys = [
//!     FlowKey::new().with_ipv4([203, 0, 113, 9], [10, 0, 0, 1]),
//!     FlowKey::new().with_ipv4([198, 51, 100, 1], [10, 0, 0, 1]),
//! ];
//! membership.fill(&mut keys);
//! let mut deny = RuleMatch::any();
//! deny.sets = SetMatch { member: 1, non_member: 0, needs_ports: false };
//! assert!(deny.matches(&keys[0]));
//! assert!(!deny.matches(&keys[1]));
//! ```

mod elements;
mod v4;
mod v6;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use palisade_packet::FlowKey;

pub use elements::{AddrList, PortList};

/// The index of the last element of sorted `s` at or below `a` (the
/// standard library's binary search compiles to selects, not branches).
#[inline]
pub(crate) fn last_at_most<T: Copy + Ord>(s: &[T], a: T) -> Option<usize> {
    s.partition_point(|&x| x <= a).checked_sub(1)
}

/// The most set tests one generation can have: the bits of [`FlowKey::set_bits`].
pub const MAX_SET_TESTS: usize = 32;

/// The key field a set test looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetField {
    /// The source address.
    Src,
    /// The destination address.
    Dst,
    /// The TCP/UDP source port.
    SrcPort,
    /// The TCP/UDP destination port.
    DstPort,
}

impl SetField {
    /// The rule key it is written in: `src`, `dst`, `src_port`, `dst_port`.
    ///
    /// ```
    /// assert_eq!(palisade_classify::SetField::DstPort.as_str(), "dst_port");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            SetField::Src => "src",
            SetField::Dst => "dst",
            SetField::SrcPort => "src_port",
            SetField::DstPort => "dst_port",
        }
    }

    /// Whether the field is a port (else an address).
    ///
    /// ```
    /// assert!(!palisade_classify::SetField::Dst.is_port());
    /// ```
    pub const fn is_port(self) -> bool {
        matches!(self, SetField::SrcPort | SetField::DstPort)
    }
}

/// A rule's set requirements, as bits of [`FlowKey::set_bits`].
///
/// Like every other constraint, a set test needs its field: an address test
/// matches only keys with an IP header, a port test only keys that carry
/// ports, whether the rule asks for "in" or "not in" the set.
///
/// ```
/// let none = palisade_classify::SetMatch::default();
/// assert!(none.is_any());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetMatch {
    /// Tests whose field must be in their set (`"@name"`).
    pub member: u32,
    /// Tests whose field must not be in their set (`"!@name"`).
    pub non_member: u32,
    /// Whether one of the rule's tests looks at a port (so the key must carry ports).
    pub needs_ports: bool,
}

impl SetMatch {
    /// Whether the rule has no set requirement.
    ///
    /// ```
    /// let m = palisade_classify::SetMatch { member: 0, non_member: 4, needs_ports: false };
    /// assert!(!m.is_any());
    /// ```
    pub const fn is_any(&self) -> bool {
        self.member | self.non_member == 0
    }

    /// The reference semantics: whether `set_bits` satisfies the requirements
    /// (the field's presence is checked by [`crate::RuleMatch::matches`]).
    ///
    /// ```
    /// let m = palisade_classify::SetMatch { member: 1, non_member: 2, needs_ports: false };
    /// assert!(m.holds(0b01) && !m.holds(0b11) && !m.holds(0));
    /// ```
    #[inline]
    pub const fn holds(&self, set_bits: u32) -> bool {
        set_bits & self.member == self.member && set_bits & self.non_member == 0
    }
}

/// A set compiled for lookups.
///
/// ```
/// use palisade_classify::{CompiledSet, IpFamily, PortList, PortRange};
/// let ssh = CompiledSet::ports(&PortList::from_ranges([PortRange::single(22), PortRange { lo: 2222, hi: 2230 }]));
/// assert!(ssh.contains_port(2225) && !ssh.contains_port(80));
/// assert!(!ssh.contains_addr(IpFamily::V4, 22), "a port set holds no address");
/// ```
#[derive(Clone)]
pub struct CompiledSet {
    kind: Kind,
    elements: usize,
}

#[derive(Clone)]
enum Kind {
    Addrs { v4: v4::V4, v6: v6::V6 },
    Ports(Box<[u64; 1024]>),
}

impl fmt::Debug for CompiledSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Addrs { .. } => "addresses",
            Kind::Ports(_) => "ports",
        };
        f.debug_struct("CompiledSet")
            .field("kind", &kind)
            .field("elements", &self.elements)
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl CompiledSet {
    /// Compiles an address set. A million prefixes take well under a second.
    ///
    /// ```
    /// use palisade_classify::{AddrList, CompiledSet, IpFamily, Prefix};
    /// let s = CompiledSet::addresses(&AddrList::from_prefixes([Prefix::v4([10, 0, 0, 0], 8)]));
    /// assert!(s.contains_addr(IpFamily::V4, 0x0a01_0203));
    /// assert!(!s.contains_addr(IpFamily::V6, 0x0a01_0203), "families apart");
    /// ```
    pub fn addresses(list: &AddrList) -> CompiledSet {
        CompiledSet {
            kind: Kind::Addrs {
                v4: v4::V4::build(&list.v4_intervals()),
                v6: v6::V6::build(&list.v6_intervals()),
            },
            elements: list.len(),
        }
    }

    /// The set for `list`, which is this set's list after the elements
    /// `touched` were added or removed: for a large IPv4 part only the /16
    /// blocks they touch are recomputed (the rest of the trie is copied), so
    /// a change to a million-prefix set costs a copy and a few blocks, not a
    /// build. The answers equal [`CompiledSet::addresses`]`(list)`.
    ///
    /// ```
    /// use palisade_classify::{AddrList, CompiledSet, IpFamily, Prefix};
    /// let mut list = AddrList::from_prefixes((0..2000u32).map(|i| Prefix::v4((0x0a00_0000 + (i << 8)).to_be_bytes(), 24)));
    /// let old = CompiledSet::addresses(&list);
    /// let added = AddrList::from_prefixes([Prefix::v4([192, 0, 2, 1], 32)]);
    /// list.extend(added.iter());
    /// let new = old.updated(&list, &added);
    /// assert!(new.contains_addr(IpFamily::V4, 0xc000_0201) && !old.contains_addr(IpFamily::V4, 0xc000_0201));
    /// assert!(new.contains_addr(IpFamily::V4, 0x0a00_0105));
    /// ```
    pub fn updated(&self, list: &AddrList, touched: &AddrList) -> CompiledSet {
        match &self.kind {
            Kind::Addrs { v4, v6 } => {
                let v4 = if touched.v4_len() == 0 {
                    v4.clone()
                } else {
                    v4.updated(list, touched)
                };
                let v6 = if touched.v6_len() == 0 {
                    v6.clone()
                } else {
                    v6::V6::build(&list.v6_intervals())
                };
                CompiledSet {
                    kind: Kind::Addrs { v4, v6 },
                    elements: list.len(),
                }
            }
            Kind::Ports(_) => CompiledSet::addresses(list),
        }
    }

    /// Compiles a port set.
    ///
    /// ```
    /// use palisade_classify::{CompiledSet, PortList, PortRange};
    /// let s = CompiledSet::ports(&PortList::from_ranges([PortRange { lo: 0, hi: 65535 }]));
    /// assert!(s.contains_port(0) && s.contains_port(65535));
    /// ```
    pub fn ports(list: &PortList) -> CompiledSet {
        let mut map = Box::new([0u64; 1024]);
        for (lo, hi) in list.intervals() {
            for p in lo..=hi {
                if let Some(w) = map.get_mut(usize::from(p >> 6)) {
                    *w |= 1 << (p & 63);
                }
            }
        }
        CompiledSet {
            kind: Kind::Ports(map),
            elements: list.len(),
        }
    }

    /// Whether this is a port set (else an address set).
    ///
    /// ```
    /// assert!(palisade_classify::CompiledSet::ports(&Default::default()).is_ports());
    /// ```
    pub fn is_ports(&self) -> bool {
        matches!(self.kind, Kind::Ports(_))
    }

    /// Number of elements it was compiled from (as listed, before merging).
    ///
    /// ```
    /// assert_eq!(palisade_classify::CompiledSet::ports(&Default::default()).elements(), 0);
    /// ```
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Whether address `addr` of `family` (in [`FlowKey`] encoding) is in the set.
    ///
    /// ```
    /// use palisade_classify::{AddrList, CompiledSet, IpFamily, Prefix};
    /// let s = CompiledSet::addresses(&AddrList::from_prefixes([Prefix::v6(1 << 127, 1)]));
    /// assert!(s.contains_addr(IpFamily::V6, u128::MAX));
    /// ```
    #[inline]
    pub fn contains_addr(&self, family: crate::IpFamily, addr: u128) -> bool {
        match (&self.kind, family) {
            (Kind::Addrs { v4, .. }, crate::IpFamily::V4) => v4.contains(addr as u32),
            (Kind::Addrs { v6, .. }, crate::IpFamily::V6) => v6.contains(addr),
            (Kind::Ports(_), _) => false,
        }
    }

    /// Whether `port` is in the set (false for an address set).
    ///
    /// ```
    /// use palisade_classify::{CompiledSet, PortList, PortRange};
    /// assert!(CompiledSet::ports(&PortList::from_ranges([PortRange::single(53)])).contains_port(53));
    /// ```
    #[inline]
    pub fn contains_port(&self, port: u16) -> bool {
        match &self.kind {
            Kind::Ports(map) => map[usize::from(port >> 6)] >> (port & 63) & 1 != 0,
            Kind::Addrs { .. } => false,
        }
    }

    /// Bytes of its tables.
    ///
    /// ```
    /// assert_eq!(palisade_classify::CompiledSet::ports(&Default::default()).memory_bytes(), 8192);
    /// ```
    pub fn memory_bytes(&self) -> usize {
        match &self.kind {
            Kind::Addrs { v4, v6 } => v4.memory_bytes() + v6.memory_bytes(),
            Kind::Ports(_) => 8192,
        }
    }

    /// Writes bit `bit` of every key's `set_bits`: set when the key's `field` is in the set.
    #[inline]
    fn fill(&self, field: SetField, bit: u32, keys: &mut [FlowKey]) {
        let mask = 1u32 << (bit & 31);
        match (&self.kind, field) {
            (Kind::Addrs { v4, v6 }, SetField::Src | SetField::Dst) => {
                let src = field == SetField::Src;
                for k in keys {
                    let a = if src { k.src_ip } else { k.dst_ip };
                    let hit = match k.ip_family() {
                        Some(4) => v4.contains(a as u32),
                        Some(6) => v6.contains(a),
                        _ => false,
                    };
                    k.set_bits = k.set_bits & !mask | if hit { mask } else { 0 };
                }
            }
            (Kind::Ports(map), SetField::SrcPort | SetField::DstPort) => {
                let src = field == SetField::SrcPort;
                for k in keys {
                    let p = if src { k.src_port } else { k.dst_port };
                    let hit = k.ports().is_some() && map[usize::from(p >> 6)] >> (p & 63) & 1 != 0;
                    k.set_bits = k.set_bits & !mask | if hit { mask } else { 0 };
                }
            }
            // A test of the wrong kind is refused by `Membership::new`; it is never a member.
            _ => {
                for k in keys {
                    k.set_bits &= !mask;
                }
            }
        }
    }
}

/// Why [`Membership::new`] refused its tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// More tests than [`MAX_SET_TESTS`].
    TooManyTests {
        /// How many were given.
        tests: usize,
    },
    /// A port set tested on an address field, or the reverse.
    WrongKind {
        /// The test's index (its bit).
        test: usize,
        /// The field.
        field: SetField,
    },
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::TooManyTests { tests } => write!(
                f,
                "{tests} set tests, more than the limit of {MAX_SET_TESTS} (MAX_SET_TESTS)"
            ),
            MembershipError::WrongKind { test, field } => {
                let kind = if field.is_port() { "port" } else { "address" };
                write!(
                    f,
                    "set test {test} looks at {} but its set is not an {kind} set",
                    field.as_str()
                )
            }
        }
    }
}

/// A generation's set tests: test `i` writes bit `i` of [`FlowKey::set_bits`].
///
/// Sets are shared ([`Arc`]): a set tested on two fields is one structure,
/// and a generation that changes one set shares every other with its predecessor.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    tests: Vec<(Arc<CompiledSet>, SetField)>,
}

impl Membership {
    /// The tests, in bit order; refused when there are more than
    /// [`MAX_SET_TESTS`] or a set does not fit its field.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use palisade_classify::{CompiledSet, Membership, MembershipError, SetField};
    /// let ports = Arc::new(CompiledSet::ports(&Default::default()));
    /// let e = Membership::new(vec![(ports, SetField::Src)]).unwrap_err();
    /// assert!(matches!(e, MembershipError::WrongKind { test: 0, .. }));
    /// ```
    pub fn new(tests: Vec<(Arc<CompiledSet>, SetField)>) -> Result<Membership, MembershipError> {
        if tests.len() > MAX_SET_TESTS {
            return Err(MembershipError::TooManyTests { tests: tests.len() });
        }
        if let Some((test, (_, field))) = tests
            .iter()
            .enumerate()
            .find(|(_, (s, f))| s.is_ports() != f.is_port())
        {
            return Err(MembershipError::WrongKind { test, field: *field });
        }
        Ok(Membership { tests })
    }

    /// Whether there is no test (then [`Membership::fill`] does nothing).
    ///
    /// ```
    /// assert!(palisade_classify::Membership::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }

    /// The tests, in bit order.
    ///
    /// ```
    /// assert_eq!(palisade_classify::Membership::default().tests().len(), 0);
    /// ```
    pub fn tests(&self) -> &[(Arc<CompiledSet>, SetField)] {
        &self.tests
    }

    /// Writes every test's bit into each key's `set_bits` (bits past the last
    /// test are cleared). Test by test over the whole batch, so the lookups
    /// of many keys are in flight together. Never allocates, never panics.
    #[inline]
    pub fn fill(&self, keys: &mut [FlowKey]) {
        if self.tests.is_empty() {
            return;
        }
        for k in keys.iter_mut() {
            k.set_bits = 0;
        }
        for (bit, (set, field)) in self.tests.iter().enumerate() {
            set.fill(*field, bit as u32, keys);
        }
    }

    /// Bytes of every distinct set's tables.
    ///
    /// ```
    /// assert_eq!(palisade_classify::Membership::default().memory_bytes(), 0);
    /// ```
    pub fn memory_bytes(&self) -> usize {
        let mut seen: Vec<*const CompiledSet> = vec![];
        let mut total = 0;
        for (s, _) in &self.tests {
            let p = Arc::as_ptr(s);
            if !seen.contains(&p) {
                seen.push(p);
                total += s.memory_bytes();
            }
        }
        total
    }
}
