//! Async enrichers: enrichment that talks to other systems.
//!
//! An [`AsyncEnricher`] sees a whole batch of events at once (so it can make
//! one round trip for many of them) and answers with one [`Patch`] per event
//! instead of editing the events itself. That is what lets the pipeline run
//! independent enrichers concurrently on the same batch, drop a slow
//! enricher's work at the deadline without leaving events half-edited, and
//! apply results in declared order whatever order they finished in.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::event::{Event, FieldName, Value};
use crate::metrics::{Counter, EnricherMetrics};
use crate::resilience::breaker::CircuitBreaker;

/// An enricher that does I/O. Only [`name`](AsyncEnricher::name) and
/// [`enrich`](AsyncEnricher::enrich) are required; the lifecycle methods
/// default to doing nothing and succeeding.
///
/// ```
/// use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
/// use fapilog::Event;
///
/// struct Region;
///
/// impl AsyncEnricher for Region {
///     fn name(&self) -> &str { "region" }
///
///     async fn enrich(&self, events: &[Event], out: &mut [Patch], _ctx: &EnrichContext)
///         -> Result<(), EnrichError>
///     {
///         // One lookup for the whole batch would go here.
///         for (_event, patch) in events.iter().zip(out.iter_mut()) {
///             patch.insert("region", "eu-west-1");
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncEnricher: Send + Sync + 'static {
    /// The enricher's name: used in `enrichment_errors`, health, stats,
    /// metrics labels and dependency declarations. Must be unique.
    fn name(&self) -> &str;

    /// Acquires resources (pools, clients). Runs once at start-up, with the
    /// other enrichers' start-ups, within the start-up timeout; retried in
    /// the background with backoff if it fails.
    fn startup(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }

    /// Releases resources. Runs once at shutdown, after the queue drained.
    fn shutdown(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }

    /// A cheap probe of the dependency (`SELECT 1`, `PING`). Runs
    /// periodically; a failure marks the enricher down until a later check
    /// passes.
    fn health_check(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }

    /// Computes fields for a batch: `out[i]` receives what to add to
    /// `events[i]` (or why it could not). Returning an error fails the whole
    /// batch for this enricher: every event gets an `enrichment_errors`
    /// entry and is still written.
    fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        ctx: &EnrichContext,
    ) -> impl Future<Output = Result<(), EnrichError>> + Send;

    /// `true` when the enricher guards its external calls itself with
    /// [`EnrichContext::call`] (as [`LookupEnricher`](crate::enrich::LookupEnricher)
    /// does, so cache hits are still served while the circuit is open).
    /// Otherwise the pipeline guards each whole `enrich` call with the
    /// enricher's circuit breaker and call timeout.
    fn guards_own_calls(&self) -> bool {
        false
    }
}

/// What one async enricher adds to one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub(crate) fields: Vec<(FieldName, Value)>,
    pub(crate) error: Option<Cow<'static, str>>,
}

impl Patch {
    /// Adds a top-level field to the event.
    pub fn insert(&mut self, name: impl Into<FieldName>, value: impl Into<Value>) {
        self.fields.push((name.into(), value.into()));
    }

    /// Marks this event's enrichment as failed; `reason` is written under
    /// `enrichment_errors`.
    pub fn fail(&mut self, reason: impl Into<Cow<'static, str>>) {
        self.error = Some(reason.into());
    }

    /// The fields added so far.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The failure reason, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// An async enricher's failure. Its message is written into events'
/// `enrichment_errors`: keep secrets out of it.
pub struct EnrichError {
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl EnrichError {
    /// An error with a short, lower-case message.
    pub fn msg(message: impl Into<Cow<'static, str>>) -> Self {
        EnrichError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and the error that caused it.
    pub fn new(
        message: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        EnrichError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The short message (without the source).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EnrichError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EnrichError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for EnrichError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Why a guarded call produced no result.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// The circuit was open: no call was made.
    CircuitOpen,
    /// The call took longer than the call timeout or the batch deadline.
    Timeout,
    /// The call failed.
    Failed(EnrichError),
}

impl CallError {
    /// The reason written into `enrichment_errors`: `circuit_open`,
    /// `timeout`, or the error's message.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            CallError::CircuitOpen => Cow::Borrowed("circuit_open"),
            CallError::Timeout => Cow::Borrowed("timeout"),
            CallError::Failed(e) => Cow::Owned(e.to_string()),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for CallError {}

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
    /// A context for testing an enricher outside a pipeline.
    pub fn new(
        metrics: Arc<EnricherMetrics>,
        breaker: Arc<CircuitBreaker>,
        call_timeout: Duration,
        deadline: Instant,
    ) -> Self {
        EnrichContext {
            metrics,
            breaker,
            call_timeout,
            deadline,
            budget: deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// The enricher's counters.
    pub fn metrics(&self) -> &EnricherMetrics {
        &self.metrics
    }

    /// The enricher's circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
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
        let own_limit = crate::pipeline::after(started, self.call_timeout);
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`AsyncEnricher`].
pub(crate) trait DynAsyncEnricher: Send + Sync {
    fn startup(&self) -> BoxFuture<'_, Result<(), EnrichError>>;
    fn shutdown(&self) -> BoxFuture<'_, Result<(), EnrichError>>;
    fn health_check(&self) -> BoxFuture<'_, Result<(), EnrichError>>;
    fn enrich<'a>(
        &'a self,
        events: &'a [Event],
        out: &'a mut [Patch],
        ctx: &'a EnrichContext,
    ) -> BoxFuture<'a, Result<(), EnrichError>>;
    fn guards_own_calls(&self) -> bool;
}

impl<E: AsyncEnricher> DynAsyncEnricher for E {
    fn startup(&self) -> BoxFuture<'_, Result<(), EnrichError>> {
        Box::pin(AsyncEnricher::startup(self))
    }
    fn shutdown(&self) -> BoxFuture<'_, Result<(), EnrichError>> {
        Box::pin(AsyncEnricher::shutdown(self))
    }
    fn health_check(&self) -> BoxFuture<'_, Result<(), EnrichError>> {
        Box::pin(AsyncEnricher::health_check(self))
    }
    fn enrich<'a>(
        &'a self,
        events: &'a [Event],
        out: &'a mut [Patch],
        ctx: &'a EnrichContext,
    ) -> BoxFuture<'a, Result<(), EnrichError>> {
        Box::pin(AsyncEnricher::enrich(self, events, out, ctx))
    }
    fn guards_own_calls(&self) -> bool {
        AsyncEnricher::guards_own_calls(self)
    }
}
