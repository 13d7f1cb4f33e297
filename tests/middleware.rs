//! `RequestLayer` on a real axum server on loopback, requests through
//! `reqwest` (and raw sockets for what `reqwest` will not send), records
//! through a real pipeline: request ids kept when well-formed and replaced
//! otherwise, trace context continued or started, one access record per
//! request whatever its outcome (response, error, cancellation), hostile
//! headers ignored and never echoed, and the request's ids forwarded by an
//! `HttpLookup` to a second loopback service through the span's fields.
#![cfg(all(feature = "tower", feature = "http"))]

#[path = "support/http_support.rs"]
mod http_support;
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, MatchedPath, Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fapilog::lookup::LookupEnricher;
use fapilog::middleware::{ACCESS_TARGET, RequestContext, RequestLayer};
use fapilog::sources::HttpLookup;
use fapilog::{Event, Guard, TraceContext, Value};
use http_support::{TestApi, user};
use support::{Collected, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service};
use tracing::Dispatch;
use tracing::instrument::{WithDispatch, WithSubscriber};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

// ---------------------------------------------------------------------------
// The application under test

/// Runs the services it wraps under the test's own dispatcher: axum spawns
/// a task per connection, and those would not inherit it.
#[derive(Clone)]
struct Dispatched<S> {
    inner: S,
    dispatch: Dispatch,
}

#[derive(Clone)]
struct DispatchLayer(Dispatch);

impl<S> Layer<S> for DispatchLayer {
    type Service = Dispatched<S>;
    fn layer(&self, inner: S) -> Dispatched<S> {
        Dispatched {
            inner,
            dispatch: self.0.clone(),
        }
    }
}

impl<S: Service<R>, R> Service<R> for Dispatched<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = WithDispatch<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let fut = tracing::dispatcher::with_default(&self.dispatch, || self.inner.call(req));
        fut.with_subscriber(self.dispatch.clone())
    }
}

async fn hello() -> &'static str {
    tracing::info!("handling hello");
    "hello"
}

async fn fail() -> StatusCode {
    tracing::warn!("about to fail");
    StatusCode::INTERNAL_SERVER_ERROR
}

/// Logs an event keyed by `user_id`, for the lookup to enrich.
async fn lookup(Path(key): Path<String>) -> &'static str {
    tracing::info!(user_id = key.as_str(), "looked up");
    "ok"
}

/// What the handler sees: the context extension and the request id header.
async fn ctx(Extension(c): Extension<RequestContext>, headers: HeaderMap) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "request_id": c.request_id(),
        "traceparent": c.traceparent(),
        "parent_span_id": c.parent_span_id().map(hex),
        "tracestate": c.tracestate(),
        "header": headers.get("x-request-id").map(|v| v.to_str().unwrap().to_owned()),
    }))
}

async fn slow() -> &'static str {
    tracing::info!("slow start");
    tokio::time::sleep(Duration::from_secs(60)).await;
    "late"
}

async fn record_route(path: MatchedPath, request: Request, next: Next) -> Response {
    tracing::Span::current().record("route", path.as_str());
    next.run(request).await
}

fn routes() -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/fail", get(fail))
        .route("/lookup/{key}", get(lookup))
        .route("/ctx", get(ctx))
        .route("/slow", get(slow))
        .route_layer(middleware::from_fn(record_route))
}

fn hex(bytes: [u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The app on loopback, its pipeline and a client.
struct Harness {
    addr: SocketAddr,
    out: Collected,
    guard: Guard,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(layer: impl FnOnce(Router) -> Router) -> Harness {
        Self::start_with(fapilog::builder(), layer).await
    }

    async fn start_with(
        builder: fapilog::Builder,
        layer: impl FnOnce(Router) -> Router,
    ) -> Harness {
        let out = Collected::new();
        let (dispatch, guard) = support::start_async(
            builder
                .runtime(tokio::runtime::Handle::current())
                .sink(out.sink()),
        )
        .await;
        let app = layer(routes()).layer(DispatchLayer(dispatch));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .unwrap();
        Harness {
            addr,
            out,
            guard,
            client,
            server,
        }
    }

    async fn standard() -> Harness {
        Self::start(|r| r.layer(RequestLayer::new())).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` with `headers` (raw bytes allowed); the response.
    async fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(
                *k,
                reqwest::header::HeaderValue::from_bytes(v).expect("sendable header value"),
            );
        }
        req.send().await.expect("request answered")
    }

    /// The request id the response carries.
    async fn get_id(&self, path: &str, headers: &[(&str, &[u8])]) -> (StatusCode, String) {
        let resp = self.get(path, headers).await;
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let id = resp
            .headers()
            .get("x-request-id")
            .expect("response has x-request-id")
            .to_str()
            .unwrap()
            .to_owned();
        (status, id)
    }

    /// Waits for the access record of `request_id` and returns every event
    /// of that request written so far (the record last).
    async fn request_events(&self, request_id: &str) -> Vec<Event> {
        eventually(|| {
            let events: Vec<Event> = self
                .out
                .app_events()
                .into_iter()
                .filter(|e| str_field(e, "request_id").as_deref() == Some(request_id))
                .collect();
            events
                .iter()
                .any(|e| e.target() == ACCESS_TARGET)
                .then_some(events)
        })
        .await
    }

    /// Stops the server, drains the pipeline, and returns every event.
    async fn finish(self) -> Vec<Event> {
        self.server.abort();
        let report = self.guard.shutdown().await;
        assert_eq!(report.dropped, 0);
        self.out.app_events()
    }
}

async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "waited in vain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Request headers to send: names and raw values.
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

fn str_field(e: &Event, name: &str) -> Option<String> {
    e.field(name).and_then(Value::as_str).map(str::to_owned)
}

fn access(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.target() == ACCESS_TARGET)
        .collect()
}

/// The one access record among `events`.
fn the_access(events: &[Event]) -> &Event {
    let records = access(events);
    assert_eq!(records.len(), 1, "one access record expected: {events:#?}");
    records[0]
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Everything of an event a sink could write, as text, to look for leaks.
fn text(e: &Event) -> String {
    format!("{e:?}")
}

/// The handler's event of a request (not the access record).
fn handler_event<'a>(events: &'a [Event], message: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.message() == Some(message))
        .unwrap_or_else(|| panic!("no event {message:?} in {events:#?}"))
}

// ---------------------------------------------------------------------------
// Request ids

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_request_id_is_kept_everywhere() {
    let h = Harness::standard().await;
    let id = "req-42.a_b:C";
    let (status, echoed) = h
        .get_id(
            "/hello?token=s3cr3t&user=ada",
            &[("x-request-id", id.as_bytes())],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, id);

    let events = h.request_events(id).await;
    let handled = handler_event(&events, "handling hello");
    assert_eq!(str_field(handled, "request_id").as_deref(), Some(id));
    let record = the_access(&events);
    assert_eq!(record.message(), Some("request completed"));
    assert_eq!(record.level(), tracing::Level::INFO);
    assert_eq!(record.field("status").and_then(Value::as_u64), Some(200));
    assert_eq!(str_field(record, "method").as_deref(), Some("GET"));
    assert_eq!(str_field(record, "path").as_deref(), Some("/hello"));
    assert_eq!(str_field(record, "route").as_deref(), Some("/hello"));
    let latency = record.field("latency_ms").and_then(Value::as_f64).unwrap();
    assert!(
        (0.0..PATIENCE.as_secs_f64() * 1e3).contains(&latency),
        "{latency}"
    );
    for e in &events {
        assert!(!text(e).contains("s3cr3t"), "the query leaked: {e:?}");
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_id_is_replaced_by_a_fresh_one() {
    let h = Harness::standard().await;
    let too_long = "a".repeat(129);
    let bad: Vec<&[u8]> = vec![
        too_long.as_bytes(),
        b"",
        b"has space",
        b"a/b",
        b"<script>alert(1)</script>",
        b"\"quoted\"",
        b"\xff\xfe\xfd",
        b"caf\xc3\xa9",
        b"tab\tinside",
    ];
    let mut seen = Vec::new();
    for value in &bad {
        let (status, id) = h.get_id("/hello", &[("x-request-id", value)]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(is_generated_id(&id), "{value:?} gave {id:?}");
        assert_ne!(id.as_bytes(), *value);
        let events = h.request_events(&id).await;
        assert_eq!(
            str_field(the_access(&events), "request_id"),
            Some(id.clone())
        );
        seen.push(id);
    }
    // Two values: neither is trusted.
    let resp = h
        .client
        .get(h.url("/hello"))
        .header("x-request-id", "first")
        .header("x-request-id", "second")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(is_generated_id(&id), "{id}");
    seen.push(id);
    // No header at all.
    let (_, id) = h.get_id("/hello", &[]).await;
    assert!(is_generated_id(&id));
    seen.push(id);

    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), bad.len() + 2, "fresh ids are distinct");
    let events = h.finish().await;
    for e in &events {
        let t = text(e);
        for needle in [
            "<script>",
            "has space",
            "quoted",
            "first",
            "second",
            &too_long,
        ] {
            assert!(!t.contains(needle), "{needle:?} leaked: {e:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_id_in_use() {
    let h = Harness::standard().await;
    for (sent, kept) in [(&b"req-7"[..], true), (&b"bad id"[..], false)] {
        let resp = h
            .get(
                "/ctx",
                &[("x-request-id", sent), ("traceparent", TP.as_bytes())],
            )
            .await;
        let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["request_id"], echoed.as_str());
        assert_eq!(
            body["header"],
            echoed.as_str(),
            "the request header is replaced"
        );
        assert_eq!(kept, echoed.as_bytes() == sent);
        let tp = TraceContext::from_traceparent(body["traceparent"].as_str().unwrap()).unwrap();
        assert_eq!(tp.trace_id(), TP_TRACE);
        assert_eq!(body["parent_span_id"], TP_SPAN);
        let events = h.request_events(&echoed).await;
        assert_eq!(the_access(&events).trace().unwrap(), &tp);
    }
    h.finish().await;
}

// ---------------------------------------------------------------------------
// Trace context

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued_with_a_new_span() {
    let h = Harness::standard().await;
    let resp = h
        .get(
            "/hello",
            &[
                ("traceparent", TP.as_bytes()),
                ("tracestate", TRACESTATE.as_bytes()),
            ],
        )
        .await;
    assert!(
        resp.headers().get("traceresponse").is_none(),
        "off by default"
    );
    assert!(resp.headers().get("traceparent").is_none());
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = h.request_events(&id).await;
    let handled = handler_event(&events, "handling hello");
    let t = handled.trace().expect("the handler's event has a trace");
    assert_eq!(t.trace_id(), TP_TRACE, "same trace");
    assert_ne!(t.span_id(), TP_SPAN, "a span of this request's own");
    assert!(t.is_sampled(), "flags kept");
    assert_eq!(
        str_field(handled, "parent_span_id").as_deref(),
        Some(TP_SPAN)
    );
    assert_eq!(
        str_field(handled, "tracestate").as_deref(),
        Some(TRACESTATE)
    );
    let record = the_access(&events);
    assert_eq!(record.trace(), Some(t), "the record is in the same span");

    // Unsampled stays unsampled.
    let unsampled = TP.replace("-01", "-00");
    let (_, id) = h
        .get_id("/hello", &[("traceparent", unsampled.as_bytes())])
        .await;
    let events = h.request_events(&id).await;
    let t = *the_access(&events).trace().unwrap();
    assert_eq!(t.trace_id(), TP_TRACE);
    assert!(!t.is_sampled());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_traceparent_a_new_trace_starts() {
    let h = Harness::standard().await;
    let upper = TP.to_uppercase();
    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let cases: Vec<Headers<'_>> = vec![
        vec![],
        vec![("traceparent", b"garbage")],
        vec![
            ("traceparent", upper.as_bytes()),
            ("tracestate", TRACESTATE.as_bytes()),
        ],
        vec![("traceparent", zeros.as_bytes())],
        vec![(
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-\xff\xfe",
        )],
        vec![
            ("traceparent", TP.as_bytes()),
            ("traceparent", TP.as_bytes()),
        ],
    ];
    let mut traces = Vec::new();
    for headers in &cases {
        let (status, id) = h.get_id("/hello", headers).await;
        assert_eq!(status, StatusCode::OK);
        let events = h.request_events(&id).await;
        let handled = handler_event(&events, "handling hello");
        let t = *handled.trace().expect("a fresh trace");
        assert_ne!(t.trace_id(), TP_TRACE, "{headers:?}");
        assert!(t.is_sampled());
        assert_eq!(
            TraceContext::from_traceparent(&t.to_traceparent()),
            Some(t),
            "valid"
        );
        assert!(handled.field("parent_span_id").is_none());
        assert!(
            handled.field("tracestate").is_none(),
            "no tracestate without its traceparent"
        );
        traces.push(t.trace_id());
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), cases.len(), "every new trace is new");
    let stats = h.guard.stats();
    assert_eq!(
        stats.malformed_traceparents, 0,
        "the span's own is always valid"
    );
    let events = h.finish().await;
    for e in &events {
        assert!(
            !text(e).contains("garbage") && !text(e).contains(&upper),
            "{e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tracestate_is_dropped_and_the_trace_kept() {
    let h = Harness::standard().await;
    let long = format!("a={}", "b".repeat(600));
    for state in [long.as_bytes(), b"a=\xffb", b"a=\tb"] {
        let (_, id) = h
            .get_id(
                "/hello",
                &[("traceparent", TP.as_bytes()), ("tracestate", state)],
            )
            .await;
        let events = h.request_events(&id).await;
        let record = the_access(&events);
        assert_eq!(record.trace().unwrap().trace_id(), TP_TRACE);
        assert!(record.field("tracestate").is_none(), "{state:?}");
    }
    h.finish().await;
}

// ---------------------------------------------------------------------------
// Access records

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_record_per_request_with_its_status() {
    let h = Harness::standard().await;
    let mut sent = Vec::new();
    for (path, status) in [
        ("/hello", 200),
        ("/nowhere?secret=x", 404),
        ("/fail", 500),
        ("/hello", 200),
        ("/lookup/42?q=1", 200),
    ] {
        let (got, id) = h.get_id(path, &[]).await;
        assert_eq!(got.as_u16(), status, "{path}");
        sent.push((id, path, status));
    }
    let events = h.finish().await;
    let records = access(&events);
    assert_eq!(records.len(), sent.len(), "{records:#?}");
    for (id, path, status) in &sent {
        let mine: Vec<_> = records
            .iter()
            .filter(|e| str_field(e, "request_id").as_deref() == Some(id))
            .collect();
        assert_eq!(mine.len(), 1, "exactly one record for {path}");
        let r = mine[0];
        assert_eq!(
            r.field("status").and_then(Value::as_u64),
            Some(u64::from(*status))
        );
        assert!(r.field("latency_ms").and_then(Value::as_f64).is_some());
        assert_eq!(str_field(r, "method").as_deref(), Some("GET"));
        let bare = path.split('?').next().unwrap();
        assert_eq!(str_field(r, "path").as_deref(), Some(bare));
        let level = if *status >= 500 {
            tracing::Level::ERROR
        } else {
            tracing::Level::INFO
        };
        assert_eq!(r.level(), level, "{path}");
        assert!(r.field("error").is_none() && r.field("cancelled").is_none());
        match *path {
            "/nowhere?secret=x" => assert!(r.field("route").is_none(), "no route matched"),
            p if p.starts_with("/lookup") => {
                assert_eq!(str_field(r, "route").as_deref(), Some("/lookup/{key}"))
            }
            p => assert_eq!(str_field(r, "route").as_deref(), Some(p)),
        }
    }
    assert!(events.iter().all(|e| !text(e).contains("secret=x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_reads_the_matched_path() {
    let h = Harness::start(|r| {
        r.route_layer(RequestLayer::new().route_with(|req: &http::Request<Body>| {
            req.extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
        }))
    })
    .await;
    let (_, id) = h.get_id("/lookup/7", &[]).await;
    let events = h.request_events(&id).await;
    let handled = handler_event(&events, "looked up");
    assert_eq!(
        str_field(handled, "route").as_deref(),
        Some("/lookup/{key}")
    );
    assert_eq!(str_field(handled, "path").as_deref(), Some("/lookup/7"));
    // Behind `route_layer`, a request no route matches never reaches it.
    let resp = h.get("/nowhere", &[]).await;
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.headers().get("x-request-id").is_none());
    let events = h.finish().await;
    assert_eq!(access(&events).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_header_trust_and_traceresponse() {
    let h = Harness::start(|r| {
        r.layer(
            RequestLayer::new()
                .request_id_header(http::HeaderName::from_static("x-correlation-id"))
                .trust_incoming(false)
                .traceresponse(true),
        )
    })
    .await;
    let resp = h
        .get(
            "/hello",
            &[
                ("x-correlation-id", b"client-picked"),
                ("traceparent", TP.as_bytes()),
                ("tracestate", TRACESTATE.as_bytes()),
            ],
        )
        .await;
    assert!(resp.headers().get("x-request-id").is_none());
    let id = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_generated_id(&id), "not trusted: {id}");
    let tr = resp.headers()["traceresponse"].to_str().unwrap().to_owned();
    let tr = TraceContext::from_traceparent(&tr).expect("traceresponse is a traceparent value");
    assert_ne!(tr.trace_id(), TP_TRACE, "a new trace");
    let events = h.request_events(&id).await;
    let record = the_access(&events);
    assert_eq!(
        record.trace(),
        Some(&tr),
        "traceresponse names the request's span"
    );
    assert!(record.field("tracestate").is_none());
    assert!(record.field("parent_span_id").is_none());
    h.finish().await;
}

// ---------------------------------------------------------------------------
// Hostile input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_are_ignored_and_never_echoed() {
    let h = Harness::standard().await;
    let huge_id = "x".repeat(16 * 1024);
    let huge_tp = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(16 * 1024));
    let huge_state = format!("k={}", "v".repeat(16 * 1024));
    let many_ids: Headers<'_> = (0..50).map(|_| ("x-request-id", &b"dup"[..])).collect();
    let cases: Vec<Headers<'_>> = vec![
        vec![
            ("x-request-id", huge_id.as_bytes()),
            ("traceparent", huge_tp.as_bytes()),
        ],
        vec![
            ("traceparent", TP.as_bytes()),
            ("tracestate", huge_state.as_bytes()),
        ],
        vec![
            ("x-request-id", b"\x80\x81\x82\xff"),
            ("traceparent", b"\xff\xff"),
        ],
        many_ids,
    ];
    for headers in &cases {
        let resp = h.get("/hello", headers).await;
        assert_eq!(resp.status().as_u16(), 200);
        let names: Vec<_> = resp
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(is_generated_id(&id), "{id:?}");
        assert_eq!(resp.headers().get_all("x-request-id").iter().count(), 1);
        for (_, v) in resp.headers() {
            assert!(v.len() < 256, "nothing long echoed: {names:?}");
        }
        let events = h.request_events(&id).await;
        the_access(&events);
    }

    // What a client library will not send: control characters, a header
    // line too long for the server. The server answers (or closes), and
    // keeps serving.
    for raw in [
        b"GET /hello HTTP/1.1\r\nhost: x\r\nx-request-id: a\x01b\r\n\r\n".to_vec(),
        b"GET /hello HTTP/1.1\r\nhost: x\r\nx-request-id: a\x00b\r\nconnection: close\r\n\r\n"
            .to_vec(),
        [
            &b"GET /hello HTTP/1.1\r\nhost: x\r\nx-request-id: "[..],
            &vec![b'z'; 1024 * 1024],
            b"\r\n\r\n",
        ]
        .concat(),
    ] {
        let answer = raw_request(h.addr, &raw).await;
        assert!(
            !answer.contains("a\u{1}b") && !answer.contains("zzzz"),
            "{answer}"
        );
    }
    let (status, _) = h.get_id("/hello", &[]).await;
    assert_eq!(status, StatusCode::OK, "still serving");

    let events = h.finish().await;
    for e in &events {
        let t = text(e);
        assert!(
            t.len() < 8 * 1024,
            "nothing hostile recorded: {} bytes",
            t.len()
        );
        assert!(!t.contains("dup"), "{e:?}");
    }
}

/// Sends `raw` and returns what comes back before the server closes (or a
/// second passes), as lossy text.
async fn raw_request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading it all.
    let _ = s.write_all(raw).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------
// Errors and cancellation, calling the service directly

/// A service that fails, or never answers.
#[derive(Clone)]
enum Broken {
    Fails,
    Hangs,
}

impl Service<http::Request<Body>> for Broken {
    type Response = http::Response<Body>;
    type Error = String;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, String>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        match self {
            Broken::Fails => Box::pin(async {
                tracing::info!("trying");
                Err("backend exploded".to_owned())
            }),
            Broken::Hangs => Box::pin(async {
                tracing::info!("waiting forever");
                std::future::pending().await
            }),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_error_and_a_dropped_future_get_one_record_each() {
    let out = Collected::new();
    let (dispatch, guard) = support::start_async(
        fapilog::builder()
            .runtime(tokio::runtime::Handle::current())
            .sink(out.sink()),
    )
    .await;
    let request = |id: &str| {
        http::Request::get("/x")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let mut failing = RequestLayer::new().layer(Broken::Fails);
    let mut hanging = RequestLayer::new().layer(Broken::Hangs);
    async {
        let err = failing.call(request("req-err")).await.unwrap_err();
        assert_eq!(err, "backend exploded");
        let fut = hanging.call(request("req-gone"));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), fut)
                .await
                .is_err()
        );
    }
    .with_subscriber(dispatch)
    .await;
    guard.shutdown().await;
    let events = out.app_events();

    let by_id = |id: &str| -> Vec<Event> {
        events
            .iter()
            .filter(|e| str_field(e, "request_id").as_deref() == Some(id))
            .cloned()
            .collect()
    };
    let failed = by_id("req-err");
    assert!(failed.iter().any(|e| e.message() == Some("trying")));
    let r = the_access(&failed);
    assert_eq!(r.message(), Some("request failed"));
    assert_eq!(r.level(), tracing::Level::ERROR);
    assert_eq!(str_field(r, "error").as_deref(), Some("backend exploded"));
    assert!(r.field("status").is_none());
    assert!(r.field("latency_ms").is_some());

    let gone = by_id("req-gone");
    assert!(gone.iter().any(|e| e.message() == Some("waiting forever")));
    let r = the_access(&gone);
    assert_eq!(r.message(), Some("request cancelled"));
    assert_eq!(r.level(), tracing::Level::WARN);
    assert_eq!(r.field("cancelled"), Some(&Value::Bool(true)));
    assert!(r.field("status").is_none());
    assert!(r.trace().is_some(), "recorded inside the request's span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_a_cancelled_record() {
    let h = Harness::standard().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .get(h.url("/slow"))
        .header("x-request-id", "req-impatient")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(client);
    let events = h.request_events("req-impatient").await;
    assert!(events.iter().any(|e| e.message() == Some("slow start")));
    let r = the_access(&events);
    assert_eq!(r.field("cancelled"), Some(&Value::Bool(true)));
    assert_eq!(str_field(r, "route").as_deref(), Some("/slow"));
    h.finish().await;
}

// ---------------------------------------------------------------------------
// Forwarding through HttpLookup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_forwards_the_requests_ids() {
    let api = TestApi::start().await;
    let users = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", users)
        .key_field("user_id")
        .build();
    let h = Harness::start_with(fapilog::builder().async_enricher(enricher), |r| {
        r.layer(RequestLayer::new())
    })
    .await;

    // (key, headers sent): continued with a kept id; fresh everything; a
    // malformed id replaced.
    let cases: Vec<(&str, Headers<'_>)> = vec![
        (
            "ada",
            vec![
                ("x-request-id", b"req-ada"),
                ("traceparent", TP.as_bytes()),
                ("tracestate", TRACESTATE.as_bytes()),
            ],
        ),
        ("bob", vec![]),
        ("cy", vec![("x-request-id", b"not ok!")]),
    ];
    let mut expected = HashMap::new();
    for (key, headers) in &cases {
        let (status, id) = h.get_id(&format!("/lookup/{key}"), headers).await;
        assert_eq!(status, StatusCode::OK);
        let events = h.request_events(&id).await;
        let handled = handler_event(&events, "looked up");
        let traceparent = str_field(handled, "traceparent").expect("the span's traceparent");
        assert_eq!(
            TraceContext::from_traceparent(&traceparent).as_ref(),
            handled.trace()
        );
        expected.insert(key.to_string(), (id, traceparent));
    }
    let events = h.finish().await;

    for (key, (id, traceparent)) in &expected {
        let handled = events
            .iter()
            .find(|e| {
                e.message() == Some("looked up") && str_field(e, "user_id").as_deref() == Some(key)
            })
            .unwrap();
        let enriched = handled
            .inserted()
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| v.clone());
        assert_eq!(
            enriched,
            Some(user(key)),
            "enriched from the second service"
        );
        let calls: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .collect();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let headers = &calls[0].headers;
        assert_eq!(headers["x-request-id"], id.as_str(), "{key}");
        assert_eq!(headers["traceparent"], traceparent.as_str(), "{key}");
        let sent = TraceContext::from_traceparent(traceparent).unwrap();
        if key == "ada" {
            assert_eq!(sent.trace_id(), TP_TRACE);
            assert_ne!(sent.span_id(), TP_SPAN, "the request's span is the parent");
            assert_eq!(headers["tracestate"], TRACESTATE);
        } else {
            assert!(is_generated_id(id));
            assert!(headers.get("tracestate").is_none());
        }
    }
}
