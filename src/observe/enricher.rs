//! Per-enricher counters and latency histograms.
//!
//! Every async enricher gets an [`EnricherMetrics`]: lock-free counters the
//! pipeline and the enricher update, and an HDR histogram of call latency
//! for percentiles. The same numbers go to the [`metrics`] facade when a
//! recorder is installed (install it before the pipeline starts), so a
//! Prometheus exporter works without extra wiring. Snapshots are plain
//! structs: [`EnricherStats`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::HealthStatus;
use crate::resilience::BreakerState;

/// Counters of one async enricher, shared by the pipeline and the enricher.
#[derive(Debug)]
pub struct EnricherMetrics {
    name: String,
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    short_circuits: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    negative_hits: AtomicU64,
    stale_served: AtomicU64,
    singleflight_waits: AtomicU64,
    refreshes: AtomicU64,
    fetches: AtomicU64,
    fetched_keys: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    batch_sizes: Mutex<Histogram<u64>>,
    m: FacadeHandles,
}

#[derive(Debug)]
struct FacadeHandles {
    calls: metrics::Counter,
    successes: metrics::Counter,
    failures: metrics::Counter,
    timeouts: metrics::Counter,
    short_circuits: metrics::Counter,
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
    negative_hits: metrics::Counter,
    stale_served: metrics::Counter,
    singleflight_waits: metrics::Counter,
    refreshes: metrics::Counter,
    fetches: metrics::Counter,
    latency: metrics::Histogram,
    batch_size: metrics::Histogram,
}

/// What one counter increment means; see [`EnricherMetrics::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Counter {
    /// A call to an external service was made (a lookup's fetch, or an
    /// enricher's batch call).
    Call,
    /// A call succeeded.
    Success,
    /// A call failed.
    Failure,
    /// A call timed out (also counted as a failure).
    Timeout,
    /// A call was not made because the circuit was open.
    ShortCircuit,
    /// A key was found fresh in the cache.
    CacheHit,
    /// A key was not in the cache (or expired).
    CacheMiss,
    /// A key was cached as not found.
    NegativeHit,
    /// An expired value was served because the fetch failed.
    StaleServed,
    /// A miss waited for another in-flight fetch of the same key.
    SingleflightWait,
    /// Keys fetched again ahead of their expiry (refresh-ahead).
    Refresh,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; cannot fail for these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

impl EnricherMetrics {
    /// Counters for the enricher called `name`, registered with the
    /// `metrics` facade under the label `enricher = name`.
    pub(crate) fn new(name: &str) -> Self {
        let label = ("enricher", name.to_owned());
        let c = |n: &'static str| metrics::counter!(n, std::slice::from_ref(&label));
        FacadeHandles {
            calls: c("fapilog_enricher_calls_total"),
            successes: c("fapilog_enricher_successes_total"),
            failures: c("fapilog_enricher_failures_total"),
            timeouts: c("fapilog_enricher_timeouts_total"),
            short_circuits: c("fapilog_enricher_short_circuits_total"),
            cache_hits: c("fapilog_enricher_cache_hits_total"),
            cache_misses: c("fapilog_enricher_cache_misses_total"),
            negative_hits: c("fapilog_enricher_cache_negative_hits_total"),
            stale_served: c("fapilog_enricher_stale_served_total"),
            singleflight_waits: c("fapilog_enricher_singleflight_waits_total"),
            refreshes: c("fapilog_enricher_refreshes_total"),
            fetches: c("fapilog_enricher_fetches_total"),
            latency: metrics::histogram!(
                "fapilog_enricher_latency_seconds",
                std::slice::from_ref(&label)
            ),
            batch_size: metrics::histogram!(
                "fapilog_enricher_batch_size",
                std::slice::from_ref(&label)
            ),
        }
        .into_metrics(name)
    }

    /// The enricher's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `n` to one counter.
    pub fn count(&self, counter: Counter, n: u64) {
        let (atomic, facade) = match counter {
            Counter::Call => (&self.calls, Some(&self.m.calls)),
            Counter::Success => (&self.successes, Some(&self.m.successes)),
            Counter::Failure => (&self.failures, Some(&self.m.failures)),
            Counter::Timeout => (&self.timeouts, Some(&self.m.timeouts)),
            Counter::ShortCircuit => (&self.short_circuits, Some(&self.m.short_circuits)),
            Counter::CacheHit => (&self.cache_hits, Some(&self.m.cache_hits)),
            Counter::CacheMiss => (&self.cache_misses, Some(&self.m.cache_misses)),
            Counter::NegativeHit => (&self.negative_hits, Some(&self.m.negative_hits)),
            Counter::StaleServed => (&self.stale_served, Some(&self.m.stale_served)),
            Counter::SingleflightWait => {
                (&self.singleflight_waits, Some(&self.m.singleflight_waits))
            }
            Counter::Refresh => (&self.refreshes, Some(&self.m.refreshes)),
        };
        atomic.fetch_add(n, Ordering::Relaxed);
        if let Some(f) = facade {
            f.increment(n);
        }
    }

    /// Records the latency of one call.
    pub fn record_latency(&self, d: Duration) {
        let micros = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(micros);
        }
        self.m.latency.record(d.as_secs_f64());
    }

    /// Records one fetch of `keys` keys.
    pub fn record_fetch(&self, keys: usize) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.fetched_keys.fetch_add(keys as u64, Ordering::Relaxed);
        self.m.fetches.increment(1);
        if let Ok(mut h) = self.batch_sizes.lock() {
            let _ = h.record((keys as u64).clamp(1, 3_600_000_000));
        }
        self.m.batch_size.record(keys as f64);
    }

    /// A snapshot of every counter and the latency percentiles.
    pub fn snapshot(&self) -> EnricherStats {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (p50, p90, p99, max, n) = match self.latency.lock() {
            Ok(h) if !h.is_empty() => (
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.max(),
                h.len(),
            ),
            _ => (0, 0, 0, 0, 0),
        };
        let (bmean, bmax) = match self.batch_sizes.lock() {
            Ok(h) if !h.is_empty() => (h.mean(), h.max()),
            _ => (0.0, 0),
        };
        EnricherStats {
            name: self.name.clone(),
            calls: ld(&self.calls),
            successes: ld(&self.successes),
            failures: ld(&self.failures),
            timeouts: ld(&self.timeouts),
            short_circuits: ld(&self.short_circuits),
            // Filled in by whoever holds the breaker too.
            breaker_opens: 0,
            cache_hits: ld(&self.cache_hits),
            cache_misses: ld(&self.cache_misses),
            negative_hits: ld(&self.negative_hits),
            stale_served: ld(&self.stale_served),
            singleflight_waits: ld(&self.singleflight_waits),
            refreshes: ld(&self.refreshes),
            fetches: ld(&self.fetches),
            fetched_keys: ld(&self.fetched_keys),
            batch_size_mean: bmean,
            batch_size_max: bmax,
            latency: LatencyStats {
                count: n,
                p50: Duration::from_micros(p50),
                p90: Duration::from_micros(p90),
                p99: Duration::from_micros(p99),
                max: Duration::from_micros(max),
            },
            shared_cache: None,
        }
    }
}

impl FacadeHandles {
    fn into_metrics(self, name: &str) -> EnricherMetrics {
        EnricherMetrics {
            name: name.to_owned(),
            calls: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            short_circuits: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            negative_hits: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            singleflight_waits: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetched_keys: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            batch_sizes: Mutex::new(histogram()),
            m: self,
        }
    }
}

/// A snapshot of one async enricher's counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnricherStats {
    /// The enricher's name.
    pub name: String,
    /// Calls made to the external service (fetches for a lookup). Each is
    /// a success, a failure, or cut off by the batch deadline (then neither,
    /// and counted in `timeouts`): `calls >= successes + failures`.
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (call timeouts included).
    pub failures: u64,
    /// Times this enricher's work on a batch was cut off: a call over the
    /// call timeout (also a failure), a call cut by the batch deadline (not
    /// a failure), or a whole batch's enrichment cut by the deadline — which
    /// may happen with no call in flight (waiting on another batch's fetch
    /// of the same key, say), so `timeouts` can exceed the calls that timed
    /// out.
    pub timeouts: u64,
    /// Calls not made because the circuit was open.
    pub short_circuits: u64,
    /// How many times the circuit breaker has opened.
    pub breaker_opens: u64,
    /// Keys found fresh in the cache.
    pub cache_hits: u64,
    /// Keys not in the cache.
    pub cache_misses: u64,
    /// Keys cached as not found.
    pub negative_hits: u64,
    /// Expired values served because the fetch failed.
    pub stale_served: u64,
    /// Misses that waited on another in-flight fetch of the same key.
    pub singleflight_waits: u64,
    /// Keys fetched again ahead of their expiry (refresh-ahead).
    pub refreshes: u64,
    /// Batched fetches made (a lookup's `fetch` calls).
    pub fetches: u64,
    /// Keys requested over all fetches.
    pub fetched_keys: u64,
    /// Mean keys per fetch.
    pub batch_size_mean: f64,
    /// Most keys in one fetch.
    pub batch_size_max: u64,
    /// Latency of calls.
    pub latency: LatencyStats,
    /// The shared (Redis) cache tier's counters and state, for a
    /// `LookupEnricher` with one.
    pub shared_cache: Option<SharedCacheStats>,
}

/// A shared tier's counters and state, from `SharedCache::stats` (and in
/// [`EnricherStats::shared_cache`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedCacheStats {
    /// Keys found in the tier (values and not-found entries).
    pub hits: u64,
    /// Keys asked for and not found there (the tier unavailable included).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Failed or timed-out round trips.
    pub errors: u64,
    /// Entries that did not decode (or were over the size limit): misses.
    pub undecodable: u64,
    /// Round trips not made because the tier's circuit was open.
    pub bypassed: u64,
    /// Keys another instance held the lease of: waited for.
    pub lease_waits: u64,
    /// Of those, keys whose value did not appear within the wait: fetched
    /// here after all.
    pub lease_takeovers: u64,
    /// The tier's circuit breaker.
    pub breaker: BreakerState,
    /// `Up`; `Degraded` after a failed round trip (until one succeeds) or
    /// while probing; `Down` while its circuit is open.
    pub status: HealthStatus,
    /// The last failure, until a round trip succeeds.
    pub last_error: Option<String>,
}

/// Latency percentiles (microsecond resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Calls recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}
