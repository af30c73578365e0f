//! `palisade run`: the engine daemon.
//!
//! Boots the engine (the generation that was active and confirmed when it
//! stopped, from `--state-dir`; `--config` seeds an empty state directory, or
//! boots with `--boot-from-config`; with neither, no rules: deny all), serves
//! the control socket, and applies `--config` on SIGHUP. SIGUSR1 reopens the
//! log files (`--log`, `--log-pcap`: logrotate). SIGTERM and SIGINT remove the
//! socket and exit. Without data-path flags it runs the control plane alone.
//! Every argument is checked before the state directory is touched: a bad
//! command line changes nothing on disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use palisade_engine::{control, BootSource, Engine, EngineOptions, ReloadOptions, ReloadSource};

/// Arguments of `palisade run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The rule file: seeds an empty state directory; applied again on SIGHUP
    /// or `palisade reload` without a file (never by a restart alone).
    #[arg(long, value_name = "RULES")]
    pub config: PathBuf,
    /// Boot from --config even when the state directory holds generations (by
    /// default a restart runs the generation that was active and confirmed).
    #[arg(long)]
    pub boot_from_config: bool,
    /// Path of the control socket (mode 0600, never reachable before; a socket
    /// another daemon answers on is not replaced).
    #[arg(long, value_name = "SOCK")]
    pub control: PathBuf,
    /// Directory keeping the last-known-good generations (made mode 0700; one
    /// daemon per directory).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Cap on the bytes of one generation's compiled classifiers; a rule set
    /// past it is refused at stage compile (default 256 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = palisade_engine::policy::DEFAULT_MEMORY_CAP)]
    pub memory_cap: usize,
    /// Close control connections idle for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = control::IDLE_TIMEOUT.as_secs_f64())]
    pub idle_timeout: f64,
    /// The data path: `--bridge IF_A,IF_B`, `--monitor IF`, `--workers N`.
    #[command(flatten)]
    pub live: crate::bridge::LiveArgs,
    /// Logs and metrics: `--log FILE`, `--log-pcap FILE`, `--metrics ADDR`.
    #[command(flatten)]
    pub observe: crate::cmd::observe::ObserveArgs,
}

/// Runs `palisade run`.
pub fn run(args: Args) -> ExitCode {
    // Before any thread exists, so every thread inherits the mask and the
    // signals are taken only by `sigwait` below.
    let signals = signals::block();
    let idle = match validate(&args) {
        Ok(idle) => idle,
        Err(e) => {
            eprintln!("palisade: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the engine (a log file that cannot be opened is refused before the
    // state directory is touched), and before the data path and the control
    // socket: the first logged frame and the first control event have somewhere to go.
    let logger = match crate::cmd::observe::start_logger(&args.observe) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("palisade: {e}");
            return ExitCode::from(2);
        }
    };
    let options = EngineOptions {
        memory_cap: args.memory_cap,
        boot_from_config: args.boot_from_config,
        ..EngineOptions::default()
    };
    let (engine, boot) = match Engine::open(&args.config, &args.state_dir, options) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("palisade: {e}");
            return ExitCode::from(2);
        }
    };
    let from = match boot.source {
        BootSource::StateDirectory => "from the state directory",
        BootSource::Config => "from --config",
        _ => "no rules",
    };
    eprintln!(
        "palisade: booted: generation {} ({}, {from})",
        boot.generation,
        boot.state.as_str()
    );
    if boot.config_differs == Some(true) {
        eprintln!(
            "palisade: --config {} differs from the running generation and is NOT applied; \
             apply it with `palisade reload --control {}` (no file) or SIGHUP",
            args.config.display(),
            args.control.display()
        );
    }
    let engine = Arc::new(engine);
    engine.set_event_sink(Some(logger.event_sink()));
    // The data path starts before the control socket opens: a client that reaches the
    // socket knows frames are being filtered. Kept alive until exit (drop stops the workers).
    let _bridge = match crate::bridge::start_with_engine(&args.live, &engine, Some(&logger)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("palisade: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match control::bind(&args.control) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "palisade: {}: cannot open control socket: {e}",
                args.control.display()
            );
            return ExitCode::from(2);
        }
    };
    let metrics = {
        let (engine, logger) = (Arc::clone(&engine), Arc::clone(&logger));
        let data_path = _bridge.as_ref().map(|b| b.info());
        let render = Arc::new(move || {
            let extra: Vec<&dyn palisade_observe::metrics::MetricsSource> = data_path
                .iter()
                .map(|d| &**d as &dyn palisade_observe::metrics::MetricsSource)
                .collect();
            palisade_observe::metrics::render(&engine, Some(&logger), &extra)
        });
        match crate::cmd::observe::start_metrics(&args.observe, render) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("palisade: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(m) = &metrics {
        eprintln!("palisade: metrics at http://{}/metrics", m.local_addr());
    }
    eprintln!("palisade: control socket {}", args.control.display());
    {
        let engine = Arc::clone(&engine);
        let ext = _bridge.as_ref().and_then(|b| b.control_extension());
        let ext = Some(palisade_observe::service::extension(
            Arc::clone(&logger),
            metrics.clone(),
            ext,
        ));
        std::thread::spawn(move || control::serve_with(engine, listener, ext, idle));
    }
    let code = wait_for_signals(&engine, &args, &logger, signals);
    drop(metrics);
    drop(_bridge);
    // The workers are stopped: what they queued reaches the log before the process ends.
    logger.flush(std::time::Duration::from_secs(2));
    code
}

/// Checks every argument before anything is written: the idle timeout, the
/// data-path interfaces (they must exist), the memory cap, the control
/// socket's directory, and that no daemon answers on the socket already.
/// Returns the idle timeout.
fn validate(args: &Args) -> Result<std::time::Duration, String> {
    let idle = match std::time::Duration::try_from_secs_f64(args.idle_timeout) {
        Ok(d) if !d.is_zero() => d,
        _ => return Err("--idle-timeout must be a positive number of seconds".into()),
    };
    if args.memory_cap == 0 {
        return Err("--memory-cap must be a positive number of bytes".into());
    }
    if let Some((ifaces, _)) = args.live.interfaces()? {
        for name in &ifaces {
            if crate::bridge::sys::link_state(name).is_none() {
                return Err(format!("interface {name}: no such interface"));
            }
        }
    }
    let dir = match args.control.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if args.control.file_name().is_none() {
        return Err(format!("--control {}: not a socket path", args.control.display()));
    }
    if !dir.is_dir() {
        return Err(format!(
            "--control {}: the directory {} does not exist",
            args.control.display(),
            dir.display()
        ));
    }
    if let Some(addr) = &args.observe.metrics {
        if let Err(e) = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str()) {
            return Err(format!("--metrics {addr}: not an address to listen on: {e}"));
        }
    }
    if control::answers(&args.control) {
        return Err(format!(
            "--control {}: another daemon answers on this socket; refusing to replace it",
            args.control.display()
        ));
    }
    if args.state_dir.as_os_str().is_empty() {
        return Err("--state-dir must not be empty".into());
    }
    Ok(idle)
}

fn wait_for_signals(
    engine: &Engine,
    args: &Args,
    logger: &palisade_observe::Logger,
    signals: Option<signals::Set>,
) -> ExitCode {
    let Some(set) = signals else {
        // Without signal masking we can still serve; park forever.
        loop {
            std::thread::park();
        }
    };
    loop {
        match signals::wait(&set) {
            Some((libc::SIGHUP, uid)) => {
                eprintln!("palisade: SIGHUP: reloading {}", args.config.display());
                // The control event names who sent the signal.
                match engine.reload_by(ReloadSource::Config, &ReloadOptions::default(), uid) {
                    Ok(ok) => eprintln!(
                        "palisade: generation {} active (digest {})",
                        ok.generation, ok.digest
                    ),
                    Err(e) => eprintln!("palisade: {e}"),
                }
            }
            Some((libc::SIGUSR1, _)) => {
                eprintln!("palisade: SIGUSR1: reopening the log files");
                logger.request_reopen();
            }
            Some((sig, _)) => {
                eprintln!("palisade: signal {sig}: exiting");
                let _ = std::fs::remove_file(&args.control);
                return ExitCode::SUCCESS;
            }
            None => {}
        }
    }
}

/// SIGHUP/SIGUSR1/SIGTERM/SIGINT taken synchronously with `sigwaitinfo` (no
/// handler runs in signal context, so nothing here needs to be async-signal-safe).
mod signals {
    /// The blocked signal set.
    pub struct Set(libc::sigset_t);

    /// Blocks SIGHUP, SIGUSR1, SIGTERM and SIGINT in the calling thread (and every thread it spawns).
    pub fn block() -> Option<Set> {
        // SAFETY: sigset_t is plain data that sigemptyset initialises; the
        // calls get valid pointers to locals and only touch this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return None;
            }
            Some(Set(set))
        }
    }

    /// Waits for one of the blocked signals: its number, and the uid of the
    /// process that sent it (`None` when the kernel sent it).
    pub fn wait(set: &Set) -> Option<(i32, Option<u32>)> {
        // SAFETY: siginfo_t is plain data, for which all-zero bytes are a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` was initialised by `block`; `info` is a valid out pointer for the call.
        let sig = unsafe { libc::sigwaitinfo(&set.0, &mut info) };
        if sig < 0 {
            return None;
        }
        // SAFETY: for a signal sent by kill(2) the kernel fills si_pid/si_uid (SI_USER);
        // other codes are not read.
        let uid = (info.si_code == libc::SI_USER).then(|| unsafe { info.si_uid() });
        Some((sig, uid))
    }
}
