//! Palisade's engine: the policy that evaluates Port, VLAN and Routed ACLs in
//! a fixed order, and the machinery that makes a rule set active entirely or
//! not at all.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod policy;
