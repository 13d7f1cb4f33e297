//! Sinks are isolated from each other: one that fails or panics has its
//! failures counted and does not cost the others a single event.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use support::{
    Collected, FAILING_SINK_ERROR, FailingSink, PanickingSink, start, u64_field, wait_until,
};

const N: u64 = 1_000;

#[test]
fn a_failing_sink_does_not_stop_the_others() {
    let healthy = Collected::new();
    let failing = FailingSink::default();
    let failing_writes = Arc::clone(&failing.writes);
    let (dispatch, guard) = start(
        fapilog::builder()
            .batch_size(64)
            .sink(failing)
            .sink(healthy.sink().named("healthy")),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..N {
            tracing::info!(seq, "x");
        }
    });
    assert!(
        wait_until(|| guard.stats().emitted == N),
        "{:?}",
        guard.stats()
    );

    let stats = guard.stats();
    let writes = failing_writes.load(Ordering::SeqCst);
    assert!(writes > 0);
    assert_eq!(stats.sinks.len(), 2);
    let (bad, good) = (&stats.sinks[0], &stats.sinks[1]);
    assert_eq!(bad.name, "failing");
    assert_eq!(
        bad.failures, writes,
        "one failure per failed write: {stats:?}"
    );
    let last = bad.last_error.as_deref().unwrap_or_default();
    assert!(last.contains(FAILING_SINK_ERROR), "{last:?}");
    assert_eq!(good.name, "healthy");
    assert_eq!(good.failures, 0, "{stats:?}");
    assert_eq!(good.last_error, None);
    assert_eq!(stats.sink_failures, writes, "{stats:?}");

    let report = guard.shutdown_blocking();
    assert_eq!(
        report.sink_failures,
        failing_writes.load(Ordering::SeqCst),
        "{report:?}"
    );
    assert_eq!(report.dropped, 0, "{report:?}");
    let seqs: Vec<u64> = healthy
        .app_events()
        .iter()
        .map(|e| u64_field(e, "seq"))
        .collect();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "the healthy sink got everything, in order"
    );
}

#[test]
fn a_panicking_sink_does_not_stop_the_others() {
    let healthy = Collected::new();
    let panicking = PanickingSink::default();
    let panics = Arc::clone(&panicking.writes);
    let (dispatch, guard) = start(
        fapilog::builder()
            .batch_size(256)
            .sink(healthy.sink().named("healthy"))
            .sink(panicking),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..N {
            tracing::info!(seq, "x");
        }
    });
    let report = guard.shutdown_blocking();

    let seqs: Vec<u64> = healthy
        .app_events()
        .iter()
        .map(|e| u64_field(e, "seq"))
        .collect();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "the healthy sink got everything, in order"
    );
    let panics = panics.load(Ordering::SeqCst);
    assert!(panics > 0);
    assert_eq!(
        report.sink_failures, panics,
        "one failure per panic: {report:?}"
    );
    assert_eq!(report.emitted, N, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
}
