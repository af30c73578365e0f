//! The per-rule rate limiter: a token bucket shared by every worker.
//!
//! Each logged rule has one [`RateLimiter`]: `burst` records at once, then
//! `rate` records a second. It is the bucket of the generic cell rate
//! algorithm (GCRA), kept as one atomic "theoretical arrival time": a record
//! is admitted when that time is at most `burst - 1` intervals ahead of now,
//! and admitting moves it one interval on. A frame over the limit costs one
//! load and no write, so workers flooding the same rule do not fight over
//! its cache line; only the `rate` admitted records a second write it.
//!
//! Time is passed in (nanoseconds on any monotonic clock), so tests drive
//! it by hand and the data path reads the clock once per batch.
//!
//! ```
//! use palisade_observe::limit::RateLimiter;
//! let limit = RateLimiter::new();
//! let (rate, burst) = (10, 3);
//! let t0 = 5_000_000_000;
//! let admitted = (0..100).filter(|_| limit.admit(t0, rate, burst)).count();
//! assert_eq!(admitted, 3); // the burst
//! assert!(!limit.admit(t0 + 99_000_000, rate, burst)); // 99 ms later: not yet
//! assert!(limit.admit(t0 + 100_000_000, rate, burst)); // one interval (1/rate) later
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One rule's token bucket (see the module docs). Aligned to a cache line
/// so two rules' buckets never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RateLimiter {
    /// When the bucket would be full again, in the caller's nanoseconds
    /// (the GCRA's theoretical arrival time).
    tat: AtomicU64,
}

impl RateLimiter {
    /// A full bucket.
    pub const fn new() -> Self {
        RateLimiter {
            tat: AtomicU64::new(0),
        }
    }

    /// Whether a record at `now_ns` is within `rate` records a second with
    /// bursts of `burst`; if so, it is counted against the bucket. `rate` and
    /// `burst` of 0 are taken as 1 (the rule language refuses 0).
    #[inline]
    pub fn admit(&self, now_ns: u64, rate: u32, burst: u32) -> bool {
        self.admit_at(now_ns, Rate::new(rate, burst))
    }

    /// [`RateLimiter::admit`] with the rate's interval worked out beforehand
    /// (the data path's form: no division per frame).
    #[inline]
    pub fn admit_at(&self, now_ns: u64, rate: Rate) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_ns);
            if start - now_ns > rate.tolerance {
                return false; // over the limit: no write
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(rate.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// A rate and burst as the bucket uses them: nanoseconds between records,
/// and how far ahead of now the bucket may run.
///
/// ```
/// let r = palisade_observe::limit::Rate::new(10, 20);
/// assert_eq!((r.interval, r.tolerance), (100_000_000, 1_900_000_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds per record at the steady rate.
    pub interval: u64,
    /// `burst - 1` intervals.
    pub tolerance: u64,
}

impl Rate {
    /// `rate` records a second with bursts of `burst` (0 is taken as 1).
    pub const fn new(rate: u32, burst: u32) -> Rate {
        let rate = if rate == 0 { 1 } else { rate };
        let burst = if burst == 0 { 1 } else { burst };
        let interval = NANOS_PER_SEC / rate as u64;
        Rate {
            interval,
            tolerance: interval.saturating_mul(burst as u64 - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_quiet_bucket_refills_to_the_burst_and_no_further() {
        let l = RateLimiter::new();
        let t = 1_000 * MS;
        assert_eq!((0..50).filter(|_| l.admit(t, 10, 20)).count(), 20);
        // An hour of silence gives one burst, not 36,000 records.
        let later = t + 3_600_000 * MS;
        assert_eq!((0..50).filter(|_| l.admit(later, 10, 20)).count(), 20);
    }

    #[test]
    fn steady_flood_gets_burst_plus_rate_times_seconds() {
        let l = RateLimiter::new();
        let (rate, burst) = (10u32, 20u32);
        // One frame a millisecond for 3 s.
        let start = 10_000 * MS;
        let admitted = (0..3000).filter(|i| l.admit(start + i * MS, rate, burst)).count();
        // burst at once, then one every 100 ms over 2.999 s.
        assert_eq!(admitted, 20 + 29);
    }

    #[test]
    fn burst_one_is_an_even_rate() {
        let l = RateLimiter::new();
        let t = 7 * MS;
        assert!(l.admit(t, 4, 1));
        assert!(!l.admit(t, 4, 1));
        assert!(!l.admit(t + 249 * MS, 4, 1));
        assert!(l.admit(t + 250 * MS, 4, 1));
    }

    #[test]
    fn zero_rate_and_burst_behave_as_one_and_time_going_back_is_harmless() {
        let l = RateLimiter::new();
        assert!(l.admit(5_000 * MS, 0, 0));
        assert!(!l.admit(5_000 * MS, 0, 0));
        assert!(!l.admit(0, 0, 0)); // a clock behind the bucket: still limited, no overflow
        assert!(l.admit(6_000 * MS, 0, 0));
    }

    #[test]
    fn workers_sharing_a_bucket_admit_exactly_the_burst_together() {
        let l = std::sync::Arc::new(RateLimiter::new());
        let t = 42 * MS;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || (0..10_000).filter(|_| l.admit(t, 1, 100)).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
    }
}
