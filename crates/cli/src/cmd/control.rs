//! `palisade status/reload/confirm/rollback`: clients of the control socket.

use std::process::ExitCode;

/// Arguments of `palisade status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {}
/// Arguments of `palisade reload`.
#[derive(clap::Args, Debug)]
pub struct ReloadArgs {}
/// Arguments of `palisade confirm`.
#[derive(clap::Args, Debug)]
pub struct ConfirmArgs {}
/// Arguments of `palisade rollback`.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {}

fn not_built(what: &str) -> ExitCode {
    eprintln!("palisade {what}: not built yet");
    ExitCode::from(2)
}

/// Runs `palisade status`.
pub fn status(_args: StatusArgs) -> ExitCode {
    not_built("status")
}
/// Runs `palisade reload`.
pub fn reload(_args: ReloadArgs) -> ExitCode {
    not_built("reload")
}
/// Runs `palisade confirm`.
pub fn confirm(_args: ConfirmArgs) -> ExitCode {
    not_built("confirm")
}
/// Runs `palisade rollback`.
pub fn rollback(_args: RollbackArgs) -> ExitCode {
    not_built("rollback")
}
