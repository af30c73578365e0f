//! Time for the flow table: a monotonic clock, injectable for tests.
//!
//! The table counts time in [`Tick`]s of 16 ms held in 32 bits (they wrap
//! after 795 days; idle times are computed with wrapping arithmetic and the
//! longest timeout, 30 days, is far below half the range).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Milliseconds in one tick.
pub const TICK_MS: u64 = 16;

/// A point in time of the flow table, in ticks of [`TICK_MS`] milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Tick(pub u32);

impl Tick {
    /// The tick of a time in milliseconds.
    ///
    /// ```
    /// use palisade_engine::flow::Tick;
    /// assert_eq!(Tick::from_millis(1_000), Tick(62));
    /// ```
    pub const fn from_millis(ms: u64) -> Tick {
        Tick((ms / TICK_MS) as u32)
    }

    /// The ticks in `secs` seconds, rounded up.
    ///
    /// ```
    /// assert_eq!(palisade_engine::flow::Tick::span_of_secs(1), 63);
    /// ```
    pub const fn span_of_secs(secs: u32) -> u32 {
        (secs as u64 * 1000).div_ceil(TICK_MS) as u32
    }

    /// Ticks from `earlier` to `self`; 0 when `earlier` is later (another worker's clock ran ahead).
    ///
    /// ```
    /// use palisade_engine::flow::Tick;
    /// assert_eq!(Tick(10).since(Tick(4)), 6);
    /// assert_eq!(Tick(4).since(Tick(10)), 0);
    /// ```
    #[inline]
    pub const fn since(self, earlier: Tick) -> u32 {
        let d = self.0.wrapping_sub(earlier.0);
        if d > i32::MAX as u32 {
            0
        } else {
            d
        }
    }
}

/// A monotonic clock in milliseconds from an arbitrary start.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the clock's start; never decreases.
    fn now_ms(&self) -> u64;

    /// The current [`Tick`].
    fn tick(&self) -> Tick {
        Tick::from_millis(self.now_ms())
    }
}

/// The system's monotonic clock, from the moment it is created.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told: for tests of timeouts.
///
/// ```
/// use palisade_engine::flow::{Clock, ManualClock};
/// let c = ManualClock::new();
/// c.advance_secs(61);
/// assert_eq!(c.now_ms(), 61_000);
/// let shared = c.clone();
/// shared.advance_ms(5);
/// assert_eq!(c.now_ms(), 61_005);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at 0 ms.
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Moves the clock (and every clone of it) forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance_ms(secs * 1000);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }
}
