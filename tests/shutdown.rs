//! Shutting down loses nothing that was logged before it; logging during or
//! after it is counted as dropped, never a panic; dropping the guard drains
//! like a shutdown.

mod support;

use std::time::Duration;

use fapilog::Overflow;
use support::{
    Collected, Counter, Gate, PATIENCE, Signal, StallingSink, start, u64_field, wait_until,
};

const CAPACITY: usize = 1024;

#[test]
fn a_million_events_under_block_are_all_emitted() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250_000;
    const TOTAL: u64 = THREADS * PER_THREAD;

    let counter = Counter::new();
    let gate = Gate::new();
    let entered = Signal::new();
    // The first batch waits at the gate, so the queue fills up and the
    // producers have to block; after that the gate stays open.
    let stall = StallingSink::new(&Collected::new(), &gate, &entered);
    let (dispatch, guard) = start(
        fapilog::builder()
            .overflow(Overflow::Block)
            .queue_capacity(CAPACITY)
            .block_timeout(PATIENCE)
            .sink(stall)
            .sink(counter.sink()),
    );

    let producers: Vec<_> = (0..THREADS)
        .map(|_| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for seq in 0..PER_THREAD {
                        tracing::info!(seq, "load");
                    }
                });
            })
        })
        .collect();

    // The queue is full while the producers still have most of their events
    // to log: from here on they can only proceed by blocking.
    assert!(entered.wait_for(1), "the worker never wrote a batch");
    assert!(
        wait_until(|| guard.stats().queue_depth == CAPACITY),
        "the queue never filled up: {:?}",
        guard.stats()
    );
    assert_eq!(guard.stats().dropped, 0);
    gate.open();

    for p in producers {
        p.join().expect("producer thread");
    }
    let report = guard.shutdown_blocking();

    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
    assert_eq!(report.emitted, TOTAL, "{report:?}");
    assert_eq!(counter.app(), TOTAL, "events the sink received");
    assert_eq!(
        counter.internal(),
        0,
        "no \"events dropped\" record without drops"
    );
}

#[test]
fn logging_during_and_after_shutdown_is_dropped_and_counted() {
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .overflow(Overflow::Block)
            .queue_capacity(1)
            .block_timeout(PATIENCE)
            .sink(StallingSink::new(&out, &gate, &entered)),
    );
    let log = |seq: u64| tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq, "x"));

    // seq 0 reaches the sink, which stalls; the next few fill the sink's
    // channel, until one stays in the queue (of 1): the pipeline is full.
    log(0);
    assert!(entered.wait_for(1), "the worker never wrote a batch");
    let mut queued = 1u64;
    loop {
        log(queued);
        queued += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
        if guard.stats().queue_depth == 1 {
            break;
        }
        assert!(queued < 100, "the queue never filled");
    }

    // seq 2 has to wait for room, which only the shutdown can end: its log
    // call returning is the sign that intake is closed.
    let blocked = {
        let dispatch = dispatch.clone();
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq = queued, "x"))
        })
    };
    let shutdown = std::thread::spawn(move || guard.shutdown_blocking());
    blocked
        .join()
        .expect("a log call during shutdown must not panic");

    // Intake is closed but the worker is still draining: this is counted.
    log(queued + 1);

    gate.open();
    let report = shutdown.join().expect("shutdown thread");

    // And once shutdown has returned, logging is still harmless.
    for seq in queued + 2..queued + 8 {
        log(seq);
    }

    assert!(!report.timed_out, "{report:?}");
    let seqs: Vec<u64> = out
        .app_events()
        .iter()
        .map(|e| u64_field(e, "seq"))
        .collect();
    assert_eq!(
        seqs,
        (0..queued).collect::<Vec<_>>(),
        "only what was queued before shutdown is written"
    );
    assert_eq!(
        report.dropped, 2,
        "the two logged after intake closed: {report:?}"
    );
    // `emitted` counts what the application logged; fapilog's own
    // "events dropped" record must not make emitted + dropped exceed it.
    assert_eq!(
        report.emitted + report.dropped,
        queued + 2,
        "{} events were logged before shutdown returned: {report:?}",
        queued + 2
    );
    assert_eq!(report.emitted, queued, "{report:?}");
}

#[test]
fn dropping_the_guard_drains_the_queue() {
    const N: u64 = 100;
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .batch_size(1)
            .drop_timeout(PATIENCE)
            // Each event takes a while to write, so most of them are still
            // queued when the guard is dropped.
            .sink(StallingSink::new(&out, &gate, &entered).with_delay(Duration::from_millis(1))),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..N {
            tracing::info!(seq, "x");
        }
    });
    assert!(entered.wait_for(1), "the worker never wrote a batch");
    assert_eq!(out.app_events().len(), 0, "nothing written before the drop");

    gate.open();
    drop(guard);

    let seqs: Vec<u64> = out
        .app_events()
        .iter()
        .map(|e| u64_field(e, "seq"))
        .collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>());
}

/// Dropping the guard inside a task of a multi-thread runtime that also
/// runs the worker still drains everything (the waiting thread hands its
/// other tasks, the worker among them, to the runtime's other threads).
#[test]
fn dropping_the_guard_in_a_task_of_the_worker_runtime_drains() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = Collected::new();
    let sink = out.sink();
    rt.block_on(async move {
        let (dispatch, guard) = support::start_async(
            fapilog::builder()
                .runtime(tokio::runtime::Handle::current())
                .drop_timeout(Duration::from_secs(20))
                .sink(sink),
        )
        .await;
        tokio::spawn(async move {
            tracing::dispatcher::with_default(&dispatch, || {
                for seq in 0..100u64 {
                    tracing::info!(seq, "before drop");
                }
            });
            let started = std::time::Instant::now();
            let report = guard.shutdown_blocking();
            assert_eq!((report.emitted, report.dropped), (100, 0));
            assert!(!report.timed_out);
            assert!(started.elapsed() < Duration::from_secs(20));
        })
        .await
        .unwrap();
    });
    assert_eq!(out.app_events().len(), 100);
}

/// `shutdown_blocking` from the body of `#[tokio::main]` (a multi-thread
/// runtime's `block_on` thread) works and drains.
#[test]
fn shutdown_blocking_from_an_async_main_drains() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = Collected::new();
    let sink = out.sink();
    let report = rt.block_on(async move {
        let (dispatch, guard) = support::start(fapilog::builder().sink(sink));
        tracing::dispatcher::with_default(&dispatch, || {
            for seq in 0..50u64 {
                tracing::info!(seq, "in main");
            }
        });
        guard.shutdown_blocking()
    });
    assert_eq!((report.emitted, report.dropped), (50, 0));
    assert_eq!(out.app_events().len(), 50);
}
