//! Counters of the frame I/O of a data path, per ingress interface and worker.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one ingress side of one worker: written by that worker only.
///
/// ```
/// use palisade_dataplane::stats::SideCounters;
/// let c = SideCounters::default();
/// SideCounters::add(&c.rx, 3);
/// assert_eq!(c.rx.load(std::sync::atomic::Ordering::Relaxed), 3);
/// ```
#[derive(Debug, Default)]
pub struct SideCounters {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames the policy permitted.
    pub permitted: AtomicU64,
    /// Frames the policy denied.
    pub denied: AtomicU64,
    /// Permitted frames sent out of the other interface.
    pub forwarded: AtomicU64,
    /// Permitted frames that could not be sent (egress down or gone).
    pub tx_errors: AtomicU64,
    /// Frames too long to handle, dropped before classification.
    pub oversize: AtomicU64,
    /// Frames the kernel could not hand over and dropped (a kind of offload
    /// super-frame a packet socket cannot describe).
    pub rx_errors: AtomicU64,
    /// Of the frames received, GSO/GRO super-frames (each classified and sent whole).
    pub super_frames: AtomicU64,
    /// Frames the kernel dropped before the data path saw them: its receive queue
    /// was full (the workers fell behind).
    pub rx_dropped: AtomicU64,
}

impl SideCounters {
    /// Single-writer increment: a load and a store, no locked read-modify-write.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }
}

/// Totals over every worker for one ingress interface (the control protocol's type).
pub use palisade_engine::control::InterfaceCounters as SideTotals;

/// What a data path is (its interfaces, bridge or monitor) and its counters,
/// shared between the workers and the control service.
///
/// ```
/// use palisade_dataplane::stats::DataPathInfo;
/// let info = DataPathInfo::new(vec!["pa".into(), "pb".into()], true, 2);
/// assert_eq!(info.totals().len(), 2);
/// assert_eq!(info.workers(), 2);
/// ```
#[derive(Debug)]
pub struct DataPathInfo {
    ifaces: Vec<String>,
    forward: bool,
    /// One pair of per-ingress-side counters per worker (each written by its worker only).
    counters: Vec<std::sync::Arc<[SideCounters; 2]>>,
}

impl DataPathInfo {
    /// A data path over `ifaces` (two for a bridge, one for a monitor) with `workers` workers.
    pub fn new(ifaces: Vec<String>, forward: bool, workers: usize) -> Self {
        DataPathInfo {
            ifaces,
            forward,
            counters: (0..workers).map(|_| Default::default()).collect(),
        }
    }

    /// The interface names, in `--bridge IF_A,IF_B` order.
    pub fn interfaces(&self) -> &[String] {
        &self.ifaces
    }

    /// Whether permitted frames are forwarded (a bridge) or only counted (a monitor).
    pub fn forwards(&self) -> bool {
        self.forward
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.counters.len()
    }

    /// The counters of worker `id` (one per ingress side).
    pub fn worker_counters(&self, id: usize) -> Option<std::sync::Arc<[SideCounters; 2]>> {
        self.counters.get(id).cloned()
    }

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
                    let c = &w[i.min(1)];
                    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    t.rx += get(&c.rx);
                    t.permitted += get(&c.permitted);
                    t.denied += get(&c.denied);
                    t.forwarded += get(&c.forwarded);
                    t.tx_errors += get(&c.tx_errors);
                    t.oversize += get(&c.oversize);
                    t.rx_errors += get(&c.rx_errors);
                    t.super_frames += get(&c.super_frames);
                    t.rx_dropped += get(&c.rx_dropped);
                }
                t
            })
            .collect()
    }
}
