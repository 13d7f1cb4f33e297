//! Request middleware: a `tower` layer that gives every HTTP request a
//! request id, a W3C trace context, a span, and exactly one access record.
//!
//! Why here rather than `tower-http`'s trace and request-id layers: fapilog
//! correlates through span fields. An event finds its `trace_id` and
//! `span_id` in a `traceparent` field of a span around it, and
//! [`HttpLookup`](crate::sources::HttpLookup) forwards the `traceparent`,
//! `tracestate` and `request_id` fields it finds as headers. So the layer
//! only has to open the right span with the right fields: every event the
//! handler logs — and every API call an enricher makes for it — then
//! belongs to the request without the handler doing anything.
//!
//! [`RequestLayer`] works with any service from `http::Request<B>` to
//! `http::Response<B2>` whose error is `Display`: axum routers (and
//! handlers, with `route_layer`), tonic servers (`Server::builder().layer`),
//! and hyper services built with `tower` (served through `hyper-util`'s
//! `TowerToHyperService`).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use fapilog::middleware::RequestLayer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = fapilog::builder().service("checkout").init_async().await?;
//! let app = Router::new()
//!     .route("/orders/{id}", get(|| async {
//!         tracing::info!("order shown"); // has the request's ids
//!         "ok"
//!     }))
//!     // Last, so it also sees what the other layers answer themselves.
//!     .layer(RequestLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! guard.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What each request gets
//!
//! | | from the request, when well-formed | otherwise |
//! | --- | --- | --- |
//! | request id | the `x-request-id` header: exactly one, 1 to 128 bytes of `A-Z a-z 0-9 . _ : -` | 32 random lower-case hex digits |
//! | trace context | exactly one valid `traceparent`: the same trace id and flags, a **new** span id for this request (the incoming span id is its `parent_span_id`) | a new trace: random trace and span ids, sampled |
//! | `tracestate` | kept with a kept `traceparent`, when it is printable ASCII, at most 512 bytes and 32 members (several headers are joined with `,`) | none |
//!
//! A value that fails its check is ignored: it is never echoed, logged or
//! an error, and checks look at a value's length before its bytes, so a
//! huge header costs no more than reading it. With
//! [`trust_incoming(false)`](RequestLayer::trust_incoming) — for a service
//! that faces the internet, where a client should not pick the ids your
//! logs are searched by — every request gets fresh ids.
//!
//! The request then goes to the inner service with its request id header
//! set to the id in use (replacing any other value) and a
//! [`RequestContext`] in its extensions, for a handler that passes the
//! ids on itself (`axum::Extension<RequestContext>`).
//!
//! ## The span
//!
//! The inner service is called and its future polled inside a span named
//! `request`, level INFO, with the fields:
//!
//! | field | value |
//! | --- | --- |
//! | `request_id` | the request id |
//! | `traceparent` | the request's own context (its new span id), so events inside carry `trace_id` / `span_id` and `HttpLookup` forwards it |
//! | `parent_span_id` | the incoming span id, when the trace was continued |
//! | `tracestate` | when kept |
//! | `method` | the method (at most 32 bytes) |
//! | `path` | the URI's path only — never the query string, which may hold secrets — at most 2048 bytes |
//! | `route` | the route template, when known (see below) |
//!
//! ## The access record
//!
//! Exactly one event per request, inside the span, with target
//! `fapilog::access` (so `fapilog::access=off` or `=warn` in the filter
//! directives silences or thins them):
//!
//! | outcome | level | message | fields |
//! | --- | --- | --- | --- |
//! | a response below 500 | INFO | `request completed` | `status` (u16), `latency_ms` |
//! | a 5xx response | ERROR | `request completed` | `status`, `latency_ms` |
//! | the inner service failed (`Err`) | ERROR | `request failed` | `error` (its `Display`), `latency_ms` |
//! | the response future was dropped first (the client went away, a timeout outside this layer) | WARN | `request cancelled` | `cancelled = true`, `latency_ms` |
//!
//! `latency_ms` is an `f64` of milliseconds (microsecond resolution) from
//! the call into this layer to the response head: a streamed body is not
//! waited for. A response whose head carries a `grpc-status` (a gRPC error
//! sent trailers-only, as tonic sends a handler's `Err(Status)`) has it as
//! `grpc_status` too; the level still follows the HTTP status. The request's
//! id, method and path are the span's fields, found like any span field —
//! a filter that disables the `request` span leaves them out of the record.
//!
//! ## The response
//!
//! The response's request id header is set to the id in use (replacing
//! any value the inner service set). With
//! [`traceresponse(true)`](RequestLayer::traceresponse) it also carries a
//! W3C `traceresponse` header with the request's trace id and span id, so a
//! client can find the request's logs; it is off by default, as it tells
//! the client your trace ids.
//!
//! ## The route
//!
//! A route template (`/users/{id}`, not `/users/42`) makes a good group-by
//! key for access records, but only the router knows it. Two ways with
//! axum:
//!
//! * The layer on the whole router (every request recorded, 404s included),
//!   and the route recorded into the span from a middleware on the routes,
//!   which runs after routing; events logged before routing lack it:
//!
//! ```no_run
//! use axum::{Router, extract::{MatchedPath, Request}, middleware::{self, Next}, routing::get};
//! use fapilog::middleware::RequestLayer;
//!
//! async fn record_route(path: MatchedPath, request: Request, next: Next) -> axum::response::Response {
//!     tracing::Span::current().record("route", path.as_str());
//!     next.run(request).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "ok" }))
//!     .route_layer(middleware::from_fn(record_route))
//!     .layer(RequestLayer::new());
//! ```
//!
//! * The layer on the routes only, with
//!   [`route_with`](RequestLayer::route_with) reading axum's `MatchedPath`
//!   from the extensions (a request no route matches is then not recorded
//!   at all):
//!
//! ```no_run
//! use axum::{Router, body::Body, extract::MatchedPath, routing::get};
//! use fapilog::middleware::RequestLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "ok" }))
//!     .route_layer(RequestLayer::new().route_with(|req: &http::Request<Body>| {
//!         req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned())
//!     }));
//! ```
//!
//! With tonic, the path is the route (`/package.Service/Method`).
//!
//! ## Cost
//!
//! Per request: reading the three headers (bounded as above), a few short
//! strings (the ids, the `traceparent`), the span, one event, and two
//! SipHash computations for each fresh id (keyed once per process from the
//! OS's randomness through `std`'s `RandomState`: unguessable from outside
//! and unique within a process, though not a cryptographic generator).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

use crate::event::TraceContext;

mod ids;

/// The target of access records.
pub const ACCESS_TARGET: &str = "fapilog::access";

const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// How a [`RequestLayer`] learns the route template of a request.
///
/// Implemented by every `Fn(&http::Request<B>) -> Option<String>` (see
/// [`RequestLayer::route_with`]) and by [`NoRoute`].
pub trait Route<B> {
    /// The route of `request`, if known. A longer one than 2048 bytes is
    /// cut.
    fn route(&self, request: &Request<B>) -> Option<String>;
}

impl<B, F> Route<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn route(&self, request: &Request<B>) -> Option<String> {
        self(request)
    }
}

/// The default [`Route`]: none, so the span has no `route` field (unless
/// the application records one).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoute;

impl<B> Route<B> for NoRoute {
    fn route(&self, _request: &Request<B>) -> Option<String> {
        None
    }
}

#[derive(Debug, Clone)]
struct Settings {
    header: HeaderName,
    trust_incoming: bool,
    traceresponse: bool,
}

/// The `tower` layer: a request id, a trace context, a span and one access
/// record for every request; see the [module docs](self) for what is kept,
/// what is recorded and what is sent back.
///
/// | setting | default |
/// | --- | --- |
/// | [`request_id_header`](Self::request_id_header) | `x-request-id` |
/// | [`trust_incoming`](Self::trust_incoming) | `true`: well-formed incoming ids are kept |
/// | [`traceresponse`](Self::traceresponse) | `false` |
/// | [`route_with`](Self::route_with) | none |
///
/// Cloning is cheap; the services it makes share its settings.
pub struct RequestLayer<R = NoRoute> {
    settings: Arc<Settings>,
    route: Arc<R>,
}

impl<R> Clone for RequestLayer<R> {
    fn clone(&self) -> Self {
        RequestLayer {
            settings: self.settings.clone(),
            route: self.route.clone(),
        }
    }
}

impl<R> fmt::Debug for RequestLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestLayer")
            .field("request_id_header", &self.settings.header)
            .field("trust_incoming", &self.settings.trust_incoming)
            .field("traceresponse", &self.settings.traceresponse)
            .field("route", &std::any::type_name::<R>())
            .finish()
    }
}

impl Default for RequestLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestLayer {
    /// A layer with the defaults listed on [`RequestLayer`].
    #[must_use]
    pub fn new() -> Self {
        RequestLayer {
            settings: Arc::new(Settings {
                header: HeaderName::from_static("x-request-id"),
                trust_incoming: true,
                traceresponse: false,
            }),
            route: Arc::new(NoRoute),
        }
    }
}

impl<R> RequestLayer<R> {
    /// The header the request id is read from and written to (default
    /// `x-request-id`). The span field stays `request_id`, the name
    /// [`HttpLookup`](crate::sources::HttpLookup) forwards.
    #[must_use]
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.settings).header = name;
        self
    }

    /// Whether a well-formed incoming request id and `traceparent` are
    /// kept (default `true`). With `false`, every request gets a fresh id
    /// and starts a new trace, whatever the client sent.
    #[must_use]
    pub fn trust_incoming(mut self, trust: bool) -> Self {
        Arc::make_mut(&mut self.settings).trust_incoming = trust;
        self
    }

    /// Whether responses carry a W3C `traceresponse` header with the
    /// request's trace id and span id (default `false`).
    #[must_use]
    pub fn traceresponse(mut self, send: bool) -> Self {
        Arc::make_mut(&mut self.settings).traceresponse = send;
        self
    }

    /// Records the route `f` returns as the span's `route` field. `f` is
    /// called once per request, before the inner service, and should be
    /// cheap; annotate the body type of its argument
    /// (`|req: &http::Request<axum::body::Body>| …`). The module docs show
    /// how to get axum's `MatchedPath`.
    #[must_use]
    pub fn route_with<B, F>(self, f: F) -> RequestLayer<F>
    where
        F: Fn(&Request<B>) -> Option<String>,
    {
        RequestLayer {
            settings: self.settings,
            route: Arc::new(f),
        }
    }
}

impl<S, R> Layer<S> for RequestLayer<R> {
    type Service = RequestService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            settings: self.settings.clone(),
            route: self.route.clone(),
        }
    }
}

/// The service a [`RequestLayer`] wraps around another; see the
/// [module docs](self).
pub struct RequestService<S, R = NoRoute> {
    inner: S,
    settings: Arc<Settings>,
    route: Arc<R>,
}

impl<S: Clone, R> Clone for RequestService<S, R> {
    fn clone(&self) -> Self {
        RequestService {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
            route: self.route.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for RequestService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestService")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, R> RequestService<S, R> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R, B, ResBody> Service<Request<B>> for RequestService<S, R>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    R: Route<B>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let start = Instant::now();
        let settings = &*self.settings;
        let trust = settings.trust_incoming;

        let kept_id = trust
            .then(|| ids::incoming_request_id(request.headers(), &settings.header))
            .flatten();
        let (request_id, id_value) = match kept_id {
            // Checked to be ASCII of the safe set.
            Some(v) => (String::from_utf8_lossy(v.as_bytes()).into_owned(), v),
            None => {
                let id = ids::new_request_id();
                let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"));
                (id, value)
            }
        };
        let parent = trust
            .then(|| ids::incoming_traceparent(request.headers()))
            .flatten();
        let (trace, tracestate) = match &parent {
            Some(p) => (
                ids::child_of(p),
                ids::incoming_tracestate(request.headers()),
            ),
            None => (ids::new_trace(), None),
        };
        let parent_span_id = parent.map(|p| p.span_id());
        let traceparent = trace.to_traceparent();
        let route = self.route.route(&request).map(|mut r| {
            let len = ids::bounded(&r, ids::MAX_PATH).len();
            r.truncate(len);
            r
        });

        let span = tracing::info_span!(
            "request",
            request_id = request_id.as_str(),
            traceparent = traceparent.as_str(),
            parent_span_id = parent_span_id.as_deref(),
            tracestate = tracestate.as_deref(),
            method = ids::bounded(request.method().as_str(), ids::MAX_METHOD),
            path = ids::bounded(request.uri().path(), ids::MAX_PATH),
            route = route.as_deref(),
        );

        request
            .headers_mut()
            .insert(settings.header.clone(), id_value.clone());
        request.extensions_mut().insert(RequestContext {
            request_id,
            trace,
            parent_span_id: parent.map(|p| p.span_id_bytes()),
            tracestate,
        });

        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner: inner.instrument(span),
            access: Some(Access {
                start,
                header: settings.header.clone(),
                request_id: id_value,
                traceresponse: settings.traceresponse.then_some(trace),
            }),
        }
    }
}

/// The ids of a request, as a [`RequestLayer`] settled them; in the
/// request's extensions for the inner service (with axum:
/// `Extension<RequestContext>`), to pass on to calls the handler makes
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    request_id: String,
    trace: TraceContext,
    parent_span_id: Option<[u8; 8]>,
    tracestate: Option<String>,
}

impl RequestContext {
    /// The request id: the incoming one when kept, else a fresh one.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The request's own trace context: the incoming trace with a new span
    /// id, or a new trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// [`trace`](Self::trace) as a `traceparent` value, for the headers of
    /// an outgoing call.
    pub fn traceparent(&self) -> String {
        self.trace.to_traceparent()
    }

    /// The span id of the incoming `traceparent`, when the trace was
    /// continued.
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        self.parent_span_id
    }

    /// The incoming `tracestate`, when kept.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }
}

/// What the access record needs once the response is there.
#[derive(Debug)]
struct Access {
    start: Instant,
    header: HeaderName,
    request_id: HeaderValue,
    /// The context to send back, when `traceresponse` is on.
    traceresponse: Option<TraceContext>,
}

impl Access {
    fn latency_ms(&self) -> f64 {
        // Microseconds fit an f64 exactly for 285 years.
        self.start.elapsed().as_micros() as f64 / 1000.0
    }

    fn completed<B>(self, response: &mut Response<B>) {
        let latency_ms = self.latency_ms();
        let status = response.status().as_u16();
        let grpc_status = response
            .headers()
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok());
        let headers = response.headers_mut();
        headers.insert(self.header, self.request_id);
        if let Some(trace) = self.traceresponse
            && let Ok(v) = HeaderValue::from_str(&trace.to_traceparent())
        {
            headers.insert(TRACERESPONSE, v);
        }
        if status >= 500 {
            tracing::error!(target: ACCESS_TARGET, status, grpc_status, latency_ms, "request completed");
        } else {
            tracing::info!(target: ACCESS_TARGET, status, grpc_status, latency_ms, "request completed");
        }
    }

    fn failed(self, error: &dyn fmt::Display) {
        let latency_ms = self.latency_ms();
        tracing::error!(target: ACCESS_TARGET, error = %error, latency_ms, "request failed");
    }

    fn cancelled(self) {
        let latency_ms = self.latency_ms();
        tracing::warn!(target: ACCESS_TARGET, cancelled = true, latency_ms, "request cancelled");
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`RequestService`] call: the inner service's,
    /// polled inside the request's span, writing the access record when it
    /// completes — or, when it is dropped before, the `cancelled` one.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        // `None` once the access record is written.
        access: Option<Access>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(access) = this.access.take() {
                let span = this.inner.span();
                let _entered = span.enter();
                // Dropped where the request's dispatcher may not be the
                // default (the server's connection task, a runtime
                // shutting down): the record goes to the span's own.
                let mut access = Some(access);
                span.with_subscriber(|(_, dispatch)| {
                    tracing::dispatcher::with_default(dispatch, || {
                        access.take().map(Access::cancelled)
                    })
                });
                if let Some(access) = access {
                    access.cancelled();
                }
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", self.inner.span())
            .field("done", &self.access.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut result = ready!(this.inner.as_mut().poll(cx));
        if let Some(access) = this.access.take() {
            let _entered = this.inner.span().enter();
            match &mut result {
                Ok(response) => access.completed(response),
                Err(error) => access.failed(error),
            }
        }
        Poll::Ready(result)
    }
}
