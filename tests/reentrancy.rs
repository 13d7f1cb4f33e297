//! The pipeline does not feed on itself: what a sink logs while writing is
//! not captured, and an enricher that panics costs neither the event nor
//! the enrichers after it.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fapilog::Event;
use support::{
    Collected, LoggingSink, SINK_OWN_MESSAGE, start, start_async, u64_field, wait_until,
};

const K: u64 = 500;

fn logging_sink() -> (
    LoggingSink,
    Collected,
    Arc<OnceLock<tracing::Dispatch>>,
    Arc<AtomicU64>,
) {
    let out = Collected::new();
    let dispatch = Arc::new(OnceLock::new());
    let logged = Arc::new(AtomicU64::new(0));
    let sink = LoggingSink {
        out: out.clone(),
        dispatch: dispatch.clone(),
        logged: logged.clone(),
    };
    (sink, out, dispatch, logged)
}

fn assert_only_app_events(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| u64_field(e, "seq")).collect();
    assert_eq!(
        seqs,
        (0..K).collect::<Vec<_>>(),
        "the sink saw only the K events logged"
    );
    assert!(events.iter().all(|e| e.message() != Some(SINK_OWN_MESSAGE)));
}

#[test]
fn a_sink_that_logs_on_the_worker_thread_does_not_loop() {
    let (sink, out, slot, logged) = logging_sink();
    let (dispatch, guard) = start(fapilog::builder().batch_size(16).sink(sink));
    slot.set(dispatch.clone()).unwrap();

    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..K {
            tracing::info!(seq, "app");
        }
    });
    let report = guard.shutdown_blocking();

    assert!(logged.load(Ordering::SeqCst) > 0, "the sink did log");
    assert_only_app_events(&out.events());
    assert_eq!(report.emitted, K, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_logs_on_the_application_runtime_does_not_loop() {
    let (sink, out, slot, logged) = logging_sink();
    let (dispatch, guard) = start_async(
        fapilog::builder()
            .runtime(tokio::runtime::Handle::current())
            .batch_size(16)
            .sink(sink),
    )
    .await;
    slot.set(dispatch.clone()).unwrap();

    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..K {
            tracing::info!(seq, "app");
        }
    });
    let report = guard.shutdown().await;

    assert!(logged.load(Ordering::SeqCst) > 0, "the sink did log");
    assert_only_app_events(&out.events());
    assert_eq!(report.emitted, K, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
}

#[test]
fn a_panicking_enricher_loses_no_event() {
    let out = Collected::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .enricher(|e: &mut Event| e.insert("before", true))
            .enricher(|e: &mut Event| {
                if e.field("explode") == Some(&true.into()) {
                    panic!("enricher bug");
                }
                e.insert("middle", true);
            })
            .enricher(|e: &mut Event| e.insert("after", true))
            .sink(out.sink()),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(seq = 0u64, "fine");
        tracing::info!(seq = 1u64, explode = true, "boom");
        tracing::info!(seq = 2u64, "fine again");
    });
    assert!(
        wait_until(|| guard.stats().emitted == 3),
        "{:?}",
        guard.stats()
    );
    assert_eq!(guard.stats().enricher_panics, 1, "{:?}", guard.stats());
    let report = guard.shutdown_blocking();

    let events = out.events();
    let seqs: Vec<u64> = events.iter().map(|e| u64_field(e, "seq")).collect();
    assert_eq!(seqs, [0, 1, 2], "every event is written");
    assert_eq!(report.enricher_panics, 1, "{report:?}");
    assert_eq!(report.emitted, 3, "{report:?}");

    let boom = &events[1];
    assert_eq!(boom.field("before"), Some(&true.into()));
    assert_eq!(
        boom.field("middle"),
        None,
        "the panicking enricher added nothing"
    );
    assert_eq!(
        boom.field("after"),
        Some(&true.into()),
        "later enrichers still ran"
    );
    for e in [&events[0], &events[2]] {
        assert_eq!(e.field("middle"), Some(&true.into()), "{e:?}");
    }
}
