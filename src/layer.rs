//! The `tracing` layer: capture on the caller's thread, then enqueue.
//!
//! Everything here runs inside the application's log call, so it does the
//! least it can: copy the fields into an owned [`Event`], take a reference to
//! each enclosing span's already-captured fields, and hand the event to the
//! queue. Formatting, enrichment and I/O happen on the worker.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::event::{Event, FieldName, SpanRecord, Value};
use crate::pipeline::queue::Queue;

/// The layer that feeds the pipeline. Obtained from
/// [`Builder::build`](crate::Builder::build) when composing a subscriber by
/// hand; [`Builder::init`](crate::Builder::init) installs it for you.
pub struct FapilogLayer {
    queue: Arc<Queue>,
}

impl fmt::Debug for FapilogLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FapilogLayer")
            .field("queue_len", &self.queue.len())
            .finish()
    }
}

impl FapilogLayer {
    pub(crate) fn new(queue: Arc<Queue>) -> Self {
        FapilogLayer { queue }
    }
}

thread_local! {
    /// Set on the pipeline's own threads (and while a capture is under way),
    /// so events emitted by the pipeline's dependencies, or by a `Debug` impl
    /// that logs, are never fed back into the pipeline.
    static SUPPRESSED: Cell<bool> = const { Cell::new(false) };
    static THREAD: ThreadInfo = ThreadInfo::current();
}

struct ThreadInfo {
    name: Option<Arc<str>>,
    id: u64,
}

impl ThreadInfo {
    fn current() -> Self {
        let t = std::thread::current();
        // `ThreadId::as_u64` is unstable; its debug form is `ThreadId(N)`.
        let dbg = format!("{:?}", t.id());
        let id = dbg
            .trim_start_matches("ThreadId(")
            .trim_end_matches(')')
            .parse()
            .unwrap_or(0);
        ThreadInfo {
            name: t.name().map(Arc::from),
            id,
        }
    }
}

/// Marks the current thread as one of the pipeline's own: nothing logged on
/// it is captured.
pub(crate) fn mark_pipeline_thread() {
    SUPPRESSED.with(|s| s.set(true));
}

/// Runs `f` with capture suppressed on this thread, restoring the previous
/// state afterwards (used while polling the worker on an application runtime).
pub(crate) fn suppressed<R>(f: impl FnOnce() -> R) -> R {
    let prev = SUPPRESSED.with(|s| s.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0;
            SUPPRESSED.with(|s| s.set(prev));
        }
    }
    let _restore = Restore(prev);
    f()
}

/// Polls a future with capture suppressed on the polling thread, so a task
/// of the pipeline's running on an application runtime is not captured.
pub(crate) struct Suppressed<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for Suppressed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        suppressed(|| inner.poll(cx))
    }
}

/// Spawns a pipeline task on the current runtime, capture suppressed.
pub(crate) fn spawn_suppressed<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Suppressed(Box::pin(f)))
}

fn is_suppressed() -> bool {
    SUPPRESSED.with(|s| s.get())
}

/// The captured fields of a span, kept in its registry extensions.
struct SpanFields(Arc<SpanRecord>);

impl<S> tracing_subscriber::Layer<S> for FapilogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::new(false);
        attrs.record(&mut visitor);
        let record = SpanRecord {
            name: attrs.metadata().name(),
            fields: visitor.fields,
        };
        span.extensions_mut().insert(SpanFields(Arc::new(record)));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::new(false);
        values.record(&mut visitor);
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(record)) = ext.get_mut::<SpanFields>() {
            let record = Arc::make_mut(record);
            for (k, v) in visitor.fields {
                match record.fields.iter_mut().find(|(name, _)| *name == k) {
                    Some(slot) => slot.1 = v,
                    None => record.fields.push((k, v)),
                }
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if is_suppressed() {
            return;
        }
        suppressed(|| {
            let captured = capture(event, &ctx);
            self.queue.push(captured);
        });
    }
}

fn capture<S>(event: &tracing::Event<'_>, ctx: &Context<'_, S>) -> Event
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let timestamp = SystemTime::now();
    let meta: &'static Metadata<'static> = event.metadata();
    // Records bridged from the `log` crate carry their real location in
    // `log.*` fields; normalize them and leave those fields out.
    let normalized = event.normalized_metadata();
    let is_log = normalized.is_some();
    let mut visitor = FieldVisitor::with_capacity(is_log, meta.fields().len());
    event.record(&mut visitor);

    let (target, module_path, file, line) = match &normalized {
        Some(n) => (
            Cow::Owned(n.target().to_owned()),
            n.module_path().map(|m| Cow::Owned(m.to_owned())),
            n.file().map(|f| Cow::Owned(f.to_owned())),
            n.line(),
        ),
        None => (
            Cow::Borrowed(meta.target()),
            meta.module_path().map(Cow::Borrowed),
            meta.file().map(Cow::Borrowed),
            meta.line(),
        ),
    };

    let mut spans = Vec::new();
    if let Some(scope) = ctx.event_scope(event) {
        spans.reserve(4);
        for span in scope.from_root() {
            if let Some(SpanFields(record)) = span.extensions().get::<SpanFields>() {
                spans.push(record.clone());
            }
        }
    }

    let (thread_name, thread_id) = THREAD.with(|t| (t.name.clone(), t.id));

    Event {
        timestamp,
        level: *meta.level(),
        target,
        module_path,
        file,
        line,
        message: visitor.message,
        fields: visitor.fields,
        spans,
        thread_name,
        thread_id,
        extra: Vec::new(),
        errors: Vec::new(),
    }
}

/// Copies field values, keeping their types.
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(FieldName, Value)>,
    skip_log_fields: bool,
}

impl FieldVisitor {
    fn new(skip_log_fields: bool) -> Self {
        Self::with_capacity(skip_log_fields, 0)
    }

    fn with_capacity(skip_log_fields: bool, fields: usize) -> Self {
        FieldVisitor {
            message: None,
            fields: Vec::with_capacity(fields),
            skip_log_fields,
        }
    }

    fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return;
        }
        self.fields.push((Cow::Borrowed(name), value));
    }
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number form.
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.push(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, Value::from(v)),
            Err(_) => self.push(field, Value::String(value.to_string())),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.push(field, Value::from(v)),
            Err(_) => self.push(field, Value::String(value.to_string())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.push(field, Value::String(value.to_owned()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Sized up front: growing a String from empty costs several
        // reallocations per value on the caller's thread.
        let mut text = String::with_capacity(64);
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{value:?}"));
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.push(field, Value::String(text));
        }
    }
}
