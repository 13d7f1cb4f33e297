//! `RedisLookup` against a real Redis: values merged into events by a
//! running pipeline (GET as JSON, as strings, JSON-or-string; HGETALL),
//! unreadable values skipped without failing the batch, one `MGET` per
//! batch however many keys miss (counted by the server), hostile key names
//! treated as data, start-up and health checks, and an outage in the middle
//! of a run that enrichment survives and recovers from by itself.
//!
//! The shared server comes from `FAPILOG_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); each test writes under a key prefix of its own
//! and deletes it afterwards. Tests that count commands or stop the server
//! run a private `redis-server` on a free loopback port instead. A missing
//! server or `redis-server` binary fails the tests, saying how to get one.
#![cfg(feature = "redis")]

#[path = "support/redis_support.rs"]
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::{Key, Lookup, LookupEnricher};
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use fapilog::sources::{RedisLookup, ValueFormat};
use fapilog::{Event, Guard, ShutdownReport, Value};
use redis::aio::MultiplexedConnection;
use redis_support::{Cleanup, PrivateRedis, command_calls, redis_url, shared, unique_prefix};
use serde_json::json;
use support::Collected;
use support::async_support::{errors, inserted};
use tokio::runtime::Handle;
use tracing_subscriber::layer::SubscriberExt;

/// Longest a test waits for an event it logged to be written.
const EVENT_PATIENCE: Duration = Duration::from_secs(5);

/// A pipeline on the test's runtime, fed by this thread's default
/// subscriber. Tests run on a current-thread runtime, so the task that logs
/// never moves to another thread, and the worker runs whenever the test
/// awaits.
struct Running {
    guard: Guard,
    collected: Collected,
    _subscriber: tracing::subscriber::DefaultGuard,
}

async fn run(builder: fapilog::Builder) -> Running {
    let collected = Collected::new();
    let (layer, guard) = builder
        .runtime(Handle::current())
        .sink(collected.sink())
        .build_async()
        .await
        .expect("pipeline starts");
    let subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    Running {
        guard,
        collected,
        _subscriber: subscriber,
    }
}

impl Running {
    /// Shuts down (draining every event) and returns the report and the
    /// application's events.
    async fn finish(self) -> (ShutdownReport, Vec<Event>) {
        let report = self.guard.shutdown().await;
        (report, self.collected.app_events())
    }

    /// Waits until the event logged with `user_id = id` has been written.
    async fn written(&self, id: &Value) -> Event {
        let deadline = Instant::now() + EVENT_PATIENCE;
        loop {
            if let Some(e) = self
                .collected
                .app_events()
                .into_iter()
                .find(|e| e.field("user_id") == Some(id))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "event with user_id {id} not written within {EVENT_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn breaker(&self) -> BreakerState {
        self.guard.health()[0].breaker
    }
}

fn by_user(events: &[Event], id: impl Into<Value>) -> &Event {
    let id = id.into();
    events
        .iter()
        .find(|e| e.field("user_id") == Some(&id))
        .unwrap_or_else(|| panic!("no event with user_id {id} in {events:#?}"))
}

async fn set(conn: &mut MultiplexedConnection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .expect("SET");
}

/// `{prefix}user:{key}`.
fn lookup(url: &str, prefix: &str) -> fapilog::sources::RedisLookupBuilder {
    RedisLookup::builder(url).key_template(format!("{prefix}user:{{key}}"))
}

#[tokio::test]
async fn get_json_values_are_merged_into_events() {
    let mut conn = shared().await;
    let prefix = unique_prefix("get_json");
    let _cleanup = Cleanup::new(&redis_url(), &prefix);
    set(
        &mut conn,
        &format!("{prefix}user:1"),
        r#"{"name":"Ada","tier":"gold","seats":3}"#,
    )
    .await;
    set(
        &mut conn,
        &format!("{prefix}user:2"),
        r#"{"name":"Bob","tier":"free","beta":true}"#,
    )
    .await;
    set(
        &mut conn,
        &format!("{prefix}user:alice"),
        r#"{"name":"Alice"}"#,
    )
    .await;

    let users = lookup(&redis_url(), &prefix).build().unwrap();
    let running = run(fapilog::builder().async_enricher(
        LookupEnricher::builder("user", users)
            .key_field("user_id")
            .build(),
    ))
    .await;
    tracing::info!(user_id = 1, "first");
    tracing::info!(user_id = 2, "second");
    tracing::info!(user_id = "alice", "string key");
    tracing::info!(user_id = 3, "not in redis");
    let (report, events) = running.finish().await;

    assert_eq!(report.dropped, 0);
    assert_eq!(events.len(), 4);
    assert_eq!(
        inserted(by_user(&events, 1), "user"),
        Some(json!({"name": "Ada", "tier": "gold", "seats": 3}))
    );
    assert_eq!(
        inserted(by_user(&events, 2), "user"),
        Some(json!({"name": "Bob", "tier": "free", "beta": true}))
    );
    assert_eq!(
        inserted(by_user(&events, "alice"), "user"),
        Some(json!({"name": "Alice"}))
    );
    let missing = by_user(&events, 3);
    assert_eq!(
        inserted(missing, "user"),
        None,
        "a missing key adds nothing"
    );
    assert!(
        errors(missing).is_empty(),
        "a missing key is not an error: {:?}",
        errors(missing)
    );
    for e in &events {
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
}

#[tokio::test]
async fn get_string_values_stay_strings_and_json_or_string_parses_what_it_can() {
    let mut conn = shared().await;
    let prefix = unique_prefix("get_string");
    let _cleanup = Cleanup::new(&redis_url(), &prefix);
    set(&mut conn, &format!("{prefix}user:1"), "Ada Lovelace").await;
    set(&mut conn, &format!("{prefix}user:2"), r#"{"a":1}"#).await;
    set(&mut conn, &format!("{prefix}user:3"), "42").await;

    let as_string = lookup(&redis_url(), &prefix)
        .get(ValueFormat::String)
        .build()
        .unwrap();
    let either = lookup(&redis_url(), &prefix)
        .get(ValueFormat::JsonOrString)
        .build()
        .unwrap();
    let running = run(fapilog::builder()
        .async_enricher(
            LookupEnricher::builder("name", as_string)
                .key_field("user_id")
                .build(),
        )
        .async_enricher(
            LookupEnricher::builder("either", either)
                .key_field("user_id")
                .build(),
        ))
    .await;
    for id in 1..=4 {
        tracing::info!(user_id = id, "event");
    }
    let (_, events) = running.finish().await;

    assert_eq!(
        inserted(by_user(&events, 1), "name"),
        Some(json!("Ada Lovelace"))
    );
    assert_eq!(
        inserted(by_user(&events, 2), "name"),
        Some(json!(r#"{"a":1}"#))
    );
    assert_eq!(inserted(by_user(&events, 3), "name"), Some(json!("42")));
    assert_eq!(
        inserted(by_user(&events, 1), "either"),
        Some(json!("Ada Lovelace"))
    );
    assert_eq!(
        inserted(by_user(&events, 2), "either"),
        Some(json!({"a": 1}))
    );
    assert_eq!(inserted(by_user(&events, 3), "either"), Some(json!(42)));
    let missing = by_user(&events, 4);
    assert_eq!(inserted(missing, "name"), None);
    assert_eq!(inserted(missing, "either"), None);
    for e in &events {
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
}

#[tokio::test]
async fn hgetall_hashes_become_objects_and_other_types_are_skipped() {
    let mut conn = shared().await;
    let prefix = unique_prefix("hgetall");
    let _cleanup = Cleanup::new(&redis_url(), &prefix);
    redis::cmd("HSET")
        .arg(format!("{prefix}user:1"))
        .arg(&["name", "Ada", "tier", "gold", "seats", "3"])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(format!("{prefix}user:2"))
        .arg(&["name", "Bob"])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // A string where a hash is expected: WRONGTYPE for this key only.
    set(&mut conn, &format!("{prefix}user:3"), "not a hash").await;

    let users = lookup(&redis_url(), &prefix).hgetall().build().unwrap();
    let probe = users.clone();
    let running = run(fapilog::builder().async_enricher(
        LookupEnricher::builder("user", users)
            .key_field("user_id")
            .build(),
    ))
    .await;
    for id in 1..=4 {
        tracing::info!(user_id = id, "event");
    }
    let stats = running.guard.stats();
    let (_, events) = running.finish().await;

    assert_eq!(
        inserted(by_user(&events, 1), "user"),
        Some(json!({"name": "Ada", "tier": "gold", "seats": "3"}))
    );
    assert_eq!(
        inserted(by_user(&events, 2), "user"),
        Some(json!({"name": "Bob"}))
    );
    assert_eq!(
        inserted(by_user(&events, 3), "user"),
        None,
        "a string is not a hash"
    );
    assert_eq!(
        inserted(by_user(&events, 4), "user"),
        None,
        "no hash, no fields"
    );
    for e in &events {
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
    assert_eq!(probe.invalid_values(), 1, "the WRONGTYPE key is counted");
    let s = &stats.enrichers[0];
    assert_eq!(
        s.failures, 0,
        "one key of the wrong type does not fail the fetch: {s:?}"
    );
}

#[tokio::test]
async fn malformed_json_skips_that_key_only() {
    let mut conn = shared().await;
    let prefix = unique_prefix("malformed");
    let _cleanup = Cleanup::new(&redis_url(), &prefix);
    set(&mut conn, &format!("{prefix}user:1"), r#"{"name":"Ada"}"#).await;
    set(&mut conn, &format!("{prefix}user:2"), r#"{"name": "Bob""#).await;
    set(&mut conn, &format!("{prefix}user:3"), "plain text").await;

    let users = lookup(&redis_url(), &prefix)
        .get(ValueFormat::Json)
        .build()
        .unwrap();
    let probe = users.clone();
    let running = run(fapilog::builder().async_enricher(
        LookupEnricher::builder("user", users)
            .key_field("user_id")
            .build(),
    ))
    .await;
    // Logged without awaiting in between: one batch, one fetch.
    for id in 1..=3 {
        tracing::info!(user_id = id, "event");
    }
    for id in 1..=3 {
        running.written(&Value::from(id)).await;
    }
    let s = running.guard.stats().enrichers[0].clone();
    assert_eq!(
        (s.fetches, s.failures),
        (1, 0),
        "one fetch, and it succeeded: {s:?}"
    );
    let (_, events) = running.finish().await;

    assert_eq!(
        inserted(by_user(&events, 1), "user"),
        Some(json!({"name": "Ada"}))
    );
    for id in [2, 3] {
        let e = by_user(&events, id);
        assert_eq!(inserted(e, "user"), None);
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
    assert_eq!(probe.invalid_values(), 2);
}

#[tokio::test]
async fn missing_keys_of_a_batch_cost_one_mget() {
    // A private server, so nothing else moves its command counters.
    let server = PrivateRedis::start().await;
    let mut conn = redis_support::connect(&server.url()).await.unwrap();
    for id in [3, 17, 29] {
        set(
            &mut conn,
            &format!("user:{id}"),
            &format!(r#"{{"id":{id}}}"#),
        )
        .await;
    }
    let users = RedisLookup::builder(server.url())
        .key_template("user:{key}")
        .build()
        .unwrap();
    let running = run(fapilog::builder().async_enricher(
        LookupEnricher::builder("user", users)
            .key_field("user_id")
            .build(),
    ))
    .await;
    let mget_before = command_calls(&mut conn, "mget").await;
    let get_before = command_calls(&mut conn, "get").await;

    // 40 events, 37 of them for keys Redis does not have, logged without
    // awaiting: the worker (on this thread) sees them as one batch.
    for id in 0..40 {
        tracing::info!(user_id = id, "event");
    }
    for id in 0..40 {
        running.written(&Value::from(id)).await;
    }
    let mget_after = command_calls(&mut conn, "mget").await;
    assert_eq!(mget_after - mget_before, 1, "one MGET for the whole batch");
    assert_eq!(
        command_calls(&mut conn, "get").await,
        get_before,
        "no single GETs"
    );
    let s = running.guard.stats().enrichers[0].clone();
    assert_eq!((s.fetches, s.fetched_keys), (1, 40), "{s:?}");

    // The same keys again: found ones from the cache, missing ones from the
    // negative cache; Redis is not asked.
    for id in 0..40 {
        tracing::info!(user_id = id, again = true, "event");
    }
    let (report, events) = running.finish().await;
    assert_eq!(
        command_calls(&mut conn, "mget").await,
        mget_after,
        "no round trip for cached keys"
    );
    assert_eq!(report.dropped, 0);
    assert_eq!(events.len(), 80);
    for e in &events {
        let id = e.field("user_id").and_then(Value::as_i64).unwrap();
        let expected = [3, 17, 29].contains(&id).then(|| json!({ "id": id }));
        assert_eq!(inserted(e, "user"), expected, "user_id {id}");
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
}

#[tokio::test]
async fn hostile_key_names_are_only_data() {
    let mut conn = shared().await;
    let prefix = unique_prefix("hostile");
    let _cleanup = Cleanup::new(&redis_url(), &prefix);
    let canary = format!("{prefix}canary");
    set(&mut conn, &canary, "alive").await;
    // Keys a glob would match, if `*`, `?` or `[a-z]` were patterns.
    set(&mut conn, &format!("{prefix}user:a"), r#"{"k":"a"}"#).await;

    let injected = format!("{prefix}injected");
    let hostile: Vec<String> = vec![
        "with space".into(),
        "double\"quote".into(),
        "single'quote".into(),
        "'; DROP TABLE users; --".into(),
        "\") OR 1=1 --".into(),
        format!("x\r\nSET {injected} pwned\r\n"),
        "*3\r\n$3\r\nDEL\r\n".into(),
        "FLUSHALL".into(),
        "back\\slash".into(),
        "{key}".into(),
        "üñíçødé ключ 鍵 🦀".into(),
        "tab\tnull\0byte".into(),
    ];
    for k in &hostile {
        let value = serde_json::to_string(&json!({ "k": k })).unwrap();
        set(&mut conn, &format!("{prefix}user:{k}"), &value).await;
    }
    let patterns = ["*", "?", "[a-z]"];

    let running = run(fapilog::builder().async_enricher(
        LookupEnricher::builder("user", lookup(&redis_url(), &prefix).build().unwrap())
            .key_field("user_id")
            .build(),
    ))
    .await;
    for k in hostile
        .iter()
        .map(String::as_str)
        .chain(patterns)
        .chain([""])
    {
        tracing::info!(user_id = k, "hostile");
    }
    let (_, events) = running.finish().await;

    for k in &hostile {
        let e = by_user(&events, k.as_str());
        assert_eq!(inserted(e, "user"), Some(json!({ "k": k })), "key {k:?}");
        assert!(errors(e).is_empty(), "key {k:?}: {:?}", errors(e));
    }
    // An empty key names nothing: not looked up, not found, no error.
    let e = by_user(&events, "");
    assert_eq!(inserted(e, "user"), None);
    assert!(errors(e).is_empty(), "{:?}", errors(e));
    for p in patterns {
        let e = by_user(&events, p);
        assert_eq!(
            inserted(e, "user"),
            None,
            "{p:?} is a key name, not a pattern"
        );
        assert!(errors(e).is_empty(), "{:?}", errors(e));
    }
    let alive: Option<String> = redis::cmd("GET")
        .arg(&canary)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        alive.as_deref(),
        Some("alive"),
        "nothing was deleted or flushed"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&injected)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "no command was injected");
}

#[tokio::test]
async fn start_up_needs_redis_and_health_checks_ping_it() {
    // Nothing listens on this port; the password must not leak.
    let port = redis_support::free_port();
    let down = RedisLookup::builder(format!("redis://:s3cret@127.0.0.1:{port}/0"))
        .reconnect_retries(1)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
    let e = down
        .startup()
        .await
        .expect_err("start-up fails when Redis is unreachable");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "could not connect to redis at redis://:***@127.0.0.1:{port}/0"
        )),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(!format!("{down:?}").contains("s3cret"));
    assert!(down.health_check().await.is_err());
    assert!(down.fetch(&[Key::from(1i64)]).await.is_err());

    let _ = shared().await;
    let up = RedisLookup::builder(redis_url()).build().unwrap();
    assert!(up.health_check().await.is_err(), "not started yet");
    up.startup().await.expect("starts");
    up.health_check().await.expect("PING answers");
    assert!(up.connection_manager().is_some());
    up.shutdown().await.unwrap();
    assert!(
        up.connection_manager().is_none(),
        "shutdown drops the connection"
    );
    let e = up.health_check().await.expect_err("shut down");
    assert!(e.to_string().contains("not started"), "{e}");
}

#[tokio::test]
async fn enrichment_survives_a_redis_outage_and_resumes_by_itself() {
    let started = Instant::now();
    let mut server = PrivateRedis::start().await;
    let mut conn = redis_support::connect(&server.url()).await.unwrap();
    set(&mut conn, "user:1", r#"{"n":1}"#).await;

    // Default connection settings; a short call timeout and a breaker that
    // opens after two failures and probes again after 300 ms keep it fast.
    let users = RedisLookup::builder(server.url())
        .key_template("user:{key}")
        .build()
        .unwrap();
    let options = EnricherOptions::new()
        .call_timeout(Duration::from_millis(300))
        .breaker(
            BreakerConfig::default()
                .policy(FailurePolicy::Consecutive(2))
                .recovery_timeout(Duration::from_millis(300)),
        );
    let running = run(fapilog::builder().async_enricher_with(
        LookupEnricher::builder("user", users)
            .key_field("user_id")
            .build(),
        options,
    ))
    .await;

    // Up: enriched.
    tracing::info!(user_id = 1, "before the outage");
    let e = running.written(&Value::from(1)).await;
    assert_eq!(inserted(&e, "user"), Some(json!({"n": 1})));

    // Down: every event is still written, with an error entry, until the
    // breaker opens and short-circuits.
    server.kill();
    let mut reasons = Vec::new();
    for id in 100..130 {
        tracing::info!(user_id = id, "during the outage");
        let e = running.written(&Value::from(id)).await;
        assert_eq!(inserted(&e, "user"), None);
        let errs = errors(&e);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "user");
        reasons.push(errs[0].1.clone());
        if errs[0].1 == "circuit_open" {
            break;
        }
    }
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("circuit_open"),
        "breaker never opened: {reasons:?}"
    );
    assert!(
        reasons.len() >= 3,
        "at least two failed fetches before it opened: {reasons:?}"
    );
    assert_eq!(running.breaker().await, BreakerState::Open);

    // Back (empty: no persistence), on the same port: enrichment resumes
    // without a restart of the pipeline.
    server.restart().await;
    let mut conn = redis_support::connect(&server.url()).await.unwrap();
    set(&mut conn, "user:2", r#"{"n":2}"#).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut attempts: u64 = 0;
    loop {
        attempts += 1;
        // Failed keys are not cached, so the same key is fetched again.
        tracing::info!(user_id = 2, attempt = attempts, "after the outage");
        let e = wait_for_attempt(&running, attempts).await;
        if inserted(&e, "user") == Some(json!({"n": 2})) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "enrichment did not resume within 8 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running.breaker().await, BreakerState::Closed);

    let stats = running.guard.stats();
    let s = &stats.enrichers[0];
    assert!(s.failures >= 2 && s.short_circuits >= 1, "{s:?}");
    let (report, events) = running.finish().await;
    assert_eq!(report.dropped, 0);
    assert_eq!(
        events.len(),
        1 + reasons.len() + attempts as usize,
        "every event was written"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// The event of the `attempt`-th retry logged with `user_id = 2`.
async fn wait_for_attempt(running: &Running, attempt: u64) -> Event {
    let deadline = Instant::now() + EVENT_PATIENCE;
    loop {
        if let Some(e) = running.collected.app_events().into_iter().find(|e| {
            e.field("user_id") == Some(&Value::from(2))
                && e.field("attempt") == Some(&Value::from(attempt))
        }) {
            return e;
        }
        assert!(Instant::now() < deadline, "attempt {attempt} not written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
