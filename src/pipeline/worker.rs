//! The worker: takes batches off the queue, enriches them, writes them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{Shared, Signal};
use crate::enrich::lifecycle::{self, LifecycleConfig};
use crate::enrich::stage::{AsyncSlot, Stage, run_async};
use crate::error::InitError;
use crate::event::Event;
use crate::layer::spawn_suppressed;
use crate::sink::DynSink;

pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) async_slots: Vec<Arc<AsyncSlot>>,
    pub(crate) lifecycle: LifecycleConfig,
    pub(crate) enrich_deadline: Duration,
    pub(crate) record_errors: bool,
    pub(crate) sinks: Vec<Box<dyn DynSink>>,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) drop_report_interval: Duration,
}

impl Worker {
    /// Starts the async enrichers, publishes the outcome, then runs until
    /// the queue is closed and drained.
    pub(crate) async fn start_and_run(self, started: Arc<Signal<Result<(), InitError>>>) {
        let retry = match lifecycle::start_all(&self.async_slots, self.lifecycle).await {
            Ok(retry) => retry,
            Err(e) => {
                self.shared.queue.close();
                self.shared.done.publish(self.shared.report(false));
                started.publish(Err(e));
                return;
            }
        };
        started.publish(Ok(()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for slot in retry {
            spawn_suppressed(lifecycle::retry_startup(
                slot,
                self.lifecycle,
                stop_rx.clone(),
            ));
        }
        if !self.async_slots.is_empty() {
            spawn_suppressed(lifecycle::health_loop(
                self.async_slots.clone(),
                self.lifecycle,
                stop_rx,
            ));
        }
        self.run(stop_tx).await;
    }

    async fn run(mut self, stop: tokio::sync::watch::Sender<bool>) {
        let queue = self.shared.queue.clone();
        let mut batch: Vec<Event> = Vec::with_capacity(self.batch_size);
        let mut dirty = false;
        let mut reported_dropped = 0u64;
        let mut next_drop_check = Instant::now() + self.drop_report_interval;
        loop {
            batch.clear();
            let mut n = queue.pop_into(&mut batch, self.batch_size);
            if n == 0 {
                if queue.is_closed() {
                    // Nothing was queued after we saw it closed: done.
                    if queue.pop_into(&mut batch, self.batch_size) == 0 {
                        break;
                    }
                } else {
                    if dirty {
                        self.flush_sinks().await;
                        dirty = false;
                    }
                    let until_check = next_drop_check.saturating_duration_since(Instant::now());
                    queue.wait(Some(until_check)).await;
                    if Instant::now() >= next_drop_check {
                        next_drop_check = Instant::now() + self.drop_report_interval;
                        self.report_drops(&mut reported_dropped).await;
                    }
                    continue;
                }
            }
            if n < self.batch_size && !self.linger.is_zero() && !queue.is_closed() {
                // A plain sleep, not a wait on the queue: waking for every
                // new event would defeat the point of lingering.
                tokio::time::sleep(self.linger).await;
                n += queue.pop_into(&mut batch, self.batch_size - n);
            }
            let _ = n;
            self.process(&mut batch, true).await;
            self.shared.publish_metrics();
            dirty = true;
            if Instant::now() >= next_drop_check {
                next_drop_check = Instant::now() + self.drop_report_interval;
                self.report_drops(&mut reported_dropped).await;
            }
        }
        self.report_drops(&mut reported_dropped).await;
        self.flush_sinks().await;
        self.shared.publish_metrics();
        let _ = stop.send(true);
        lifecycle::shutdown_all(&self.async_slots, self.lifecycle.shutdown_timeout).await;
        self.shared.done.publish(self.shared.report(false));
    }

    /// Writes an "events dropped" record when events were dropped since the
    /// last one.
    async fn report_drops(&mut self, reported: &mut u64) {
        let dropped = self.shared.queue.dropped();
        if dropped <= *reported {
            return;
        }
        let since = dropped - *reported;
        *reported = dropped;
        let event = Event::new(tracing::Level::WARN, "fapilog", "events dropped")
            .with_field("dropped", since)
            .with_field("dropped_total", dropped);
        let mut batch = vec![event];
        // fapilog's own record: written, but not counted as an emitted
        // application event (emitted + dropped = logged).
        self.process(&mut batch, false).await;
    }

    async fn process(&mut self, batch: &mut [Event], count_emitted: bool) {
        let deadline = Instant::now() + self.enrich_deadline;
        for stage in &self.stages {
            match stage {
                Stage::Sync(enrichers) => {
                    for event in batch.iter_mut() {
                        for enricher in enrichers {
                            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                enricher.enrich(event)
                            }));
                            if r.is_err() {
                                self.shared.enricher_panics.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Stage::Async(levels) => {
                    run_async(
                        levels,
                        batch,
                        deadline,
                        self.enrich_deadline,
                        self.record_errors,
                    )
                    .await;
                }
            }
        }
        let batch: &[Event] = batch;
        let shared = &self.shared;
        let writes = self
            .sinks
            .iter_mut()
            .enumerate()
            .map(|(i, sink)| async move {
                let r = AssertUnwindSafe(sink.write_batch(batch))
                    .catch_unwind()
                    .await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => shared.sinks[i].fail(e.to_string()),
                    Err(_) => shared.sinks[i].fail("sink panicked".to_owned()),
                }
            });
        futures_util::future::join_all(writes).await;
        if count_emitted {
            self.shared
                .emitted
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }

    async fn flush_sinks(&mut self) {
        let shared = &self.shared;
        let flushes = self
            .sinks
            .iter_mut()
            .enumerate()
            .map(|(i, sink)| async move {
                let r = AssertUnwindSafe(sink.flush()).catch_unwind().await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => shared.sinks[i].fail(e.to_string()),
                    Err(_) => shared.sinks[i].fail("sink panicked while flushing".to_owned()),
                }
            });
        futures_util::future::join_all(flushes).await;
    }
}
