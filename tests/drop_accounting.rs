//! When the queue overflows, every event is either written or counted as
//! dropped, exactly; the right events survive for each policy; and the
//! stream itself says that events were dropped.

mod support;

use std::time::Duration;

use fapilog::{Event, Overflow};
use support::{Collected, Gate, Signal, StallingSink, start, u64_field, wait_until};

const CAPACITY: usize = 64;
const N: u64 = 1_000;

/// What the sink received and what the pipeline reported.
struct Outcome {
    app: Vec<u64>,
    records: Vec<Event>,
    report: fapilog::ShutdownReport,
}

/// Logs seq 0, waits until the worker is stuck writing it, logs seq 1..N
/// into a queue of `CAPACITY`, then lets the sink go and shuts down.
fn overflow_a_stalled_sink(policy: Overflow) -> Outcome {
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .overflow(policy)
            .queue_capacity(CAPACITY)
            .drop_report_interval(Duration::from_millis(1))
            .sink(StallingSink::new(&out, &gate, &entered)),
    );
    let log = |seq: u64| tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq, "x"));

    log(0);
    assert!(entered.wait_for(1), "the worker never wrote a batch");
    for seq in 1..N {
        log(seq);
    }
    let stats = guard.stats();
    assert_eq!(stats.queue_depth, CAPACITY, "{stats:?}");
    assert_eq!(stats.dropped, N - 1 - CAPACITY as u64, "{stats:?}");

    gate.open();
    // While the pipeline is still running, the drops show up in the stream.
    assert!(
        wait_until(|| !out.internal_events().is_empty()),
        "no \"events dropped\" record was written while running"
    );
    let report = guard.shutdown_blocking();
    assert!(!report.timed_out, "{report:?}");

    Outcome {
        app: out
            .app_events()
            .iter()
            .map(|e| u64_field(e, "seq"))
            .collect(),
        records: out.internal_events(),
        report,
    }
}

/// The "events dropped" records add up to the drops the report counts.
fn assert_drop_records(o: &Outcome) {
    assert!(!o.records.is_empty());
    let mut sum = 0;
    let mut last_total = 0;
    for r in &o.records {
        assert_eq!(r.target(), "fapilog", "{r:?}");
        assert_eq!(r.message(), Some("events dropped"), "{r:?}");
        assert_eq!(r.level(), tracing::Level::WARN, "{r:?}");
        let dropped = u64_field(r, "dropped");
        let total = u64_field(r, "dropped_total");
        assert!(dropped > 0, "{r:?}");
        sum += dropped;
        assert_eq!(total, sum, "dropped_total is the running sum: {r:?}");
        last_total = total;
    }
    assert_eq!(last_total, o.report.dropped, "{:?}", o.report);
}

#[test]
fn drop_newest_counts_every_drop_exactly() {
    let o = overflow_a_stalled_sink(Overflow::DropNewest);

    assert!(o.report.dropped > 0, "{:?}", o.report);
    // The events that fit were the oldest: seq 0 (being written) and the
    // first CAPACITY after it.
    let expected: Vec<u64> = (0..=CAPACITY as u64).collect();
    assert_eq!(o.app, expected);
    assert_eq!(o.app.len() as u64 + o.report.dropped, N, "{:?}", o.report);
    assert_drop_records(&o);
    // The report's `emitted` counts the application's events, so that
    // emitted + dropped is what was logged.
    assert_eq!(o.report.emitted + o.report.dropped, N, "{:?}", o.report);
}

#[test]
fn drop_oldest_keeps_the_newest_events() {
    let o = overflow_a_stalled_sink(Overflow::DropOldest);

    assert!(o.report.dropped > 0, "{:?}", o.report);
    // seq 0 was already being written; the queue ends up holding the last
    // CAPACITY events logged.
    let newest = N - CAPACITY as u64..N;
    let expected: Vec<u64> = std::iter::once(0).chain(newest).collect();
    assert_eq!(o.app, expected);
    assert_eq!(o.app.len() as u64 + o.report.dropped, N, "{:?}", o.report);
    assert_drop_records(&o);
    assert_eq!(o.report.emitted + o.report.dropped, N, "{:?}", o.report);
}
