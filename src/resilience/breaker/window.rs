//! Calls and failures over a sliding time window, kept in buckets.

use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window: a call stops counting between `window - window / 10`
/// and `window` after it finished.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width slice of time since `origin` this holds.
    index: u64,
    calls: u32,
    failures: u32,
}

/// Finished calls within the last `window`.
#[derive(Debug)]
pub(super) struct Window {
    origin: Instant,
    width_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(super) fn new(window: Duration, origin: Instant) -> Self {
        Window {
            origin,
            width_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Records one finished call and returns `(calls, failures)` in the
    /// window, that call included.
    pub(super) fn record(&mut self, now: Instant, failed: bool) -> (u32, u32) {
        let current = self.index(now);
        let bucket = &mut self.buckets[(current % BUCKETS as u64) as usize];
        if bucket.index != current {
            *bucket = Bucket {
                index: current,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        if failed {
            bucket.failures = bucket.failures.saturating_add(1);
        }

        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=current).contains(&b.index))
            .fold((0u32, 0u32), |(c, f), b| {
                (c.saturating_add(b.calls), f.saturating_add(b.failures))
            })
    }

    /// Forgets every call.
    pub(super) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.width_nanos).unwrap_or(u64::MAX)
    }
}
