//! Start-up, health checks and shutdown of async enrichers.
//!
//! All enrichers start concurrently, each within the start-up timeout. One
//! that fails does not stop the pipeline: it is reported down, its events
//! carry an `unavailable` error, and its start-up is retried in the
//! background with exponential backoff until it succeeds — unless it was
//! marked [`required`](crate::enrich::EnricherOptions::required), in which case `init`
//! fails naming it. Health checks run periodically; health is computed from
//! the last check and the circuit breaker, so it recovers by itself when the
//! dependency does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::watch;

use super::stage::AsyncSlot;
use crate::error::InitError;
use crate::observe::{EnricherHealth, EnricherMetrics, EnricherStats, HealthStatus};
use crate::resilience::breaker::{BreakerConfig, BreakerState, CircuitBreaker};

#[derive(Debug, Default)]
struct CheckState {
    healthy: bool,
    last_error: Option<String>,
    last_check: Option<SystemTime>,
}

/// The pipeline's view of one async enricher, shared with the guard.
#[derive(Debug)]
pub(crate) struct EnricherHandle {
    pub(crate) name: String,
    pub(crate) metrics: Arc<EnricherMetrics>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    started: AtomicBool,
    check: Mutex<CheckState>,
    /// The enricher, for what only it knows (its shared cache tier).
    enricher: std::sync::OnceLock<Arc<dyn crate::enrich::DynAsyncEnricher>>,
}

impl std::fmt::Debug for dyn crate::enrich::DynAsyncEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncEnricher")
    }
}

impl EnricherHandle {
    pub(crate) fn new(name: &str, breaker: BreakerConfig) -> Result<Self, InitError> {
        let breaker = CircuitBreaker::new(breaker).map_err(|e| {
            InitError::enricher(
                &format!("`{name}`"),
                format!("bad circuit breaker settings: {e}"),
            )
        })?;
        Ok(EnricherHandle {
            name: name.to_owned(),
            metrics: Arc::new(EnricherMetrics::new(name)),
            breaker: Arc::new(breaker),
            started: AtomicBool::new(false),
            check: Mutex::new(CheckState::default()),
            enricher: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn record(&self, result: Result<(), String>) {
        let mut c = self.check.lock().unwrap_or_else(|e| e.into_inner());
        c.last_check = Some(SystemTime::now());
        match result {
            Ok(()) => {
                c.healthy = true;
                c.last_error = None;
            }
            Err(e) => {
                c.healthy = false;
                c.last_error = Some(e);
            }
        }
    }

    fn set_started(&self) {
        self.record(Ok(()));
        self.started.store(true, Ordering::Release);
    }

    /// The enricher's counters, with its breaker's.
    pub(crate) fn stats(&self) -> EnricherStats {
        let mut stats = self.metrics.snapshot();
        stats.breaker_opens = self.breaker.snapshot().times_opened;
        stats.shared_cache = self.shared_cache();
        stats
    }

    pub(crate) fn set_enricher(&self, enricher: Arc<dyn crate::enrich::DynAsyncEnricher>) {
        let _ = self.enricher.set(enricher);
    }

    fn shared_cache(&self) -> Option<crate::observe::SharedCacheStats> {
        self.enricher.get().and_then(|e| e.shared_cache_stats())
    }

    pub(crate) fn health(&self) -> EnricherHealth {
        let c = self.check.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = self.breaker.state();
        let status = if !self.is_started() || !c.healthy {
            HealthStatus::Down
        } else if breaker != BreakerState::Closed {
            HealthStatus::Degraded
        } else {
            HealthStatus::Up
        };
        EnricherHealth {
            name: self.name.clone(),
            status,
            breaker,
            last_error: c.last_error.clone(),
            last_check: c.last_check,
            shared_cache: self.shared_cache(),
        }
    }
}

/// Lifecycle settings shared by all async enrichers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LifecycleConfig {
    pub(crate) startup_timeout: Duration,
    pub(crate) health_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
}

/// Runs a lifecycle hook with a timeout, turning a panic into an error.
async fn hook<F>(fut: F, timeout: Duration, what: &str) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), crate::enrich::EnrichError>>,
{
    let fut = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut));
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_panic)) => Err(format!("{what} panicked")),
        Err(_) => Err(format!("{what} took longer than {timeout:?}")),
    }
}

async fn start_one(slot: &AsyncSlot, timeout: Duration) -> Result<(), String> {
    hook(slot.enricher.startup(), timeout, "start-up").await
}

/// Starts every enricher concurrently. Returns the ones to retry in the
/// background, or an error naming a `required` enricher that failed (after
/// shutting down the ones that did start).
pub(crate) async fn start_all(
    slots: &[Arc<AsyncSlot>],
    cfg: LifecycleConfig,
) -> Result<Vec<Arc<AsyncSlot>>, InitError> {
    let results =
        futures_util::future::join_all(slots.iter().map(|s| start_one(s, cfg.startup_timeout)))
            .await;
    let mut retry = Vec::new();
    let mut fatal = None;
    for (slot, result) in slots.iter().zip(results) {
        match result {
            Ok(()) => slot.handle.set_started(),
            Err(e) if slot.opts.required => {
                if fatal.is_none() {
                    fatal = Some(InitError::required(&slot.handle.name, &e));
                }
                slot.handle.record(Err(e));
            }
            Err(e) => {
                slot.handle.record(Err(e));
                retry.push(slot.clone());
            }
        }
    }
    if let Some(err) = fatal {
        shutdown_all(slots, cfg.shutdown_timeout).await;
        return Err(err);
    }
    Ok(retry)
}

/// Retries a failed start-up with exponential backoff until it succeeds or
/// the pipeline stops.
pub(crate) async fn retry_startup(
    slot: Arc<AsyncSlot>,
    cfg: LifecycleConfig,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(cfg.retry_min)
        .with_max_delay(cfg.retry_max)
        .with_jitter()
        .without_max_times();
    // The start-up just failed: wait before the first retry too.
    tokio::select! {
        _ = tokio::time::sleep(cfg.retry_min) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let attempt = || start_one(&slot, cfg.startup_timeout);
    let retried = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e: &String, _| slot.handle.record(Err(e.clone())));
    let stopping = stop.clone();
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => {}
        r = retried => {
            // Shutdown may have begun while the last attempt ran: an
            // enricher started now would never be shut down.
            if r.is_ok() && !*stopping.borrow() {
                slot.handle.set_started();
            }
        }
    }
}

/// Runs every started enricher's health check each interval.
pub(crate) async fn health_loop(
    slots: Vec<Arc<AsyncSlot>>,
    cfg: LifecycleConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; start-up just ran
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let checks = slots
            .iter()
            .filter(|s| s.handle.is_started())
            .map(|s| async move {
                let r = hook(
                    s.enricher.health_check(),
                    cfg.startup_timeout,
                    "health check",
                )
                .await;
                s.handle.record(r);
            });
        futures_util::future::join_all(checks).await;
    }
}

/// Shuts every started enricher down concurrently, each within `timeout`.
pub(crate) async fn shutdown_all(slots: &[Arc<AsyncSlot>], timeout: Duration) {
    let stops = slots
        .iter()
        .filter(|s| s.handle.is_started())
        .map(|s| async move {
            let r = hook(s.enricher.shutdown(), timeout, "shutdown").await;
            s.handle.started.store(false, Ordering::Release);
            s.handle
                .record(r.map_err(|e| format!("shutdown failed: {e}")));
        });
    futures_util::future::join_all(stops).await;
}
