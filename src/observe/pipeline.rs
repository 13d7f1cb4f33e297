//! The pipeline's own counters on the `metrics` facade.

/// Handles for `fapilog_events_*` and `fapilog_queue_depth`.
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

    /// Sets every handle to the pipeline's current totals.
    pub(crate) fn publish(&self, enqueued: u64, emitted: u64, dropped: u64, depth: usize) {
        self.enqueued.absolute(enqueued);
        self.emitted.absolute(emitted);
        self.dropped.absolute(dropped);
        self.queue_depth.set(depth as f64);
    }
}
