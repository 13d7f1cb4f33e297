//! The enrichment deadline: a batch spends at most `enrich_deadline` in
//! async enrichment, all enrichers together. An enricher that has not
//! finished by then leaves a `timeout` entry in `enrichment_errors`; the
//! event is written on time with every other enricher's fields.
//!
//! Times here are read from the paused tokio clock, so they are exact and
//! deterministic: they say when, in the pipeline's own time, an event was
//! written.

mod support;

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use serde_json::json;
use support::async_support::{
    Behaviour, Emitted, Running, TestEnricher, TestLookup, errors, inserted, pipeline,
};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_millis(200);
const LINGER: Duration = Duration::from_millis(1);

/// Logs one event and returns it with how long after the log call it was
/// written.
async fn log_one_and_wait(out: &Emitted, n: usize) -> (fapilog::Event, Duration) {
    let logged_at = Instant::now();
    tracing::info!(user_id = 1, "checkout");
    out.wait_for(n).await;
    let (written_at, event) = out.written().pop().expect("written");
    (event, written_at - logged_at)
}

#[tokio::test(start_paused = true)]
async fn a_hanging_enricher_times_out_at_the_deadline_and_the_others_fields_stay() {
    let slow = TestEnricher::new("slow", "slow_field", 1);
    slow.behave(Behaviour::Hang);
    let fast = TestEnricher::new("fast", "fast_field", "yes");
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .linger(LINGER)
            .enrich_deadline(DEADLINE)
            .enricher(|e: &mut fapilog::Event| e.insert("sync_field", true))
            // A call timeout far beyond the deadline: the deadline decides.
            .async_enricher_with(
                slow.clone(),
                EnricherOptions::new().call_timeout(Duration::from_secs(60)),
            )
            .async_enricher(fast.clone()),
    )
    .await;

    let (e, took) = log_one_and_wait(&out, 1).await;

    assert_eq!(errors(&e), [("slow".into(), "timeout".into())]);
    assert_eq!(inserted(&e, "slow_field"), None);
    assert_eq!(inserted(&e, "fast_field"), Some(json!("yes")));
    assert_eq!(inserted(&e, "sync_field"), Some(json!(true)));
    assert!(
        took <= LINGER + DEADLINE,
        "written {took:?} after the log call"
    );
    assert!(took >= DEADLINE, "the slow enricher had its full deadline");

    let stats = running.guard.stats();
    assert_eq!(stats.enrichers[0].name, "slow");
    assert_eq!(stats.enrichers[0].timeouts, 1);
    assert_eq!(stats.enrichers[1].timeouts, 0);

    // The next batch gets a deadline of its own and is not held up either.
    let (e, took) = log_one_and_wait(&out, 2).await;
    assert_eq!(errors(&e), [("slow".into(), "timeout".into())]);
    assert_eq!(inserted(&e, "fast_field"), Some(json!("yes")));
    assert!(
        took <= LINGER + DEADLINE,
        "written {took:?} after the log call"
    );

    let report = running.shutdown().await;
    assert_eq!((report.emitted, report.dropped), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_call_timeout_shorter_than_the_deadline_ends_the_call_sooner() {
    let slow = TestEnricher::new("slow", "slow_field", 1);
    slow.behave(Behaviour::Hang);
    let out = Emitted::new();
    let call_timeout = Duration::from_millis(50);
    let running = Running::start(
        pipeline(out.sink())
            .linger(LINGER)
            .enrich_deadline(Duration::from_secs(5))
            .async_enricher_with(slow, EnricherOptions::new().call_timeout(call_timeout)),
    )
    .await;

    let (e, took) = log_one_and_wait(&out, 1).await;
    assert_eq!(errors(&e), [("slow".into(), "timeout".into())]);
    assert!(
        took <= LINGER + call_timeout,
        "written {took:?} after the log call"
    );
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hanging_lookup_times_out_at_the_deadline() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one").behave(Behaviour::Hang);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .linger(LINGER)
            .enrich_deadline(DEADLINE)
            .static_field("service", "checkout")
            .async_enricher_with(
                enricher,
                EnricherOptions::new().call_timeout(Duration::from_secs(60)),
            ),
    )
    .await;

    let (e, took) = log_one_and_wait(&out, 1).await;
    assert_eq!(errors(&e), [("user".into(), "timeout".into())]);
    assert_eq!(inserted(&e, "user"), None);
    assert_eq!(inserted(&e, "service"), Some(json!("checkout")));
    assert!(
        took <= LINGER + DEADLINE,
        "written {took:?} after the log call"
    );
    assert_eq!(lookup.fetches(), 1);
    assert_eq!(running.guard.stats().enrichers[0].timeouts, 1);

    // Once the lookup answers again, the key (never cached) is served.
    lookup.behave(Behaviour::Ok);
    let (e, _) = log_one_and_wait(&out, 2).await;
    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    assert_eq!(inserted(&e, "user"), Some(json!("one")));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_shared_by_dependent_levels() {
    // `second` depends on `first`: they run one after the other, 150 ms
    // each, against one 200 ms deadline.
    let first = TestEnricher::new("first", "first_field", 1);
    first.latency(Duration::from_millis(150));
    let second = TestEnricher::new("second", "second_field", 2);
    second.latency(Duration::from_millis(150));
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .linger(LINGER)
            .enrich_deadline(DEADLINE)
            .async_enricher(first)
            .async_enricher_with(second, EnricherOptions::new().depends_on("first")),
    )
    .await;

    let (e, took) = log_one_and_wait(&out, 1).await;
    assert_eq!(inserted(&e, "first_field"), Some(json!(1)));
    assert_eq!(inserted(&e, "second_field"), None);
    assert_eq!(errors(&e), [("second".into(), "timeout".into())]);
    assert!(
        took <= LINGER + DEADLINE,
        "written {took:?} after the log call"
    );
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn independent_enrichers_run_concurrently_within_the_deadline() {
    // Three enrichers of 150 ms each fit a 200 ms deadline only if they
    // run side by side.
    let enrichers: Vec<TestEnricher> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let e = TestEnricher::new(n, &format!("{n}_field"), true);
            e.latency(Duration::from_millis(150));
            e
        })
        .collect();
    let out = Emitted::new();
    let mut builder = pipeline(out.sink())
        .linger(LINGER)
        .enrich_deadline(DEADLINE);
    for e in &enrichers {
        builder = builder.async_enricher(e.clone());
    }
    let running = Running::start(builder).await;

    let (e, _) = log_one_and_wait(&out, 1).await;
    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    for n in ["a_field", "b_field", "c_field"] {
        assert_eq!(inserted(&e, n), Some(json!(true)), "{n}");
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dependent_left_no_time_by_a_hanging_dependency_is_not_charged_for_it() {
    // `upstream` hangs and uses up every batch's deadline; `downstream`
    // (healthy, 10 ms) depends on it, so its level starts with no time
    // left. That is not `downstream`'s failure: its circuit must stay
    // closed and its health up.
    let upstream = TestEnricher::new("upstream", "u", 1);
    upstream.behave(Behaviour::Hang);
    let downstream = TestEnricher::new("downstream", "d", 2);
    downstream.latency(Duration::from_millis(10));
    let breaker = fapilog::resilience::BreakerConfig::default()
        .policy(fapilog::resilience::FailurePolicy::Consecutive(2));
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .enrich_deadline(DEADLINE)
            .async_enricher(upstream)
            .async_enricher_with(
                downstream.clone(),
                EnricherOptions::new()
                    .depends_on("upstream")
                    .breaker(breaker),
            ),
    )
    .await;

    for n in 1..=3 {
        log_one_and_wait(&out, n).await;
    }
    let e = out.events().pop().unwrap();
    let mut errs = errors(&e);
    errs.sort();
    assert_eq!(errs[1], ("upstream".into(), "timeout".into()));

    let health = running.guard.health();
    let stats = running.guard.stats();
    running.shutdown().await;
    assert_eq!(
        health[1].breaker,
        fapilog::resilience::BreakerState::Closed,
        "the downstream breaker opened because the upstream enricher hung \
         (downstream stats: {:?})",
        stats.enrichers[1]
    );
    assert_eq!(health[1].status, fapilog::observe::HealthStatus::Up);
    assert_eq!(stats.enrichers[1].failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_hangs_past_the_deadline_still_opens_its_breaker() {
    // The deadline (200 ms) is shorter than the call timeout (1 s), so it
    // is what ends each call. The enricher had the whole batch's time every
    // time and its dependency never answered: that is the dependency
    // failing, and after two batches the circuit opens so later batches
    // stop waiting out the deadline.
    let stuck = TestEnricher::new("stuck", "s", 1);
    stuck.behave(Behaviour::Hang);
    let breaker = fapilog::resilience::BreakerConfig::default()
        .policy(fapilog::resilience::FailurePolicy::Consecutive(2));
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .linger(LINGER)
            .enrich_deadline(DEADLINE)
            .async_enricher_with(
                stuck.clone(),
                EnricherOptions::new()
                    .call_timeout(Duration::from_secs(1))
                    .breaker(breaker),
            ),
    )
    .await;

    for n in 1..=2 {
        let (e, _) = log_one_and_wait(&out, n).await;
        assert_eq!(errors(&e), [("stuck".into(), "timeout".into())]);
    }
    let (e, took) = log_one_and_wait(&out, 3).await;
    let health = running.guard.health();
    running.shutdown().await;
    assert_eq!(
        health[0].breaker,
        fapilog::resilience::BreakerState::Open,
        "two batches spent their whole deadline on a dependency that never answered"
    );
    assert_eq!(errors(&e), [("stuck".into(), "circuit_open".into())]);
    assert!(
        took <= LINGER,
        "refused at once, written {took:?} after the log call"
    );
    assert_eq!(stuck.calls(), 2);
}
