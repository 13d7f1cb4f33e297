//! `enrichment_errors`: a failed enrichment is recorded on the event under
//! the enricher's name (unless turned off), and the event is written
//! either way.

mod support;

use std::time::Duration;

use fapilog::Event;
use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use fapilog::lookup::LookupEnricher;
use serde_json::json;
use support::async_support::{
    BACKEND_DOWN, Behaviour, Emitted, Running, TestEnricher, TestLookup, errors, inserted, pipeline,
};

fn failing_setup() -> (TestEnricher, TestEnricher, TestLookup) {
    let hanging = TestEnricher::new("hanging", "h", 1);
    hanging.behave(Behaviour::Hang);
    let failing = TestEnricher::new("failing", "f", 1);
    failing.behave(Behaviour::Fail);
    let lookup = TestLookup::new();
    lookup.behave(Behaviour::Fail);
    (hanging, failing, lookup)
}

fn builder(out: &Emitted, on: bool) -> fapilog::Builder {
    let (hanging, failing, lookup) = failing_setup();
    pipeline(out.sink())
        .enrich_deadline(Duration::from_millis(100))
        .enrichment_errors(on)
        .async_enricher(hanging)
        .async_enricher(failing)
        .async_enricher(
            LookupEnricher::builder("user", lookup)
                .key_field("user_id")
                .build(),
        )
        .async_enricher(TestEnricher::new("ok", "region", "eu"))
}

#[tokio::test(start_paused = true)]
async fn each_failed_enricher_leaves_its_reason() {
    let out = Emitted::new();
    let running = Running::start(builder(&out, true)).await;

    tracing::info!(user_id = 5, "hello");
    let e = out.wait_for(1).await.remove(0);

    let mut errs = errors(&e);
    errs.sort();
    assert_eq!(
        errs,
        [
            ("failing".to_owned(), BACKEND_DOWN.to_owned()),
            ("hanging".to_owned(), "timeout".to_owned()),
            ("user".to_owned(), BACKEND_DOWN.to_owned()),
        ]
    );
    assert_eq!(inserted(&e, "region"), Some(json!("eu")));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn turned_off_no_entry_is_added_and_the_event_is_still_written() {
    let out = Emitted::new();
    let running = Running::start(builder(&out, false)).await;

    tracing::info!(user_id = 5, "hello");
    let e = out.wait_for(1).await.remove(0);

    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
    assert_eq!(e.message(), Some("hello"));
    assert_eq!(inserted(&e, "region"), Some(json!("eu")));
    // The failures still count.
    let stats = running.guard.stats();
    let by_name = |n: &str| stats.enrichers.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by_name("hanging").timeouts, 1);
    assert_eq!(by_name("failing").failures, 1);
    assert_eq!(by_name("user").failures, 1);
    let report = running.shutdown().await;
    assert_eq!((report.emitted, report.dropped), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_event_without_a_key_has_no_lookup_error() {
    let out = Emitted::new();
    let running = Running::start(builder(&out, true)).await;

    tracing::info!("no user here");
    let e = out.wait_for(1).await.remove(0);
    assert!(
        errors(&e).iter().all(|(name, _)| name != "user"),
        "{:?}",
        errors(&e)
    );
    running.shutdown().await;
}

/// Panics inside `enrich`; `guards` says whether it claims to guard its
/// own calls (so the pipeline does not wrap it in a guarded call).
struct Panicking {
    name: &'static str,
    guards: bool,
}

impl AsyncEnricher for Panicking {
    fn name(&self) -> &str {
        self.name
    }

    fn guards_own_calls(&self) -> bool {
        self.guards
    }

    async fn enrich(
        &self,
        _events: &[Event],
        _out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        panic!("enricher bug");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_enricher_loses_no_event_and_stops_no_other() {
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .async_enricher(Panicking {
                name: "wrapped",
                guards: false,
            })
            .async_enricher(Panicking {
                name: "self_guarded",
                guards: true,
            })
            .async_enricher(TestEnricher::new("ok", "region", "eu")),
    )
    .await;

    for n in 1..=2 {
        tracing::info!(n, "hello");
        out.wait_for(n).await;
    }
    for e in out.events() {
        let mut errs = errors(&e);
        errs.sort();
        assert_eq!(
            errs,
            [
                ("self_guarded".to_owned(), "panicked".to_owned()),
                ("wrapped".to_owned(), "panicked".to_owned()),
            ]
        );
        assert_eq!(inserted(&e, "region"), Some(json!("eu")));
    }
    let stats = running.guard.stats();
    assert_eq!(stats.enrichers[0].failures, 2);
    assert_eq!(stats.enrichers[1].failures, 2);
    let report = running.shutdown().await;
    assert_eq!((report.emitted, report.dropped), (2, 0));
}
