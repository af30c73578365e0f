//! The live data path of `palisade run`: a filtering bridge between two
//! interfaces (`--bridge IF_A,IF_B`) or a monitor on one (`--monitor IF`).
//!
//! Frames are read through pnet datalink channels (`AF_PACKET`) as they were
//! on the wire (a VLAN tag the interface stripped is put back; an offload
//! super-frame stays whole), decided in batches by a [`FrameFilter`] (the
//! engine's policy in `palisade run`) and, when permitted, sent out of the
//! other interface unchanged but for the VLAN tag the egress port carries. Each of `--workers N` threads reads both interfaces; the kernel
//! spreads frames across workers by flow hash (`PACKET_FANOUT_HASH`), so the
//! frames of one flow stay in order.
//!
//! Layout: [`sys`] opens, reads, writes and waits on packet sockets,
//! [`ring`] is their receive ring, [`worker`] is the per-thread loop,
//! [`checksum`] completes the partial SCTP checksums nothing else can. The
//! decisions themselves (the frame filter, the topology, shadow evaluation,
//! the data path's control requests) are the `palisade-dataplane` library.

pub mod checksum;
pub mod ring;
pub mod sys;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use palisade_dataplane::{DataPathInfo, EngineFilter, FrameFilter, ShadowSlot};

/// Data-path flags of `palisade run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LiveArgs {
    /// Filter frames between two interfaces: a frame received on one leaves on the other only
    /// when the rule set permits it.
    #[arg(long, value_name = "IF_A,IF_B", conflicts_with = "monitor")]
    pub bridge: Option<String>,
    /// Classify and count the frames arriving on IF without forwarding anything.
    #[arg(long, value_name = "IF")]
    pub monitor: Option<String>,
    /// Data-path worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
}

impl LiveArgs {
    /// The interfaces named, and whether frames are forwarded. `Ok(None)` without a data path.
    pub fn interfaces(&self) -> Result<Option<(Vec<String>, bool)>, String> {
        if let Some(pair) = &self.bridge {
            let names: Vec<String> = pair.split(',').map(|s| s.trim().to_string()).collect();
            return match names.as_slice() {
                [a, b] if !a.is_empty() && !b.is_empty() && a != b => Ok(Some((names, true))),
                _ => Err(format!(
                    "--bridge {pair}: expected two different interface names, IF_A,IF_B"
                )),
            };
        }
        if let Some(name) = &self.monitor {
            if name.is_empty() || name.contains(',') {
                return Err(format!("--monitor {name}: expected one interface name"));
            }
            return Ok(Some((vec![name.clone()], false)));
        }
        Ok(None)
    }
}

/// A running data path; stops its workers when dropped.
pub struct Bridge {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    info: Arc<DataPathInfo>,
    shadow: Option<Arc<ShadowSlot>>,
}

impl Bridge {
    /// The control-socket extension: `{"cmd":"data-path"}` and shadow evaluation
    /// (`palisade reload --shadow`).
    pub fn control_extension(&self) -> Option<palisade_engine::control::Extension> {
        Some(palisade_dataplane::service::extension(
            Arc::clone(&self.info),
            self.shadow.clone(),
        ))
    }

    /// The data path's interfaces and counters (also a metrics source).
    pub fn info(&self) -> Arc<DataPathInfo> {
        Arc::clone(&self.info)
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.threads.is_empty() {
            return;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mode = if self.info.forwards() { "bridge" } else { "monitor" };
        for t in self.info.totals() {
            eprintln!(
                "palisade run: {mode} stopped: {}: rx {} permitted {} denied {} forwarded {} tx_errors {} \
                 oversize {} rx_errors {} super_frames {} rx_dropped {}",
                t.interface,
                t.rx,
                t.permitted,
                t.denied,
                t.forwarded,
                t.tx_errors,
                t.oversize,
                t.rx_errors,
                t.super_frames,
                t.rx_dropped
            );
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the data path of `palisade run`, each worker deciding with its own engine handle.
pub fn start_with_engine(
    args: &LiveArgs,
    engine: &palisade_engine::Engine,
    logger: Option<&palisade_observe::Logger>,
) -> Result<Option<Bridge>, String> {
    let ifaces = match args.interfaces()? {
        Some((ifaces, _)) => ifaces,
        None => return Ok(None),
    };
    let slot = Arc::new(ShadowSlot::default());
    let mut bridge = start(args, |id| {
        let filter = EngineFilter::new(engine.handle(), ifaces.clone(), id, Arc::clone(&slot));
        match logger.filter(|l| l.enabled()) {
            Some(l) => Box::new(filter.with_logger(l.worker())),
            None => Box::new(filter),
        }
    })?;
    if let Some(b) = bridge.as_mut() {
        b.shadow = Some(slot);
    }
    Ok(bridge)
}

/// Starts the data path described by `args`, or returns `Ok(None)` when it names none.
///
/// `make_filter(worker)` builds each worker's filter. Start-up problems (an
/// interface that does not exist, no permission to open packet sockets) are
/// errors naming the interface; an interface that exists but is down is only
/// logged, and frames flow once it is up.
pub fn start(
    args: &LiveArgs,
    mut make_filter: impl FnMut(usize) -> Box<dyn FrameFilter>,
) -> Result<Option<Bridge>, String> {
    let Some((ifaces, forward)) = args.interfaces()? else {
        return Ok(None);
    };
    let workers = match args.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let pid = std::process::id();
    let mut fanout = Vec::new();
    for (i, name) in ifaces.iter().enumerate() {
        match sys::link_state(name) {
            None => return Err(format!("interface {name}: no such interface")),
            Some((false, _)) => {
                eprintln!("palisade run: interface {name} is down; frames flow once it is up")
            }
            Some((true, false)) => {
                eprintln!("palisade run: interface {name} has no carrier yet; frames flow once it has")
            }
            Some((true, true)) => {}
        }
        // Fanout groups are per network namespace: derive ids from our pid so two daemons differ.
        let group = ((pid as u16) ^ ((pid >> 16) as u16))
            .wrapping_mul(2)
            .wrapping_add(i as u16);
        fanout.push((workers > 1).then_some(sys::Fanout { group }));
    }
    // Receive rings of 16 MiB per interface in all, at least 1 MiB (512 frames) per worker,
    // at most 8 MiB: the kernel spreads frames over the workers, so each needs less.
    let ring_blocks = (16 / workers).clamp(1, ring::MAX_BLOCKS);
    let stop = Arc::new(AtomicBool::new(false));
    let info = Arc::new(DataPathInfo::new(ifaces.clone(), forward, workers));
    let mut bridge = Bridge {
        stop: Arc::clone(&stop),
        threads: Vec::new(),
        info: Arc::clone(&info),
        shadow: None,
    };
    for id in 0..workers {
        let Some(counters) = info.worker_counters(id) else {
            continue;
        };
        let mut ports = Vec::new();
        for (name, f) in ifaces.iter().zip(&fanout) {
            ports.push(Some(sys::open(name, *f, ring_blocks)?));
        }
        let spec = worker::WorkerSpec {
            ifaces: ifaces.clone(),
            forward,
            fanout: fanout.clone(),
            ring_blocks,
            id,
        };
        let filter = make_filter(id);
        let stop = Arc::clone(&stop);
        let t = std::thread::Builder::new()
            .name(format!("palisade-dp{id}"))
            .spawn(move || worker::run(spec, ports, filter, stop, counters))
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        bridge.threads.push(t);
    }
    let mode = if forward { "bridging" } else { "monitoring" };
    eprintln!(
        "palisade run: {mode} {} with {workers} worker(s)",
        ifaces.join(" <-> ")
    );
    Ok(Some(bridge))
}
