//! Key lookups: "take a key from the event, fetch a value for it from
//! somewhere, merge the value into the event".
//!
//! A [`Lookup`] only knows how to fetch many keys at once. Wrapped in a
//! [`LookupEnricher`] it gets, for free:
//!
//! * a cache (TTL, size bound, a separate TTL for not-found; errors are
//!   never cached);
//! * **single-flight**: concurrent misses for one key cause one fetch;
//! * **batching across events**: a batch's distinct missing keys go to
//!   [`Lookup::fetch`] together, at most `max_batch` per call;
//! * a per-call timeout and a circuit breaker around each fetch — cache hits
//!   are still served while the circuit is open;
//! * optional **stale-on-error**: an expired value is served when its
//!   refresh fails, for up to `max_stale`;
//! * metrics: hits, misses, negative hits, single-flight waits, batch sizes,
//!   fetch latency.
//!
//! Why batch-first: a log stream repeats a few hot keys and trickles in cold
//! ones; fetching the cold ones of a batch in one round trip is what keeps a
//! database-backed enricher ahead of the log rate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::enrich::EnrichError;
use crate::event::Value;

mod cache;
mod enricher;

/// Maps and sets keyed by lookup keys, inside the enricher: `foldhash`
/// with a random seed per map, several times cheaper than the standard
/// SipHash on these short keys (hashing was ~10% of the cold path's CPU),
/// and still seeded, so that keys chosen by a caller cannot be aimed at
/// one bucket.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
#[cfg(feature = "redis")]
mod shared;
mod singleflight;

pub use enricher::{LookupEnricher, LookupEnricherBuilder};
#[cfg(feature = "redis")]
pub use shared::{SharedCache, SharedCacheBuilder};

/// A lookup key, taken from an event field. Integers, strings and booleans
/// can be keys; a non-negative integer is the same key whatever its Rust
/// type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A signed integer (non-negative integers that fit `i64` are stored here).
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A string.
    Str(Arc<str>),
    /// A boolean.
    Bool(bool),
}

impl Key {
    /// The key for a field value; `None` for null, floats, arrays and objects.
    pub fn from_value(v: &Value) -> Option<Key> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .map(Key::Int)
                .or_else(|| n.as_u64().map(Key::UInt)),
            Value::String(s) => Some(Key::Str(Arc::from(s.as_str()))),
            Value::Bool(b) => Some(Key::Bool(*b)),
            _ => None,
        }
    }

    /// The key as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Key::Int(i) => Value::from(*i),
            Key::UInt(u) => Value::from(*u),
            Key::Str(s) => Value::from(s.as_ref()),
            Key::Bool(b) => Value::from(*b),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::UInt(u) => write!(f, "{u}"),
            Key::Str(s) => f.write_str(s),
            Key::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Key::Int(v)
    }
}

impl From<u64> for Key {
    fn from(v: u64) -> Self {
        i64::try_from(v).map(Key::Int).unwrap_or(Key::UInt(v))
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key::Str(Arc::from(v))
    }
}

impl From<String> for Key {
    fn from(v: String) -> Self {
        Key::Str(Arc::from(v))
    }
}

/// Values found by one [`Lookup::fetch`]: a key that is absent was not
/// found.
pub type Found = HashMap<Key, Value>;

/// A source of values by key (a table, an HTTP API, a Redis keyspace).
///
/// ```
/// use fapilog::enrich::EnrichError;
/// use fapilog::lookup::{Found, Key, Lookup};
///
/// struct Squares;
///
/// impl Lookup for Squares {
///     async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
///         Ok(keys.iter().filter_map(|k| match k {
///             Key::Int(i) => Some((k.clone(), serde_json::json!({"square": i * i}))),
///             _ => None,
///         }).collect())
///     }
/// }
/// ```
pub trait Lookup: Send + Sync + 'static {
    /// Fetches many keys in one call. Keys missing from the result were not
    /// found (and are cached as such). An error fails every key of the call
    /// (nothing is cached) and counts against the circuit breaker.
    fn fetch(&self, keys: &[Key]) -> impl Future<Output = Result<Found, EnrichError>> + Send;

    /// Event fields this lookup wants to see with each key, for
    /// [`fetch_with_context`](Lookup::fetch_with_context): a trace or request
    /// id to forward to the source, say. Default: none.
    fn context_fields(&self) -> &[Cow<'static, str>] {
        &[]
    }

    /// [`fetch`](Lookup::fetch) with context, which is what
    /// [`LookupEnricher`] calls. `context[i]` belongs to `keys[i]`: the
    /// values of [`context_fields`](Lookup::context_fields), in that order,
    /// read with [`Event::field`](crate::Event::field) from the first event of the batch that
    /// carried the key (`None` where it had no such field; empty when the
    /// lookup asks for no fields). Results are cached by key alone, so the
    /// context must not change the answer. Default: calls `fetch` and
    /// ignores the context.
    fn fetch_with_context(
        &self,
        keys: &[Key],
        context: &[Vec<Option<Value>>],
    ) -> impl Future<Output = Result<Found, EnrichError>> + Send {
        let _ = context;
        self.fetch(keys)
    }

    /// Acquires resources; see [`AsyncEnricher::startup`](crate::enrich::AsyncEnricher::startup).
    fn startup(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }

    /// Releases resources; see [`AsyncEnricher::shutdown`](crate::enrich::AsyncEnricher::shutdown).
    fn shutdown(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }

    /// Probes the source; see [`AsyncEnricher::health_check`](crate::enrich::AsyncEnricher::health_check).
    fn health_check(&self) -> impl Future<Output = Result<(), EnrichError>> + Send {
        async { Ok(()) }
    }
}

macro_rules! forward_lookup {
    ($($ty:ident),*) => {$(
        /// Hand a [`LookupEnricher`] a shared or boxed lookup and keep a
        /// handle to it.
        impl<L: Lookup + ?Sized> Lookup for $ty<L> {
            fn fetch(&self, keys: &[Key]) -> impl Future<Output = Result<Found, EnrichError>> + Send {
                (**self).fetch(keys)
            }
            fn context_fields(&self) -> &[Cow<'static, str>] {
                (**self).context_fields()
            }
            fn fetch_with_context(
                &self,
                keys: &[Key],
                context: &[Vec<Option<Value>>],
            ) -> impl Future<Output = Result<Found, EnrichError>> + Send {
                (**self).fetch_with_context(keys, context)
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
        }
    )*};
}

forward_lookup!(Arc, Box);
