//! Zero-copy Ethernet frame parsing into a fixed-size, `Copy` [`FlowKey`].
//!
//! Every verdict Palisade gives starts here, so this crate is written to be
//! trusted: it is `#![no_std]`, never allocates, and never panics on any
//! input. A frame that cannot be parsed far enough still yields a key whose
//! [`ParseStatus`] says which layer stopped the parse.
//!
//! ```
//! use palisade_packet::{FlowKey, ParseStatus};
//! let key = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(1234, 443);
//! assert_eq!(key.ports(), Some((1234, 443)));
//! assert_eq!(key.status, ParseStatus::Ok);
//! ```
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod key;

pub use key::{FlowKey, FragmentState, Layer, ParseStatus, Present};
