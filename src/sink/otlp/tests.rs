use std::collections::HashMap;
use std::time::Duration;

use super::transport::parse_retry_after;
use super::*;

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
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b%2Cc,x-tenant=t1"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "X-Tenant=t2"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_SERVICE_NAME", "checkout"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,team=payments,region=eu%2Dwest"),
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
    assert_eq!(c.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-tenant")).count(), 1);
    assert!(c.headers.contains(&("x-tenant".to_owned(), "t3".to_owned())));
}

#[test]
fn http_endpoints_get_the_logs_path_only_when_they_have_none() {
    let http = |vars: &[(&str, &str)], b: OtlpSinkBuilder| resolve(b, vars).unwrap().endpoint;
    assert_eq!(
        http(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")], OtlpSinkBuilder::new()),
        "http://c:4318/v1/logs"
    );
    assert_eq!(
        http(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base")], OtlpSinkBuilder::new()),
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
        http(&[], OtlpSinkBuilder::new().endpoint("https://c.example/ingest/logs")),
        "https://c.example/ingest/logs"
    );
}

#[test]
fn bad_settings_name_the_variable_and_hide_secrets() {
    let err = |vars: &[(&str, &str)], b: OtlpSinkBuilder| resolve(b, vars).err().expect("an error");
    let e = err(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], OtlpSinkBuilder::new());
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_PROTOCOL"));
    assert!(e.message().contains("grpc"), "{e}");
    let e = err(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], OtlpSinkBuilder::new());
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_TIMEOUT"));
    let e = err(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")], OtlpSinkBuilder::new());
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_COMPRESSION"));
    let e = err(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")], OtlpSinkBuilder::new());
    assert_eq!(e.key(), Some("OTEL_EXPORTER_OTLP_HEADERS"));
    let e = err(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:hunter2@c")], OtlpSinkBuilder::new());
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = err(&[], OtlpSinkBuilder::new().endpoint("not a url"));
    assert_eq!(e.key(), Some("otlp.endpoint"));
    let e = err(&[], OtlpSinkBuilder::new().timeout(Duration::ZERO));
    assert_eq!(e.key(), Some("otlp.timeout"));

    let e = OtlpSinkBuilder::new()
        .ignore_env()
        .header("x-api-key", "sec\nret")
        .build()
        .err()
        .expect("an invalid header value");
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
    assert!(!shown.contains("tok-secret") && !shown.contains("pw-secret"), "{shown}");
    let sink = b.build().unwrap();
    let shown = format!("{sink:?}");
    assert!(!shown.contains("tok-secret") && !shown.contains("pw-secret"), "{shown}");
    assert!(shown.contains("authorization"), "{shown}");
}

#[test]
fn retry_after_takes_seconds_or_a_date() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
    assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon"), None);
    assert_eq!(parse_retry_after("-1"), None);
}

#[test]
fn values_keep_their_shape() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let v = map::any(&serde_json::json!({"id": 7, "big": u64::MAX, "r": 0.5, "ok": true, "tags": ["a"], "none": null}));
    let Some(V::KvlistValue(kv)) = v.value else { panic!("{v:?}") };
    let get = |k: &str| kv.values.iter().find(|e| e.key == k).and_then(|e| e.value.clone()).and_then(|v| v.value);
    assert_eq!(get("id"), Some(V::IntValue(7)));
    assert_eq!(get("big"), Some(V::DoubleValue(u64::MAX as f64)));
    assert_eq!(get("r"), Some(V::DoubleValue(0.5)));
    assert_eq!(get("ok"), Some(V::BoolValue(true)));
    assert!(matches!(get("tags"), Some(V::ArrayValue(a)) if a.values.len() == 1));
    assert_eq!(get("none"), None);
}
