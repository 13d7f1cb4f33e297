//! Async enricher lifecycle: start-ups run concurrently within the start-up
//! timeout; one that fails is reported down, its events say `unavailable`,
//! and it is retried in the background until it starts — unless it is
//! `required`, in which case start-up fails naming it. Enrichers are shut
//! down once, after the queue drained.

mod support;

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::observe::HealthStatus;
use serde_json::json;
use support::async_support::{
    Emitted, Running, TestEnricher, TestLookup, errors, inserted, let_time_pass, pipeline,
};
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_failed_start_up_is_retried_in_the_background_until_it_succeeds() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.lifecycle().fail_startups(3);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .startup_retry_backoff(SEC, 2 * SEC)
            .health_interval(Duration::from_secs(3600))
            .async_enricher(geo.clone()),
    )
    .await;

    // Started without it: down, with the start-up error.
    let h = running.guard.health();
    assert_eq!(h[0].name, "geo");
    assert_eq!(h[0].status, HealthStatus::Down);
    let last = h[0].last_error.clone().expect("a start-up error");
    assert!(last.contains("connection refused"), "{last}");
    assert!(h[0].last_check.is_some());

    // Its events are written, marked unavailable.
    tracing::info!("while down");
    let e = out.wait_for(1).await.remove(0);
    assert_eq!(errors(&e), [("geo".into(), "unavailable".into())]);
    assert_eq!(inserted(&e, "country"), None);
    assert_eq!(geo.calls(), 0, "not called before it started");

    // Past the backoff (three retries of at most 2 s + jitter each), up.
    let_time_pass(20 * SEC).await;
    assert_eq!(
        geo.lifecycle().startups(),
        4,
        "three failures, then success"
    );
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Up);
    assert_eq!(h[0].last_error, None);

    tracing::info!("after recovery");
    let e = out.wait_for(2).await.remove(1);
    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    assert_eq!(inserted(&e, "country"), Some(json!("NZ")));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_first_retry_waits_the_minimum_backoff() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.lifecycle().fail_startups(usize::MAX);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .startup_retry_backoff(SEC, SEC)
            .async_enricher(geo.clone()),
    )
    .await;

    // A dependency that just refused is not asked again at once.
    let_time_pass(Duration::from_millis(900)).await;
    assert_eq!(
        geo.lifecycle().startups(),
        1,
        "start-up retried before the minimum backoff (1 s) had passed"
    );
    // With a 1 s backoff (jitter adds less than 1 s), retried within 2 s.
    let_time_pass(Duration::from_millis(1100)).await;
    assert!(geo.lifecycle().startups() >= 2);
    assert_eq!(running.guard.health()[0].status, HealthStatus::Down);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_required_enricher_that_cannot_start_fails_start_up_naming_it() {
    let db = TestEnricher::new("accounts_db", "account", 1);
    db.lifecycle().fail_startups(usize::MAX);
    let other = TestEnricher::new("geo", "country", "NZ");
    let out = Emitted::new();

    let err = Running::try_start(
        pipeline(out.sink())
            .async_enricher(other.clone())
            .async_enricher_with(db.clone(), EnricherOptions::new().required()),
    )
    .await
    .err()
    .expect("start-up fails");

    let msg = err.to_string();
    assert!(msg.contains("`accounts_db`"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(!msg.contains("`geo`"), "{msg}");
    // What did start was shut down again, and nothing is retried.
    assert_eq!(other.lifecycle().shutdowns(), 1);
    let_time_pass(Duration::from_secs(600)).await;
    assert_eq!(db.lifecycle().startups(), 1);
}

#[test]
fn a_required_enricher_fails_the_blocking_build_too() {
    let db = TestEnricher::new("accounts_db", "account", 1);
    db.lifecycle().fail_startups(usize::MAX);
    let result = fapilog::builder()
        .sink(Emitted::new().sink())
        .async_enricher_with(db, EnricherOptions::new().required())
        .build();
    let Err(err) = result else {
        panic!("build succeeded");
    };
    assert!(err.to_string().contains("`accounts_db`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_required_enricher_whose_start_up_hangs_fails_after_the_start_up_timeout() {
    let db = TestEnricher::new("accounts_db", "account", 1);
    db.lifecycle().hang_startup();
    let out = Emitted::new();
    let started = Instant::now();

    let err = Running::try_start(
        pipeline(out.sink())
            .startup_timeout(3 * SEC)
            .async_enricher_with(db, EnricherOptions::new().required()),
    )
    .await
    .err()
    .expect("start-up fails");

    let msg = err.to_string();
    assert!(msg.contains("`accounts_db`"), "{msg}");
    assert!(
        msg.contains("3s"),
        "the error says what limit passed: {msg}"
    );
    assert_eq!(
        started.elapsed(),
        3 * SEC,
        "gave up at the start-up timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn an_optional_enricher_whose_start_up_hangs_does_not_hold_the_pipeline() {
    let slow = TestEnricher::new("slow", "s", 1);
    slow.lifecycle().hang_startup();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .startup_timeout(2 * SEC)
            .async_enricher(slow)
            .async_enricher(TestEnricher::new("geo", "country", "NZ")),
    )
    .await;

    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Down);
    let last = h[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("start-up took longer than"), "{last}");
    assert_eq!(h[1].status, HealthStatus::Up);

    tracing::info!("hello");
    let e = out.wait_for(1).await.remove(0);
    assert_eq!(errors(&e), [("slow".into(), "unavailable".into())]);
    assert_eq!(inserted(&e, "country"), Some(json!("NZ")));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn start_ups_run_concurrently() {
    let a = TestEnricher::new("a", "a", 1);
    let b = TestEnricher::new("b", "b", 1);
    let c = TestLookup::new();
    for l in [a.lifecycle(), b.lifecycle(), c.lifecycle()] {
        l.startup_latency(3 * SEC);
    }
    let out = Emitted::new();
    let started = Instant::now();
    let running = Running::start(
        pipeline(out.sink())
            .startup_timeout(5 * SEC)
            .async_enricher(a)
            .async_enricher(b)
            .async_enricher(LookupEnricher::builder("c", c).build()),
    )
    .await;

    // One after the other they would take 9 s (and the second would not
    // fit the first's timeout); side by side, 3 s.
    assert_eq!(started.elapsed(), 3 * SEC);
    let h = running.guard.health();
    assert!(h.iter().all(|h| h.status == HealthStatus::Up), "{h:?}");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn enrichers_shut_down_once_after_the_queue_drained() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    let lookup = TestLookup::new();
    lookup.set(1i64, "one");
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .batch_size(8)
            .async_enricher(geo.clone())
            .async_enricher(
                LookupEnricher::builder("user", lookup.clone())
                    .key_field("user_id")
                    .build(),
            ),
    )
    .await;

    for i in 0..50 {
        tracing::info!(user_id = 1, i, "queued");
    }
    assert_eq!(geo.lifecycle().shutdowns(), 0);
    let report = running.shutdown().await;

    assert_eq!((report.emitted, report.dropped), (50, 0));
    assert_eq!(geo.lifecycle().shutdowns(), 1);
    assert_eq!(lookup.lifecycle().shutdowns(), 1);
    assert_eq!(
        geo.events_at_shutdown(),
        Some(50),
        "shut down only after every queued event was enriched"
    );
    let events = out.events();
    assert_eq!(events.len(), 50);
    assert!(
        events
            .iter()
            .all(|e| inserted(e, "user") == Some(json!("one")))
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_start_up_retries_and_skips_enrichers_that_never_started() {
    let flaky = TestEnricher::new("flaky", "f", 1);
    flaky.lifecycle().fail_startups(usize::MAX);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .startup_retry_backoff(SEC, SEC)
            .async_enricher(flaky.clone()),
    )
    .await;
    let_time_pass(5 * SEC).await;
    let attempts = flaky.lifecycle().startups();
    assert!(attempts >= 2, "retried in the background ({attempts})");

    running.shutdown().await;
    let attempts = flaky.lifecycle().startups();
    let_time_pass(60 * SEC).await;
    assert_eq!(
        flaky.lifecycle().startups(),
        attempts,
        "no retry after shutdown"
    );
    assert_eq!(flaky.lifecycle().shutdowns(), 0, "it never started");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_enricher_shutdown_does_not_hold_the_pipelines_shutdown() {
    let stuck = TestEnricher::new("stuck", "s", 1);
    stuck.lifecycle().hang_shutdown();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .enricher_shutdown_timeout(2 * SEC)
            .shutdown_timeout(60 * SEC)
            .async_enricher(stuck.clone()),
    )
    .await;
    tracing::info!("last words");
    let started = Instant::now();

    let report = running.shutdown().await;

    assert!(!report.timed_out, "{report:?}");
    assert_eq!((report.emitted, report.dropped), (1, 0));
    assert_eq!(stuck.lifecycle().shutdowns(), 1);
    assert!(
        started.elapsed() < 3 * SEC,
        "gave up on the enricher's shutdown after its timeout ({:?})",
        started.elapsed()
    );
    assert_eq!(inserted(&out.events()[0], "s"), Some(json!(1)));
}

/// An enricher whose lifecycle hooks panic.
struct Panicky;

impl fapilog::enrich::AsyncEnricher for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    async fn startup(&self) -> Result<(), fapilog::enrich::EnrichError> {
        panic!("boom in start-up")
    }
    async fn enrich(
        &self,
        _events: &[fapilog::Event],
        _out: &mut [fapilog::enrich::Patch],
        _ctx: &fapilog::enrich::EnrichContext,
    ) -> Result<(), fapilog::enrich::EnrichError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_start_up_is_a_failed_start_up_not_a_dead_pipeline() {
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .startup_retry_backoff(Duration::from_secs(3600), Duration::from_secs(3600))
            .async_enricher(Panicky),
    )
    .await;
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Down);
    assert_eq!(h[0].last_error.as_deref(), Some("start-up panicked"));
    tracing::info!("still logging");
    let e = out.wait_for(1).await.remove(0);
    assert_eq!(errors(&e), [("panicky".into(), "unavailable".into())]);
    let report = running.shutdown().await;
    assert!(!report.timed_out);
    assert_eq!(report.emitted, 1);

    // Required: start-up fails at once, naming it.
    let started = Instant::now();
    let err = Running::try_start(
        pipeline(Emitted::new().sink())
            .async_enricher_with(Panicky, EnricherOptions::new().required()),
    )
    .await
    .err()
    .expect("a required enricher whose start-up panics fails start-up");
    assert!(err.to_string().contains("`panicky`"), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
