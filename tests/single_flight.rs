//! Single-flight: concurrent misses for one key cause one fetch, and every
//! waiter gets the leader's outcome (value or failure).

mod support;

use std::time::Duration;

use fapilog::Event;
use fapilog::enrich::{AsyncEnricher, Patch};
use fapilog::lookup::{Key, LookupEnricher};
use futures_util::future::join_all;
use serde_json::json;
use support::async_support::{Behaviour, Harness, TestLookup, event_with, patch_field};

/// Runs `n` concurrent `enrich` calls on `enricher`, each with one event
/// keyed `user_id = key`, and returns each call's patch.
async fn concurrent_calls<E: AsyncEnricher>(
    enricher: &E,
    ctx: &fapilog::enrich::EnrichContext,
    n: usize,
    key: i64,
) -> Vec<Patch> {
    join_all((0..n).map(|_| async move {
        let events: Vec<Event> = vec![event_with("user_id", key)];
        let mut out = vec![Patch::default()];
        enricher
            .enrich(&events, &mut out, ctx)
            .await
            .expect("per-event failures go in the patch");
        out.pop().expect("one patch")
    }))
    .await
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_misses_for_one_key_make_one_fetch() {
    let lookup = TestLookup::new();
    lookup
        .set(7i64, json!({"plan": "pro"}))
        .latency(Duration::from_millis(50));
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let ctx = fapilog::enrich::EnrichContext::detached("x")
        .with_call_timeout(Duration::from_secs(1))
        .with_budget(Duration::from_secs(5));

    let patches = concurrent_calls(&enricher, &ctx, 100, 7).await;

    assert_eq!(lookup.fetches(), 1, "one fetch for 100 concurrent misses");
    assert_eq!(lookup.key_sets(), vec![vec![Key::from(7i64)]]);
    let s = ctx.stats();
    assert_eq!(s.singleflight_waits, 99);
    assert_eq!(s.cache_misses, 100);
    assert_eq!(s.fetches, 1);
    assert_eq!(patches.len(), 100);
    for (i, p) in patches.iter().enumerate() {
        assert_eq!(
            patch_field(p, "user"),
            Some(json!({"plan": "pro"})),
            "call {i} got the value"
        );
        assert_eq!(p.error(), None, "call {i}");
    }

    // The leader cached it: a later call is a plain hit.
    let later = concurrent_calls(&enricher, &ctx, 1, 7).await;
    assert_eq!(patch_field(&later[0], "user"), Some(json!({"plan": "pro"})));
    assert_eq!(lookup.fetches(), 1);
    assert_eq!(ctx.stats().cache_hits, 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_share_the_leaders_failure_and_nothing_is_cached() {
    let lookup = TestLookup::new();
    lookup
        .set(7i64, "seven")
        .latency(Duration::from_millis(50))
        .behave(Behaviour::Fail);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::new("user");
    let ctx = h.ctx();

    let patches = concurrent_calls(&enricher, &ctx, 20, 7).await;
    assert_eq!(lookup.fetches(), 1);
    for p in &patches {
        assert_eq!(p.error(), Some("backend down"));
        assert_eq!(p.fields().count(), 0);
    }
    assert_eq!(h.stats().singleflight_waits, 19);

    // The failure was not cached and the key is no longer in flight.
    lookup.behave(Behaviour::Ok);
    let patches = concurrent_calls(&enricher, &ctx, 20, 7).await;
    assert_eq!(lookup.fetches(), 2);
    assert!(
        patches
            .iter()
            .all(|p| patch_field(p, "user") == Some(json!("seven")))
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_timed_out_fetch_get_an_error_and_the_key_can_be_fetched_again() {
    let lookup = TestLookup::new();
    lookup.set(7i64, "seven").behave(Behaviour::Hang);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::new("user").call_timeout(Duration::from_millis(100));
    let ctx = h.ctx();

    let patches = concurrent_calls(&enricher, &ctx, 10, 7).await;
    assert_eq!(lookup.fetches(), 1);
    for p in &patches {
        assert_eq!(p.error(), Some("timeout"));
    }

    lookup.behave(Behaviour::Ok);
    let patches = concurrent_calls(&enricher, &h.ctx(), 10, 7).await;
    assert_eq!(
        lookup.fetches(),
        2,
        "a timed-out key is not stuck in flight"
    );
    assert!(
        patches
            .iter()
            .all(|p| patch_field(p, "user") == Some(json!("seven")))
    );
}

#[tokio::test(start_paused = true)]
async fn one_batch_asks_for_each_key_once() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one").set(2i64, "two");
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::new("user");

    let patches = h.run_keys(&enricher, "user_id", &[1, 2, 1, 1, 2]).await;
    assert_eq!(lookup.fetches(), 1);
    let mut keys = lookup.key_sets().remove(0);
    keys.sort();
    assert_eq!(keys, vec![Key::from(1i64), Key::from(2i64)]);
    let got: Vec<_> = patches.iter().map(|p| patch_field(p, "user")).collect();
    assert_eq!(
        got,
        ["one", "two", "one", "one", "two"].map(|s| Some(json!(s)))
    );
}
