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
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::EnrichContext;
use crate::event::{Event, FieldName, FieldValue, SharedValue, Value};

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
    /// [`EnrichContext::call`] (as [`LookupEnricher`](crate::lookup::LookupEnricher)
    /// does, so cache hits are still served while the circuit is open).
    /// Otherwise the pipeline guards each whole `enrich` call with the
    /// enricher's circuit breaker and call timeout.
    fn guards_own_calls(&self) -> bool {
        false
    }

    /// The counters and state of a shared cache tier the enricher keeps,
    /// for stats and health ([`LookupEnricher`](crate::lookup::LookupEnricher)
    /// reports its [`SharedCache`](crate::lookup::SharedCache)). `None` by
    /// default.
    fn shared_cache_stats(&self) -> Option<crate::observe::SharedCacheStats> {
        None
    }
}

macro_rules! forward_async_enricher {
    ($($ty:ident),*) => {$(
        /// Hand the pipeline a shared or boxed enricher and keep a handle
        /// to it (a [`LookupEnricher`](crate::lookup::LookupEnricher)'s
        /// cache, say).
        impl<E: AsyncEnricher + ?Sized> AsyncEnricher for $ty<E> {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn startup(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
                (**self).startup()
            }
            fn shutdown(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
                (**self).shutdown()
            }
            fn health_check(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
                (**self).health_check()
            }
            fn enrich(
                &self,
                events: &[Event],
                out: &mut [Patch],
                ctx: &EnrichContext,
            ) -> impl Future<Output = Result<(), EnrichError>> + Send {
                (**self).enrich(events, out, ctx)
            }
            fn guards_own_calls(&self) -> bool {
                (**self).guards_own_calls()
            }
            fn shared_cache_stats(&self) -> Option<crate::observe::SharedCacheStats> {
                (**self).shared_cache_stats()
            }
        }
    )*};
}

forward_async_enricher!(Arc, Box);

/// What one async enricher adds to one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub(crate) fields: crate::event::Added,
    pub(crate) error: Option<Cow<'static, str>>,
}

impl Patch {
    /// Adds a top-level field to the event.
    pub fn insert(&mut self, name: impl Into<FieldName>, value: impl Into<Value>) {
        self.fields
            .push((name.into(), FieldValue::Own(value.into())));
    }

    /// Adds a top-level field whose value is shared (with a cache, say):
    /// the event holds a reference to it, not a copy, which saves copying
    /// the value for every event it is merged into.
    pub fn insert_shared(&mut self, name: impl Into<FieldName>, value: SharedValue) {
        self.fields.push((name.into(), FieldValue::Shared(value)));
    }

    /// Marks this event's enrichment as failed; `reason` is written under
    /// `enrichment_errors`.
    pub fn fail(&mut self, reason: impl Into<Cow<'static, str>>) {
        self.error = Some(reason.into());
    }

    /// The fields added so far.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), &**v))
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
    fn shared_cache_stats(&self) -> Option<crate::observe::SharedCacheStats>;
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
    fn shared_cache_stats(&self) -> Option<crate::observe::SharedCacheStats> {
        AsyncEnricher::shared_cache_stats(self)
    }
}
