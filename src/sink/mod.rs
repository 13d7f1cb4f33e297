//! Where events end up.
//!
//! A [`Sink`] receives events in batches, in the order they were logged, on
//! the pipeline's worker. Sinks run side by side: one that fails (or panics)
//! has its failure counted and does not stop the others or lose their events.
//!
//! Built in: [`StdoutSink`] (JSON lines or a human format) and [`FileSink`]
//! (JSON lines with size- and time-based rotation and retention), and with
//! the `otlp` feature [`OtlpSink`] (OTLP/gRPC or OTLP/HTTP to a collector).

use std::fmt;
use std::future::Future;

use futures_util::future::BoxFuture;

use crate::event::Event;

mod file;
pub(crate) mod format;
#[cfg(feature = "otlp")]
pub(crate) mod otlp;
mod stdout;

pub use file::{FileSink, FileSinkBuilder, Rotation};
#[cfg(feature = "otlp")]
pub use otlp::{OtlpProtocol, OtlpSink, OtlpSinkBuilder};
pub use stdout::{StdoutFormat, StdoutSink};

/// A destination for events.
///
/// Implement it with `async fn`s:
///
/// ```
/// use fapilog::{Event, Sink, SinkError};
///
/// struct CountingSink(usize);
///
/// impl Sink for CountingSink {
///     fn name(&self) -> &str { "counting" }
///     async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
///         self.0 += events.len();
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send + 'static {
    /// A short name used in stats and error reports.
    fn name(&self) -> &str;

    /// Writes a batch of events, in order. On an error the batch (or the
    /// part of it not yet written, see [`SinkError::after_writing`]) is
    /// retried with backoff; past the retries its events are counted as
    /// undelivered for this sink, and the pipeline carries on.
    ///
    /// Each sink is driven by a task of its own on the pipeline's worker
    /// runtime, which also drives the enrichers' timers: do blocking I/O
    /// inside `tokio::task::spawn_blocking`, as the built-in sinks do, or
    /// a slow disk will delay enrichment. A write that takes longer than
    /// the sink timeout is not retried (part of it may have been written)
    /// and its events are counted as undelivered.
    fn write_batch(
        &mut self,
        events: &[Event],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes everything written so far durable or visible. Called after the
    /// last batch at shutdown and whenever the queue runs empty.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Called once at shutdown, after the last batch, instead of a last
    /// [`flush`](Sink::flush) (which it calls by default). A sink that holds
    /// events of its own (a network sink's retry buffer) hands them over
    /// here; it may take until the shutdown deadline, past which the
    /// pipeline stops waiting and counts what the sink still held as
    /// undelivered.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.flush()
    }
}

/// A boxed sink. (There is no impl for `Arc<S>`: a sink is written by one
/// writer, through `&mut self`, so it can keep buffers without locks. To
/// read what a sink did from elsewhere, keep that state behind an `Arc`
/// inside it.)
impl<S: Sink + ?Sized> Sink for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn write_batch(
        &mut self,
        events: &[Event],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).write_batch(events)
    }
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).flush()
    }
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).close()
    }
}

/// Object-safe form of [`Sink`], so the pipeline can hold a list of them.
pub(crate) trait DynSink: Send {
    fn name(&self) -> &str;
    fn write_batch<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>>;
    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn name(&self) -> &str {
        Sink::name(self)
    }
    fn write_batch<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(Sink::write_batch(self, events))
    }
    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(Sink::flush(self))
    }
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(Sink::close(self))
    }
}

/// A sink's failure to write or flush.
///
/// A failed batch is retried (a bounded number of times, with backoff)
/// before its events are counted as undelivered for this sink. A sink that
/// wrote part of the batch before failing says so with
/// [`after_writing`](SinkError::after_writing), so that only the rest is
/// retried and nothing is written twice.
pub struct SinkError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    written: usize,
}

impl SinkError {
    /// An error with a message only.
    pub fn msg(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            source: None,
            written: 0,
        }
    }

    /// An error caused by another error.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError {
            message: message.into(),
            source: Some(source.into()),
            written: 0,
        }
    }

    /// Says that the first `events` of the batch were written (durably
    /// enough not to be written again) before the failure.
    #[must_use]
    pub fn after_writing(mut self, events: usize) -> Self {
        self.written = events;
        self
    }

    /// How many events of the batch were written before the failure.
    pub fn written(&self) -> usize {
        self.written
    }
}

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> Self {
        SinkError::new("i/o error", e)
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}
