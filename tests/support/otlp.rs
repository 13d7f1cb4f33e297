//! Real OTLP receivers on loopback for the `OtlpSink` tests: a tonic
//! `LogsService` (OTLP/gRPC, gzip accepted) and an axum `POST /v1/logs`
//! (OTLP/HTTP with protobuf bodies, gunzipped when sent with
//! `content-encoding: gzip`). Both record every export request with the
//! headers (gRPC metadata) it came with, and answer as the test says:
//! accept, "unavailable" (with a retry delay when asked: HTTP
//! `Retry-After`, gRPC `RetryInfo`), a partial success, a refusal for good,
//! or a stall before accepting.
//!
//! Each incarnation of a server runs on a runtime of its own, so that
//! [`Receiver::kill`] ends it like a crash: the listener and every
//! connection close at once, requests in flight are never answered. It
//! can then be started again on the same port.
//!
//! Included by the OTLP test binaries with `#[path]`, like the other
//! feature-specific helpers.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fapilog::sink::{OtlpProtocol, OtlpSinkBuilder};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;

/// Generous upper bound for anything a test waits for; only reached when
/// the behaviour under test is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `cond` every few milliseconds until it holds or [`PATIENCE`] runs
/// out; returns whether it held. A deadline against hangs, not a timing
/// assertion.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A loopback port that was free a moment ago (nothing listens on it now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// How the receiver answers an export request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Accepts every record.
    Accept,
    /// gRPC `UNAVAILABLE` / HTTP 503, with `RetryInfo` / `Retry-After`
    /// (whole seconds) of `retry_after` when given.
    Unavailable { retry_after: Option<Duration> },
    /// A partial success: the first `rejected` records of each request
    /// are rejected, with `message`.
    Reject { rejected: usize, message: String },
    /// Refused for good: gRPC `INVALID_ARGUMENT` / HTTP 400.
    Refuse,
    /// Waits this long, then accepts.
    Stall(Duration),
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted, but for its first `rejected` records.
    Accepted { rejected: usize },
    /// Answered "unavailable".
    Unavailable,
    /// Refused for good.
    Refused,
    /// Not answered (yet): stalling, or the client or a kill cut it short.
    Unanswered,
}

/// One export request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its headers (gRPC: its metadata), names in lower case.
    pub headers: Vec<(String, String)>,
    pub request: ExportLogsServiceRequest,
    pub outcome: Outcome,
}

impl Received {
    /// The value of header `name`, if it came with one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many records it held.
    pub fn len(&self) -> usize {
        records_in(&self.request)
    }

    /// Its records, with their resource and scope, in request order.
    pub fn records(&self) -> Vec<Rec> {
        flatten(&self.request)
    }

    /// The records the receiver accepted (all but the rejected ones; none
    /// unless it was accepted).
    pub fn accepted(&self) -> Vec<Rec> {
        match self.outcome {
            Outcome::Accepted { rejected } => self.records().into_iter().skip(rejected).collect(),
            _ => Vec::new(),
        }
    }
}

fn records_in(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Every record of a request with its resource and scope.
pub fn flatten(request: &ExportLogsServiceRequest) -> Vec<Rec> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let resource = rl.resource.clone().unwrap_or_default();
        for sl in &rl.scope_logs {
            let scope = sl.scope.clone().unwrap_or_default();
            for record in &sl.log_records {
                out.push(Rec {
                    resource: resource.clone(),
                    scope: scope.clone(),
                    record: record.clone(),
                });
            }
        }
    }
    out
}

/// One record as received, with its resource and scope.
#[derive(Debug, Clone)]
pub struct Rec {
    pub resource: Resource,
    pub scope: InstrumentationScope,
    pub record: LogRecord,
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

impl Rec {
    /// The record's attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.record.attributes, key)
    }

    /// The keys of the record's attributes, in order.
    pub fn attr_keys(&self) -> Vec<&str> {
        self.record
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect()
    }

    /// The record's attribute `key`, if it is an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    /// The record's attribute `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The resource's attribute `key`, if it is a string.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match find(&self.resource.attributes, key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The body, if it is a string.
    pub fn body(&self) -> Option<&str> {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The `seq` attribute the tests number their events with.
    pub fn seq(&self) -> Option<i64> {
        self.int("seq")
    }
}

// ---------------------------------------------------------------------------
// Shared state and the answer logic of both protocols

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    /// Answers for the next requests, before `mode` applies again.
    script: Mutex<VecDeque<Mode>>,
    received: Mutex<Vec<Received>>,
    /// HTTP bodies that were not an export request.
    bad_bodies: Mutex<Vec<String>>,
}

impl Shared {
    fn next_mode(&self) -> Mode {
        if let Some(m) = self.script.lock().unwrap().pop_front() {
            return m;
        }
        self.mode.lock().unwrap().clone().unwrap_or(Mode::Accept)
    }

    fn record(&self, headers: Vec<(String, String)>, request: ExportLogsServiceRequest) -> usize {
        let mut received = self.received.lock().unwrap();
        received.push(Received {
            at: Instant::now(),
            headers,
            request,
            outcome: Outcome::Unanswered,
        });
        received.len() - 1
    }

    fn answered(&self, i: usize, outcome: Outcome) {
        self.received.lock().unwrap()[i].outcome = outcome;
    }
}

/// What to answer, whatever the protocol.
enum Reply {
    Ok(ExportLogsServiceResponse),
    Unavailable(Option<Duration>),
    Refused,
}

async fn handle(
    st: &Shared,
    headers: Vec<(String, String)>,
    request: ExportLogsServiceRequest,
) -> Reply {
    let mode = st.next_mode();
    let n = records_in(&request);
    let i = st.record(headers, request);
    let full = ExportLogsServiceResponse {
        partial_success: None,
    };
    match mode {
        Mode::Accept => {
            st.answered(i, Outcome::Accepted { rejected: 0 });
            Reply::Ok(full)
        }
        Mode::Reject { rejected, message } => {
            let rejected = rejected.min(n);
            st.answered(i, Outcome::Accepted { rejected });
            Reply::Ok(ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected as i64,
                    error_message: message,
                }),
            })
        }
        Mode::Unavailable { retry_after } => {
            st.answered(i, Outcome::Unavailable);
            Reply::Unavailable(retry_after)
        }
        Mode::Refuse => {
            st.answered(i, Outcome::Refused);
            Reply::Refused
        }
        Mode::Stall(d) => {
            // Dropped here if the client gives up or the receiver is
            // killed: the request then stays unanswered.
            tokio::time::sleep(d).await;
            st.answered(i, Outcome::Accepted { rejected: 0 });
            Reply::Ok(full)
        }
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// OTLP/gRPC

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo` and
/// `google.protobuf.Duration`, by hand: what a collector puts in a gRPC
/// status's details to say when to retry.
mod rpc {
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

fn unavailable_status(retry_after: Option<Duration>) -> tonic::Status {
    const MESSAGE: &str = "receiver unavailable";
    let Some(delay) = retry_after else {
        return tonic::Status::unavailable(MESSAGE);
    };
    let info = rpc::RetryInfo {
        retry_delay: Some(rpc::Duration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let status = rpc::Status {
        code: tonic::Code::Unavailable as i32,
        message: MESSAGE.to_owned(),
        details: vec![rpc::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::Unavailable,
        MESSAGE,
        status.encode_to_vec().into(),
    )
}

struct GrpcService(Arc<Shared>);

#[tonic::async_trait]
impl LogsService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = header_pairs(&request.metadata().clone().into_headers());
        match handle(&self.0, headers, request.into_inner()).await {
            Reply::Ok(r) => Ok(tonic::Response::new(r)),
            Reply::Unavailable(after) => Err(unavailable_status(after)),
            Reply::Refused => Err(tonic::Status::invalid_argument("receiver refuses")),
        }
    }
}

// ---------------------------------------------------------------------------
// OTLP/HTTP

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

async fn http_export(State(st): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let raw = if gzipped {
        match gunzip(&body) {
            Ok(raw) => raw,
            Err(e) => {
                st.bad_bodies.lock().unwrap().push(format!("gunzip: {e}"));
                return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
            }
        }
    } else {
        body.to_vec()
    };
    let request = match ExportLogsServiceRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => {
            st.bad_bodies.lock().unwrap().push(format!("decode: {e}"));
            return (StatusCode::BAD_REQUEST, "not an export request").into_response();
        }
    };
    match handle(&st, header_pairs(&headers), request).await {
        Reply::Ok(r) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            r.encode_to_vec(),
        )
            .into_response(),
        Reply::Unavailable(after) => {
            let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
            if let Some(d) = after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&d.as_secs().to_string()).unwrap(),
                );
            }
            response
        }
        Reply::Refused => (StatusCode::BAD_REQUEST, "receiver refuses").into_response(),
    }
}

// ---------------------------------------------------------------------------
// The receiver

/// An OTLP receiver on a loopback port of its own, up or down.
pub struct Receiver {
    protocol: OtlpProtocol,
    port: u16,
    shared: Arc<Shared>,
    server: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Receiver {
    /// A receiver listening on a fresh port.
    pub fn start(protocol: OtlpProtocol) -> Receiver {
        let r = Receiver::absent(protocol);
        r.up();
        r
    }

    /// A receiver with a port of its own but not listening yet: a
    /// collector that is not there ([`up`](Self::up) starts it).
    pub fn absent(protocol: OtlpProtocol) -> Receiver {
        Receiver {
            protocol,
            port: free_port(),
            shared: Arc::new(Shared::default()),
            server: Mutex::new(None),
        }
    }

    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (the sink adds `/v1/logs` for HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An OTLP sink builder aimed at this receiver, the environment
    /// ignored, with short timeouts and backoffs so tests stay fast.
    pub fn sink(&self) -> OtlpSinkBuilder {
        OtlpSinkBuilder::new()
            .protocol(self.protocol)
            .endpoint(self.endpoint())
            .ignore_env()
            .timeout(Duration::from_secs(2))
            .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
    }

    /// Starts listening on the receiver's port (again), retrying the bind
    /// for a while if the port is not free yet.
    pub fn up(&self) {
        let mut server = self.server.lock().unwrap();
        assert!(server.is_none(), "the receiver is already up");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .expect("receiver runtime");
        let listener = {
            let _entered = rt.enter();
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match bind(addr) {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("could not bind {addr}: {e}"),
                }
            }
        };
        let shared = self.shared.clone();
        match self.protocol {
            OtlpProtocol::Grpc => {
                rt.spawn(async move {
                    let service = LogsServiceServer::new(GrpcService(shared))
                        .accept_compressed(CompressionEncoding::Gzip);
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(
                            TcpListenerStream::new(listener),
                            std::future::pending::<()>(),
                        )
                        .await;
                });
            }
            _ => {
                let app = Router::new()
                    .route("/v1/logs", post(http_export))
                    .layer(DefaultBodyLimit::disable())
                    .with_state(shared);
                rt.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
        }
        *server = Some(rt);
    }

    /// Kills the receiver like a crash: the listener and every connection
    /// close, requests in flight go unanswered. The port then refuses
    /// connections until [`up`](Self::up).
    pub fn kill(&self) {
        let rt = self.server.lock().unwrap().take();
        if let Some(rt) = rt {
            // On a thread of its own: a runtime cannot be shut down from
            // inside another one's async context.
            std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(5)))
                .join()
                .expect("receiver shut down");
        }
    }

    /// Whether it is listening.
    pub fn is_up(&self) -> bool {
        self.server.lock().unwrap().is_some()
    }

    /// How it answers from now on (after any scripted answers).
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    /// Answers for the next requests, in order, before the mode applies
    /// again.
    pub fn script(&self, answers: impl IntoIterator<Item = Mode>) {
        self.shared.script.lock().unwrap().extend(answers);
    }

    /// Every request received so far, in arrival order, whatever it was
    /// answered.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// HTTP bodies that could not be read as an export request.
    pub fn bad_bodies(&self) -> Vec<String> {
        self.shared.bad_bodies.lock().unwrap().clone()
    }

    /// Every record received, in any request, however it was answered.
    pub fn all_records(&self) -> Vec<Rec> {
        self.requests().iter().flat_map(Received::records).collect()
    }

    /// The records accepted (partial successes' rejected ones left out),
    /// in arrival order.
    pub fn accepted(&self) -> Vec<Rec> {
        self.requests()
            .iter()
            .flat_map(Received::accepted)
            .collect()
    }

    /// How many records were accepted.
    pub fn accepted_count(&self) -> usize {
        self.requests()
            .iter()
            .map(|r| match r.outcome {
                Outcome::Accepted { rejected } => r.len() - rejected,
                _ => 0,
            })
            .sum()
    }

    /// The application records accepted (fapilog's own, target
    /// `fapilog`, left out).
    pub fn accepted_app(&self) -> Vec<Rec> {
        self.accepted()
            .into_iter()
            .filter(|r| r.scope.name != "fapilog")
            .collect()
    }

    /// Waits until at least `n` records were accepted; false if
    /// [`PATIENCE`] ran out first.
    pub fn wait_for_accepted(&self, n: usize) -> bool {
        wait_until(|| self.accepted_count() >= n)
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_for_requests(&self, n: usize) -> bool {
        wait_until(|| self.shared.received.lock().unwrap().len() >= n)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so that the port of a killed
/// receiver (its connections in `TIME_WAIT`) can be bound again at once.
/// Needs a runtime entered.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// How many times each `seq` occurs among `records`, as a sorted list of
/// `(seq, times)` for those not seen exactly once, given `0..n` expected.
pub fn seq_anomalies(records: &[Rec], n: i64) -> Vec<(i64, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for r in records {
        if let Some(s) = r.seq() {
            *counts.entry(s).or_insert(0usize) += 1;
        }
    }
    let mut out: Vec<(i64, usize)> = (0..n)
        .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
        .filter(|(_, c)| *c != 1)
        .collect();
    out.extend(
        counts
            .iter()
            .filter(|(s, _)| **s < 0 || **s >= n)
            .map(|(s, c)| (*s, *c)),
    );
    out
}
