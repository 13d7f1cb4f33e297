//! Sinks see each thread's events in the order that thread logged them,
//! and see every one of them exactly once.

mod support;

use std::collections::HashMap;

use support::{Collected, start, u64_field};

const THREADS: u64 = 4;
const PER_THREAD: u64 = 25_000;

#[test]
fn per_thread_order_is_preserved_and_nothing_is_lost_or_duplicated() {
    let out = Collected::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .sink(out.sink())
            // Small enough that producers regularly wait for the worker.
            .queue_capacity(1024),
    );

    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for seq in 0..PER_THREAD {
                        tracing::info!(producer = t, seq, "tick");
                    }
                });
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer thread");
    }
    let report = guard.shutdown_blocking();

    let events = out.events();
    assert_eq!(report.dropped, 0, "{report:?}");
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(events.len() as u64, THREADS * PER_THREAD, "{report:?}");
    assert_eq!(report.emitted, THREADS * PER_THREAD, "{report:?}");

    // Next expected seq per producer: strictly increasing by exactly one
    // means in order, none missing, none duplicated.
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut thread_of: HashMap<u64, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.message(), Some("tick"), "event #{i}: {e:?}");
        let producer = u64_field(e, "producer");
        let seq = u64_field(e, "seq");
        let expected = next.entry(producer).or_insert(0);
        assert_eq!(
            seq, *expected,
            "event #{i}: producer {producer} logged seq {expected} next, sink got {seq}"
        );
        *expected += 1;
        // The captured thread id agrees with the tag: one thread per producer.
        let tid = *thread_of.entry(producer).or_insert(e.thread_id());
        assert_eq!(e.thread_id(), tid, "event #{i} changed thread id");
    }
    assert_eq!(next.len() as u64, THREADS);
    for (producer, n) in next {
        assert_eq!(n, PER_THREAD, "producer {producer}");
    }
    let mut tids: Vec<u64> = thread_of.into_values().collect();
    tids.sort_unstable();
    tids.dedup();
    assert_eq!(
        tids.len() as u64,
        THREADS,
        "each producer has its own thread id"
    );
}
