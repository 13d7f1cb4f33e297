//! Ready-made [`Lookup`](crate::lookup::Lookup)s, a cargo feature each:
//!
//! | source | feature | one batch is |
//! | --- | --- | --- |
//! | [`SqlLookup`] | `postgres`, `mysql`, `sqlite` (or `sql` for all) | one query: `= ANY($1)` on PostgreSQL, `IN ({keys})` with bound parameters on MySQL/MariaDB and SQLite |
//! | [`HttpLookup`] | `http` | one request per key (URL template), or one to a batch endpoint |
//! | [`RedisLookup`] | `redis` | one `MGET`, or one pipeline of `HGETALL`s |
//!
//! Wrap one in a [`LookupEnricher`](crate::lookup::LookupEnricher) for the
//! cache, single-flight, timeouts and breaker. A bad setting is a
//! [`ConfigError`](crate::ConfigError) from the source's `build()`;
//! connection strings are redacted wherever they show.

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "_sql")]
mod sql;

#[cfg(feature = "redis")]
pub use self::redis::{RedisLookup, RedisLookupBuilder, ValueFormat};
#[cfg(feature = "http")]
pub use http::{HttpLookup, HttpLookupBuilder};
#[cfg(feature = "_sql")]
pub use sql::{PoolSettings, SqlLookup, SqlLookupBuilder};

/// The old name of [`ConfigError`](crate::ConfigError) for SQL lookups.
#[cfg(feature = "_sql")]
#[deprecated(since = "0.2.0", note = "use `fapilog::ConfigError`")]
pub type SqlConfigError = crate::error::ConfigError;

/// The old name of [`ConfigError`](crate::ConfigError) for HTTP lookups.
#[cfg(feature = "http")]
#[deprecated(since = "0.2.0", note = "use `fapilog::ConfigError`")]
pub type HttpConfigError = crate::error::ConfigError;

/// The old name of [`ConfigError`](crate::ConfigError) for Redis lookups.
#[cfg(feature = "redis")]
#[deprecated(since = "0.2.0", note = "use `fapilog::ConfigError`")]
pub type RedisConfigError = crate::error::ConfigError;
