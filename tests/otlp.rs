//! The OTLP sink against real OTLP receivers on loopback (gRPC with tonic,
//! HTTP/protobuf with axum; see `support/otlp.rs`): every field of the
//! mapping as a collector receives it — resource, scope, timestamps,
//! severity, body, typed attributes, span fields, enriched values, enrichment
//! errors, trace context (from `traceparent` and from a real
//! `tracing-opentelemetry` span) — headers and compression on the wire,
//! secrets kept out of `Debug`, errors and stats, and configuration errors.

#![cfg(feature = "otlp")]

#[path = "support/otlp.rs"]
mod otlp_support;
mod support;

use std::time::Duration;

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use fapilog::sink::{OtlpProtocol, OtlpSinkBuilder};
use fapilog::{Event, InitError};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use otlp_support::{Mode, Rec, Receiver, now_nanos, wait_until};
use serde_json::json;
use support::start;

const SECRET: &str = "secret-value";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Not sampled (flags `00`).
const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
const GEO_DOWN: &str = "geo backend down";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The trace id and span id of a `traceparent`, as bytes.
fn ids(traceparent: &str) -> (Vec<u8>, Vec<u8>) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    (hex(parts[1]), hex(parts[2]))
}

/// An async enricher that always fails: its events carry an
/// `enrichment_errors` entry under `geo`.
struct FailingGeo;

impl AsyncEnricher for FailingGeo {
    fn name(&self) -> &str {
        "geo"
    }

    async fn enrich(
        &self,
        _events: &[Event],
        _out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        Err(EnrichError::msg(GEO_DOWN))
    }
}

fn s(v: &str) -> V {
    V::StringValue(v.to_owned())
}

/// The entries of a key-value list attribute, as `(key, value)`.
fn kvlist(v: Option<&V>) -> Vec<(String, Option<V>)> {
    match v {
        Some(V::KvlistValue(l)) => l
            .values
            .iter()
            .map(|KeyValue { key, value, .. }| {
                (
                    key.clone(),
                    value.clone().and_then(|AnyValue { value }| value),
                )
            })
            .collect(),
        other => panic!("not a key-value list: {other:?}"),
    }
}

fn by_body<'a>(records: &'a [Rec], body: &str) -> &'a Rec {
    let found: Vec<&Rec> = records.iter().filter(|r| r.body() == Some(body)).collect();
    assert_eq!(found.len(), 1, "records with body {body:?}: {found:#?}");
    found[0]
}

/// Logs one of everything through a pipeline with service, version,
/// environment, hostname, a sync enricher adding a nested value and a
/// failing async enricher, to `receiver`; checks every mapped field.
fn every_field_is_mapped(protocol: OtlpProtocol, gzip: bool) {
    let receiver = Receiver::start(protocol);
    let builder = fapilog::builder()
        .service("checkout")
        .version("1.2.3")
        .environment("staging")
        .with_hostname()
        .enricher(|e: &mut Event| {
            e.insert("user", json!({"id": 7, "tier": "gold", "tags": ["a", "b"]}));
        })
        .async_enricher(FailingGeo)
        .otlp(
            receiver
                .sink()
                .gzip(gzip)
                .resource_attribute("team", "payments")
                .header("x-api-key", SECRET),
        );
    let (dispatch, guard) = start(builder);

    let before = now_nanos();
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(
            target: "checkout::api",
            count = 3i64,
            delta = -4i64,
            ratio = 0.5,
            ok = true,
            name = "ada",
            big = u64::MAX,
            "order placed"
        );
        {
            let request = tracing::info_span!("request", user_id = 42i64, traceparent = TP);
            let _r = request.enter();
            tracing::warn!("slow");
            tracing::error!(code = 500i64, "failed");
            tracing::debug!("details");
            tracing::trace!("tracing");
            {
                let step = tracing::info_span!("step", attempt = 2i64);
                let _s = step.enter();
                tracing::info!("in a step");
            }
            // Spans of one name: the innermost's fields win.
            let outer = tracing::info_span!("retry", n = 1i64);
            let _o = outer.enter();
            let inner = tracing::info_span!("retry", n = 2i64);
            let _i = inner.enter();
            tracing::info!("retried");
        }
        tracing::info!(traceparent = UNSAMPLED, "its own trace");
    });
    let after = now_nanos();
    // Shutdown closes the sink, which sends all it holds before it returns.
    let report = guard.shutdown_blocking();
    let n = 8;
    assert_eq!(report.sinks[0].name, "otlp");
    assert_eq!(
        (report.sinks[0].written, report.sinks[0].undelivered),
        (n, 0),
        "{report:?}"
    );
    let records = receiver.accepted_app();
    assert_eq!(records.len(), n as usize, "{records:#?}");

    // The wire: headers, compression, content type.
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(SECRET), "{:?}", r.headers);
        match protocol {
            OtlpProtocol::Grpc => {
                assert_eq!(
                    r.header("grpc-encoding"),
                    gzip.then_some("gzip"),
                    "{:?}",
                    r.headers
                );
                assert!(
                    r.header("content-type")
                        .is_some_and(|c| c.starts_with("application/grpc")),
                    "{:?}",
                    r.headers
                );
            }
            _ => {
                assert_eq!(
                    r.header("content-encoding"),
                    gzip.then_some("gzip"),
                    "{:?}",
                    r.headers
                );
                assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
            }
        }
    }
    assert!(
        receiver.bad_bodies().is_empty(),
        "{:?}",
        receiver.bad_bodies()
    );

    // Resource: from the pipeline's service, version, environment, the
    // host, the user's attribute and the SDK's own.
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    for r in &records {
        assert_eq!(r.resource_str("service.name"), Some("checkout"));
        assert_eq!(r.resource_str("service.version"), Some("1.2.3"));
        assert_eq!(
            r.resource_str("deployment.environment.name"),
            Some("staging")
        );
        assert_eq!(r.resource_str("host.name"), Some(host.as_str()));
        assert_eq!(r.resource_str("team"), Some("payments"));
        assert_eq!(r.resource_str("telemetry.sdk.name"), Some("fapilog"));
        assert_eq!(r.resource_str("telemetry.sdk.language"), Some("rust"));
        assert!(r.resource_str("telemetry.sdk.version").is_some());
    }

    // Every record: time, scope, severity, the pipeline's static fields not
    // repeated, the nested enriched value, the enrichment error, code and
    // thread attributes.
    for r in &records {
        let t = r.record.time_unix_nano;
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
        assert_eq!(r.record.observed_time_unix_nano, t);
        let expected_scope = if r.body() == Some("order placed") {
            "checkout::api"
        } else {
            "otlp"
        };
        assert_eq!(r.scope.name, expected_scope, "{r:#?}");
        for omitted in ["service", "version", "environment", "hostname"] {
            assert!(
                r.attr(omitted).is_none(),
                "{omitted} repeated: {:?}",
                r.attr_keys()
            );
        }
        let mut user = kvlist(r.attr("user"));
        user.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(user.len(), 3, "{user:?}");
        assert_eq!(user[0], ("id".to_owned(), Some(V::IntValue(7))));
        match &user[1] {
            (k, Some(V::ArrayValue(a))) if k == "tags" => {
                let tags: Vec<_> = a.values.iter().map(|v| v.value.clone()).collect();
                assert_eq!(tags, [Some(s("a")), Some(s("b"))]);
            }
            other => panic!("tags: {other:?}"),
        }
        assert_eq!(user[2], ("tier".to_owned(), Some(s("gold"))));
        let errors = kvlist(r.attr("enrichment_errors"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "geo");
        assert!(
            matches!(&errors[0].1, Some(V::StringValue(m)) if !m.is_empty()),
            "{errors:?}"
        );
        assert!(
            r.str("code.file.path")
                .is_some_and(|f| f.ends_with("otlp.rs")),
            "{:?}",
            r.attr("code.file.path")
        );
        assert!(r.int("code.line.number").is_some_and(|l| l > 0));
        assert_eq!(r.str("code.namespace"), Some("otlp"));
        assert!(r.int("thread.id").is_some(), "{:?}", r.attr_keys());
    }
    assert!(
        records
            .iter()
            .any(|r| { kvlist(r.attr("enrichment_errors"))[0].1 == Some(s(GEO_DOWN)) }),
        "the enricher's own message"
    );

    // Severity and body.
    for (body, number, text) in [
        ("order placed", 9, "INFO"),
        ("slow", 13, "WARN"),
        ("failed", 17, "ERROR"),
        ("details", 5, "DEBUG"),
        ("tracing", 1, "TRACE"),
    ] {
        let r = by_body(&records, body);
        assert_eq!(
            (r.record.severity_number, r.record.severity_text.as_str()),
            (number, text),
            "{body}"
        );
    }

    // Event fields, their OTLP types kept.
    let placed = by_body(&records, "order placed");
    assert_eq!(placed.attr("count"), Some(&V::IntValue(3)));
    assert_eq!(placed.attr("delta"), Some(&V::IntValue(-4)));
    assert_eq!(placed.attr("ratio"), Some(&V::DoubleValue(0.5)));
    assert_eq!(placed.attr("ok"), Some(&V::BoolValue(true)));
    assert_eq!(placed.attr("name"), Some(&s("ada")));
    // A u64 past i64::MAX: a double, as the mapping documents.
    assert_eq!(placed.attr("big"), Some(&V::DoubleValue(u64::MAX as f64)));
    assert!(placed.record.trace_id.is_empty() && placed.record.span_id.is_empty());
    assert_eq!(placed.record.flags, 0);

    // Span fields as `span.<name>.<field>`, and the span's trace context.
    let (trace_id, span_id) = ids(TP);
    let failed = by_body(&records, "failed");
    assert_eq!(failed.attr("code"), Some(&V::IntValue(500)));
    assert_eq!(failed.attr("span.request.user_id"), Some(&V::IntValue(42)));
    assert_eq!(failed.attr("span.request.traceparent"), Some(&s(TP)));
    for body in [
        "slow",
        "failed",
        "details",
        "tracing",
        "in a step",
        "retried",
    ] {
        let r = by_body(&records, body);
        assert_eq!(r.record.trace_id, trace_id, "{body}");
        assert_eq!(r.record.span_id, span_id, "{body}");
        assert_eq!(r.record.flags, 1, "{body}: sampled");
    }
    let step = by_body(&records, "in a step");
    assert_eq!(step.attr("span.request.user_id"), Some(&V::IntValue(42)));
    assert_eq!(step.attr("span.step.attempt"), Some(&V::IntValue(2)));
    let retried = by_body(&records, "retried");
    assert_eq!(
        retried.attr("span.retry.n"),
        Some(&V::IntValue(2)),
        "innermost wins"
    );
    assert_eq!(
        retried
            .attr_keys()
            .iter()
            .filter(|k| **k == "span.retry.n")
            .count(),
        1
    );

    // An event's own traceparent: its ids and (unsampled) flags.
    let own = by_body(&records, "its own trace");
    let (trace_id, span_id) = ids(UNSAMPLED);
    assert_eq!(own.record.trace_id, trace_id);
    assert_eq!(own.record.span_id, span_id);
    assert_eq!(own.record.flags, 0);
    assert_eq!(own.attr("traceparent"), Some(&s(UNSAMPLED)));
}

#[test]
fn grpc_gzip_every_field_is_mapped() {
    every_field_is_mapped(OtlpProtocol::Grpc, true);
}

#[test]
fn http_every_field_is_mapped() {
    every_field_is_mapped(OtlpProtocol::HttpProtobuf, false);
}

#[test]
fn http_gzip_every_field_is_mapped() {
    every_field_is_mapped(OtlpProtocol::HttpProtobuf, true);
}

#[test]
fn grpc_uncompressed_has_no_grpc_encoding() {
    let receiver = Receiver::start(OtlpProtocol::Grpc);
    let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("plain"));
    guard.shutdown_blocking();
    let requests = receiver.requests();
    assert_eq!(receiver.accepted_app().len(), 1);
    for r in &requests {
        assert_eq!(r.header("grpc-encoding"), None, "{:?}", r.headers);
    }
}

/// The pipeline's `service`, `version`, `environment` and `hostname` are
/// left out of a record only where the resource says the same; where the
/// sink's resource says otherwise, the record keeps them.
#[test]
fn static_fields_are_not_repeated_unless_they_differ_from_the_resource() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let receiver = Receiver::start(protocol);
        let builder = fapilog::builder()
            .service("checkout")
            .version("1.2.3")
            .environment("staging")
            .with_hostname()
            .otlp(
                receiver
                    .sink()
                    .service_name("gateway")
                    .service_version("9.9")
                    .environment("prod")
                    .host_name("elsewhere"),
            );
        let (dispatch, guard) = start(builder);
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("differs"));
        guard.shutdown_blocking();
        let records = receiver.accepted_app();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.resource_str("service.name"), Some("gateway"));
        assert_eq!(r.resource_str("service.version"), Some("9.9"));
        assert_eq!(r.resource_str("deployment.environment.name"), Some("prod"));
        assert_eq!(r.resource_str("host.name"), Some("elsewhere"));
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(r.str("service"), Some("checkout"), "{:?}", r.attr_keys());
        assert_eq!(r.str("version"), Some("1.2.3"));
        assert_eq!(r.str("environment"), Some("staging"));
        assert_eq!(r.str("hostname"), Some(host.as_str()));
    }
}

/// A static field the pipeline adds that is not a resource default
/// (`region`) stays an attribute; an enricher overriding `service` with a
/// different value keeps it too.
#[test]
fn only_equal_values_are_omitted() {
    let receiver = Receiver::start(OtlpProtocol::HttpProtobuf);
    let builder = fapilog::builder()
        .service("checkout")
        .static_field("region", "eu")
        .enricher(|e: &mut Event| {
            if e.message() == Some("rebranded") {
                e.insert("service", "checkout-v2");
            }
        })
        .otlp(receiver.sink());
    let (dispatch, guard) = start(builder);
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!("same");
        tracing::info!("rebranded");
    });
    guard.shutdown_blocking();
    let records = receiver.accepted_app();
    assert_eq!(records.len(), 2);
    let same = by_body(&records, "same");
    assert_eq!(same.resource_str("service.name"), Some("checkout"));
    assert_eq!(same.attr("service"), None);
    assert_eq!(same.str("region"), Some("eu"));
    let rebranded = by_body(&records, "rebranded");
    assert_eq!(rebranded.str("service"), Some("checkout-v2"));
}

/// With `tracing-opentelemetry` and a real SDK tracer in the subscriber,
/// each record carries the ids of the OpenTelemetry span it was logged in.
#[cfg(feature = "opentelemetry")]
#[test]
fn records_carry_the_opentelemetry_spans_ids() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let receiver = Receiver::start(protocol);
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("otlp-test"));
        let (layer, guard) = fapilog::builder()
            .otlp(receiver.sink())
            .build()
            .expect("pipeline starts");
        let subscriber = tracing_subscriber::registry().with(layer).with(otel);
        tracing::subscriber::with_default(subscriber, || {
            let checkout = tracing::info_span!("checkout", order_id = 7i64);
            let _c = checkout.enter();
            tracing::info!("cart loaded");
            let payment = tracing::info_span!("payment");
            let _p = payment.enter();
            tracing::info!("charged");
        });
        let report = guard.shutdown_blocking();
        assert_eq!(report.sinks[0].written, 2, "{report:?}");
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("exported spans");
        let records = receiver.accepted_app();
        assert_eq!(records.len(), 2);
        for (body, span_name) in [("cart loaded", "checkout"), ("charged", "payment")] {
            let span = spans
                .iter()
                .find(|s| s.name == span_name)
                .unwrap_or_else(|| panic!("span {span_name} in {spans:?}"));
            let r = by_body(&records, body);
            assert_eq!(
                r.record.trace_id,
                span.span_context.trace_id().to_bytes().to_vec(),
                "{body}"
            );
            assert_eq!(
                r.record.span_id,
                span.span_context.span_id().to_bytes().to_vec(),
                "{body}"
            );
            assert_eq!(r.record.flags, 1, "{body}: sampled");
        }
        assert_eq!(
            by_body(&records, "cart loaded").record.trace_id,
            by_body(&records, "charged").record.trace_id,
            "one trace"
        );
        let _ = provider.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Secrets

/// A header's value reaches the collector and shows nowhere else: not in
/// the builders' or the sink's `Debug`, not in stats after failures (a
/// collector that is unavailable, then away, then refusing), not in the
/// report.
#[test]
fn header_values_reach_the_collector_and_show_nowhere_else() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let receiver = Receiver::start(protocol);
        let sink = receiver.sink().header("x-api-key", SECRET);
        let shown = format!("{sink:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("x-api-key"),
            "the header's name shows: {shown}"
        );
        let built = sink.clone().build().expect("valid sink");
        let shown = format!("{built:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        let builder = fapilog::builder().otlp(sink);
        let shown = format!("{builder:?}");
        assert!(!shown.contains(SECRET), "{shown}");

        let (dispatch, guard) = start(builder);
        let stats_texts = std::cell::RefCell::new(Vec::new());
        let remember = |guard: &fapilog::Guard| {
            let stats = guard.stats();
            stats_texts
                .borrow_mut()
                .push(format!("{stats:?} {guard:?}"));
            stats
        };

        // Unavailable for a while: retried, failures counted.
        receiver.set_mode(Mode::Unavailable { retry_after: None });
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq = 0, "first"));
        assert!(wait_until(|| remember(&guard).sinks[0].failures >= 2));
        assert!(remember(&guard).sinks[0].last_error.is_some());
        // Away: connection refused.
        receiver.kill();
        let failures = remember(&guard).sinks[0].failures;
        assert!(wait_until(
            || remember(&guard).sinks[0].failures >= failures + 2
        ));
        // Back, refusing for good.
        receiver.set_mode(Mode::Refuse);
        receiver.up();
        assert!(wait_until(|| remember(&guard).sinks[0].undelivered == 1));
        let report = guard.shutdown_blocking();
        let shown = format!("{report:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        for text in stats_texts.borrow().iter() {
            assert!(!text.contains(SECRET), "{text}");
        }
        // And the collector did get it, every time.
        let requests = receiver.requests();
        assert!(requests.len() >= 3);
        assert!(
            requests
                .iter()
                .all(|r| r.header("x-api-key") == Some(SECRET))
        );
    }
}

/// A secret in the endpoint's query string (some vendors take the API key
/// there) or user info shows in no `Debug`.
#[test]
fn endpoint_secrets_show_in_no_debug() {
    let receiver = Receiver::start(OtlpProtocol::HttpProtobuf);
    let endpoint = format!("{}/v1/logs?api_key={SECRET}", receiver.endpoint());
    let sink = receiver.sink().endpoint(&endpoint);
    let shown = format!("{sink:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    let shown = format!("{:?}", sink.clone().build().expect("valid sink"));
    assert!(!shown.contains(SECRET), "{shown}");
    let with_user = receiver.sink().endpoint(format!(
        "http://user:{SECRET}@127.0.0.1:{}",
        receiver.port()
    ));
    let shown = format!("{with_user:?}");
    assert!(!shown.contains(SECRET), "{shown}");

    // The query reaches the collector; failures do not show it.
    let (dispatch, guard) = start(fapilog::builder().otlp(sink));
    receiver.set_mode(Mode::Unavailable { retry_after: None });
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("first"));
    assert!(wait_until(|| guard.stats().sinks[0].failures >= 1));
    receiver.kill();
    let failures = guard.stats().sinks[0].failures;
    assert!(wait_until(|| guard.stats().sinks[0].failures > failures));
    let stats = guard.stats();
    let shown = format!("{stats:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    receiver.set_mode(Mode::Accept);
    receiver.up();
    assert!(wait_until(|| guard.stats().sinks[0].written == 1));
    guard.shutdown_blocking();
}

// ---------------------------------------------------------------------------
// Configuration errors

fn build_error(sink: OtlpSinkBuilder) -> InitError {
    match fapilog::builder().otlp(sink).build() {
        Ok(_) => panic!("the pipeline started"),
        Err(e) => e,
    }
}

#[test]
fn a_bad_endpoint_is_an_error_naming_the_setting() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        for endpoint in ["ftp://x", "not a url", "http://"] {
            let sink = OtlpSinkBuilder::new()
                .protocol(protocol)
                .endpoint(endpoint)
                .ignore_env();
            let e = build_error(sink.clone());
            let text = e.to_string();
            assert!(text.contains("otlp.endpoint"), "{endpoint}: {text}");
            assert_eq!(
                e.config_error().and_then(|c| c.key()),
                Some("otlp.endpoint"),
                "{endpoint}: {text}"
            );
            // The sink's own builder says the same.
            let e = sink.build().expect_err("a bad endpoint");
            assert_eq!(e.key(), Some("otlp.endpoint"), "{e}");
        }
    }
    // `init` too, before it installs anything.
    let e = fapilog::builder()
        .ignore_filter_env()
        .bridge_log(false)
        .otlp(OtlpSinkBuilder::new().endpoint("ftp://x").ignore_env())
        .init()
        .expect_err("a bad endpoint");
    assert!(e.to_string().contains("otlp.endpoint"), "{e}");
    assert!(!tracing::dispatcher::has_been_set());
}

#[test]
fn a_zero_timeout_is_an_error_naming_the_setting() {
    let e = build_error(
        OtlpSinkBuilder::new()
            .endpoint("http://127.0.0.1:4318")
            .timeout(Duration::ZERO)
            .ignore_env(),
    );
    assert!(e.to_string().contains("otlp.timeout"), "{e}");
}

#[test]
fn an_invalid_header_is_an_error_that_does_not_show_its_value() {
    const BAD: &str = "s3cr3t\ninjected";
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let sink = OtlpSinkBuilder::new()
            .protocol(protocol)
            .endpoint("http://127.0.0.1:4318")
            .header("x-api-key", BAD)
            .ignore_env();
        let e = build_error(sink.clone());
        let text = format!("{e} {e:?}");
        assert!(text.contains("x-api-key"), "names the header: {text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(e.config_error().is_some(), "{text}");
        let e = sink.build().expect_err("an invalid header");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("s3cr3t"), "{text}");

        // A bad header name is named.
        let e = build_error(
            OtlpSinkBuilder::new()
                .protocol(protocol)
                .endpoint("http://127.0.0.1:4318")
                .header("bad header", "v")
                .ignore_env(),
        );
        assert!(e.to_string().contains("bad header"), "{e}");
    }
}
