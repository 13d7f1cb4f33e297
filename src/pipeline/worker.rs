//! The worker: takes batches off the queue, enriches them, writes them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;

use super::lifecycle::{self, LifecycleConfig};
use super::sinks::{SinkPolicy, SinkSet};
use super::stage::{AsyncSlot, Stage, run_async};
use super::{Shared, Signal};
use crate::capture::spawn_suppressed;
use crate::enrich::Redactor;
use crate::error::InitError;
use crate::event::Event;
use crate::resilience::deadline::after;
use crate::sink::DynSink;

pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) async_slots: Vec<Arc<AsyncSlot>>,
    pub(crate) lifecycle: LifecycleConfig,
    pub(crate) enrich_deadline: Duration,
    pub(crate) record_errors: bool,
    pub(crate) sinks: Vec<Box<dyn DynSink>>,
    pub(crate) sink_policy: SinkPolicy,
    pub(crate) metrics_interval: Duration,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) drop_report_interval: Duration,
    pub(crate) pipeline_depth: usize,
    pub(crate) redactor: Option<Arc<Redactor>>,
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
        spawn_suppressed(publish_metrics(
            self.shared.clone(),
            self.metrics_interval,
            stop_rx.clone(),
        ));
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
        let shared = self.shared.clone();
        let mut sinks = SinkSet::spawn(
            std::mem::take(&mut self.sinks),
            self.shared.clone(),
            self.sink_policy,
        );
        let enrichment = Enrichment {
            stages: Arc::new(std::mem::take(&mut self.stages)),
            shared: self.shared.clone(),
            budget: self.enrich_deadline,
            record_errors: self.record_errors,
            redactor: self.redactor.clone(),
        };
        let depth = self.pipeline_depth.max(1);
        // Batches being enriched, oldest first: they may overlap in the
        // async stage, but are written strictly in order.
        let mut inflight: FuturesOrdered<Enriched> = FuturesOrdered::new();
        let mut dirty = false;
        let mut reported_dropped = 0u64;
        let mut reported_undelivered = vec![0u64; sinks.len()];
        let mut next_drop_check = after(Instant::now(), self.drop_report_interval);
        // When the worker first saw intake closed: the shutdown's deadline
        // runs from about then.
        let mut closed_at: Option<Instant> = None;
        loop {
            if closed_at.is_none() && queue.is_closed() {
                closed_at = Some(Instant::now());
            }
            while inflight.len() < depth {
                // Sized by what is queued, not by the largest batch allowed.
                let mut batch = Vec::with_capacity(self.batch_size.min(queue.len().max(1)));
                let n = queue.pop_into(&mut batch, self.batch_size);
                if n == 0 {
                    break;
                }
                if n < self.batch_size
                    && inflight.is_empty()
                    && !self.linger.is_zero()
                    && !queue.is_closed()
                {
                    // A plain sleep, not a wait on the queue: waking for
                    // every new event would defeat the point of lingering.
                    tokio::time::sleep(self.linger).await;
                    queue.pop_into(&mut batch, self.batch_size - n);
                }
                inflight.push_back(enrichment.start(batch, true));
            }
            if Instant::now() >= next_drop_check {
                next_drop_check = after(Instant::now(), self.drop_report_interval);
                if let Some(record) = self.drop_record(&mut reported_dropped) {
                    inflight.push_back(enrichment.start(vec![record], false));
                }
                Self::report_undelivered(
                    &shared,
                    self.redactor.as_deref(),
                    &mut sinks,
                    &mut reported_undelivered,
                )
                .await;
            }
            if inflight.is_empty() {
                if queue.is_closed() {
                    // Closed, and nothing came in after the last look: done.
                    if queue.len() == 0 {
                        break;
                    }
                    continue;
                }
                if dirty {
                    sinks.flush();
                    dirty = false;
                }
                let until_check = next_drop_check.saturating_duration_since(Instant::now());
                queue.wait(Some(until_check)).await;
                continue;
            }
            if inflight.len() < depth && !queue.is_closed() {
                // Write the oldest batch when it is ready; meanwhile start
                // enriching whatever arrives.
                tokio::select! {
                    biased;
                    Some((batch, count)) = inflight.next() => {
                        Self::write(&shared, &mut sinks, batch, count).await;
                        dirty = true;
                    }
                    _ = queue.wait(None) => {}
                }
            } else if let Some((batch, count)) = inflight.next().await {
                Self::write(&shared, &mut sinks, batch, count).await;
                dirty = true;
            }
        }
        if let Some(record) = self.drop_record(&mut reported_dropped) {
            let (batch, count) = enrichment.start(vec![record], false).await;
            Self::write(&shared, &mut sinks, batch, count).await;
        }
        // Each sink writes what it holds and flushes; one that hangs is
        // left behind after its timeout, so the enrichers below are still
        // shut down (and their pools closed) in time. What a sink missed is
        // told to the others before they close. A sink with a buffer of its
        // own (OTLP: a collector may be coming back) may go on sending it
        // until the shutdown's deadline, less the enrichers' share; every
        // sink is stopped by then, so the report is complete when the
        // shutdown returns.
        let now = Instant::now();
        let by_shutdown = shared.shutdown_timeout().map(|t| {
            let reserve = self.lifecycle.shutdown_timeout.min(t / 4);
            after(closed_at.unwrap_or(now), t.saturating_sub(reserve)).max(now)
        });
        let deadline = after(now, self.sink_policy.timeout);
        let deadline = by_shutdown.map_or(deadline, |d| d.min(deadline));
        let buffered_deadline = by_shutdown.unwrap_or(deadline);
        sinks.drain(deadline).await;
        // Without waiting: a full sink now is one that will not drain.
        for (i, record) in
            Self::undelivered_records(&shared, self.redactor.as_deref(), &mut reported_undelivered)
        {
            sinks.write_now(record, Some(i));
        }
        sinks.close(deadline, buffered_deadline).await;
        self.shared.publish_metrics();
        let _ = stop.send(true);
        lifecycle::shutdown_all(&self.async_slots, self.lifecycle.shutdown_timeout).await;
        self.shared.done.publish(self.shared.report(false));
    }

    /// An "events dropped" record, when events were dropped since the last
    /// one.
    fn drop_record(&mut self, reported: &mut u64) -> Option<Event> {
        let dropped = self.shared.queue.dropped();
        if dropped <= *reported {
            return None;
        }
        let since = dropped - *reported;
        *reported = dropped;
        Some(
            Event::new(tracing::Level::WARN, "fapilog", "events dropped")
                .with_field("dropped", since)
                .with_field("dropped_total", dropped),
        )
    }

    /// The "events undelivered" records due: one for each sink that missed
    /// events since the last, for the other sinks. Redacted like events
    /// (a sink's error text may hold a URL).
    fn undelivered_records(
        shared: &Shared,
        redactor: Option<&Redactor>,
        reported: &mut [u64],
    ) -> Vec<(usize, Event)> {
        let mut records = Vec::new();
        for (i, (c, reported)) in shared.sinks.iter().zip(reported.iter_mut()).enumerate() {
            let total = c.undelivered.load(Ordering::Relaxed);
            if total <= *reported {
                continue;
            }
            let mut record = Event::new(tracing::Level::WARN, "fapilog", "events undelivered")
                .with_field("sink", c.name.clone())
                .with_field("undelivered", total - *reported)
                .with_field("undelivered_total", total)
                .with_field("last_error", c.snapshot().last_error.unwrap_or_default());
            if let Some(r) = redactor {
                r.redact_batch(std::slice::from_mut(&mut record));
            }
            *reported = total;
            records.push((i, record));
        }
        records
    }

    /// Writes the "events undelivered" records due.
    async fn report_undelivered(
        shared: &Shared,
        redactor: Option<&Redactor>,
        sinks: &mut SinkSet,
        reported: &mut [u64],
    ) {
        for (i, record) in Self::undelivered_records(shared, redactor, reported) {
            sinks.write(vec![record], false, Some(i)).await;
        }
    }

    /// Hands a batch to every sink. `count_emitted` is false for fapilog's
    /// own records: written, but not application events (emitted + dropped
    /// = logged).
    async fn write(shared: &Shared, sinks: &mut SinkSet, batch: Vec<Event>, count_emitted: bool) {
        let n = batch.len() as u64;
        // Emitted once handed over: from here on each sink accounts for the
        // batch (written, undelivered, or pending in a report).
        if count_emitted {
            shared.emitted.fetch_add(n, Ordering::Relaxed);
        }
        sinks.write(batch, count_emitted, None).await;
        if count_emitted {
            shared.publish_metrics();
        }
    }
}

/// Publishes the counters every `interval` until the pipeline stops, so
/// they move while no batch is written (a stuck sink, a full queue).
async fn publish_metrics(
    shared: Arc<Shared>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => shared.publish_metrics(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A batch on its way through the enrichers, and whether its events count
/// as emitted application events.
type Enriched = Pin<Box<dyn Future<Output = (Vec<Event>, bool)> + Send>>;

/// What enriching a batch needs, shareable by overlapping batches.
struct Enrichment {
    stages: Arc<Vec<Stage>>,
    shared: Arc<Shared>,
    budget: Duration,
    record_errors: bool,
    redactor: Option<Arc<Redactor>>,
}

impl Enrichment {
    /// Starts enriching a batch as a task of its own, so it makes progress
    /// (and its deadline is spent on enrichment) while the worker is busy
    /// writing earlier batches to slow sinks.
    fn start(&self, batch: Vec<Event>, count_emitted: bool) -> Enriched {
        let size = batch.len() as u64;
        let shared = self.shared.clone();
        let task = spawn_suppressed(self.enrich(batch, count_emitted));
        Box::pin(async move {
            match task.await {
                Ok(done) => done,
                Err(_) => {
                    // The task was cancelled (its runtime is shutting down):
                    // these events will not be written.
                    if count_emitted {
                        shared.queue.count_dropped(size);
                        shared.lost.fetch_add(size, Ordering::Relaxed);
                    }
                    (Vec::new(), false)
                }
            }
        })
    }

    fn enrich(
        &self,
        mut batch: Vec<Event>,
        count_emitted: bool,
    ) -> impl Future<Output = (Vec<Event>, bool)> + Send + 'static {
        let stages = self.stages.clone();
        let shared = self.shared.clone();
        let (budget, record_errors) = (self.budget, self.record_errors);
        let redactor = self.redactor.clone();
        async move {
            let deadline = after(Instant::now(), budget);
            for stage in stages.iter() {
                match stage {
                    Stage::Sync(enrichers) => {
                        for event in batch.iter_mut() {
                            for enricher in enrichers {
                                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    enricher.enrich(event)
                                }));
                                if r.is_err() {
                                    shared.enricher_panics.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Stage::Async(levels) => {
                        run_async(levels, &mut batch, deadline, budget, record_errors).await;
                    }
                }
            }
            // Last, so enriched values are covered too.
            if let Some(r) = &redactor {
                r.redact_batch(&mut batch);
            }
            (batch, count_emitted)
        }
    }
}
