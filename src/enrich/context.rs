//! The context an async enricher gets with each batch: its metrics, its
//! circuit breaker, its call timeout and the batch's deadline, and
//! [`EnrichContext::call`], which guards one external call with all four.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{CallError, EnrichError};
use crate::error::ConfigError;
use crate::observe::{Counter, EnricherMetrics, EnricherStats};
use crate::resilience::BreakerState;
use crate::resilience::breaker::{BreakerConfig, CircuitBreaker};
use crate::resilience::deadline::after;

/// What the pipeline hands an async enricher with each batch: its metrics,
/// its circuit breaker, its call timeout and the batch's deadline.
#[derive(Debug, Clone)]
pub struct EnrichContext {
    pub(crate) metrics: Arc<EnricherMetrics>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) call_timeout: Duration,
    pub(crate) deadline: Instant,
    /// The whole batch's time for async enrichment.
    pub(crate) budget: Duration,
}

impl EnrichContext {
    /// The pipeline's context for one batch of one enricher.
    pub(crate) fn new(
        metrics: Arc<EnricherMetrics>,
        breaker: Arc<CircuitBreaker>,
        call_timeout: Duration,
        deadline: Instant,
        budget: Duration,
    ) -> Self {
        EnrichContext {
            metrics,
            breaker,
            call_timeout,
            deadline,
            budget,
        }
    }

    /// A context for calling an enricher outside a pipeline — in its own
    /// tests, say — as the pipeline would: counters of its own, a circuit
    /// breaker with [`BreakerConfig::default`], a 500 ms call timeout and a
    /// deadline 10 s from now. Clones share the counters and the breaker.
    ///
    /// ```
    /// use fapilog::enrich::{AsyncEnricher, EnrichContext, Patch};
    /// use fapilog::lookup::{Key, LookupEnricher};
    /// # use fapilog::{enrich::EnrichError, lookup::{Found, Lookup}};
    /// # struct Users;
    /// # impl Lookup for Users {
    /// #     async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
    /// #         Ok(keys.iter().map(|k| (k.clone(), serde_json::json!("Ada"))).collect())
    /// #     }
    /// # }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let users = LookupEnricher::builder("user", Users).key_field("user_id").build();
    /// let ctx = EnrichContext::detached("user");
    /// let events = [fapilog::Event::new(tracing::Level::INFO, "app", "hi").with_field("user_id", 7)];
    /// let mut out = vec![Patch::default()];
    /// users.enrich(&events, &mut out, &ctx).await.unwrap();
    /// assert_eq!(out[0].fields().next().map(|(k, _)| k), Some("user"));
    /// assert_eq!(ctx.stats().fetches, 1);
    /// # }
    /// ```
    #[must_use]
    pub fn detached(name: &str) -> Self {
        let breaker = CircuitBreaker::new(BreakerConfig::default())
            .unwrap_or_else(|_| unreachable!("the default breaker settings are valid"));
        let budget = Duration::from_secs(10);
        EnrichContext {
            metrics: Arc::new(EnricherMetrics::new(name)),
            breaker: Arc::new(breaker),
            call_timeout: Duration::from_millis(500),
            deadline: after(Instant::now(), budget),
            budget,
        }
    }

    /// This context with a circuit breaker of its own, configured so.
    pub fn with_breaker(mut self, config: BreakerConfig) -> Result<Self, ConfigError> {
        let breaker =
            CircuitBreaker::new(config).map_err(|e| ConfigError::at("breaker", e.to_string()))?;
        self.breaker = Arc::new(breaker);
        Ok(self)
    }

    /// This context with another call timeout.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// This context with the batch's deadline `budget` from now.
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.deadline = after(Instant::now(), budget);
        self.budget = budget;
        self
    }

    /// The enricher's counters, to count what [`call`](Self::call) cannot
    /// see (cache hits, say).
    pub fn metrics(&self) -> &EnricherMetrics {
        &self.metrics
    }

    /// A snapshot of the enricher's counters.
    pub fn stats(&self) -> EnricherStats {
        let mut stats = self.metrics.snapshot();
        stats.breaker_opens = self.breaker.snapshot().times_opened;
        stats
    }

    /// The state of the enricher's circuit breaker.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// When this batch's enrichment must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs one external call under the circuit breaker, the call timeout
    /// (capped by the batch deadline) and the metrics: an open circuit
    /// returns at once without calling; a failure, a call timeout or a
    /// panic counts against the breaker. A call cut off by the batch
    /// deadline after earlier enrichers had used more than half of the
    /// batch's time is a `Timeout` for the events but is not held against
    /// the breaker.
    pub async fn call<T, F>(&self, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, EnrichError>> + Send,
    {
        let Ok(permit) = self.breaker.try_acquire() else {
            self.metrics.count(Counter::ShortCircuit, 1);
            return Err(CallError::CircuitOpen);
        };
        self.metrics.count(Counter::Call, 1);
        let started = Instant::now();
        let own_limit = after(started, self.call_timeout);
        // The batch deadline may leave less time than the call timeout. A
        // call that had at least half the batch's budget and still did not
        // answer is the dependency failing; one squeezed by earlier
        // enrichers into less than that is not held against it.
        let squeezed = self.deadline.saturating_duration_since(started) < self.budget / 2;
        let cut_by_deadline = self.deadline < own_limit && squeezed;
        let deadline = self.deadline.min(own_limit);
        let fut: Pin<Box<dyn Future<Output = _> + Send + '_>> =
            Box::pin(AssertUnwindSafe(fut).catch_unwind());
        let result = tokio::time::timeout_at(deadline, fut).await;
        self.metrics.record_latency(started.elapsed());
        match result {
            Ok(Ok(Ok(v))) => {
                permit.success();
                self.metrics.count(Counter::Success, 1);
                Ok(v)
            }
            Ok(Ok(Err(e))) => {
                permit.failure();
                self.metrics.count(Counter::Failure, 1);
                Err(CallError::Failed(e))
            }
            Ok(Err(_panic)) => {
                permit.failure();
                self.metrics.count(Counter::Failure, 1);
                Err(CallError::Failed(EnrichError::msg("panicked")))
            }
            Err(_elapsed) if cut_by_deadline => {
                permit.abandon();
                self.metrics.count(Counter::Timeout, 1);
                Err(CallError::Timeout)
            }
            Err(_elapsed) => {
                permit.failure();
                self.metrics.count(Counter::Failure, 1);
                self.metrics.count(Counter::Timeout, 1);
                Err(CallError::Timeout)
            }
        }
    }
}
