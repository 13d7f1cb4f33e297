//! A real JSON API on loopback for the `HttpLookup` tests: an axum app that
//! records every request it receives (method, raw path, decoded key,
//! headers, body) and answers according to the key, so a test can make it
//! find, miss, fail, stall or misbehave on purpose. It can be stopped (the
//! port then refuses connections) and started again on the same port.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bodies the API sends for `huge-*` keys: twice the test's limit.
pub const HUGE_BODY_BYTES: usize = 128 * 1024;
/// How long `slow-*` keys take to answer.
pub const SLOW_ANSWER: Duration = Duration::from_secs(3);

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The path as sent, still percent-encoded.
    pub raw_path: String,
    /// The key, decoded by the router (per-key requests only).
    pub key: Option<String>,
    pub headers: HeaderMap,
    /// The JSON body (batch requests only).
    pub body: Option<Value>,
}

#[derive(Default)]
struct ApiState {
    requests: Mutex<Vec<Recorded>>,
}

impl ApiState {
    fn record(&self, r: Recorded) {
        self.requests.lock().unwrap().push(r);
    }
}

/// The value the API holds for a key it finds.
pub fn user(key: &str) -> Value {
    json!({"id": key, "name": format!("user {key}")})
}

/// How the API answers one key:
///
/// | key | answer |
/// | --- | --- |
/// | `missing…` | 404 |
/// | `boom…` | 500 |
/// | `forbidden…` | 403 |
/// | `garbage…` | 200, a body that is not JSON |
/// | `huge-streamed…` | 200, [`HUGE_BODY_BYTES`] of JSON in chunks, no `Content-Length` |
/// | `huge-declared…` | 200, [`HUGE_BODY_BYTES`] of JSON with its `Content-Length` |
/// | `slow…` | [`user`] after [`SLOW_ANSWER`] |
/// | `bad…` | 400 |
/// | anything else | 200, [`user`] |
async fn answer(key: &str) -> Response {
    if key.starts_with("missing") {
        (StatusCode::NOT_FOUND, "no such user").into_response()
    } else if key.starts_with("bad") {
        (StatusCode::BAD_REQUEST, "malformed id").into_response()
    } else if key.starts_with("boom") {
        (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response()
    } else if key.starts_with("forbidden") {
        StatusCode::FORBIDDEN.into_response()
    } else if key.starts_with("garbage") {
        ([(CONTENT_TYPE, "application/json")], "{\"name\": oops").into_response()
    } else if key.starts_with("huge-streamed") {
        let chunk = Bytes::from(vec![b' '; 8 * 1024]);
        let chunks = HUGE_BODY_BYTES / chunk.len();
        let body = futures_util::stream::iter(
            std::iter::once(Bytes::from_static(b"{\"pad\": \""))
                .chain(std::iter::repeat_n(chunk, chunks))
                .chain(std::iter::once(Bytes::from_static(b"\"}")))
                .map(Ok::<_, Infallible>),
        );
        (
            [(CONTENT_TYPE, "application/json")],
            Body::from_stream(body),
        )
            .into_response()
    } else if key.starts_with("huge-declared") {
        Json(json!({"pad": " ".repeat(HUGE_BODY_BYTES)})).into_response()
    } else if key.starts_with("slow") {
        tokio::time::sleep(SLOW_ANSWER).await;
        Json(user(key)).into_response()
    } else {
        Json(user(key)).into_response()
    }
}

async fn get_user(
    State(st): State<Arc<ApiState>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    st.record(Recorded {
        method: Method::GET,
        raw_path: uri.path().to_owned(),
        key: Some(key.clone()),
        headers,
        body: None,
    });
    answer(&key).await
}

/// `POST /users/batch` with `{"keys": [...]}`: an object holding the keys
/// found (those not starting with `missing`).
async fn batch(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    st.record(Recorded {
        method: Method::POST,
        raw_path: uri.path().to_owned(),
        key: None,
        headers,
        body: Some(body.clone()),
    });
    let mut found = serde_json::Map::new();
    for k in body["keys"].as_array().into_iter().flatten() {
        let k = match k {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !k.starts_with("missing") {
            found.insert(k.clone(), user(&k));
        }
    }
    Json(Value::Object(found)).into_response()
}

/// A running API.
pub struct TestApi {
    addr: SocketAddr,
    state: Arc<ApiState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestApi {
    /// Starts on a fresh loopback port.
    pub async fn start() -> TestApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        Self::serve(listener)
    }

    /// Starts on `addr` again (after [`stop`](Self::stop)), retrying the
    /// bind briefly.
    pub async fn start_on(addr: SocketAddr) -> TestApi {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Self::serve(listener),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("could not bind {addr} again: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener) -> TestApi {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ApiState::default());
        let app = Router::new()
            .route("/users/batch", post(batch))
            .route("/users/{key}", get(get_user))
            .route("/health", get(|| async { "ok" }))
            .with_state(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        TestApi {
            addr,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The per-key requests received for `key`.
    pub fn requests_for(&self, key: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .count()
    }

    /// Stops accepting, closes idle connections and waits (bounded) for the
    /// server to finish: afterwards the port refuses connections.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
