//! The circuit breaker around an enricher's external calls: it opens after
//! failures, refuses calls (without making them) while open, lets a probe
//! through after the recovery timeout, and closes when the probe succeeds.
//! A lookup's cache hits are served while the circuit is open.

mod support;

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use futures_util::future::join_all;
use serde_json::json;
use support::async_support::{
    BACKEND_DOWN, Behaviour, Emitted, Harness, Running, TestEnricher, TestLookup, errors, inserted,
    let_time_pass, patch_field, pipeline,
};

const RECOVERY: Duration = Duration::from_secs(10);

fn breaker(failures: u32) -> BreakerConfig {
    BreakerConfig::default()
        .policy(FailurePolicy::Consecutive(failures))
        .recovery_timeout(RECOVERY)
}

#[tokio::test(start_paused = true)]
async fn lookup_breaker_goes_closed_open_half_open_closed_with_exact_short_circuits() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "cached before the outage");
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::with_breaker("user", breaker(3));

    // Closed: key 1 is fetched and cached.
    h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(h.breaker_state(), BreakerState::Closed);

    // Three failed fetches open the breaker.
    lookup.behave(Behaviour::Fail);
    for i in 0..3 {
        assert_eq!(
            h.breaker_state(),
            BreakerState::Closed,
            "before failure {i}"
        );
        let p = h.run_keys(&enricher, "user_id", &[2]).await;
        assert_eq!(p[0].error(), Some(BACKEND_DOWN));
    }
    assert_eq!(h.breaker_state(), BreakerState::Open);
    assert_eq!(lookup.fetches(), 4);

    // Open: calls are refused without reaching the lookup.
    for _ in 0..2 {
        let p = h.run_keys(&enricher, "user_id", &[2]).await;
        assert_eq!(p[0].error(), Some("circuit_open"));
        assert_eq!(p[0].fields().count(), 0);
    }
    assert_eq!(lookup.fetches(), 4, "no fetch while open");
    assert_eq!(h.stats().short_circuits, 2);
    assert_eq!(h.stats().short_circuits, 2);

    // Open, but a cached key is still served, and is no short-circuit.
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(
        patch_field(&p[0], "user"),
        Some(json!("cached before the outage"))
    );
    assert_eq!(p[0].error(), None);
    assert_eq!(h.stats().short_circuits, 2);

    // Just before the recovery timeout it is still open.
    let_time_pass(RECOVERY - Duration::from_millis(1)).await;
    let p = h.run_keys(&enricher, "user_id", &[2]).await;
    assert_eq!(p[0].error(), Some("circuit_open"));
    assert_eq!(h.stats().short_circuits, 3);

    // After it, half-open; the dependency is back; the probe closes it.
    let_time_pass(Duration::from_millis(1)).await;
    assert_eq!(h.breaker_state(), BreakerState::HalfOpen);
    lookup.behave(Behaviour::Ok).set(2i64, "two");
    let p = h.run_keys(&enricher, "user_id", &[2]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!("two")));
    assert_eq!(h.breaker_state(), BreakerState::Closed);
    assert_eq!(lookup.fetches(), 5);

    // Closed again: new keys are fetched normally.
    lookup.set(3i64, "three");
    let p = h.run_keys(&enricher, "user_id", &[3]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!("three")));
    assert_eq!(lookup.fetches(), 6);

    let s = h.stats();
    assert_eq!(s.short_circuits, 3);
    assert_eq!(s.calls, 6, "only calls that reached the lookup");
    assert_eq!((s.successes, s.failures), (3, 3));
    assert_eq!(s.breaker_opens, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_again_for_a_full_recovery_timeout() {
    let lookup = TestLookup::new();
    lookup.behave(Behaviour::Fail);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::with_breaker("user", breaker(1));

    h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(h.breaker_state(), BreakerState::Open);
    let_time_pass(RECOVERY).await;
    assert_eq!(h.breaker_state(), BreakerState::HalfOpen);

    // The probe fails: open again.
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].error(), Some(BACKEND_DOWN));
    assert_eq!(h.breaker_state(), BreakerState::Open);
    assert_eq!(lookup.fetches(), 2);

    // The recovery timeout starts anew from the failed probe.
    lookup.behave(Behaviour::Ok).set(1i64, "one");
    let_time_pass(RECOVERY - Duration::from_millis(1)).await;
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].error(), Some("circuit_open"));
    let_time_pass(Duration::from_millis(1)).await;
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!("one")));
    assert_eq!(h.breaker_state(), BreakerState::Closed);
    assert_eq!(h.stats().breaker_opens, 2);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_refuses_the_rest() {
    let lookup = TestLookup::new();
    lookup.behave(Behaviour::Fail);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::with_breaker("user", breaker(1));
    h.run_keys(&enricher, "user_id", &[0]).await;
    let_time_pass(RECOVERY).await;

    lookup
        .behave(Behaviour::Ok)
        .latency(Duration::from_millis(50));
    for k in 10..15i64 {
        lookup.set(k, k);
    }
    // Five batches at once, each with its own key: one probe, four refused.
    let patches = join_all((10..15i64).map(|k| {
        let (h, enricher) = (&h, &enricher);
        async move { h.run_keys(enricher, "user_id", &[k]).await.remove(0) }
    }))
    .await;

    let served = patches.iter().filter(|p| p.error().is_none()).count();
    let refused = patches
        .iter()
        .filter(|p| p.error() == Some("circuit_open"))
        .count();
    assert_eq!((served, refused), (1, 4));
    assert_eq!(lookup.fetches(), 2, "the first failure and the probe");
    assert_eq!(h.stats().short_circuits, 4);
    assert_eq!(h.breaker_state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn through_the_pipeline_an_open_breaker_skips_the_enricher_and_recovers() {
    let enricher = TestEnricher::new("geo", "country", "NZ");
    enricher.behave(Behaviour::Fail);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .async_enricher_with(enricher.clone(), EnricherOptions::new().breaker(breaker(2))),
    )
    .await;

    // Two failing batches open the breaker.
    for n in 1..=2 {
        tracing::info!(n, "failing");
        let e = out.wait_for(n).await.pop().unwrap();
        assert_eq!(errors(&e), [("geo".into(), BACKEND_DOWN.into())]);
    }
    let health = running.guard.health();
    assert_eq!(health[0].breaker, BreakerState::Open);

    // Open: the enricher is not called; the event says why.
    tracing::info!("while open");
    let e = out.wait_for(3).await.pop().unwrap();
    assert_eq!(errors(&e), [("geo".into(), "circuit_open".into())]);
    assert_eq!(inserted(&e, "country"), None);
    assert_eq!(enricher.calls(), 2);
    let stats = running.guard.stats();
    assert_eq!(stats.enrichers[0].short_circuits, 1);
    assert_eq!(stats.enrichers[0].failures, 2);

    // The dependency recovers; after the timeout the probe succeeds.
    enricher.behave(Behaviour::Ok);
    let_time_pass(RECOVERY).await;
    tracing::info!("probe");
    let e = out.wait_for(4).await.pop().unwrap();
    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    assert_eq!(inserted(&e, "country"), Some(json!("NZ")));
    assert_eq!(running.guard.health()[0].breaker, BreakerState::Closed);

    tracing::info!("closed");
    let e = out.wait_for(5).await.pop().unwrap();
    assert_eq!(inserted(&e, "country"), Some(json!("NZ")));
    assert_eq!(enricher.calls(), 4);
    assert_eq!(running.guard.stats().enrichers[0].short_circuits, 1);
    running.shutdown().await;
}
