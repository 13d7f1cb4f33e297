//! `Guard::health`: up while started, checks pass and the circuit is
//! closed; down while a health check fails (or start-up has not
//! succeeded); degraded while checks pass but the circuit is open or
//! half-open. It recovers by itself when the dependency does.

mod support;

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::observe::HealthStatus;
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use serde_json::json;
use support::async_support::{
    Behaviour, Emitted, Running, TestEnricher, errors, inserted, let_time_pass, pipeline,
};

const INTERVAL: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn a_failing_health_check_marks_it_down_until_a_check_passes() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    let other = TestEnricher::new("other", "o", 1);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .health_interval(INTERVAL)
            .async_enricher(geo.clone())
            .async_enricher(other.clone()),
    )
    .await;

    let h = running.guard.health();
    assert_eq!(h.len(), 2);
    assert_eq!((h[0].name.as_str(), h[0].status), ("geo", HealthStatus::Up));
    assert_eq!(h[0].last_error, None);
    assert_eq!(h[0].breaker, BreakerState::Closed);

    // The dependency stops answering pings: down after the next check.
    geo.lifecycle().set_healthy(false);
    let_time_pass(INTERVAL / 2).await;
    assert_eq!(running.guard.health()[0].status, HealthStatus::Up);
    let_time_pass(INTERVAL).await;
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Down);
    assert_eq!(h[0].last_error.as_deref(), Some("ping failed"));
    assert_eq!(h[1].status, HealthStatus::Up, "the other is unaffected");
    assert!(h[0].last_check.is_some());

    // It answers again: up after the next check, error cleared.
    geo.lifecycle().set_healthy(true);
    let_time_pass(INTERVAL).await;
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Up);
    assert_eq!(h[0].last_error, None);
    assert_eq!(geo.lifecycle().health_checks(), 2, "one failed, one passed");

    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn health_checks_run_every_interval() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .health_interval(INTERVAL)
            .async_enricher(geo.clone()),
    )
    .await;

    let_time_pass(INTERVAL * 5 + INTERVAL / 2).await;
    assert_eq!(geo.lifecycle().health_checks(), 5);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_enricher_that_has_not_started_is_down_and_not_probed() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.lifecycle().fail_startups(usize::MAX);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .health_interval(INTERVAL)
            .startup_retry_backoff(Duration::from_secs(3600), Duration::from_secs(3600))
            .async_enricher(geo.clone()),
    )
    .await;

    let_time_pass(INTERVAL * 3).await;
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Down);
    assert!(h[0].last_error.is_some());
    assert_eq!(geo.lifecycle().health_checks(), 0);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_degraded_and_a_closed_one_up_again() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.behave(Behaviour::Fail);
    let recovery = Duration::from_secs(30);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .health_interval(Duration::from_secs(3600))
            .async_enricher_with(
                geo.clone(),
                EnricherOptions::new().breaker(
                    BreakerConfig::default()
                        .policy(FailurePolicy::Consecutive(2))
                        .recovery_timeout(recovery),
                ),
            ),
    )
    .await;

    for n in 1..=2 {
        tracing::info!("failing");
        out.wait_for(n).await;
    }
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Degraded);
    assert_eq!(h[0].breaker, BreakerState::Open);

    let_time_pass(recovery).await;
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Degraded, "half-open is degraded");
    assert_eq!(h[0].breaker, BreakerState::HalfOpen);

    geo.behave(Behaviour::Ok);
    tracing::info!("probe");
    let e = out.wait_for(3).await.remove(2);
    assert_eq!(inserted(&e, "country"), Some(json!("NZ")));
    assert!(errors(&e).is_empty());
    let h = running.guard.health();
    assert_eq!(h[0].status, HealthStatus::Up);
    assert_eq!(h[0].breaker, BreakerState::Closed);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_check_with_an_open_circuit_is_down() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.behave(Behaviour::Fail);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .health_interval(INTERVAL)
            .async_enricher_with(
                geo.clone(),
                EnricherOptions::new().breaker(
                    BreakerConfig::default()
                        .policy(FailurePolicy::Consecutive(1))
                        .recovery_timeout(Duration::from_secs(3600)),
                ),
            ),
    )
    .await;
    tracing::info!("failing");
    out.wait_for(1).await;
    assert_eq!(running.guard.health()[0].status, HealthStatus::Degraded);

    geo.lifecycle().set_healthy(false);
    let_time_pass(INTERVAL).await;
    assert_eq!(running.guard.health()[0].status, HealthStatus::Down);
    running.shutdown().await;
}
