//! The OpenTelemetry context of the span an event is logged in, as
//! `tracing-opentelemetry` keeps it (feature `opentelemetry`).
//!
//! Read on the caller's thread, once per span: the ids are kept in the
//! span's extensions after the first event, so later events in the same
//! span cost one extension look-up.

use opentelemetry::trace::TraceContextExt;
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::event::TraceContext;

/// The OpenTelemetry ids of a span, once read (`None`: it has none valid).
struct OtelIds(Option<TraceContext>);

/// The trace context of the innermost span in scope of `event`, from its
/// OpenTelemetry span; `None` without an OpenTelemetry layer or span.
pub(super) fn current<S>(
    event: &tracing::Event<'_>,
    ctx: &Context<'_, S>,
    dispatch: &tracing::Dispatch,
) -> Option<TraceContext>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let span = ctx.event_scope(event)?.next()?;
    if let Some(OtelIds(ids)) = span.extensions().get::<OtelIds>() {
        return *ids;
    }
    // Not while holding the span's extensions: the OpenTelemetry layer
    // locks them itself.
    let id = span.id();
    let ids = tracing_opentelemetry::get_otel_context(&id, dispatch).and_then(|cx| {
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        if !sc.is_valid() {
            return None;
        }
        TraceContext::new(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
        )
    });
    // `replace`, not `insert`: a second fapilog layer may have cached it.
    span.extensions_mut().replace(OtelIds(ids));
    ids
}
