//! The pipeline's own counters reach the `metrics` facade: enqueued,
//! emitted, dropped and queue depth, equal to what the test did and to
//! `Stats`.

mod support;

use std::collections::HashMap;

use fapilog::Overflow;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::{Collected, Gate, Signal, StallingSink};

fn facade(snapshotter: &metrics_util::debugging::Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

fn counter(f: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match f.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("counter {name}: {other:?}"),
    }
}

#[test]
fn pipeline_counters_reach_the_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    // The recorder only needs to be in place while the pipeline is built.
    let (dispatch, guard) = metrics::with_local_recorder(&recorder, || {
        support::start(
            fapilog::builder()
                .queue_capacity(8)
                .overflow(Overflow::DropNewest)
                .linger(std::time::Duration::ZERO)
                .sink(StallingSink::new(&out, &gate, &entered)),
        )
    });
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(seq = 0u64, "first");
    });
    // The sink holds the first batch; its channel and the queue hold a few
    // dozen more (each batch at most the queue's 8), the rest is dropped.
    assert!(entered.wait_for(1), "the sink received the first batch");
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 1..=500u64 {
            tracing::info!(seq, "more");
        }
    });
    let stats_dropped = guard.stats().dropped;
    gate.open();
    let report = guard.shutdown_blocking();
    assert!(stats_dropped >= 400, "{stats_dropped}");
    assert_eq!(
        report.dropped, stats_dropped,
        "nothing dropped after the burst"
    );
    assert_eq!(report.emitted + report.dropped, 501);

    let f = facade(&snapshotter);
    assert_eq!(counter(&f, "fapilog_events_emitted_total"), report.emitted);
    assert_eq!(counter(&f, "fapilog_events_dropped_total"), report.dropped);
    assert_eq!(counter(&f, "fapilog_events_enqueued_total"), report.emitted);
    match f.get("fapilog_queue_depth") {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 0.0),
        other => panic!("gauge fapilog_queue_depth: {other:?}"),
    }
}

/// Every pipeline counter and gauge, by (name, `pipeline` label).
fn labelled(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> HashMap<(String, String), DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let label = key.key().labels().find(|l| l.key() == "pipeline")?;
            Some((
                (key.key().name().to_owned(), label.value().to_owned()),
                value,
            ))
        })
        .collect()
}

#[test]
fn counters_move_while_a_sink_is_stuck_and_pipelines_are_labelled_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (stuck, stuck_guard, other, other_guard) = metrics::with_local_recorder(&recorder, || {
        let (stuck, stuck_guard) = support::start(
            fapilog::builder()
                .pipeline_name("stuck")
                .queue_capacity(4)
                .overflow(Overflow::DropNewest)
                .metrics_interval(std::time::Duration::from_millis(10))
                .sink(StallingSink::new(&out, &gate, &entered)),
        );
        let (other, other_guard) = support::start(
            fapilog::builder()
                .pipeline_name("other")
                .sink(Collected::new().sink()),
        );
        (stuck, stuck_guard, other, other_guard)
    });
    tracing::dispatcher::with_default(&stuck, || tracing::info!("first"));
    assert!(entered.wait_for(1), "the sink holds the first batch");
    tracing::dispatcher::with_default(&stuck, || {
        for _ in 0..200 {
            tracing::info!("more");
        }
    });
    tracing::dispatcher::with_default(&other, || tracing::info!("elsewhere"));
    // No batch is written while the sink is stuck, yet the drops show.
    let key = |n: &str, p: &str| (n.to_owned(), p.to_owned());
    let published = support::wait_until(|| {
        matches!(
            labelled(&snapshotter).get(&key("fapilog_events_dropped_total", "stuck")),
            Some(DebugValue::Counter(n)) if *n == stuck_guard.stats().dropped && *n > 0
        )
    });
    assert!(
        published,
        "dropped events were never published while the sink was stuck"
    );
    assert!(
        labelled(&snapshotter).contains_key(&key("fapilog_queue_depth", "stuck")),
        "the queue depth gauge is labelled too"
    );
    gate.open();
    let stuck_report = stuck_guard.shutdown_blocking();
    let other_report = other_guard.shutdown_blocking();
    let f = labelled(&snapshotter);
    assert!(matches!(
        f.get(&key("fapilog_events_emitted_total", "stuck")),
        Some(DebugValue::Counter(n)) if *n == stuck_report.emitted
    ));
    assert!(
        matches!(
            f.get(&key("fapilog_events_emitted_total", "other")),
            Some(DebugValue::Counter(1))
        ),
        "the other pipeline's totals are its own: {other_report:?}"
    );
}
