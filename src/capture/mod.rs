//! Capture: everything that runs on the caller's thread.
//!
//! The [`FapilogLayer`] does the least it can inside the application's log
//! call: copy the fields into an owned [`Event`], take a reference to each
//! enclosing span's already-captured fields, and push the event onto the
//! bounded [queue](queue) under its overflow policy. Formatting, enrichment
//! and I/O happen on the pipeline's worker.
//!
//! The queue lives here, not in `pipeline`, because its push side — the
//! overflow policy and any bounded wait for room — is part of the log call;
//! the pipeline only drains it. That keeps dependencies one way: the
//! pipeline builds the layer, the layer knows nothing of the pipeline.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::event::{Event, GivenSite, Site, SpanChain, SpanRecord, TraceContext};

pub(crate) mod filter;
#[cfg(feature = "opentelemetry")]
mod otel;
pub(crate) mod queue;
mod suppress;
mod visit;

pub use queue::Overflow;
pub(crate) use suppress::{Suppressed, mark_pipeline_thread, spawn_suppressed};

use queue::Queue;
use suppress::{is_suppressed, suppressed};
use visit::FieldVisitor;

/// The `tracing` layer that feeds a pipeline.
///
/// [`Builder::build`](crate::Builder::build) returns it with its
/// [`Guard`](crate::Guard); compose it like any other layer, with the
/// filter of your choice:
///
/// ```
/// use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};
///
/// # fn main() -> Result<(), fapilog::InitError> {
/// let (layer, guard) = fapilog::builder().build()?;
/// let subscriber = tracing_subscriber::registry()
///     .with(layer.with_filter(EnvFilter::new("info,my_crate=debug")));
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(answer = 42, "composed by hand");
///     tracing::debug!("filtered out");
/// });
/// assert_eq!(guard.shutdown_blocking().emitted, 1);
/// # Ok(()) }
/// ```
///
/// It has no filter of its own: unfiltered, it captures every event. Two
/// fapilog layers may share one subscriber (each feeds its own pipeline),
/// and it composes with `fmt::layer()` and `tracing-opentelemetry`'s layer.
pub struct FapilogLayer {
    queue: Arc<Queue>,
    /// The subscriber this layer is part of, to ask its OpenTelemetry layer
    /// for span contexts (inside a dispatch, `get_default` is no help).
    #[cfg(feature = "opentelemetry")]
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
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
        FapilogLayer {
            queue,
            #[cfg(feature = "opentelemetry")]
            dispatch: std::sync::OnceLock::new(),
        }
    }
}

thread_local! {
    static THREAD: ThreadInfo = ThreadInfo::current();
}

struct ThreadInfo {
    name: Option<&'static str>,
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
            // Interned: an event carries a plain `&'static str`, with no
            // reference count for the caller's thread to raise and the
            // worker's to lower (its cache line would travel between their
            // cores with every event).
            name: t.name().and_then(crate::event::intern),
            id,
        }
    }
}

/// The captured fields of a span, kept in its registry extensions. One
/// record serves every fapilog layer of the subscriber: the fields of a
/// span do not depend on which layer reads them.
///
/// It also keeps the span's chain (its records and its ancestors', root
/// first) as last built for an event logged in it, so that the next event
/// takes a reference to the chain instead of walking the span tree, taking
/// a lock per span and a reference count per span. A chain is per layer
/// (a per-layer filter may leave some ancestors out) and is rebuilt when
/// any span has recorded fields since (`SPAN_EDITS`): late `record` calls
/// are rare next to events, and this keeps them always seen.
struct SpanFields {
    record: Arc<SpanRecord>,
    chains: std::sync::Mutex<Vec<CachedChain>>,
}

struct CachedChain {
    /// Which layer built it (its queue's address).
    layer: usize,
    /// `SPAN_EDITS` when it was built.
    edits: u64,
    chain: SpanChain,
}

/// Bumped whenever a span records fields after its creation.
static SPAN_EDITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl SpanFields {
    fn new(record: SpanRecord) -> Self {
        SpanFields {
            record: Arc::new(record),
            chains: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for FapilogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    #[cfg(feature = "opentelemetry")]
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<SpanFields>().is_some() {
            // Another fapilog layer of this subscriber captured it already.
            return;
        }
        let mut visitor = FieldVisitor::new(false);
        attrs.record(&mut visitor);
        let trace = self.trace_of(&visitor.fields);
        let record = SpanRecord::new(attrs.metadata().name(), visitor.fields, trace);
        span.extensions_mut().replace(SpanFields::new(record));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::new(false);
        values.record(&mut visitor);
        let mut ext = span.extensions_mut();
        if let Some(SpanFields { record, .. }) = ext.get_mut::<SpanFields>() {
            SPAN_EDITS.fetch_add(1, std::sync::atomic::Ordering::Release);
            // With two fapilog layers this runs twice; replacing a value by
            // name makes the second run a no-op.
            let record = Arc::make_mut(record);
            // New fields: redaction judges the span again, and it is
            // rendered again.
            record.fields_changed();
            if let Some(trace) = self.trace_of(&visitor.fields) {
                record.trace = Some(trace);
            }
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
            let mut captured = capture(event, &ctx, Arc::as_ptr(&self.queue) as usize);
            captured.trace = self.trace_of(&captured.fields);
            #[cfg(feature = "opentelemetry")]
            if captured.trace.is_none() {
                captured.trace = self
                    .dispatch
                    .get()
                    .and_then(|d| d.upgrade())
                    .and_then(|d| otel::current(event, &ctx, &d));
            }
            if captured.trace.is_none() {
                captured.trace = captured.spans.iter().rev().find_map(|s| s.trace);
            }
            self.queue.push(captured);
        });
    }
}

impl FapilogLayer {
    /// The trace context of a `traceparent` field, counting one that does
    /// not parse (it is kept as a field, and ignored as a context).
    fn trace_of(
        &self,
        fields: &[(crate::event::FieldName, crate::event::Value)],
    ) -> Option<TraceContext> {
        let (_, value) = fields.iter().find(|(k, _)| k.as_ref() == "traceparent")?;
        let parsed = value.as_str().and_then(TraceContext::from_traceparent);
        if parsed.is_none() {
            self.queue.count_malformed_trace();
        }
        parsed
    }
}

/// The chain of `leaf`: cached on it, or built from the span tree.
fn span_chain<S>(leaf: &tracing_subscriber::registry::SpanRef<'_, S>, layer: usize) -> SpanChain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let edits = SPAN_EDITS.load(std::sync::atomic::Ordering::Acquire);
    {
        let ext = leaf.extensions();
        if let Some(fields) = ext.get::<SpanFields>() {
            let chains = fields.chains.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = chains.iter().find(|c| c.layer == layer && c.edits == edits) {
                return c.chain.clone();
            }
        }
    }
    let chain: SpanChain = leaf
        .scope()
        .from_root()
        .filter_map(|span| {
            span.extensions()
                .get::<SpanFields>()
                .map(|f| f.record.clone())
        })
        .collect();
    let ext = leaf.extensions();
    if let Some(fields) = ext.get::<SpanFields>() {
        let mut chains = fields.chains.lock().unwrap_or_else(|e| e.into_inner());
        match chains.iter_mut().find(|c| c.layer == layer) {
            Some(c) => {
                c.edits = edits;
                c.chain = chain.clone();
            }
            None => chains.push(CachedChain {
                layer,
                edits,
                chain: chain.clone(),
            }),
        }
    }
    chain
}

fn capture<S>(event: &tracing::Event<'_>, ctx: &Context<'_, S>, layer: usize) -> Event
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

    let site = match &normalized {
        Some(n) => Site::Given(Box::new(GivenSite {
            target: Cow::Owned(n.target().to_owned()),
            module_path: n.module_path().map(|m| Cow::Owned(m.to_owned())),
            file: n.file().map(|f| Cow::Owned(f.to_owned())),
            line: n.line(),
        })),
        None => Site::Static(meta),
    };

    // With a per-layer filter, the scope holds only the spans this layer's
    // filter enables.
    let spans = match ctx.event_span(event) {
        Some(leaf) => span_chain(&leaf, layer),
        None => SpanChain::default(),
    };

    let (thread_name, thread_id) = THREAD.with(|t| (t.name, t.id));

    Event {
        timestamp,
        level: *meta.level(),
        site,
        message: visitor.message,
        fields: visitor.fields,
        spans,
        thread_name,
        thread_id,
        extra: crate::event::Added::new(),
        errors: Vec::new(),
        trace: None,
    }
}
