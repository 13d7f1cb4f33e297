//! The layer composed by hand with `build()`: beside `fmt::layer()`, beside
//! a second fapilog layer (unfiltered and with per-layer filters), under
//! `EnvFilter` or no filter at all, beside `tracing-opentelemetry`'s layer;
//! and enrichers handed to the builder behind `Arc` or `Box`, with the
//! caller keeping a handle to them.

mod support;

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};

use fapilog::lookup::{Key, LookupEnricher};
use fapilog::{Enricher, Event, Value};
use serde_json::json;
use support::Collected;
use support::async_support::{Emitted, Running, TestLookup, inserted, pipeline};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A pipeline writing to a fresh collection.
fn collecting() -> (fapilog::FapilogLayer, fapilog::Guard, Collected) {
    let out = Collected::new();
    let (layer, guard) = fapilog::builder()
        .sink(out.sink())
        .build()
        .expect("pipeline starts");
    (layer, guard, out)
}

/// Shuts the pipeline down, checking nothing was lost.
fn finish(guard: fapilog::Guard) {
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
}

fn messages(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.message().unwrap_or("")).collect()
}

/// Each span in scope as `(name, fields)`, root first.
fn span_fields(e: &Event) -> Vec<(String, Vec<(String, Value)>)> {
    e.spans()
        .map(|s| {
            let fields = s.fields().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            (s.name().to_owned(), fields)
        })
        .collect()
}

fn span(name: &str, fields: &[(&str, Value)]) -> (String, Vec<(String, Value)>) {
    (
        name.to_owned(),
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn span_names(e: &Event) -> Vec<&str> {
    e.spans().map(|s| s.name()).collect()
}

// ---------------------------------------------------------------------------
// Beside fmt

/// What `fmt::layer()` writes, kept in memory.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("fmt writes UTF-8")
    }
}

impl io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SharedBuf {
    type Writer = SharedBuf;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn an_event_reaches_both_fapilog_and_a_json_fmt_layer() {
    let (layer, guard, out) = collecting();
    let buf = SharedBuf::default();
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(buf.clone()),
    );

    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("request", user_id = 42u64, path = "/orders");
        let _entered = request.enter();
        tracing::info!(order_id = 7u64, "order placed");
    });
    finish(guard);

    let events = out.events();
    assert_eq!(messages(&events), ["order placed"]);
    assert_eq!(events[0].field("order_id"), Some(&7.into()));
    assert_eq!(
        span_fields(&events[0]),
        [span(
            "request",
            &[("user_id", 42.into()), ("path", "/orders".into())]
        )]
    );

    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "fmt wrote: {text}");
    assert!(lines[0].contains("order placed"), "fmt wrote: {text}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).expect("fmt wrote JSON");
    assert_eq!(line["fields"]["message"], json!("order placed"));
    assert_eq!(line["fields"]["order_id"], json!(7));
    // fmt keeps its own copy of the span's fields next to fapilog's.
    assert_eq!(line["span"]["name"], json!("request"));
    assert_eq!(line["span"]["user_id"], json!(42));
}

// ---------------------------------------------------------------------------
// Two fapilog layers

#[test]
fn two_fapilog_layers_in_one_subscriber_both_get_every_event_and_span_field() {
    let (layer_a, guard_a, out_a) = collecting();
    let (layer_b, guard_b, out_b) = collecting();
    let subscriber = tracing_subscriber::registry().with(layer_a).with(layer_b);

    tracing::subscriber::with_default(subscriber, || {
        let request =
            tracing::info_span!("request", user_id = 42u64, status = tracing::field::Empty);
        let _entered = request.enter();
        tracing::info!("before record");
        request.record("status", 200u64);
        tracing::warn!("after record");
        // Recording again replaces the value once, not once per layer.
        request.record("status", 503u64);
        tracing::error!("after second record");
    });
    finish(guard_a);
    finish(guard_b);

    for (name, out) in [("A", &out_a), ("B", &out_b)] {
        let events = out.events();
        assert_eq!(
            messages(&events),
            ["before record", "after record", "after second record"],
            "pipeline {name}"
        );
        assert_eq!(
            span_fields(&events[0]),
            [span("request", &[("user_id", 42.into())])],
            "pipeline {name}"
        );
        assert_eq!(
            span_fields(&events[1]),
            [span(
                "request",
                &[("user_id", 42.into()), ("status", 200.into())]
            )],
            "pipeline {name}"
        );
        assert_eq!(
            span_fields(&events[2]),
            [span(
                "request",
                &[("user_id", 42.into()), ("status", 503.into())]
            )],
            "pipeline {name}"
        );
    }
}

#[test]
fn two_fapilog_layers_with_their_own_filters_each_see_only_what_theirs_enables() {
    let (layer_a, guard_a, out_a) = collecting();
    let (layer_b, guard_b, out_b) = collecting();
    let subscriber = tracing_subscriber::registry()
        .with(layer_a.with_filter(EnvFilter::new("info")))
        .with(layer_b.with_filter(EnvFilter::new("debug")));

    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("request", user_id = 42u64);
        let _request = request.enter();
        tracing::info!("outer info");
        tracing::debug!("outer debug");
        let cache = tracing::debug_span!("cache", key = "user:42", hit = tracing::field::Empty);
        let _cache = cache.enter();
        cache.record("hit", true);
        tracing::info!("inner info");
        tracing::debug!("inner debug");
    });
    finish(guard_a);
    finish(guard_b);

    let a = out_a.events();
    assert_eq!(messages(&a), ["outer info", "inner info"]);
    // The debug span is not in A's scope: A's filter disabled it.
    assert_eq!(span_names(&a[1]), ["request"]);
    assert_eq!(a[1].field("key"), None);

    let b = out_b.events();
    assert_eq!(
        messages(&b),
        ["outer info", "outer debug", "inner info", "inner debug"]
    );
    assert_eq!(
        span_fields(&b[2]),
        [
            span("request", &[("user_id", 42.into())]),
            span("cache", &[("key", "user:42".into()), ("hit", true.into())]),
        ]
    );
    assert_eq!(span_fields(&b[3]), span_fields(&b[2]));
    assert_eq!(b[1].level(), tracing::Level::DEBUG);
}

// ---------------------------------------------------------------------------
// Filters of the user's choice

/// Logs one event per level into a fresh pipeline whose layer is filtered
/// by `EnvFilter::new(filter)` when given (unfiltered otherwise), and returns
/// the levels captured.
fn levels_captured(filter: Option<&str>) -> Vec<tracing::Level> {
    let (layer, guard, out) = collecting();
    let log_each_level = || {
        tracing::trace!("trace");
        tracing::debug!("debug");
        tracing::info!("info");
        tracing::warn!("warn");
        tracing::error!("error");
    };
    match filter {
        Some(f) => tracing::subscriber::with_default(
            tracing_subscriber::registry().with(layer.with_filter(EnvFilter::new(f))),
            log_each_level,
        ),
        None => tracing::subscriber::with_default(
            tracing_subscriber::registry().with(layer),
            log_each_level,
        ),
    }
    finish(guard);
    out.events().iter().map(Event::level).collect()
}

#[test]
fn an_env_filter_on_the_layer_decides_what_it_captures_and_none_means_everything() {
    use tracing::Level;
    assert_eq!(
        levels_captured(Some("debug")),
        [Level::DEBUG, Level::INFO, Level::WARN, Level::ERROR]
    );
    assert_eq!(
        levels_captured(Some("info")),
        [Level::INFO, Level::WARN, Level::ERROR]
    );
    // Without a filter the layer captures everything, trace included.
    assert_eq!(
        levels_captured(None),
        [
            Level::TRACE,
            Level::DEBUG,
            Level::INFO,
            Level::WARN,
            Level::ERROR
        ]
    );
}

// ---------------------------------------------------------------------------
// Beside OpenTelemetry

#[test]
fn fapilog_and_tracing_opentelemetry_share_a_subscriber() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("composition-test"));
    let (layer, guard, out) = collecting();
    let subscriber = tracing_subscriber::registry().with(layer).with(otel);

    tracing::subscriber::with_default(subscriber, || {
        let checkout = tracing::info_span!("checkout", order_id = 7i64);
        let _checkout = checkout.enter();
        tracing::info!("cart loaded");
        let payment = tracing::info_span!("payment", provider = "acme");
        let _payment = payment.enter();
        tracing::info!(amount = 12.5, "charged");
    });
    finish(guard);

    let events = out.events();
    assert_eq!(messages(&events), ["cart loaded", "charged"]);
    assert_eq!(
        span_fields(&events[0]),
        [span("checkout", &[("order_id", 7.into())])]
    );
    assert_eq!(
        span_fields(&events[1]),
        [
            span("checkout", &[("order_id", 7.into())]),
            span("payment", &[("provider", "acme".into())]),
        ]
    );

    // The spans were exported too, with their fields and events.
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("exported spans");
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, BTreeSet::from(["checkout", "payment"]), "{spans:?}");
    let checkout = spans.iter().find(|s| s.name == "checkout").unwrap();
    let order_id = checkout
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "order_id")
        .map(|kv| kv.value.clone());
    assert_eq!(order_id, Some(opentelemetry::Value::I64(7)), "{checkout:?}");
    assert!(
        checkout.events.iter().any(|e| e.name == "cart loaded"),
        "{checkout:?}"
    );
    let payment = spans.iter().find(|s| s.name == "payment").unwrap();
    assert_eq!(
        payment.parent_span_id,
        checkout.span_context.span_id(),
        "payment is a child of checkout"
    );
    // Each record carries the ids of the OpenTelemetry span it was logged
    // in (feature `opentelemetry`).
    #[cfg(feature = "opentelemetry")]
    for (event, otel_span) in events.iter().zip([checkout, payment]) {
        let t = event
            .trace()
            .expect("a trace context from the OpenTelemetry span");
        assert_eq!(
            t.trace_id_bytes(),
            otel_span.span_context.trace_id().to_bytes()
        );
        assert_eq!(
            t.span_id_bytes(),
            otel_span.span_context.span_id().to_bytes()
        );
        assert!(t.is_sampled());
    }
    let _ = provider.shutdown();
}

// ---------------------------------------------------------------------------
// Enrichers behind Arc and Box

#[tokio::test]
async fn a_lookup_enricher_shared_through_arc_keeps_its_cache_visible_to_the_caller() {
    let lookup = TestLookup::new();
    lookup
        .set(1i64, json!({"name": "ada"}))
        .set(2i64, json!({"name": "grace"}));
    let enricher = Arc::new(
        LookupEnricher::builder("user", lookup)
            .key_field("user_id")
            .build(),
    );
    let out = Emitted::new();
    let running = Running::start(pipeline(out.sink()).async_enricher(enricher.clone())).await;

    tracing::info!(user_id = 1i64, "first");
    tracing::info!(user_id = 2i64, "second");
    tracing::info!(user_id = 1i64, "third");
    let events = out.wait_for(3).await;
    let report = running.shutdown().await;
    assert_eq!(report.dropped, 0, "{report:?}");

    assert_eq!(messages(&events), ["first", "second", "third"]);
    let users: Vec<Option<Value>> = events.iter().map(|e| inserted(e, "user")).collect();
    assert_eq!(
        users,
        [
            Some(json!({"name": "ada"})),
            Some(json!({"name": "grace"})),
            Some(json!({"name": "ada"})),
        ]
    );

    // Through the handle the caller kept: the keys fetched, and the cache
    // holding exactly those.
    let fetched: BTreeSet<Key> = enricher.lookup().key_sets().into_iter().flatten().collect();
    assert_eq!(fetched, BTreeSet::from([Key::from(1i64), Key::from(2i64)]));
    assert_eq!(enricher.cached_entries().await, 2);
}

/// A named enricher, for use behind `Box<dyn Enricher>`.
struct Region(&'static str);

impl Enricher for Region {
    fn enrich(&self, event: &mut Event) {
        event.insert("region", self.0);
    }

    fn name(&self) -> &str {
        "region"
    }
}

#[test]
fn boxed_and_arc_shared_enrichers_add_their_fields() {
    let region: Box<dyn Enricher> = Box::new(Region("eu-west-1"));
    let boxed_closure: Box<dyn Enricher> = Box::new(|e: &mut Event| e.insert("boxed", true));
    let tier = Arc::new(|e: &mut Event| e.insert("tier", "gold"));

    let out = Collected::new();
    let (dispatch, guard) = support::start(
        fapilog::builder()
            .sink(out.sink())
            .enricher(region)
            .enricher(boxed_closure)
            .enricher(tier.clone()),
    );
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("enriched"));
    finish(guard);

    let events = out.events();
    assert_eq!(messages(&events), ["enriched"]);
    let added: Vec<(&str, &Value)> = events[0].inserted().collect();
    assert_eq!(
        added,
        [
            ("region", &Value::from("eu-west-1")),
            ("boxed", &Value::from(true)),
            ("tier", &Value::from("gold")),
        ]
    );
    // The caller's handle is still usable after the pipeline is gone.
    let mut probe = Event::new(tracing::Level::INFO, "test", "probe");
    tier.enrich(&mut probe);
    assert_eq!(probe.field("tier"), Some(&Value::from("gold")));
}
