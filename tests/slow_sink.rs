//! A slow sink does not eat the enrichers' time: batches behind the one
//! being written keep being enriched, so their calls neither time out nor
//! count against a healthy dependency's circuit breaker.
//!
//! Real time, not tokio's paused clock: what is under test is whether
//! enrichment runs while a write is pending, which the paused clock's
//! auto-advance hides. The margins are wide (30 ms of work against a
//! 400 ms deadline, behind a 1 s write).

mod support;

use std::time::Duration;

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, EnricherOptions, Patch};
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use fapilog::{Event, Sink, SinkError};
use support::async_support::{Emitted, EmittedSink, Running, errors, inserted, pipeline};

/// Three round trips of 10 ms per batch, one after another (one for the
/// batch holding `seq` 0, so the first write starts while the other
/// batches are between round trips).
struct ThreeHops;

impl AsyncEnricher for ThreeHops {
    fn name(&self) -> &str {
        "hops"
    }
    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        let first = events
            .iter()
            .any(|e| e.field("seq").and_then(|v| v.as_u64()) == Some(0));
        for _ in 0..if first { 1 } else { 3 } {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for p in out {
            p.insert("hops", 3);
        }
        Ok(())
    }
}

/// Takes 1 s per batch (a congested network sink).
struct SlowSink(EmittedSink);

impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }
    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Sink::write_batch(&mut self.0, events).await
    }
}

#[tokio::test]
async fn enrichment_keeps_going_while_a_slow_sink_writes() {
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            // Replace the default collecting sink with the slow one.
            .batch_size(1)
            .linger(Duration::ZERO)
            .enrich_deadline(Duration::from_millis(400))
            .async_enricher_with(
                ThreeHops,
                EnricherOptions::new()
                    .call_timeout(Duration::from_millis(400))
                    .breaker(BreakerConfig::default().policy(FailurePolicy::Consecutive(1))),
            )
            .sink(SlowSink(out.sink())),
    )
    .await;
    // A burst: four batches start enrichment together (pipeline depth 4),
    // then the first one's write takes 1 s.
    for seq in 0..4u64 {
        tracing::info!(seq, "work");
    }
    // Each event reaches both sinks; wait for the slow one's copies too.
    let events = out.wait_for(8).await;
    let stats = running.guard.stats();
    let health = running.guard.health();
    running.shutdown().await;
    for e in &events {
        assert!(errors(e).is_empty(), "{:?}", errors(e));
        assert_eq!(inserted(e, "hops"), Some(serde_json::json!(3)));
    }
    assert_eq!(stats.enrichers[0].failures, 0, "{:?}", stats.enrichers[0]);
    assert_eq!(stats.enrichers[0].timeouts, 0);
    assert_eq!(health[0].breaker, BreakerState::Closed);
}
