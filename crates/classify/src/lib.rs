//! First-match packet classification over [`palisade_packet::FlowKey`].
//!
//! A classifier is built once from an ordered list of [`RuleMatch`]es and then
//! answers, for every key, the index of the first rule that matches (or
//! [`NO_MATCH`]). Building may fail; classifying never fails and never panics.
//! The [`LinearClassifier`] is the reference: it is the definition of a correct
//! answer, and every faster classifier is tested against it.
//!
//! ```
//! use palisade_classify::{Classifier, LinearClassifier, PortRange, RuleMatch, NO_MATCH};
//! use palisade_packet::FlowKey;
//!
//! let mut ssh = RuleMatch::any();
//! ssh.proto = Some(6);
//! ssh.dst_port = vec![PortRange::single(22)];
//! let linear = LinearClassifier::new(vec![ssh, RuleMatch::any()]);
//!
//! let key = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(999, 22);
//! assert_eq!(linear.classify(&key), 0);
//! let web = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(999, 80);
//! assert_eq!(linear.classify(&web), 1);
//! assert_ne!(linear.classify(&web), NO_MATCH);
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod bitset;
pub mod classbench;
mod compiled;
mod corner;
mod leaf;
mod linear;
mod matcher;
pub mod set;
mod trie;

pub use compiled::{AddressLookup, BuildConfig, BuildError, CompiledClassifier};
pub use corner::{corner_keys, ipv6_edge_keys};
pub use linear::LinearClassifier;
pub use matcher::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch, TcpFlagsMatch};
pub use set::{
    AddrList, CompiledSet, Membership, MembershipError, PortList, SetField, SetMatch, MAX_SET_TESTS,
};

/// A rule's position in its list (0-based); the answer of a classifier.
pub type RuleIndex = u32;

/// The answer when no rule matches.
pub const NO_MATCH: RuleIndex = u32::MAX;

/// A first-match classifier: the batch API every classifier implements.
///
/// `classify` returns the 0-based index of the first matching rule, or
/// [`NO_MATCH`]. Implementations must never panic and never allocate.
pub trait Classifier {
    /// Classifies one key.
    fn classify(&self, key: &palisade_packet::FlowKey) -> RuleIndex;

    /// Classifies a batch; `out[i]` receives the answer for `keys[i]`.
    ///
    /// Only `min(keys.len(), out.len())` entries are written. Fast
    /// classifiers override this to overlap memory latency across keys.
    fn classify_batch(&self, keys: &[palisade_packet::FlowKey], out: &mut [RuleIndex]) {
        for (key, slot) in keys.iter().zip(out.iter_mut()) {
            *slot = self.classify(key);
        }
    }

    /// Number of rules the classifier was built from.
    fn rule_count(&self) -> usize;

    /// Bytes of memory the classifier's tables use (approximate, for reports).
    fn memory_bytes(&self) -> usize;
}
