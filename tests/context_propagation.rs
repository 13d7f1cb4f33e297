//! A lookup keyed by a span field: the key is captured with each event on
//! the caller's thread (including values recorded on the span after it was
//! created), so the lookup, which runs later on the worker, keys every
//! event logged inside the span — even once the span is gone.

mod support;

use fapilog::lookup::{Key, LookupEnricher};
use serde_json::json;
use support::async_support::{Emitted, Running, TestLookup, errors, inserted, pipeline};

fn users() -> TestLookup {
    let lookup = TestLookup::new();
    lookup
        .set(42i64, json!({"name": "ada"}))
        .set(7i64, json!({"name": "grace"}));
    lookup
}

#[tokio::test(start_paused = true)]
async fn a_user_id_recorded_on_the_request_span_keys_every_event_inside_it() {
    let lookup = users();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink()).async_enricher(
            LookupEnricher::builder("user", lookup.clone())
                .key_field("user_id")
                .build(),
        ),
    )
    .await;

    {
        let span = tracing::info_span!("request", user_id = tracing::field::Empty);
        let _entered = span.enter();
        tracing::info!("before the user is known");
        span.record("user_id", 42);
        tracing::info!("authenticated");
        {
            let inner = tracing::info_span!("db_query", table = "orders");
            let _inner = inner.enter();
            tracing::info!("in a nested span");
        }
        tracing::info!("done");
    }
    tracing::info!("outside any request");
    // Every span is closed before the worker has run at all.
    let events = out.wait_for(5).await;

    let got: Vec<_> = events
        .iter()
        .map(|e| (e.message().unwrap().to_owned(), inserted(e, "user")))
        .collect();
    let ada = Some(json!({"name": "ada"}));
    assert_eq!(
        got,
        [
            ("before the user is known".to_owned(), None),
            ("authenticated".to_owned(), ada.clone()),
            ("in a nested span".to_owned(), ada.clone()),
            ("done".to_owned(), ada),
            ("outside any request".to_owned(), None),
        ]
    );
    assert!(events.iter().all(|e| errors(e).is_empty()));
    assert_eq!(lookup.key_sets(), vec![vec![Key::from(42i64)]]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_innermost_span_and_then_the_event_itself_win() {
    let lookup = users();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink()).async_enricher(
            LookupEnricher::builder("user", lookup.clone())
                .key_field("user_id")
                .build(),
        ),
    )
    .await;

    {
        let outer = tracing::info_span!("request", user_id = 42);
        let _outer = outer.enter();
        let inner = tracing::info_span!("impersonation", user_id = 7);
        let _inner = inner.enter();
        tracing::info!("innermost span");
        tracing::info!(user_id = 42, "event field");
    }
    let events = out.wait_for(2).await;
    assert_eq!(inserted(&events[0], "user"), Some(json!({"name": "grace"})));
    assert_eq!(inserted(&events[1], "user"), Some(json!({"name": "ada"})));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_span_only_key_ignores_event_fields() {
    let lookup = users();
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink()).async_enricher(
            LookupEnricher::builder("user", lookup.clone())
                .key_span_field("user_id")
                .build(),
        ),
    )
    .await;

    {
        let span = tracing::info_span!("request", user_id = 42);
        let _entered = span.enter();
        tracing::info!(user_id = 7, "an event field of the same name");
    }
    tracing::info!(user_id = 7, "no span");
    let events = out.wait_for(2).await;
    assert_eq!(inserted(&events[0], "user"), Some(json!({"name": "ada"})));
    assert_eq!(inserted(&events[1], "user"), None);
    assert_eq!(lookup.key_sets(), vec![vec![Key::from(42i64)]]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_string_and_an_integer_span_value_key_the_same_way_as_the_source() {
    let lookup = TestLookup::new();
    lookup
        .set("tenant-a", json!({"plan": "pro"}))
        .set(42u64, json!({"plan": "free"}));
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink()).async_enricher(
            LookupEnricher::builder("tenant", lookup.clone())
                .key_field("tenant")
                .build(),
        ),
    )
    .await;

    {
        let span = tracing::info_span!("request", tenant = "tenant-a");
        let _entered = span.enter();
        tracing::info!("string key");
    }
    {
        // Recorded as u64 by `tracing`, stored by the source as a u64 key.
        let span = tracing::info_span!("request", tenant = 42u64);
        let _entered = span.enter();
        tracing::info!("integer key");
    }
    let events = out.wait_for(2).await;
    assert_eq!(inserted(&events[0], "tenant"), Some(json!({"plan": "pro"})));
    assert_eq!(
        inserted(&events[1], "tenant"),
        Some(json!({"plan": "free"}))
    );
    running.shutdown().await;
}
