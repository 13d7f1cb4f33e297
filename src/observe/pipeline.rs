//! The pipeline's own counters on the `metrics` facade, labelled
//! `pipeline = <name>` so that two pipelines of one process do not
//! overwrite each other's totals.

/// Handles for `fapilog_events_*` and `fapilog_queue_depth`.
#[derive(Debug)]
pub(crate) struct PipelineMetrics {
    enqueued: metrics::Counter,
    emitted: metrics::Counter,
    dropped: metrics::Counter,
    queue_depth: metrics::Gauge,
}

impl PipelineMetrics {
    pub(crate) fn new(pipeline: &str) -> Self {
        let label = [("pipeline", pipeline.to_owned())];
        PipelineMetrics {
            enqueued: metrics::counter!("fapilog_events_enqueued_total", &label),
            emitted: metrics::counter!("fapilog_events_emitted_total", &label),
            dropped: metrics::counter!("fapilog_events_dropped_total", &label),
            queue_depth: metrics::gauge!("fapilog_queue_depth", &label),
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
