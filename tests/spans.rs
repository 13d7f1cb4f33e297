//! What an event carries from its call site: span fields root to leaf
//! (with values recorded later), field types, the thread, and field lookup
//! through the span stack.

mod support;

use std::path::{Path, PathBuf};

use fapilog::{Event, Guard, Value};
use support::{Collected, start, wait_until};
use tracing::Dispatch;

/// Runs `f` under a fresh pipeline and returns the events it captured.
fn capture(f: impl FnOnce()) -> Vec<Event> {
    let out = Collected::new();
    let (dispatch, guard) = start(fapilog::builder().sink(out.sink()));
    tracing::dispatcher::with_default(&dispatch, f);
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
    out.events()
}

fn span_fields(e: &Event) -> Vec<(String, Vec<(String, Value)>)> {
    e.spans()
        .map(|s| {
            let fields = s.fields().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            (s.name().to_owned(), fields)
        })
        .collect()
}

fn fields(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn span_fields_are_captured_root_to_leaf_with_recorded_values() {
    let events = capture(|| {
        let root = tracing::info_span!("request", user_id = 42u64, path = "/orders");
        let _root = root.enter();
        let mid = tracing::info_span!("db", table = "orders", rows = tracing::field::Empty);
        let _mid = mid.enter();
        tracing::info!("before record");
        mid.record("rows", 3u64);
        let leaf = tracing::info_span!("retry", attempt = 1u64);
        let _leaf = leaf.enter();
        tracing::info!("inside");
        // Recording again replaces the value in place.
        leaf.record("attempt", 2u64);
        tracing::info!("after second record");
    });
    assert_eq!(events.len(), 3);

    let root = (
        "request".to_owned(),
        fields(&[("user_id", 42.into()), ("path", "/orders".into())]),
    );
    let db_before = ("db".to_owned(), fields(&[("table", "orders".into())]));
    let db = (
        "db".to_owned(),
        fields(&[("table", "orders".into()), ("rows", 3.into())]),
    );
    assert_eq!(span_fields(&events[0]), [root.clone(), db_before]);
    assert_eq!(
        span_fields(&events[1]),
        [
            root.clone(),
            db.clone(),
            ("retry".to_owned(), fields(&[("attempt", 1.into())]))
        ]
    );
    assert_eq!(
        span_fields(&events[2]),
        [
            root,
            db,
            ("retry".to_owned(), fields(&[("attempt", 2.into())]))
        ]
    );
}

#[test]
fn a_later_record_does_not_change_events_already_captured() {
    let events = capture(|| {
        let span = tracing::info_span!("job", state = "queued");
        let _e = span.enter();
        tracing::info!("first");
        span.record("state", "running");
        tracing::info!("second");
    });
    assert_eq!(events[0].field("state"), Some(&"queued".into()));
    assert_eq!(events[1].field("state"), Some(&"running".into()));
}

#[derive(Debug)]
#[allow(dead_code)] // read through its Debug form only
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn event_field_types_are_preserved() {
    let addr: std::net::Ipv4Addr = "10.0.0.1".parse().unwrap();
    let events = capture(|| {
        tracing::info!(
            neg = i64::MIN,
            big = u64::MAX,
            ratio = 0.25f64,
            ok = true,
            name = "alice",
            point = ?Point { x: 1, y: -2 },
            addr = %addr,
            "typed"
        );
    });
    let e = &events[0];
    assert_eq!(e.message(), Some("typed"));
    let got: Vec<(&str, &Value)> = e.fields().collect();
    let names: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        ["neg", "big", "ratio", "ok", "name", "point", "addr"]
    );

    assert_eq!(e.field("neg").and_then(Value::as_i64), Some(i64::MIN));
    assert_eq!(e.field("big").and_then(Value::as_u64), Some(u64::MAX));
    let ratio = e.field("ratio").unwrap();
    assert!(ratio.is_f64(), "{ratio:?}");
    assert_eq!(ratio.as_f64(), Some(0.25));
    assert_eq!(e.field("ok"), Some(&Value::Bool(true)));
    assert_eq!(e.field("name"), Some(&Value::from("alice")));
    assert_eq!(
        e.field("point"),
        Some(&Value::from("Point { x: 1, y: -2 }"))
    );
    assert_eq!(e.field("addr"), Some(&Value::from("10.0.0.1")));
}

#[test]
fn the_logging_thread_is_recorded() {
    let out = Collected::new();
    let (dispatch, guard) = start(fapilog::builder().sink(out.sink()));
    let (name, id) = std::thread::Builder::new()
        .name("billing-worker".to_owned())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || tracing::info!("from a named thread"));
            let id = format!("{:?}", std::thread::current().id());
            (std::thread::current().name().map(str::to_owned), id)
        })
        .unwrap()
        .join()
        .unwrap();
    guard.shutdown_blocking();

    let e = &out.events()[0];
    assert_eq!(e.thread_name(), Some("billing-worker"));
    assert_eq!(name.as_deref(), e.thread_name());
    assert_eq!(id, format!("ThreadId({})", e.thread_id()));
}

#[test]
fn field_lookup_goes_event_then_innermost_span_outwards() {
    let events = capture(|| {
        let outer =
            tracing::info_span!("outer", user_id = 1u64, tenant = "acme", shadowed = "outer");
        let _o = outer.enter();
        let inner = tracing::info_span!("inner", shadowed = "inner", request_id = "r-9");
        let _i = inner.enter();
        tracing::info!(request_id = "from-event", "lookup");
    });
    let e = &events[0];
    // Found on spans, for an event that does not carry them itself.
    assert_eq!(e.field("user_id"), Some(&1.into()));
    assert_eq!(e.field("tenant"), Some(&"acme".into()));
    // The innermost span wins over an outer one...
    assert_eq!(e.field("shadowed"), Some(&"inner".into()));
    // ...and the event's own field wins over any span.
    assert_eq!(e.field("request_id"), Some(&"from-event".into()));
    assert_eq!(e.field("missing"), None);
    // The event's own fields stay separate from its spans'.
    let own: Vec<_> = e.fields().map(|(k, _)| k).collect();
    assert_eq!(own, ["request_id"]);
}

#[test]
fn events_outside_spans_and_after_exit_carry_no_span() {
    let events = capture(|| {
        {
            let span = tracing::info_span!("short");
            let _e = span.enter();
            tracing::info!("in");
        }
        tracing::info!("out");
    });
    assert_eq!(events[0].spans().count(), 1);
    assert_eq!(events[1].spans().count(), 0);
}

#[test]
fn an_ancestor_recording_late_is_seen_by_later_events_of_its_descendants() {
    // Events of a span share its chain of records, built once: a field an
    // ancestor records after the descendant (and its first events) exists
    // must still reach the descendant's next events, on every thread.
    let events = capture(|| {
        let root = tracing::info_span!("request", status = tracing::field::Empty);
        let _root = root.enter();
        let leaf = tracing::info_span!("handler");
        let _leaf = leaf.enter();
        tracing::info!("first");
        tracing::info!("second, same chain");
        root.record("status", 200u64);
        tracing::info!("after the root recorded");
        let child = leaf.clone();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::scope(|s| {
            s.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let _in = child.enter();
                    tracing::info!("on another thread");
                });
            });
        });
    });
    let status = |e: &Event| e.spans().next().and_then(|s| s.field("status")).cloned();
    assert_eq!(events.len(), 4);
    assert_eq!(status(&events[0]), None);
    assert_eq!(status(&events[1]), None);
    assert_eq!(status(&events[2]), Some(Value::from(200)));
    assert_eq!(status(&events[3]), Some(Value::from(200)));
    for e in &events {
        let names: Vec<_> = e.spans().map(|s| s.name().to_owned()).collect();
        assert_eq!(names, ["request", "handler"]);
    }
}

/// A pipeline writing JSON lines to a file in a fresh directory (which
/// lives as long as the returned `TempDir`).
fn to_file(builder: fapilog::Builder) -> (tempfile::TempDir, PathBuf, Dispatch, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let (dispatch, guard) = start(builder.file(fapilog::sink::FileSink::builder(&path)));
    (dir, path, dispatch, guard)
}

/// The file's lines, each parsed as JSON.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A span is written to a file as it was when each event was logged: what
/// is recorded on it later shows in later lines only, and a secret recorded
/// later is hidden (each line's spans are the event's, not a rendering
/// kept from an earlier event).
#[test]
fn each_line_shows_its_spans_as_they_were_when_it_was_logged() {
    let (_dir, path, dispatch, guard) = to_file(fapilog::builder().batch_size(1));
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!(
            "job",
            state = "queued",
            token = tracing::field::Empty,
            n = tracing::field::Empty
        );
        let _e = span.enter();
        // Each phase waits for the last to be written (its spans rendered).
        let written = |n: usize| {
            let lines = || std::fs::read_to_string(&path).map_or(0, |t| t.lines().count());
            assert!(wait_until(|| lines() >= n), "{n} lines not written");
        };
        for i in 0..3u64 {
            tracing::info!(i, "queued");
        }
        written(3);
        span.record("state", "running");
        span.record("token", "s3cr3t");
        for i in 0..3u64 {
            tracing::info!(i, "running");
        }
        written(6);
        span.record("n", 7u64);
        tracing::info!("last");
    });
    assert_eq!(guard.shutdown_blocking().emitted, 7);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 7);
    for (i, line) in lines.iter().enumerate() {
        let fields = &line["spans"][0]["fields"];
        let want = match i {
            0..=2 => serde_json::json!({"state": "queued"}),
            3..=5 => serde_json::json!({"state": "running", "token": fapilog::enrich::REDACTED}),
            _ => {
                serde_json::json!({"state": "running", "token": fapilog::enrich::REDACTED, "n": 7})
            }
        };
        assert_eq!(fields, &want, "line {i}: {}", line);
    }
}

/// Each line names its own call site (target, module, file, line), for call
/// sites logged in turn, many times each.
#[test]
fn each_line_names_its_call_site() {
    let (_dir, path, dispatch, guard) = to_file(fapilog::builder());
    let mut want = Vec::new();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..50u64 {
            if i % 3 == 0 {
                want.push(("spans", line!() + 1));
                tracing::info!(i, "a");
            } else {
                want.push(("billing::audit", line!() + 1));
                tracing::warn!(target: "billing::audit", i, "b");
            }
        }
    });
    assert_eq!(guard.shutdown_blocking().emitted, 50);
    let lines = json_lines(&path);
    assert_eq!(lines.len(), want.len());
    for (line, (target, number)) in lines.iter().zip(&want) {
        assert_eq!(line["target"], *target, "{line}");
        assert_eq!(line["module"], module_path!(), "{line}");
        assert_eq!(line["file"], file!(), "{line}");
        assert_eq!(line["line"], *number, "{line}");
    }
}

/// Field names that need escaping are escaped, beside plain ones, in the
/// file's JSON lines.
#[test]
fn field_names_that_need_escaping_are_escaped() {
    let (_dir, path, dispatch, guard) = to_file(fapilog::builder());
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..3 {
            tracing::info!(plain = 1, "we\"ird\\name" = 2, "tab\there" = 3, "m");
            tracing::info!(plain = 4, "m");
        }
    });
    assert_eq!(guard.shutdown_blocking().emitted, 6);
    let lines = json_lines(&path);
    for pair in lines.chunks(2) {
        assert_eq!(
            pair[0]["fields"],
            serde_json::json!({"plain": 1, "we\"ird\\name": 2, "tab\there": 3})
        );
        assert_eq!(pair[1]["fields"], serde_json::json!({"plain": 4}));
    }
}
