//! `HttpLookup` against a real HTTP server on loopback (an axum app, see
//! `support/http_support.rs`), through a real pipeline: values merged,
//! one request per batch on the batch endpoint (counted by the server),
//! 404 as a negatively cached miss, 5xx / bad JSON / oversized bodies /
//! timeouts as errors the breaker counts, hostile keys kept intact, the
//! auth header sent but never shown, trace context forwarded, and an
//! outage followed by recovery on the same port without a restart.
#![cfg(feature = "http")]

#[path = "support/http_support.rs"]
mod http_support;
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::{Key, Lookup, LookupEnricher};
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use fapilog::sources::HttpLookup;
use fapilog::{Event, Value};
use http_support::{HUGE_BODY_BYTES, SLOW_ANSWER, TestApi, user};
use serde_json::json;
use support::Collected;
use support::async_support::{errors, inserted};

/// Real time is enough for everything here; this only bounds a broken test.
const LIMIT: Duration = Duration::from_secs(10);

fn users(lookup: HttpLookup) -> LookupEnricher<HttpLookup> {
    LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build()
}

/// Options under which the lookup's own timeout, not the enricher's, ends a
/// slow request, and one failure never opens the breaker.
fn patient() -> EnricherOptions {
    EnricherOptions::new()
        .call_timeout(Duration::from_secs(5))
        .breaker(BreakerConfig::default().policy(FailurePolicy::Consecutive(100)))
}

/// A running pipeline whose events are collected.
struct Run {
    dispatch: tracing::Dispatch,
    guard: fapilog::Guard,
    out: Collected,
}

impl Run {
    async fn start(enricher: LookupEnricher<HttpLookup>, options: EnricherOptions) -> Run {
        Self::start_with(fapilog::builder().async_enricher_with(enricher, options)).await
    }

    async fn start_with(builder: fapilog::Builder) -> Run {
        let out = Collected::new();
        let (dispatch, guard) = support::start_async(
            builder
                .runtime(tokio::runtime::Handle::current())
                .enrich_deadline(Duration::from_secs(8))
                .sink(out.sink()),
        )
        .await;
        Run {
            dispatch,
            guard,
            out,
        }
    }

    /// Logs one event per key, each in its own `request` span.
    fn log(&self, keys: &[Value]) {
        tracing::dispatcher::with_default(&self.dispatch, || {
            for k in keys {
                let span = tracing::info_span!("request", user_id = tracing::field::Empty);
                match k {
                    Value::Number(n) => span.record("user_id", n.as_i64().unwrap()),
                    Value::String(s) => span.record("user_id", s.as_str()),
                    other => panic!("unsupported key {other}"),
                };
                let _entered = span.enter();
                tracing::info!("handled");
            }
        });
    }

    /// Logs one event with `key` and waits until the sink has it.
    fn log_one(&self, key: impl Into<Value>) -> Event {
        let before = self.out.app_events().len();
        self.log(&[key.into()]);
        assert!(
            support::wait_until(|| self.out.app_events().len() > before),
            "event never reached the sink"
        );
        self.out.app_events().pop().unwrap()
    }

    fn stats(&self) -> fapilog::observe::EnricherStats {
        self.guard.stats().enrichers[0].clone()
    }

    async fn breaker(&self) -> BreakerState {
        self.guard.health()[0].breaker
    }

    /// Drains and stops the pipeline; returns every application event.
    async fn finish(self) -> Vec<Event> {
        let report = self.guard.shutdown().await;
        assert_eq!(report.dropped, 0);
        self.out.app_events()
    }
}

fn keys(ks: &[&str]) -> Vec<Value> {
    ks.iter().map(|k| Value::from(*k)).collect()
}

/// The one error entry of an event, from the `user` enricher.
fn the_error(e: &Event) -> String {
    let errs = errors(e);
    assert_eq!(errs.len(), 1, "one error entry expected: {errs:?}");
    assert_eq!(errs[0].0, "user");
    errs[0].1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_the_api_are_merged_under_the_enricher_name() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;
    let logged = vec![json!("alice"), json!(42), json!("bob"), json!("alice")];
    run.log(&logged);
    let events = run.finish().await;

    assert_eq!(events.len(), logged.len());
    for (e, k) in events.iter().zip(&logged) {
        let k = match k {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(inserted(e, "user"), Some(user(&k)), "event for {k}");
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
    // Repeated keys are asked once (same batch or cached).
    assert_eq!(api.requests_for("alice"), 1);
    assert_eq!(api.requests_for("42"), 1);
    assert!(api.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoint_asks_for_all_missing_keys_in_one_request() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .batch_url(api.url("/users/batch"))
        .build()
        .unwrap();
    // A long linger puts every event logged below in one batch.
    let run = Run::start_with(
        fapilog::builder()
            .async_enricher_with(users(lookup), patient())
            .linger(Duration::from_millis(300)),
    )
    .await;
    let mut logged: Vec<Value> = (1..=20).map(|i| json!(i)).collect();
    logged.extend(keys(&["carol", "missing-1", "carol", "zoë"]));
    run.log(&logged);
    let events = run.finish().await;

    let requests = api.requests();
    assert_eq!(requests.len(), 1, "one request for the batch: {requests:?}");
    assert_eq!(requests[0].method, "POST");
    let sent: HashSet<String> = requests[0].body.as_ref().unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.to_string())
        .collect();
    let distinct: HashSet<String> = logged.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        sent, distinct,
        "each distinct key once, integers as numbers"
    );

    for (e, k) in events.iter().zip(&logged) {
        assert!(errors(e).is_empty(), "{:?}", errors(e));
        match k {
            Value::String(s) if s.starts_with("missing") => {
                assert_eq!(inserted(e, "user"), None)
            }
            Value::String(s) => assert_eq!(inserted(e, "user"), Some(user(s))),
            n => assert_eq!(inserted(e, "user"), Some(user(&n.to_string()))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_adds_nothing_and_is_negatively_cached() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;
    for _ in 0..2 {
        let e = run.log_one("missing-7");
        assert_eq!(inserted(&e, "user"), None);
        assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    }
    let stats = run.stats();
    run.finish().await;

    assert_eq!(
        api.requests_for("missing-7"),
        1,
        "second lookup served from the negative cache"
    );
    assert_eq!(stats.negative_hits, 1);
    assert_eq!((stats.calls, stats.successes, stats.failures), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_error_entries_and_breaker_failures() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .bearer_token("s3cr3t-t0ken")
        .build()
        .unwrap();
    let run = Run::start(
        users(lookup),
        EnricherOptions::new().breaker(
            BreakerConfig::default()
                .policy(FailurePolicy::Consecutive(1))
                .recovery_timeout(Duration::from_secs(60)),
        ),
    )
    .await;

    let e = run.log_one("boom-1");
    assert_eq!(inserted(&e, "user"), None);
    let reason = the_error(&e);
    let endpoint = format!("GET {} ", api.url("/users/{key}"));
    assert!(reason.contains(&endpoint), "{reason}");
    assert!(reason.contains("500 Internal Server Error"), "{reason}");
    assert!(
        !reason.contains("s3cr3t") && !reason.contains("boom-1"),
        "{reason}"
    );
    let stats = run.stats();
    assert_eq!((stats.calls, stats.failures), (1, 1));
    assert_eq!(run.breaker().await, BreakerState::Open);

    // Errors are not cached; with the breaker open no request is made.
    let e = run.log_one("boom-1");
    assert_eq!(the_error(&e), "circuit_open");
    run.finish().await;
    assert_eq!(api.requests_for("boom-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_client_errors_are_errors() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;

    let reason = the_error(&run.log_one("garbage"));
    assert!(reason.contains("is not valid JSON"), "{reason}");
    let reason = the_error(&run.log_one("forbidden"));
    assert!(reason.contains("403 Forbidden"), "{reason}");
    // The API still answers the others.
    assert_eq!(inserted(&run.log_one("dave"), "user"), Some(user("dave")));

    let stats = run.stats();
    run.finish().await;
    assert_eq!((stats.calls, stats.successes, stats.failures), (3, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_api_rejects_as_malformed_is_not_found_alone() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    // A breaker that would open on the first failure.
    let options = patient().breaker(BreakerConfig::default().policy(FailurePolicy::Consecutive(1)));
    let run = Run::start(users(lookup), options).await;
    for key in ["bad-1", "bad%00", "bad-2"] {
        let e = run.log_one(key);
        assert_eq!(inserted(&e, "user"), None);
        assert_eq!(e.enrichment_errors().count(), 0, "{key}: {e:?}");
    }
    assert_eq!(inserted(&run.log_one("dave"), "user"), Some(user("dave")));
    let stats = run.stats();
    run.finish().await;
    assert_eq!((stats.failures, stats.short_circuits), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_stop_at_the_limit() {
    let api = TestApi::start().await;
    let limit = HUGE_BODY_BYTES / 2;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .max_response_bytes(limit)
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;

    // Streamed without a Content-Length: counted while reading.
    let reason = the_error(&run.log_one("huge-streamed"));
    assert!(reason.contains(&format!("{limit}-byte limit")), "{reason}");
    // With a Content-Length over the limit: refused before reading.
    let reason = the_error(&run.log_one("huge-declared"));
    assert!(reason.contains(&format!("{limit}-byte limit")), "{reason}");

    let stats = run.stats();
    run.finish().await;
    assert_eq!(stats.failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out() {
    let api = TestApi::start().await;

    // The lookup's request timeout.
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;
    let started = Instant::now();
    let reason = the_error(&run.log_one("slow-1"));
    assert!(
        started.elapsed() < SLOW_ANSWER,
        "did not wait for the answer"
    );
    assert!(reason.contains("timed out after 200ms"), "{reason}");
    assert_eq!(run.stats().failures, 1);
    run.finish().await;

    // The enricher's call timeout, when it is the shorter one.
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let run = Run::start(
        users(lookup),
        EnricherOptions::new().call_timeout(Duration::from_millis(200)),
    )
    .await;
    let started = Instant::now();
    assert_eq!(the_error(&run.log_one("slow-2")), "timeout");
    assert!(
        started.elapsed() < SLOW_ANSWER,
        "did not wait for the answer"
    );
    let stats = run.stats();
    assert_eq!((stats.failures, stats.timeouts), (1, 1));
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_reach_the_server_intact() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    let run = Run::start(users(lookup), patient()).await;
    let hostile = [
        r#"he said "hi""#,
        "'; DROP TABLE users; --",
        "a/b/../c",
        "a?b=c#frag",
        "zoë 東京 🚀",
        "100% done",
        "a+b&c=d",
        r"back\slash",
        " padded ",
    ];
    run.log(&keys(&hostile));
    // A key that cannot be a path segment is not found, without a request.
    run.log(&keys(&[".."]));
    let events = run.finish().await;

    for (e, k) in events.iter().zip(&hostile) {
        assert_eq!(inserted(e, "user"), Some(user(k)), "key {k:?}");
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
    let dots = events.last().unwrap();
    assert_eq!(inserted(dots, "user"), None);
    assert!(errors(dots).is_empty());

    let requests = api.requests();
    assert_eq!(requests.len(), hostile.len(), "{requests:?}");
    let received: HashSet<&str> = requests.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(received, hostile.iter().copied().collect());
    for r in &requests {
        let segment = r.raw_path.strip_prefix("/users/").unwrap();
        assert!(!segment.contains('/'), "one segment: {}", r.raw_path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_headers_reach_the_server_and_are_never_shown() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .bearer_token("s3cr3t-t0ken")
        .header("x-api-key", "k3y-v4lue")
        .build()
        .unwrap();
    let shown = format!("{lookup:?}");
    for secret in ["s3cr3t", "k3y-v4lue"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("authorization") && shown.contains("x-api-key"),
        "{shown}"
    );
    let enricher = users(lookup);
    let shown = format!("{enricher:?} {:?}", enricher.lookup());
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("k3y-v4lue"),
        "{shown}"
    );

    let run = Run::start(enricher, patient()).await;
    assert_eq!(inserted(&run.log_one("erin"), "user"), Some(user("erin")));
    let reason = the_error(&run.log_one("boom"));
    assert!(
        !reason.contains("s3cr3t") && !reason.contains("k3y-v4lue"),
        "{reason}"
    );
    run.finish().await;

    for r in api.requests() {
        assert_eq!(r.headers["authorization"], "Bearer s3cr3t-t0ken");
        assert_eq!(r.headers["x-api-key"], "k3y-v4lue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_from_the_span_is_forwarded() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let api = TestApi::start().await;
    for batch in [false, true] {
        let mut b = HttpLookup::builder(api.url("/users/{key}"));
        if batch {
            b = b.batch_url(api.url("/users/batch"));
        }
        let run = Run::start(users(b.build().unwrap()), patient()).await;
        let key = if batch { "frank-batch" } else { "frank" };
        tracing::dispatcher::with_default(&run.dispatch, || {
            let span = tracing::info_span!(
                "request",
                traceparent = TRACEPARENT,
                request_id = "req-42",
                user_id = key
            );
            let _entered = span.enter();
            tracing::info!("handled");
        });
        assert!(support::wait_until(|| run.out.app_events().len() == 1));
        // No context on this one (and a fetch of its own).
        run.log_one(format!("{key}-plain"));
        let events = run.finish().await;
        assert_eq!(inserted(&events[0], "user"), Some(user(key)));
    }

    let requests = api.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for r in &requests {
        let plain = match &r.key {
            Some(k) => k.ends_with("-plain"),
            None => r.body.as_ref().unwrap()["keys"][0]
                .as_str()
                .unwrap()
                .ends_with("-plain"),
        };
        if plain {
            assert!(r.headers.get("traceparent").is_none(), "{r:?}");
            assert!(r.headers.get("x-request-id").is_none(), "{r:?}");
        } else {
            assert_eq!(r.headers["traceparent"], TRACEPARENT, "{r:?}");
            assert_eq!(r.headers["x-request-id"], "req-42", "{r:?}");
        }
    }
    assert_eq!(requests.iter().filter(|r| r.method == "POST").count(), 2);
}

/// The API goes away mid-run (its port refusing connections): events are
/// still written, with error entries, and the breaker opens; a new server on
/// the same port brings enrichment back without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_opens_the_breaker_and_recovery_needs_no_restart() {
    let test_started = Instant::now();
    let api = TestApi::start().await;
    let addr = api.addr();
    let api_url = api.url("/users/{key}");
    let lookup = HttpLookup::builder(api_url.as_str())
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let run = Run::start_with(
        fapilog::builder()
            .async_enricher_with(
                users(lookup),
                EnricherOptions::new()
                    .call_timeout(Duration::from_secs(2))
                    .breaker(
                        BreakerConfig::default()
                            .policy(FailurePolicy::Consecutive(2))
                            .recovery_timeout(Duration::from_millis(200)),
                    ),
            )
            .linger(Duration::ZERO),
    )
    .await;

    assert_eq!(inserted(&run.log_one("u1"), "user"), Some(user("u1")));

    api.stop().await;
    let mut reasons = Vec::new();
    for i in 2..=5 {
        let e = run.log_one(format!("u{i}"));
        assert_eq!(inserted(&e, "user"), None);
        reasons.push(the_error(&e));
    }
    // The first request may still go out on a pooled connection the server
    // closed as it stopped; later ones find the port refusing.
    let endpoint = format!("http lookup: GET {} ", api_url);
    for r in reasons.iter().filter(|r| *r != "circuit_open") {
        assert!(r.starts_with(&endpoint), "{r}");
        assert!(
            r.contains("could not connect") || r.contains("connection closed"),
            "{r}"
        );
    }
    assert!(reasons.iter().any(|r| r == "circuit_open"), "{reasons:?}");
    // Cached values are still served while the API is away.
    assert_eq!(inserted(&run.log_one("u1"), "user"), Some(user("u1")));
    let stats = run.stats();
    assert!(
        stats.failures >= 2 && stats.short_circuits >= 1,
        "{stats:?}"
    );

    let api = TestApi::start_on(addr).await;
    let deadline = Instant::now() + LIMIT;
    let mut i = 100;
    loop {
        i += 1;
        let key = format!("u{i}");
        let e = run.log_one(key.as_str());
        if let Some(v) = inserted(&e, "user") {
            assert_eq!(v, user(&key));
            break;
        }
        assert!(Instant::now() < deadline, "enrichment never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run.breaker().await, BreakerState::Closed);
    run.finish().await;
    assert!(!api.requests().is_empty());
    assert!(test_started.elapsed() < LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_use_fetch_and_health_check() {
    let api = TestApi::start().await;
    let lookup = HttpLookup::builder(api.url("/users/{key}"))
        .health_url(api.url("/health"))
        .build()
        .unwrap();
    // Used outside a pipeline: the client is built on first use.
    let found = lookup
        .fetch(&[Key::from("gina"), Key::from("missing-2"), Key::Int(7)])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&Key::from("gina")], user("gina"));
    assert_eq!(found[&Key::Int(7)], user("7"));
    lookup.health_check().await.unwrap();

    // One failing key fails the fetch: `Found` cannot say "failed".
    let e = lookup
        .fetch(&[Key::from("gina"), Key::from("boom")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");

    let unchecked = HttpLookup::builder(api.url("/users/{key}"))
        .build()
        .unwrap();
    unchecked.startup().await.unwrap();
    let url = api.url("/health");
    api.stop().await;
    let e = lookup.health_check().await.unwrap_err().to_string();
    assert!(e.starts_with(&format!("http lookup: GET {url} ")), "{e}");
    // A pooled connection the server just closed, or the port refusing.
    assert!(
        e.contains("could not connect") || e.contains("connection closed"),
        "{e}"
    );
    // Without a health URL, a built client is healthy.
    unchecked.health_check().await.unwrap();
    unchecked.shutdown().await.unwrap();
}
