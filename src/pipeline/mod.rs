//! The pipeline: everything on the worker's side of the queue.
//!
//! The [`Builder`] plans the enrichers into stages (`stage`), starts the
//! worker — on a thread and runtime of its own, or as a task on the
//! application's runtime — and hands back the capture layer and the
//! [`Guard`]. The worker takes batches off the queue, runs them through
//! the stages (async enrichers of overlapping batches concurrently) and
//! writes them to the sinks in order; `lifecycle` starts, checks and stops
//! the async enrichers around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::capture::queue::Queue;
use crate::observe::{PipelineMetrics, ShutdownReport, SinkCounters, Stats};

mod builder;
mod guard;
mod lifecycle;
mod signal;
mod sinks;
mod stage;
mod worker;

pub use builder::Builder;
pub(crate) use builder::{MAX_BATCH_SIZE, MAX_QUEUE_CAPACITY};
pub use guard::Guard;
use lifecycle::EnricherHandle;
use signal::Signal;

/// State shared by the layer, the worker and the guard.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: Arc<Queue>,
    pub(crate) emitted: AtomicU64,
    /// Events taken off the queue whose enrichment task was cancelled
    /// (counted in `dropped` too).
    pub(crate) lost: AtomicU64,
    pub(crate) enricher_panics: AtomicU64,
    pub(crate) sinks: Vec<Arc<SinkCounters>>,
    pub(crate) done: Signal<ShutdownReport>,
    pub(crate) enrichers: Vec<Arc<EnricherHandle>>,
    pub(crate) facade: PipelineMetrics,
    /// How long the shutdown under way waits, set by the guard before it
    /// closes intake.
    pub(crate) shutdown_timeout: std::sync::Mutex<Option<std::time::Duration>>,
}

impl Shared {
    pub(crate) fn shutdown_timeout(&self) -> Option<std::time::Duration> {
        *self
            .shutdown_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Closes intake, for a shutdown that waits at most `timeout`.
    pub(crate) fn close_for_shutdown(&self, timeout: std::time::Duration) {
        *self
            .shutdown_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(timeout);
        self.queue.close();
    }

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
            malformed_traceparents: self.queue.malformed_traces(),
            sinks,
            enrichers: self.enrichers.iter().map(|h| h.stats()).collect(),
        }
    }

    /// Copies the counters to the `metrics` facade.
    pub(crate) fn publish_metrics(&self) {
        let depth = self.queue.len();
        self.facade.publish(
            self.queue.popped() + depth as u64 + self.queue.displaced(),
            self.emitted.load(Ordering::Relaxed),
            self.queue.dropped(),
            depth,
        );
    }

    pub(crate) fn report(&self, timed_out: bool) -> ShutdownReport {
        let s = self.stats();
        // Whatever is still queued, or was taken off the queue but not yet
        // written (a deadline passed), will not be written.
        let in_flight = self
            .queue
            .popped()
            .saturating_sub(s.emitted + self.lost.load(Ordering::Relaxed));
        // A sink still holding events it has not written (a hung sink the
        // shutdown stopped waiting for) will not write them now.
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .zip(s.sinks)
            .map(|(c, mut stats)| {
                stats.undelivered += c.pending();
                // Nothing is held any more: what was is undelivered.
                stats.buffered = 0;
                stats
            })
            .collect();
        ShutdownReport {
            emitted: s.emitted,
            dropped: s.dropped + s.queue_depth as u64 + in_flight,
            sink_failures: s.sink_failures,
            undelivered: sinks.iter().map(|s| s.undelivered).sum(),
            sinks,
            enricher_panics: s.enricher_panics,
            timed_out,
            enrichers: s.enrichers,
        }
    }
}
