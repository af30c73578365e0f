//! The data path's interface counters for the `/metrics` endpoint.
//!
//! | metric | labels |
//! |---|---|
//! | `palisade_interface_rx_frames_total` | `interface` (frames received on it) |
//! | `palisade_interface_permitted_frames_total`, `palisade_interface_denied_frames_total` | `interface` (by ingress) |
//! | `palisade_interface_forwarded_frames_total` | `interface` (permitted frames that entered on it and were sent out of the other) |
//! | `palisade_interface_tx_errors_total` | `interface` (permitted frames that entered on it and could not be sent) |
//! | `palisade_interface_oversize_frames_total` | `interface` (frames too long to handle) |
//! | `palisade_interface_rx_errors_total` | `interface` (frames the kernel could not hand over) |
//! | `palisade_interface_rx_dropped_frames_total` | `interface` (frames the kernel dropped: the workers fell behind) |
//! | `palisade_interface_super_frames_total` | `interface` (GSO/GRO super-frames among the frames received) |
//!
//! ```
//! use palisade_observe::metrics::{Exposition, MetricsSource};
//! let info = palisade_dataplane::DataPathInfo::new(vec!["pa".into(), "pb".into()], true, 1);
//! let mut e = Exposition::default();
//! info.write(&mut e);
//! assert!(e.finish().contains("palisade_interface_rx_frames_total{interface=\"pb\"} 0\n"));
//! ```

use palisade_observe::metrics::{Exposition, MetricKind, MetricsSource};

use crate::stats::{DataPathInfo, SideTotals};

/// One interface counter: its metric name, help text, and which total it is.
type Family = (&'static str, &'static str, fn(&SideTotals) -> u64);

impl MetricsSource for DataPathInfo {
    fn write(&self, out: &mut Exposition) {
        let totals = self.totals();
        let families: [Family; 9] = [
            (
                "palisade_interface_rx_frames_total",
                "Frames received, by interface.",
                |t| t.rx,
            ),
            (
                "palisade_interface_permitted_frames_total",
                "Frames the rule set permitted, by the interface they entered.",
                |t| t.permitted,
            ),
            (
                "palisade_interface_denied_frames_total",
                "Frames the rule set denied, by the interface they entered.",
                |t| t.denied,
            ),
            (
                "palisade_interface_forwarded_frames_total",
                "Permitted frames sent out of the other interface, by the interface they entered.",
                |t| t.forwarded,
            ),
            (
                "palisade_interface_tx_errors_total",
                "Permitted frames that could not be sent, by the interface they entered.",
                |t| t.tx_errors,
            ),
            (
                "palisade_interface_oversize_frames_total",
                "Frames too long to handle, dropped before classification.",
                |t| t.oversize,
            ),
            (
                "palisade_interface_rx_errors_total",
                "Frames the kernel could not hand over (offload super-frames a packet socket cannot describe), dropped.",
                |t| t.rx_errors,
            ),
            (
                "palisade_interface_rx_dropped_frames_total",
                "Frames the kernel dropped before the data path saw them (its receive ring was full).",
                |t| t.rx_dropped,
            ),
            (
                "palisade_interface_super_frames_total",
                "GSO/GRO super-frames among the frames received, each decided and sent whole.",
                |t| t.super_frames,
            ),
        ];
        for (name, help, get) in families {
            out.family(name, MetricKind::Counter, help);
            for t in &totals {
                out.sample(name, &[("interface", &t.interface)], get(t));
            }
        }
    }
}
