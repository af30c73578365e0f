//! One module per subcommand; each exposes `Args` (clap) and `run(Args) -> ExitCode`.
//!
//! Exit codes: 0 success, 1 a negative answer (invalid rules, refused
//! reload), 2 usage or I/O error.

pub mod inspect;
