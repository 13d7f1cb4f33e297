//! Delivery to sinks: each sink driven by a task of its own, fed in order
//! through a short channel, with retries, timeouts and per-sink accounting.
//!
//! Why: a sink that stalls must stall only itself. The built-in sinks do
//! their blocking I/O on tokio's blocking pool (`spawn_blocking`, one
//! write at a time, so order is kept), never on the runtime that drives
//! the enrichers' timers: a disk that stalls for 200 ms would otherwise
//! stall every timer with it — healthy lookups would time out and open
//! their breakers, and their latency would blame the database for the
//! disk. A slow sink's channel fills; the worker waits for it at most the
//! sink timeout once, and from then on counts the events that sink misses
//! as undelivered (without waiting again) until it takes a batch again.
//! Other sinks and enrichment go on.
//!
//! (A thread per sink would isolate a user's blocking sink too, but its
//! clock is not the runtime's: under tokio's paused test clock every wait
//! for it would time out at once. Tasks plus `spawn_blocking` keep one
//! clock, and the blocking pool holds auto-advance off while it works.)
//!
//! Every event handed to a sink is, in the end, counted for it either as
//! written or as undelivered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Shared;
use crate::capture::spawn_suppressed;
use crate::event::Event;
use crate::observe::{HealthStatus, SinkCounters};
use crate::sink::DynSink;

/// How the pipeline treats its sinks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkPolicy {
    /// Longest one write or flush may take, and longest the worker waits
    /// for a sink to take a batch.
    pub(crate) timeout: Duration,
    /// Retries of a failed write before its events are undelivered.
    pub(crate) retries: u32,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
}

/// Batches a sink's channel holds while the sink is busy.
const CHANNEL_BATCHES: usize = 4;

enum Job {
    Write {
        batch: Arc<Vec<Event>>,
        count: bool,
    },
    Flush,
    /// Flushes, then answers: everything sent before it is accounted.
    Drain(oneshot::Sender<()>),
}

struct Runner {
    tx: Option<mpsc::Sender<Job>>,
    /// A flush was asked for while the channel was full: the runner
    /// flushes once it has taken what is queued.
    flush_owed: Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The last wait for room timed out; cleared once the sink takes a
    /// batch again.
    stalled: bool,
}

/// The pipeline's sinks, each behind its runner task.
pub(crate) struct SinkSet {
    runners: Vec<Runner>,
    shared: Arc<Shared>,
    policy: SinkPolicy,
}

impl SinkSet {
    /// Starts a runner task per sink on the current runtime;
    /// `shared.sinks[i]` counts for `sinks[i]`.
    pub(crate) fn spawn(
        sinks: Vec<Box<dyn DynSink>>,
        shared: Arc<Shared>,
        policy: SinkPolicy,
    ) -> Self {
        let runners = sinks
            .into_iter()
            .enumerate()
            .map(|(i, sink)| {
                let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
                let shared_ = shared.clone();
                let flush_owed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let owed = flush_owed.clone();
                let task = spawn_suppressed(async move {
                    run(sink, rx, &shared_.sinks[i], policy, &owed).await;
                });
                Runner {
                    tx: Some(tx),
                    flush_owed,
                    task: Some(task),
                    stalled: false,
                }
            })
            .collect();
        SinkSet {
            runners,
            shared,
            policy,
        }
    }

    /// Hands a record to every sink but `except` that has room now, without
    /// waiting (for the last records of a shutdown, which has a deadline).
    pub(crate) fn write_now(&mut self, record: Event, except: Option<usize>) {
        let batch = Arc::new(vec![record]);
        for (i, r) in self.runners.iter().enumerate() {
            if Some(i) != except
                && let Some(tx) = &r.tx
            {
                let _ = tx.try_send(Job::Write {
                    batch: batch.clone(),
                    count: false,
                });
            }
        }
    }

    /// Hands a batch to every sink but `except`. `count` is false for
    /// fapilog's own records, which are written but not accounted.
    pub(crate) async fn write(&mut self, batch: Vec<Event>, count: bool, except: Option<usize>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let batch = Arc::new(batch);
        let (shared, timeout) = (&self.shared, self.policy.timeout);
        let sends = self
            .runners
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(i, runner)| {
                let c = &shared.sinks[i];
                let job = Job::Write {
                    batch: batch.clone(),
                    count,
                };
                async move {
                    if count {
                        c.sent.fetch_add(n, Ordering::Relaxed);
                    }
                    if !runner.hand(job, c, timeout).await && count {
                        c.undelivered.fetch_add(n, Ordering::Relaxed);
                    }
                }
            });
        futures_util::future::join_all(sends).await;
    }

    /// Asks every sink to flush: now if its channel has room, else once
    /// it has taken what is queued (a flush is never lost: a sink that
    /// sends partial batches only on a flush would hold them forever).
    pub(crate) fn flush(&mut self) {
        for r in &self.runners {
            if let Some(tx) = &r.tx
                && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Job::Flush)
            {
                r.flush_owed.store(true, Ordering::Release);
            }
        }
    }

    /// Waits until every sink has written (or given up on) what it was
    /// sent, or `deadline` passes.
    pub(crate) async fn drain(&mut self, deadline: Instant) {
        let waits = self
            .runners
            .iter()
            .filter_map(|r| r.tx.clone())
            .map(|tx| async move {
                let (ack, done) = oneshot::channel();
                let _ = tokio::time::timeout_at(deadline, async {
                    if tx.send(Job::Drain(ack)).await.is_ok() {
                        let _ = done.await;
                    }
                })
                .await;
            });
        futures_util::future::join_all(waits).await;
    }

    /// Closes every sink: each writes what it holds, flushes and stops.
    /// Waits until `deadline`; a sink still busy then is stopped (its
    /// events pending are undelivered in the report).
    /// A sink that holds records of its own (it accounts for them itself)
    /// is waited for until `buffered_deadline` instead.
    pub(crate) async fn close(&mut self, deadline: Instant, buffered_deadline: Instant) {
        for r in &mut self.runners {
            r.tx = None;
        }
        let shared = &self.shared;
        let waits = self
            .runners
            .iter_mut()
            .enumerate()
            .filter_map(|(i, r)| r.task.take().map(|t| (i, t)))
            .map(|(i, task)| async move {
                let deadline = if shared.sinks[i].deferred {
                    buffered_deadline
                } else {
                    deadline
                };
                let abort = task.abort_handle();
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    // Stop it: a sink still retrying (a collector that is
                    // down) would otherwise go on after the report.
                    abort.abort();
                }
            });
        futures_util::future::join_all(waits).await;
    }

    /// How many sinks there are.
    pub(crate) fn len(&self) -> usize {
        self.runners.len()
    }
}

impl Runner {
    /// Gives the sink a job; false when it was not taken.
    async fn hand(&mut self, job: Job, c: &SinkCounters, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(job) {
            Ok(()) => {
                self.stalled = false;
                true
            }
            Err(mpsc::error::TrySendError::Full(job)) if !self.stalled => {
                match tokio::time::timeout(timeout, tx.send(job)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(_)) => false,
                    Err(_) => {
                        self.stalled = true;
                        c.set_status(HealthStatus::Down);
                        c.fail(format!(
                            "sink stalled: it took no batch for {timeout:?}; its events are undelivered until it does"
                        ));
                        false
                    }
                }
            }
            // Still stalled: do not wait for it again.
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                c.fail("sink task ended".to_owned());
                false
            }
        }
    }
}

/// The runner: takes jobs in order until the pipeline closes the channel.
async fn run(
    mut sink: Box<dyn DynSink>,
    mut rx: mpsc::Receiver<Job>,
    c: &SinkCounters,
    policy: SinkPolicy,
    flush_owed: &std::sync::atomic::AtomicBool,
) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Write { batch, count } => deliver(&mut *sink, &batch, count, c, policy).await,
            Job::Flush => {
                flush_owed.store(false, Ordering::Relaxed);
                flush(&mut *sink, c, policy).await;
            }
            Job::Drain(ack) => {
                flush_owed.store(false, Ordering::Relaxed);
                flush(&mut *sink, c, policy).await;
                let _ = ack.send(());
            }
        }
        if rx.is_empty() && flush_owed.swap(false, Ordering::Acquire) {
            flush(&mut *sink, c, policy).await;
        }
    }
    // Bounded by the shutdown deadline (`SinkSet::close` stops waiting),
    // not the sink timeout: a sink with a buffer of its own may need
    // longer than one write to hand it over.
    match AssertUnwindSafe(sink.close()).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => c.fail(e.to_string()),
        Err(_) => c.fail("sink panicked while closing".to_owned()),
    }
}

/// Writes one batch, retrying what was not written, and accounts for every
/// event of it.
async fn deliver(
    sink: &mut dyn DynSink,
    batch: &[Event],
    count: bool,
    c: &SinkCounters,
    policy: SinkPolicy,
) {
    let mut offset = 0;
    let mut backoff = policy.retry_min;
    let mut attempt = 0;
    // A deferred sink counts what it accepted itself, once it knows.
    c.counting.store(count, Ordering::Relaxed);
    while offset < batch.len() {
        let rest = &batch[offset..];
        let outcome = tokio::time::timeout(
            policy.timeout,
            AssertUnwindSafe(sink.write_batch(rest)).catch_unwind(),
        )
        .await;
        let retry = match outcome {
            Ok(Ok(Ok(()))) => {
                offset = batch.len();
                break;
            }
            Ok(Ok(Err(e))) => {
                offset += e.written().min(rest.len());
                c.fail(e.to_string());
                true
            }
            Ok(Err(_panic)) => {
                c.fail("sink panicked".to_owned());
                false
            }
            Err(_elapsed) => {
                // Part of the batch may be out: retrying could write it twice.
                c.fail(format!("sink write took longer than {:?}", policy.timeout));
                false
            }
        };
        if !retry || attempt >= policy.retries {
            break;
        }
        if !c.deferred {
            c.set_status(HealthStatus::Degraded);
        }
        attempt += 1;
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(policy.retry_max);
    }
    let missed = (batch.len() - offset) as u64;
    if count {
        if !c.deferred {
            c.written.fetch_add(offset as u64, Ordering::Relaxed);
        }
        c.undelivered.fetch_add(missed, Ordering::Relaxed);
    }
    if !c.deferred {
        c.set_status(if missed == 0 {
            HealthStatus::Up
        } else {
            HealthStatus::Down
        });
    }
}

async fn flush(sink: &mut dyn DynSink, c: &SinkCounters, policy: SinkPolicy) {
    match tokio::time::timeout(
        policy.timeout,
        AssertUnwindSafe(sink.flush()).catch_unwind(),
    )
    .await
    {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => c.fail(e.to_string()),
        Ok(Err(_)) => c.fail("sink panicked while flushing".to_owned()),
        Err(_) => c.fail(format!("sink flush took longer than {:?}", policy.timeout)),
    }
}
