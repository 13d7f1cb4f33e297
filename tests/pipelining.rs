//! Batches overlap in the async stage: while one batch waits on a slow
//! enricher the next ones are already being enriched, and sinks still get
//! every event in the order it was logged. With a depth of 1, each batch
//! waits for the one before it.

mod support;

use std::time::Duration;

use support::async_support::{Emitted, Running, TestEnricher, inserted, pipeline};
use tokio::time::Instant;

const LATENCY: Duration = Duration::from_millis(100);

/// Logs 4 events as 4 batches of one, each enriched in `LATENCY`, and
/// returns how long (on the paused clock) until all 4 were written, and
/// their order.
async fn four_slow_batches(depth: usize) -> (Duration, Vec<u64>) {
    let slow = TestEnricher::new("slow", "slow", true);
    slow.latency(LATENCY);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .batch_size(1)
            .linger(Duration::ZERO)
            .pipeline_depth(depth)
            .enrich_deadline(Duration::from_secs(10))
            .async_enricher_with(
                slow.clone(),
                fapilog::enrich::EnricherOptions::new().call_timeout(Duration::from_secs(10)),
            ),
    )
    .await;
    let start = Instant::now();
    for seq in 0..4u64 {
        tracing::info!(seq, "work");
    }
    let events = out.wait_for(4).await;
    let took = start.elapsed();
    running.shutdown().await;
    assert_eq!(slow.calls(), 4, "one enrichment per batch");
    assert!(events.iter().all(|e| inserted(e, "slow").is_some()));
    let order = events
        .iter()
        .map(|e| e.field("seq").and_then(|v| v.as_u64()).unwrap())
        .collect();
    (took, order)
}

#[tokio::test(start_paused = true)]
async fn slow_batches_overlap_and_are_written_in_order() {
    let (took, order) = four_slow_batches(4).await;
    assert_eq!(order, [0, 1, 2, 3]);
    assert!(
        took < 2 * LATENCY,
        "4 batches enriched side by side took {took:?}, not about one latency"
    );
}

#[tokio::test(start_paused = true)]
async fn depth_one_enriches_one_batch_at_a_time() {
    let (took, order) = four_slow_batches(1).await;
    assert_eq!(order, [0, 1, 2, 3]);
    assert!(
        took >= 4 * LATENCY,
        "with depth 1 each batch waits for the one before: took {took:?}"
    );
}
