//! # fapilog
//!
//! A structured logging pipeline for Rust services, built on [`tracing`].
//! Application code keeps using `tracing::info!` and spans; fapilog captures
//! each event with its span context on the caller's thread, hands it to a
//! bounded queue, and — on a worker of its own — enriches it and writes it to
//! sinks in order. The log call never waits on an enricher or a sink: only
//! when the queue is full, under [`Overflow::Block`], does it wait for
//! room — bounded, and never long on an async runtime's thread (the table
//! on [`Overflow::Block`] says how long on which thread).
//!
//! ```
//! # fn main() -> Result<(), fapilog::InitError> {
//! let guard = fapilog::builder()
//!     .filter("info")
//!     .service("checkout")
//!     .with_hostname()
//!     .enricher(|e: &mut fapilog::Event| e.insert("region", "eu-west-1"))
//!     .init()?;
//!
//! let span = tracing::info_span!("request", user_id = 42);
//! let _entered = span.enter();
//! tracing::info!(order_id = 7, amount = 12.5, "order placed");
//!
//! // Drains the queue, flushes the sinks, reports what happened.
//! let report = guard.shutdown_blocking();
//! assert_eq!(report.dropped, 0);
//! # Ok(()) }
//! ```
//!
//! ## Composing it yourself
//!
//! [`Builder::init`] installs the global subscriber, filtered by `RUST_LOG`
//! when it is set, else by [`Builder::filter`] (default `info`), and the
//! filter can change at run time with [`Guard::set_filter`].
//! [`Builder::build`] instead returns the [`FapilogLayer`] — a nameable
//! `tracing-subscriber` layer with no filter of its own — to compose with
//! `EnvFilter`, `fmt::layer()`, `tracing-opentelemetry` or a second
//! fapilog pipeline:
//!
//! ```
//! use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};
//!
//! # fn main() -> Result<(), fapilog::InitError> {
//! let (layer, guard) = fapilog::builder().service("checkout").build()?;
//! let subscriber = tracing_subscriber::registry()
//!     .with(layer.with_filter(EnvFilter::new("info,my_crate=debug")))
//!     .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("warn")));
//! tracing::subscriber::with_default(subscriber, || tracing::info!("composed"));
//! assert_eq!(guard.shutdown_blocking().emitted, 1);
//! # Ok(()) }
//! ```
//!
//! ## Modules
//!
//! | module | what is in it |
//! | --- | --- |
//! | *(root)* | [`builder()`], [`Builder`], [`Guard`], [`FapilogLayer`], [`Event`], [`SharedValue`] (a value many events share, as a cache's), [`Overflow`], [`Settings`], errors |
//! | [`enrich`] | [`Enricher`] (sync) and [`AsyncEnricher`], [`Patch`](enrich::Patch), [`EnrichContext`](enrich::EnrichContext), [`EnricherOptions`](enrich::EnricherOptions), built-in static fields, hostname, pid |
//! | [`lookup`] | [`Lookup`](lookup::Lookup) ("fetch many keys") and [`LookupEnricher`](lookup::LookupEnricher): cache, single-flight, batching, guarded calls, refresh-ahead; `SharedCache` (feature `redis`), a Redis tier shared by a fleet |
//! | [`sources`] | [`SqlLookup`](sources::SqlLookup), [`HttpLookup`](sources::HttpLookup), [`RedisLookup`](sources::RedisLookup), a feature each |
//! | [`resilience`] | [`BreakerConfig`](resilience::BreakerConfig) and [`FailurePolicy`](resilience::FailurePolicy) of the circuit breaker guarding each async enricher |
//! | [`sink`] | [`Sink`], stdout (JSON or pretty), rotating files, and `OtlpSink` (feature `otlp`) |
//! | [`observe`] | [`Stats`], [`ShutdownReport`], per-enricher counters and health, the `metrics` facade |
//! | [`config`] | [`Settings`] from TOML and `FAPILOG__…` environment variables |
//! | `middleware` | `RequestLayer` (feature `tower`): a request id, a trace context, a span and one access record for every HTTP request |
//!
//! Inside, dependencies point one way: `event` and `error` depend on
//! nothing; `capture` (the layer and the queue, everything on the caller's
//! thread) on `event`; `enrich`, `lookup` and `sources` build on each other
//! in that order; `pipeline` uses all of them; `config` sits on top and
//! nothing imports it; `middleware` needs only `event` and nothing
//! imports it. A test fails when a cycle creeps back.
//!
//! ## Cargo features
//!
//! | feature | adds | default |
//! | --- | --- | --- |
//! | *(none)* | the pipeline, sync and async enrichers, `Lookup` + `LookupEnricher`, circuit breaker, stdout and file sinks, TOML/env config, metrics | yes |
//! | `sqlite` | [`SqlLookup`](sources::SqlLookup) on SQLite (bundled; the embedded default for demos) | no |
//! | `postgres` | `SqlLookup` on PostgreSQL | no |
//! | `mysql` | `SqlLookup` on MySQL and MariaDB | no |
//! | `sql` | all three databases | no |
//! | `http` | [`HttpLookup`](sources::HttpLookup): JSON APIs through one shared `reqwest` client (rustls) | no |
//! | `redis` | [`RedisLookup`](sources::RedisLookup): `MGET` and pipelined `HGETALL` through a reconnecting connection manager; `lookup::SharedCache`, a cache tier in Redis shared by every instance | no |
//! | `otlp` | `OtlpSink`: records to an OpenTelemetry Collector over OTLP/gRPC or OTLP/HTTP (protobuf), with a bounded retry buffer | no |
//! | `tower` | `middleware::RequestLayer`, a `tower` layer for axum, tonic and hyper services: request ids, W3C trace context, a `request` span and access records | no |
//! | `opentelemetry` | records carry the trace and span ids of the `tracing-opentelemetry` span they were logged in (without it, ids come from `traceparent` fields) | no |
//!
//! ## Output format
//!
//! JSON sinks write one object per line. Keys, in order (absent keys are
//! left out):
//!
//! | key | value |
//! | --- | --- |
//! | `timestamp` | UTC, RFC 3339 with microseconds: `2026-11-27T08:03:59.123456Z` |
//! | `level` | `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR` |
//! | `message` | the formatted message |
//! | `target` | the event's target |
//! | `trace_id`, `span_id` | the W3C trace context, lower-case hex: from a valid `traceparent` field of the event, else (feature `opentelemetry`) the innermost span's OpenTelemetry context, else a `traceparent` field of the innermost span that has one |
//! | `fields` | the event's fields, types kept (numbers, booleans, strings) |
//! | `spans` | the spans in scope, outermost first: `[{"name": …, "fields": {…}}]` |
//! | *enriched keys* | whatever enrichers added (`service`, `hostname`, …) |
//! | `enrichment_errors` | `{"enricher name": "reason"}` when an enricher failed |
//! | `module`, `file`, `line` | where the log call is |
//! | `thread_name`, `thread_id` | the thread it was made on |
//!
//! ## Guarantees
//!
//! * **Order**: sinks see events in the order they were enqueued (so each
//!   thread's events in the order it logged them).
//! * **Accounting**: every event is either emitted or counted as dropped;
//!   and every emitted event is, for each sink, either written or counted
//!   as undelivered (after bounded retries, a timeout, or while the sink
//!   was stalled). [`Guard::stats`] and the [`ShutdownReport`] say how many
//!   of each, per sink; "events dropped" and "events undelivered" records
//!   appear in the stream (the latter on the other sinks) while it happens.
//! * **Isolation of sinks**: each sink is fed by a task of its own, and the
//!   built-in sinks do their file and stdout I/O on tokio's blocking pool:
//!   a slow or stuck disk delays no enricher timer. A slow sink holds the
//!   pipeline back (back-pressure, up to the sink timeout per batch); one
//!   that takes no batch within the timeout is stalled and its events are
//!   counted as undelivered instead, so the other sinks go on.
//! * **No loss at shutdown**: [`Guard::shutdown`] drains everything queued
//!   before it. Logging afterwards is counted as dropped, never a panic.
//! * **No feedback loops**: events emitted on the pipeline's own threads (by
//!   a sink's or an enricher's dependencies) are not captured.
//! * **Failure isolation**: a failing or panicking sink or enricher is
//!   counted and does not stop the others or lose the event.
//! * **Secrets**: fields, span fields and enriched values named like
//!   secrets (password, token, api key, authorization, cookie, …; see
//!   [`Redaction`](enrich::Redaction)) are replaced by `[REDACTED]` before
//!   any sink; connection strings are redacted in every `Debug`, error and
//!   health report, whatever characters their password holds.
//!
//! ## Configuration
//!
//! Through the [`Builder`] (defaults are listed there), or from TOML and
//! `FAPILOG__…` environment variables with [`Settings`]:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = fapilog::Settings::load(Some("fapilog.toml"))?;
//! let guard = fapilog::builder().settings(&settings).init()?;
//! # drop(guard); Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod capture;
pub mod config;
pub mod enrich;
mod error;
mod event;
pub mod lookup;
#[cfg(feature = "tower")]
pub mod middleware;
pub mod observe;
mod pipeline;
pub mod resilience;
pub mod sink;
pub mod sources;

pub use capture::{FapilogLayer, Overflow};
pub use config::Settings;
pub use enrich::{AsyncEnricher, Enricher};
pub use error::{ConfigError, InitError};
pub use event::{Event, FieldName, RESERVED_KEYS, SharedValue, SpanRecord, TraceContext, Value};
#[cfg(feature = "tower")]
pub use middleware::RequestLayer;
pub use observe::{ShutdownReport, SinkStats, Stats};
pub use pipeline::{Builder, Guard};
#[cfg(feature = "otlp")]
pub use sink::{OtlpProtocol, OtlpSink, OtlpSinkBuilder};
pub use sink::{Sink, SinkError};

/// Starts configuring a pipeline; see [`Builder`] for every setting and its
/// default.
#[must_use]
pub fn builder() -> Builder {
    Builder::default()
}

/// The README's examples, compiled as doc tests.
#[cfg(all(
    doctest,
    feature = "postgres",
    feature = "tower",
    feature = "otlp",
    feature = "redis"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
