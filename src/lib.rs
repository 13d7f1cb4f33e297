//! # fapilog
//!
//! A structured logging pipeline for Rust services, built on [`tracing`].
//! Application code keeps using `tracing::info!` and spans; fapilog captures
//! each event with its span context on the caller's thread, hands it to a
//! bounded queue, and — on a worker of its own — enriches it and writes it to
//! sinks in order. The log call never waits on an enricher or a sink.
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
//!   [`Guard::stats`] and the [`ShutdownReport`] say how many of each, and
//!   an "events dropped" record appears in the stream while drops happen.
//! * **No loss at shutdown**: [`Guard::shutdown`] drains everything queued
//!   before it. Logging afterwards is counted as dropped, never a panic.
//! * **No feedback loops**: events emitted on the pipeline's own threads (by
//!   a sink's or an enricher's dependencies) are not captured.
//! * **Failure isolation**: a failing or panicking sink or enricher is
//!   counted and does not stop the others or lose the event.
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
pub mod observe;
mod pipeline;
pub mod resilience;
pub mod sink;
pub mod sources;

pub use capture::{FapilogLayer, Overflow};
pub use config::Settings;
pub use enrich::{AsyncEnricher, Enricher};
pub use error::{ConfigError, InitError};
pub use event::{Event, FieldName, RESERVED_KEYS, SpanRecord, Value};
pub use observe::{ShutdownReport, SinkStats, Stats};
pub use pipeline::{Builder, Guard};
pub use sink::{Sink, SinkError};

/// Starts configuring a pipeline; see [`Builder`] for every setting and its
/// default.
#[must_use]
pub fn builder() -> Builder {
    Builder::default()
}

/// The README's examples, compiled as doc tests.
#[cfg(all(doctest, feature = "postgres"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
