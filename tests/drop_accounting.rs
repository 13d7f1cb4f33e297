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
    /// Events that were past the queue (in the sink and its channel) when
    /// the queue began to fill: seq 0 up to this, exclusive.
    downstream: u64,
}

/// Logs seq 0 and waits until the sink is stuck writing it; logs one event
/// at a time until the queue holds one (the sink's channel is full and the
/// worker waits on it); then logs the rest into the queue of `CAPACITY`,
/// lets the sink go and shuts down.
fn overflow_a_stalled_sink(policy: Overflow) -> Outcome {
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .overflow(policy)
            .queue_capacity(CAPACITY)
            .drop_report_interval(Duration::from_millis(1))
            // The stalled sink is waited for, not given up on.
            .sink_timeout(Duration::from_secs(600))
            .sink(StallingSink::new(&out, &gate, &entered)),
    );
    let log = |seq: u64| tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq, "x"));

    log(0);
    assert!(entered.wait_for(1), "the worker never wrote a batch");
    let mut seq = 1;
    loop {
        log(seq);
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
        if guard.stats().queue_depth == 1 {
            break;
        }
        assert!(
            seq < 100,
            "the worker kept taking events past a stalled sink"
        );
    }
    let downstream = seq - 1;
    for seq in seq..N {
        log(seq);
    }
    let stats = guard.stats();
    assert_eq!(stats.queue_depth, CAPACITY, "{stats:?}");
    assert_eq!(stats.dropped, N - downstream - CAPACITY as u64, "{stats:?}");

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
        downstream,
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
    // The events that fit were the oldest: those past the queue, and the
    // first CAPACITY after them.
    let expected: Vec<u64> = (0..o.downstream + CAPACITY as u64).collect();
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
    // Those past the queue were already on their way; the queue ends up
    // holding the last CAPACITY events logged.
    let newest = N - CAPACITY as u64..N;
    let expected: Vec<u64> = (0..o.downstream).chain(newest).collect();
    assert_eq!(o.app, expected);
    assert_eq!(o.app.len() as u64 + o.report.dropped, N, "{:?}", o.report);
    assert_drop_records(&o);
    assert_eq!(o.report.emitted + o.report.dropped, N, "{:?}", o.report);
}
