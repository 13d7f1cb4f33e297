use std::collections::HashMap;
use std::time::Duration;

use super::transport::parse_retry_after;
use super::*;
use crate::event::Value;

fn resolve(b: OtlpSinkBuilder, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    b.resolve(&Defaults::default(), &|k| vars.get(k).cloned())
}

fn attr(c: &Config, key: &str) -> Option<String> {
    c.resource_string(key)
}

#[test]
fn defaults_follow_the_specification() {
    let c = resolve(OtlpSinkBuilder::new(), &[]).unwrap();
    assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(c.endpoint, "http://localhost:4318/v1/logs");
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert!(!c.gzip);
    assert_eq!(attr(&c, "service.name").as_deref(), Some("unknown_service"));
    assert!(attr(&c, "host.name").is_some_and(|h| !h.is_empty()));
    let c = resolve(OtlpSinkBuilder::new().protocol(OtlpProtocol::Grpc), &[]).unwrap();
    assert_eq!(c.endpoint, "http://localhost:4317");
}

#[test]
fn environment_variables_configure_what_the_builder_leaves_open() {
    let vars = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=a%20b%2Cc,x-tenant=t1",
        ),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "X-Tenant=t2"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_SERVICE_NAME", "checkout"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=ignored,team=payments,region=eu%2Dwest",
        ),
    ];
    let c = resolve(OtlpSinkBuilder::new(), &vars).unwrap();
    assert_eq!(c.protocol, OtlpProtocol::Grpc);
    assert_eq!(c.endpoint, "http://collector:4317");
    assert_eq!(
        c.headers,
        vec![
            ("api-key".to_owned(), "a b,c".to_owned()),
            ("X-Tenant".to_owned(), "t2".to_owned())
        ]
    );
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert!(c.gzip);
    assert_eq!(attr(&c, "service.name").as_deref(), Some("checkout"));
    assert_eq!(attr(&c, "team").as_deref(), Some("payments"));
    assert_eq!(attr(&c, "region").as_deref(), Some("eu-west"));

    // The builder wins over the environment.
    let c = resolve(
        OtlpSinkBuilder::new()
            .protocol(OtlpProtocol::HttpProtobuf)
            .endpoint("http://other:4318")
            .timeout(Duration::from_secs(1))
            .gzip(false)
            .service_name("api")
            .header("x-tenant", "t3"),
        &vars,
    )
    .unwrap();
    assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(c.endpoint, "http://other:4318/v1/logs");
    assert_eq!(c.timeout, Duration::from_secs(1));
    assert!(!c.gzip);
    assert_eq!(attr(&c, "service.name").as_deref(), Some("api"));
    assert_eq!(
        c.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-tenant"))
            .count(),
        1
    );
    assert!(
        c.headers
            .contains(&("x-tenant".to_owned(), "t3".to_owned()))
    );
}

#[test]
fn http_endpoints_get_the_logs_path_only_when_they_have_none() {
    let http = |vars: &[(&str, &str)], b: OtlpSinkBuilder| resolve(b, vars).unwrap().endpoint;
    assert_eq!(
        http(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
            OtlpSinkBuilder::new()
        ),
        "http://c:4318/v1/logs"
    );
    assert_eq!(
        http(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base")],
            OtlpSinkBuilder::new()
        ),
        "http://c:4318/base/v1/logs"
    );
    assert_eq!(
        http(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:9999/custom")
            ],
            OtlpSinkBuilder::new()
        ),
        "http://l:9999/custom"
    );
    assert_eq!(
        http(
            &[],
            OtlpSinkBuilder::new().endpoint("https://c.example/ingest/logs")
        ),
        "https://c.example/ingest/logs"
    );
}

#[test]
fn bad_settings_name_the_variable_and_hide_secrets() {
    let err = |vars: &[(&str, &str)], b: OtlpSinkBuilder| resolve(b, vars).err().expect("an error");
    let e = err(
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
        OtlpSinkBuilder::new(),
    );
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_PROTOCOL"));
    assert!(e.message().contains("grpc"), "{e}");
    let e = err(
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
        OtlpSinkBuilder::new(),
    );
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_TIMEOUT"));
    let e = err(
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
        OtlpSinkBuilder::new(),
    );
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_COMPRESSION"));
    let e = err(
        &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
        OtlpSinkBuilder::new(),
    );
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_HEADERS"));
    let e = err(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:hunter2@c")],
        OtlpSinkBuilder::new(),
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = err(&[], OtlpSinkBuilder::new().endpoint("not a url"));
    assert_eq!(e.key(), Some("otlp.endpoint"));
    let e = err(&[], OtlpSinkBuilder::new().timeout(Duration::ZERO));
    assert_eq!(e.key(), Some("otlp.timeout"));

    let e = OtlpSinkBuilder::new()
        .ignore_env()
        .header("x-api-key", "sec\nret")
        .build()
        .expect_err("an invalid header value");
    assert!(!e.to_string().contains("sec"), "{e}");
    assert!(e.to_string().contains("x-api-key"), "{e}");
}

#[test]
fn debug_output_never_shows_header_values() {
    let b = OtlpSinkBuilder::new()
        .ignore_env()
        .endpoint("http://u:pw-secret@c:4318")
        .header("authorization", "Bearer tok-secret");
    let shown = format!("{b:?}");
    assert!(
        !shown.contains("tok-secret") && !shown.contains("pw-secret"),
        "{shown}"
    );
    let sink = b.build().unwrap();
    let shown = format!("{sink:?}");
    assert!(
        !shown.contains("tok-secret") && !shown.contains("pw-secret"),
        "{shown}"
    );
    assert!(shown.contains("authorization"), "{shown}");
}

#[test]
fn retry_after_takes_seconds_or_a_date() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
    assert!(
        d > Duration::from_secs(100) && d <= Duration::from_secs(120),
        "{d:?}"
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
    assert_eq!(parse_retry_after("-1"), None);
}

#[test]
fn values_keep_their_shape() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let v = map::any(
        &serde_json::json!({"id": 7, "big": u64::MAX, "r": 0.5, "ok": true, "tags": ["a"], "none": null}),
    );
    let Some(V::KvlistValue(kv)) = v.value else {
        panic!("{v:?}")
    };
    let get = |k: &str| {
        kv.values
            .iter()
            .find(|e| e.key == k)
            .and_then(|e| e.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(get("id"), Some(V::IntValue(7)));
    assert_eq!(get("big"), Some(V::DoubleValue(u64::MAX as f64)));
    assert_eq!(get("r"), Some(V::DoubleValue(0.5)));
    assert_eq!(get("ok"), Some(V::BoolValue(true)));
    assert!(matches!(get("tags"), Some(V::ArrayValue(a)) if a.values.len() == 1));
    assert_eq!(get("none"), None);
}

fn sample_event() -> Event {
    let trace = crate::event::TraceContext::new([7; 16], [9; 8], 1).unwrap();
    let mut e = Event::new(tracing::Level::WARN, "app::orders", "order placed")
        .with_field("order_id", 42)
        .with_field("amount", 12.5)
        .with_field("express", true)
        .with_field("note", "a \"quoted\" é")
        .with_field("nothing", Value::Null)
        .with_span("request", [("user_id", serde_json::json!(7))])
        .with_span("db", [("table", serde_json::json!("orders"))])
        .with_span("request", [("user_id", serde_json::json!(8))])
        .with_trace(trace);
    e.insert(
        "user",
        serde_json::json!({"id": 7, "tier": "gold", "tags": ["a", "b"], "big": u64::MAX}),
    );
    e.insert("service", "checkout");
    e.add_enrichment_error("users", "timeout");
    e.add_enrichment_error("geo", "circuit_open");
    e
}

fn decode(
    bytes: &[u8],
) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    prost::Message::decode(bytes).expect("a valid ExportLogsServiceRequest")
}

#[test]
fn hand_encoded_records_decode_to_the_generated_types() {
    let omit = Omit {
        fields: vec![("service", "checkout".to_owned())],
    };
    let events = [
        sample_event(),
        Event::new(tracing::Level::INFO, "other", "x".repeat(300)),
        sample_event(),
    ];
    let pending: Vec<_> = events
        .iter()
        .map(|e| map::pending(e, &omit, true, &mut Vec::new()))
        .collect();
    let resource = Resource {
        attributes: vec![map::kv("service.name", map::string("checkout"))],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    let bytes = map::request(&prost::Message::encode_to_vec(&resource), &pending);
    let req = decode(&bytes);
    assert_eq!(req.resource_logs.len(), 1);
    let rl = &req.resource_logs[0];
    assert_eq!(rl.resource.as_ref(), Some(&resource));
    // A scope per target, in first-seen order; records keep their order.
    let scopes: Vec<_> = rl
        .scope_logs
        .iter()
        .map(|s| s.scope.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(scopes, ["app::orders", "other"]);
    assert_eq!(rl.scope_logs[0].log_records.len(), 2);
    for (got, event) in rl.scope_logs[0]
        .log_records
        .iter()
        .zip([&events[0], &events[2]])
    {
        assert_eq!(got, &map::record(event, &omit));
    }
    assert_eq!(
        rl.scope_logs[1].log_records[0],
        map::record(&events[1], &omit)
    );
    let r = &rl.scope_logs[0].log_records[0];
    assert!(
        !r.attributes.iter().any(|a| a.key == "service"),
        "the resource carries it"
    );
    assert!(r.attributes.iter().any(|a| a.key == "span.request.user_id"));
    assert_eq!(
        r.attributes
            .iter()
            .filter(|a| a.key.starts_with("span.request."))
            .count(),
        1
    );
    assert_eq!(r.trace_id, vec![7; 16]);
    assert_eq!(r.flags, 1);
}

proptest::proptest! {
    #[test]
    fn any_json_value_encodes_as_the_generated_types_do(v in json_value()) {
        let mut e = Event::new(tracing::Level::INFO, "t", "m");
        e.insert("v", v.clone());
        let omit = Omit { fields: Vec::new() };
        let p = map::pending(&e, &omit, true, &mut Vec::new());
        let req = decode(&map::request(&[], std::slice::from_ref(&p)));
        let got = &req.resource_logs[0].scope_logs[0].log_records[0];
        proptest::prop_assert_eq!(got, &map::record(&e, &omit));
    }
}

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".{0,200}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,20}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
