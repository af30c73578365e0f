//! The live data path of `palisade run`: a filtering bridge between two
//! interfaces (`--bridge IF_A,IF_B`) or a monitor on one (`--monitor IF`).
//!
//! Frames are read through pnet datalink channels (`AF_PACKET`), parsed into
//! [`FlowKey`]s, decided in batches by a [`FrameFilter`] (the engine's policy
//! in `palisade run`) and, when permitted, sent unchanged out of the other
//! interface. Each of `--workers N` threads reads both interfaces; the kernel
//! spreads frames across workers by flow hash (`PACKET_FANOUT_HASH`), so the
//! frames of one flow stay in order.
//!
//! Layout: [`sys`] opens and waits on packet sockets, [`worker`] is the
//! per-thread loop, [`checksum`] completes offloaded TCP/UDP checksums,
//! [`topology`] maps interfaces to the rule set's ports and L3 interfaces.

pub mod checksum;
pub mod engine;
pub mod shadow;
pub mod sys;
pub mod topology;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use palisade_packet::FlowKey;

pub use worker::SideCounters;

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

/// Decides batches of frames for one worker.
///
/// `ingress` is the index (0 or 1, in the order of `--bridge IF_A,IF_B`) of
/// the interface the frames arrived on; `permit[i]` receives the verdict for
/// `keys[i]`. Called once per batch; must not block, allocate or panic.
pub trait FrameFilter: Send {
    /// Decides one batch.
    fn decide(&mut self, ingress: usize, keys: &[FlowKey], permit: &mut [bool]);
}

/// A running data path; stops its workers when dropped.
pub struct Bridge {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    info: Arc<DataPathInfo>,
    shadow: Option<Arc<shadow::ShadowSlot>>,
}

/// What the data path is and its counters, shared with the control socket.
pub struct DataPathInfo {
    ifaces: Vec<String>,
    forward: bool,
    /// One pair of per-ingress-side counters per worker (each written by its worker only).
    counters: Vec<Arc<[SideCounters; 2]>>,
}

/// Totals over every worker for one ingress interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideTotals {
    /// Interface the frames arrived on.
    pub interface: String,
    /// Frames received.
    pub rx: u64,
    /// Frames permitted.
    pub permitted: u64,
    /// Frames denied.
    pub denied: u64,
    /// Permitted frames sent out of the other interface.
    pub forwarded: u64,
    /// Permitted frames that could not be sent.
    pub tx_errors: u64,
    /// Frames too long to handle, dropped.
    pub oversize: u64,
}

impl DataPathInfo {
    /// Counter totals per ingress interface.
    pub fn totals(&self) -> Vec<SideTotals> {
        self.ifaces
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut t = SideTotals {
                    interface: name.clone(),
                    ..Default::default()
                };
                for w in &self.counters {
                    let c = &w[i];
                    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    t.rx += get(&c.rx);
                    t.permitted += get(&c.permitted);
                    t.denied += get(&c.denied);
                    t.forwarded += get(&c.forwarded);
                    t.tx_errors += get(&c.tx_errors);
                    t.oversize += get(&c.oversize);
                }
                t
            })
            .collect()
    }

    /// The data path's mode, interfaces and counters, as shown by `palisade status` under `data_path`.
    pub fn report(&self) -> serde_json::Value {
        let sides: Vec<serde_json::Value> = self
            .totals()
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "interface": t.interface, "rx": t.rx, "permitted": t.permitted, "denied": t.denied,
                    "forwarded": t.forwarded, "tx_errors": t.tx_errors, "oversize": t.oversize,
                })
            })
            .collect();
        serde_json::json!({
            "mode": if self.forward { "bridge" } else { "monitor" },
            "workers": self.counters.len(),
            "interfaces": sides,
        })
    }
}

impl Bridge {
    /// The control-socket extension: `{"cmd":"data-path"}` and shadow evaluation
    /// (`palisade reload --shadow`).
    pub fn control_extension(&self) -> Option<palisade_engine::control::Extension> {
        let shadow = self.shadow.as_ref().map(|s| s.extension());
        let info = Arc::clone(&self.info);
        Some(Arc::new(move |engine, req| {
            if req.get("cmd").and_then(serde_json::Value::as_str) == Some("data-path") {
                return Some(serde_json::json!({"ok": true, "data_path": info.report()}));
            }
            shadow.as_ref().and_then(|f| f(engine, req))
        }))
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.threads.is_empty() {
            return;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mode = if self.info.forward { "bridge" } else { "monitor" };
        for t in self.info.totals() {
            eprintln!(
                "palisade run: {mode} stopped: {}: rx {} permitted {} denied {} forwarded {} tx_errors {} oversize {}",
                t.interface, t.rx, t.permitted, t.denied, t.forwarded, t.tx_errors, t.oversize
            );
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Adds `data_path` and `shadow` to a status object when the daemon has them.
pub fn add_to_status(socket: &std::path::Path, status: &mut serde_json::Value) {
    let req = serde_json::json!({"cmd": "data-path"});
    if let Ok(reply) = palisade_engine::control::request(socket, &req, std::time::Duration::from_secs(30)) {
        if let (Some(dp), Some(obj)) = (reply.get("data_path"), status.as_object_mut()) {
            obj.insert("data_path".into(), dp.clone());
        }
    }
    shadow::add_to_status(socket, status);
}

/// The human-readable data-path and shadow sections of `palisade status`.
pub fn render_status(status: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if let Some(dp) = status.get("data_path") {
        let _ = writeln!(
            o,
            "data path  {} ({} workers)",
            dp["mode"].as_str().unwrap_or("-"),
            dp["workers"]
        );
        for s in dp["interfaces"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {}: rx {} permitted {} denied {} forwarded {} tx_errors {} oversize {}",
                s["interface"].as_str().unwrap_or("-"),
                s["rx"],
                s["permitted"],
                s["denied"],
                s["forwarded"],
                s["tx_errors"],
                s["oversize"]
            );
        }
    }
    o.push_str(&shadow::render(status));
    o
}

/// Starts the data path of `palisade run`, each worker deciding with its own engine handle.
pub fn start_with_engine(
    args: &LiveArgs,
    engine: &palisade_engine::Engine,
) -> Result<Option<Bridge>, String> {
    let ifaces = match args.interfaces()? {
        Some((ifaces, _)) => ifaces,
        None => return Ok(None),
    };
    let slot = Arc::new(shadow::ShadowSlot::default());
    let mut bridge = start(args, |id| {
        Box::new(engine::EngineFilter::new(
            engine.handle(),
            ifaces.clone(),
            id,
            Arc::clone(&slot),
        ))
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
    let stop = Arc::new(AtomicBool::new(false));
    let info = Arc::new(DataPathInfo {
        ifaces: ifaces.clone(),
        forward,
        counters: (0..workers).map(|_| Arc::new(Default::default())).collect(),
    });
    let mut bridge = Bridge {
        stop: Arc::clone(&stop),
        threads: Vec::new(),
        info: Arc::clone(&info),
        shadow: None,
    };
    for (id, counters) in info.counters.iter().enumerate() {
        let mut ports = Vec::new();
        for (name, f) in ifaces.iter().zip(&fanout) {
            ports.push(Some(sys::open(name, *f)?));
        }
        let counters = Arc::clone(counters);
        let spec = worker::WorkerSpec {
            ifaces: ifaces.clone(),
            forward,
            fanout: fanout.clone(),
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
