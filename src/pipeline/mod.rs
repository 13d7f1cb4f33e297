//! The pipeline: bounded queue, worker, guard and builder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::Notify;

use crate::stats::{ShutdownReport, SinkCounters, Stats};

mod builder;
mod guard;
pub(crate) mod queue;
mod worker;

pub use builder::Builder;
pub use guard::Guard;

/// `now + d`, or a time decades away when that would overflow (a timeout of
/// `Duration::MAX` means "never", not a panic).
pub(crate) fn after(now: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// What a log call does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for room, up to the block timeout, then drop (counted). When the
    /// worker runs on an application runtime, a log call made on a
    /// current-thread runtime never waits: it drops at once, since that
    /// thread may be the one the worker needs to make room. Once a
    /// wait has timed out, later calls drop at once until the worker makes
    /// progress again, so a stuck sink costs one timeout, not one per call.
    #[default]
    Block,
    /// Drop the event being logged (counted).
    DropNewest,
    /// Make room by dropping the oldest queued event (counted).
    DropOldest,
}

/// State shared by the layer, the worker and the guard.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: Arc<queue::Queue>,
    pub(crate) emitted: AtomicU64,
    /// Events taken off the queue whose enrichment task was cancelled
    /// (counted in `dropped` too).
    pub(crate) lost: AtomicU64,
    pub(crate) enricher_panics: AtomicU64,
    pub(crate) sinks: Vec<SinkCounters>,
    pub(crate) done: Signal<ShutdownReport>,
    pub(crate) enrichers: Vec<Arc<crate::enrich::lifecycle::EnricherHandle>>,
    pub(crate) facade: PipelineMetrics,
}

/// The pipeline's counters on the `metrics` facade, refreshed by the
/// worker after every batch.
#[derive(Debug)]
pub(crate) struct PipelineMetrics {
    enqueued: metrics::Counter,
    emitted: metrics::Counter,
    dropped: metrics::Counter,
    queue_depth: metrics::Gauge,
}

impl PipelineMetrics {
    pub(crate) fn new() -> Self {
        PipelineMetrics {
            enqueued: metrics::counter!("fapilog_events_enqueued_total"),
            emitted: metrics::counter!("fapilog_events_emitted_total"),
            dropped: metrics::counter!("fapilog_events_dropped_total"),
            queue_depth: metrics::gauge!("fapilog_queue_depth"),
        }
    }
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        let sinks: Vec<_> = self.sinks.iter().map(|s| s.snapshot()).collect();
        let queue_depth = self.queue.len();
        Stats {
            enqueued: self.queue.popped() + queue_depth as u64 + self.queue.displaced(),
            emitted: self.emitted.load(Ordering::Relaxed),
            dropped: self.queue.dropped(),
            queue_depth,
            queue_capacity: self.queue.capacity(),
            sink_failures: sinks.iter().map(|s| s.failures).sum(),
            enricher_panics: self.enricher_panics.load(Ordering::Relaxed),
            sinks,
            enrichers: self
                .enrichers
                .iter()
                .map(|h| h.metrics.snapshot())
                .collect(),
        }
    }

    /// Copies the counters to the `metrics` facade.
    pub(crate) fn publish_metrics(&self) {
        let depth = self.queue.len();
        self.facade
            .enqueued
            .absolute(self.queue.popped() + depth as u64 + self.queue.displaced());
        self.facade
            .emitted
            .absolute(self.emitted.load(Ordering::Relaxed));
        self.facade.dropped.absolute(self.queue.dropped());
        self.facade.queue_depth.set(depth as f64);
    }

    pub(crate) fn report(&self, timed_out: bool) -> ShutdownReport {
        let s = self.stats();
        // Whatever is still queued, or was taken off the queue but not yet
        // written (a deadline passed), will not be written.
        let in_flight = self
            .queue
            .popped()
            .saturating_sub(s.emitted + self.lost.load(Ordering::Relaxed));
        ShutdownReport {
            emitted: s.emitted,
            dropped: s.dropped + s.queue_depth as u64 + in_flight,
            sink_failures: s.sink_failures,
            enricher_panics: s.enricher_panics,
            timed_out,
            enrichers: s.enrichers,
        }
    }
}

/// A value published once by one side and taken by the other, by async and
/// blocking callers alike (the worker's start-up result, its final report).
#[derive(Debug)]
pub(crate) struct Signal<T> {
    value: Mutex<Option<T>>,
    cv: Condvar,
    notify: Notify,
}

impl<T> Default for Signal<T> {
    fn default() -> Self {
        Signal {
            value: Mutex::new(None),
            cv: Condvar::new(),
            notify: Notify::new(),
        }
    }
}

impl<T> Signal<T> {
    pub(crate) fn publish(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    fn take(&self) -> Option<T> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(crate) fn wait_blocking(&self, timeout: std::time::Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.take()
    }

    pub(crate) async fn wait(&self, timeout: std::time::Duration) -> Option<T> {
        let deadline = after(tokio::time::Instant::now(), timeout);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.take() {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take();
            }
        }
    }
}
