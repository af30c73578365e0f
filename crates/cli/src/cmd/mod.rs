//! One module per subcommand; each exposes clap `Args` and a `run` function.
//!
//! Exit codes: 0 success, 1 a negative answer (invalid rules, refused
//! reload), 2 usage or I/O error.

pub mod bench;
pub mod check;
pub mod classify;
pub mod control;
pub mod explain;
pub mod flows;
pub mod inspect;
pub mod observe;
pub mod run;
pub mod set;
pub mod shadow;
