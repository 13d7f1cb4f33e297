//! Records join their trace: a valid `traceparent` field of the event, or
//! of the innermost span that has one, becomes the record's top-level
//! `trace_id` and `span_id`; a malformed one is kept as a field, ignored as
//! a context, counted, and never a panic.

mod support;

use support::{Collected, start};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const INNER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn traceparent_of_a_span_or_the_event_becomes_the_records_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let (dispatch, guard) = start(fapilog::builder().file(fapilog::sink::FileSink::builder(&path)));
    tracing::dispatcher::with_default(&dispatch, || {
        let request = tracing::info_span!("request", traceparent = TP);
        let _r = request.enter();
        tracing::info!("in the request");
        {
            // A span recorded later: the innermost one wins.
            let call = tracing::info_span!("call", traceparent = tracing::field::Empty);
            call.record("traceparent", INNER);
            let _c = call.enter();
            tracing::info!("in the call");
        }
        tracing::info!(traceparent = INNER, "its own");
    });
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("outside"));
    guard.shutdown_blocking();

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids = |i: usize| (lines[i]["trace_id"].clone(), lines[i]["span_id"].clone());
    assert_eq!(
        ids(0),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into()
        )
    );
    assert_eq!(
        ids(1),
        (
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into()
        )
    );
    assert_eq!(
        ids(2),
        (
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into()
        )
    );
    assert_eq!(
        ids(3),
        (serde_json::Value::Null, serde_json::Value::Null),
        "no trace, no keys"
    );
    assert!(lines[3].get("trace_id").is_none());
}

#[test]
fn a_malformed_traceparent_is_ignored_and_counted() {
    let out = Collected::new();
    let (dispatch, guard) = start(fapilog::builder().sink(out.sink()));
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("request", traceparent = TP);
        let _r = span.enter();
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
        ] {
            tracing::info!(traceparent = bad, "bad");
        }
        tracing::info!(traceparent = 42, "not even text");
    });
    let stats = guard.stats();
    guard.shutdown_blocking();
    assert_eq!(stats.malformed_traceparents, 6, "{stats:?}");
    for e in out.app_events() {
        // The field is kept as logged; the span's valid context applies.
        assert!(e.field("traceparent").is_some());
        let t = e.trace().expect("the span's context");
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
