//! Enrichers add context to events on the worker, never on the caller.
//!
//! [`AsyncEnricher`]s do I/O (databases, HTTP APIs, Redis) with a lifecycle,
//! timeouts, a circuit breaker and metrics; most are key lookups, built
//! with [`LookupEnricher`](crate::lookup::LookupEnricher) over a
//! [`Lookup`](crate::lookup::Lookup) from [`sources`](crate::sources).
//! [`Enricher`]s are synchronous and cheap (a hostname, a process id, fields
//! computed from the event itself). They run in the order they were added.
//! An enricher that panics does not lose the event: the event is written as
//! it stands and the panic is counted in [`Stats::enricher_panics`](crate::Stats).

use std::sync::Arc;

use crate::event::Event;

mod async_enricher;
mod builtin;
mod context;
mod options;
pub(crate) mod redact;

pub(crate) use async_enricher::DynAsyncEnricher;
pub use async_enricher::{AsyncEnricher, CallError, EnrichError, Patch};
pub use builtin::{Hostname, Pid, StaticFields};
pub use context::EnrichContext;
pub use options::EnricherOptions;
pub(crate) use redact::Redactor;
pub use redact::{DEFAULT_SECRET_KEYS, REDACTED, Redaction, redact_url};

/// A synchronous enricher. Closures `Fn(&mut Event)` are enrichers too, and
/// so are `Arc<E>` and `Box<dyn Enricher>`:
///
/// ```
/// # fn main() -> Result<(), fapilog::InitError> {
/// let guard = fapilog::builder()
///     .enricher(|e: &mut fapilog::Event| e.insert("region", "eu-west-1"))
///     .sink(fapilog::sink::StdoutSink::json())
///     .build()?;
/// # drop(guard); Ok(()) }
/// ```
pub trait Enricher: Send + Sync + 'static {
    /// Adds fields to (or otherwise edits) one event.
    fn enrich(&self, event: &mut Event);

    /// A short name for stats and error reports.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

impl<F> Enricher for F
where
    F: Fn(&mut Event) + Send + Sync + 'static,
{
    fn enrich(&self, event: &mut Event) {
        self(event)
    }

    fn name(&self) -> &str {
        "closure"
    }
}

/// Share an enricher with the code that built it.
impl<E: Enricher + ?Sized> Enricher for Arc<E> {
    fn enrich(&self, event: &mut Event) {
        (**self).enrich(event)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

/// A boxed enricher chosen at run time. (A blanket impl for every `Box<E>`
/// would overlap with the closure impl, since `Box<F>` of a closure is
/// itself a closure.)
impl Enricher for Box<dyn Enricher> {
    fn enrich(&self, event: &mut Event) {
        (**self).enrich(event)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}
