//! Counters a running pipeline keeps, as plain snapshots.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use super::HealthStatus;

/// A snapshot of the pipeline's counters, from [`Guard::stats`](crate::Guard::stats).
///
/// Once the pipeline has shut down, every event logged is either `emitted`
/// or `dropped`, and every emitted event is, for each sink, either
/// `written` or `undelivered` ([`SinkStats`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted into the queue (including ones later pushed out by
    /// [`Overflow::DropOldest`](crate::Overflow::DropOldest)).
    pub enqueued: u64,
    /// Events handed to the sinks.
    pub emitted: u64,
    /// Events that will never be written: queue full, pushed out by a newer
    /// event, or logged after shutdown.
    pub dropped: u64,
    /// Events waiting in the queue now.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Failed sink write and flush attempts (retries included), over all
    /// sinks; see [`sinks`](Self::sinks) for the events each one missed.
    pub sink_failures: u64,
    /// Sync enricher calls that panicked (the event was still written).
    pub enricher_panics: u64,
    /// `traceparent` fields (of events or spans) that were not a valid W3C
    /// trace context: kept as fields, ignored as the event's trace.
    pub malformed_traceparents: u64,
    /// Per-sink detail, in the order the sinks were added.
    pub sinks: Vec<SinkStats>,
    /// Per-async-enricher counters and latency, in declared order.
    pub enrichers: Vec<super::EnricherStats>,
}

/// One sink's counters. Once the pipeline has shut down, every emitted
/// event is, for every sink, either `written` or `undelivered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkStats {
    /// The sink's name.
    pub name: String,
    /// Events the sink accepted.
    pub written: u64,
    /// Events that never reached the sink: its writes failed after the
    /// retries, timed out, or it was stalled when they came.
    pub undelivered: u64,
    /// Failed write and flush attempts (retries included).
    pub failures: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// `Up` while writes succeed; `Degraded` while a failed write is being
    /// retried (for the OTLP sink: while the collector refuses or cannot be
    /// reached and events wait in its retry buffer); `Down` once events
    /// were given up on and nothing has been written since.
    pub status: HealthStatus,
    /// Events the sink holds but has not delivered yet (the OTLP sink's
    /// retry buffer, requests in flight included); 0 for sinks that write
    /// before they return.
    pub buffered: u64,
}

/// What [`Guard::shutdown`](crate::Guard::shutdown) accomplished.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events handed to the sinks over the pipeline's life.
    pub emitted: u64,
    /// Events never written, over the pipeline's life (including any still
    /// queued when a shutdown deadline passed).
    pub dropped: u64,
    /// Failed sink write and flush attempts (retries included).
    pub sink_failures: u64,
    /// Events that never reached some sink, summed over the sinks (see
    /// [`sinks`](Self::sinks) for which).
    pub undelivered: u64,
    /// Each sink's counters at the end, in the order they were added.
    pub sinks: Vec<SinkStats>,
    /// Sync enricher panics.
    pub enricher_panics: u64,
    /// The deadline passed before the queue was drained.
    pub timed_out: bool,
    /// Each async enricher's counters at the end, in declared order.
    pub enrichers: Vec<super::EnricherStats>,
}

#[derive(Debug)]
pub(crate) struct SinkCounters {
    pub(crate) name: String,
    /// The sink reports `written` and `undelivered` itself, after its
    /// `write_batch` returned (it delivers from a buffer of its own).
    pub(crate) deferred: bool,
    /// Whether the batch being handed to a deferred sink now is counted
    /// (fapilog's own records are written but not counted).
    pub(crate) counting: AtomicBool,
    pub(crate) buffered: AtomicU64,
    status: AtomicU8,
    /// Events handed to the sink's runner (application events only).
    pub(crate) sent: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) undelivered: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl SinkCounters {
    pub(crate) fn new(name: &str, deferred: bool) -> Self {
        SinkCounters {
            name: name.to_owned(),
            deferred,
            counting: AtomicBool::new(true),
            buffered: AtomicU64::new(0),
            status: AtomicU8::new(0),
            sent: AtomicU64::new(0),
            written: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn set_status(&self, status: HealthStatus) {
        let v = match status {
            HealthStatus::Up => 0,
            HealthStatus::Degraded => 1,
            HealthStatus::Down => 2,
        };
        self.status.store(v, Ordering::Relaxed);
    }

    pub(crate) fn status(&self) -> HealthStatus {
        match self.status.load(Ordering::Relaxed) {
            0 => HealthStatus::Up,
            1 => HealthStatus::Degraded,
            _ => HealthStatus::Down,
        }
    }

    pub(crate) fn fail(&self, message: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// Events sent but neither written nor counted undelivered yet.
    pub(crate) fn pending(&self) -> u64 {
        let done = self.written.load(Ordering::Relaxed) + self.undelivered.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed).saturating_sub(done)
    }

    pub(crate) fn snapshot(&self) -> SinkStats {
        SinkStats {
            name: self.name.clone(),
            written: self.written.load(Ordering::Relaxed),
            undelivered: self.undelivered.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            status: self.status(),
            buffered: self.buffered.load(Ordering::Relaxed),
        }
    }
}
