//! Enrichers add context to events on the worker, never on the caller.
//!
//! [`AsyncEnricher`]s do I/O (databases, HTTP APIs, Redis) with a lifecycle,
//! timeouts, a circuit breaker and metrics; see their module docs.
//! [`Enricher`]s are synchronous and cheap (a hostname, a process id, fields
//! computed from the event itself). They run in the order they were added.
//! An enricher that panics does not lose the event: the event is written as
//! it stands and the panic is counted in [`Stats::enricher_panics`](crate::Stats).

use crate::event::{Event, FieldName, Value};

mod async_enricher;
#[cfg(feature = "http")]
mod http;
pub(crate) mod lifecycle;
mod lookup;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "_sql")]
mod sql;
pub(crate) mod stage;

#[cfg(feature = "redis")]
pub use self::redis::{RedisConfigError, RedisLookup, RedisLookupBuilder, ValueFormat};
pub use async_enricher::{AsyncEnricher, CallError, EnrichContext, EnrichError, Patch};
#[cfg(feature = "http")]
pub use http::{HttpConfigError, HttpLookup, HttpLookupBuilder};
pub use lifecycle::{EnricherHealth, EnricherOptions, HealthStatus};
pub use lookup::{Found, Key, Lookup, LookupEnricher, LookupEnricherBuilder};
#[cfg(feature = "_sql")]
pub use sql::{PoolSettings, SqlConfigError, SqlLookup, SqlLookupBuilder};

/// A synchronous enricher. Closures `Fn(&mut Event)` are enrichers too:
///
/// ```
/// # fn main() -> Result<(), fapilog::InitError> {
/// let guard = fapilog::builder()
///     .enricher(|e: &mut fapilog::Event| e.insert("region", "eu-west-1"))
///     .sink(fapilog::sink::StdoutSink::json())
///     .build::<tracing_subscriber::Registry>()?;
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

/// Adds the same fields to every event: service name, version, environment,
/// or anything else known at start-up.
#[derive(Debug, Clone, Default)]
pub struct StaticFields {
    fields: Vec<(FieldName, Value)>,
}

impl StaticFields {
    /// No fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one field.
    pub fn field(mut self, name: impl Into<FieldName>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl Enricher for StaticFields {
    fn enrich(&self, event: &mut Event) {
        for (k, v) in &self.fields {
            event.insert(k.clone(), v.clone());
        }
    }
    fn name(&self) -> &str {
        "static_fields"
    }
}

/// Adds `hostname`, read once at start-up.
#[derive(Debug, Clone)]
pub struct Hostname {
    host: Value,
}

impl Hostname {
    /// Reads the machine's host name.
    pub fn new() -> Self {
        Hostname {
            host: Value::String(gethostname::gethostname().to_string_lossy().into_owned()),
        }
    }
}

impl Default for Hostname {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher for Hostname {
    fn enrich(&self, event: &mut Event) {
        event.insert("hostname", self.host.clone());
    }
    fn name(&self) -> &str {
        "hostname"
    }
}

/// Adds `pid`, the process id.
#[derive(Debug, Clone, Copy)]
pub struct Pid {
    pid: u32,
}

impl Pid {
    /// Reads the process id.
    pub fn new() -> Self {
        Pid {
            pid: std::process::id(),
        }
    }
}

impl Default for Pid {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher for Pid {
    fn enrich(&self, event: &mut Event) {
        event.insert("pid", self.pid);
    }
    fn name(&self) -> &str {
        "pid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn builtins_add_their_fields() {
        let mut e = Event::new(Level::INFO, "t", "m");
        Hostname::new().enrich(&mut e);
        Pid::new().enrich(&mut e);
        StaticFields::new().field("service", "svc").enrich(&mut e);
        assert_eq!(e.field("pid"), Some(&Value::from(std::process::id())));
        assert_eq!(e.field("service"), Some(&Value::from("svc")));
        assert!(e.field("hostname").is_some_and(|h| h.is_string()));
    }

    #[test]
    fn reserved_names_are_prefixed() {
        let mut e = Event::new(Level::INFO, "t", "m");
        e.insert("level", "nope");
        assert_eq!(e.inserted().next().map(|(k, _)| k), Some("_level"));
    }
}
