//! The lookup enricher's cache: values are served for their TTL and
//! refetched after it, "not found" only for the negative TTL, errors are
//! never cached, expired values are served on error only with
//! stale-on-error, and the size bound holds.

mod support;

use std::time::Duration;

use fapilog::lookup::{Key, LookupEnricher};
use serde_json::json;
use support::async_support::{Behaviour, Harness, TestLookup, let_time_pass, patch_field};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_value_is_served_from_cache_until_its_ttl_then_refetched() {
    let lookup = TestLookup::new();
    lookup.set(7i64, json!({"name": "ada"}));
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(60 * SEC)
        .build();
    let h = Harness::new("user");

    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    assert_eq!(lookup.fetches(), 1);

    // The source changes; within the TTL the cached value is still served.
    lookup.set(7i64, json!({"name": "grace"}));
    let_time_pass(59 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    assert_eq!(lookup.fetches(), 1, "served from cache within the TTL");

    // Past the TTL it is fetched again and the new value is served.
    let_time_pass(2 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "grace"})));
    assert_eq!(lookup.fetches(), 2, "refetched after the TTL");
    assert_eq!(lookup.key_sets()[1], vec![Key::from(7i64)]);

    let s = h.stats();
    assert_eq!((s.cache_hits, s.cache_misses), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_for_the_negative_ttl_only() {
    let lookup = TestLookup::new();
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(300 * SEC)
        .negative_ttl(5 * SEC)
        .build();
    let h = Harness::new("user");

    let p = h.run_keys(&enricher, "user_id", &[9]).await;
    assert_eq!(p[0].fields().count(), 0, "nothing found, nothing added");
    assert_eq!(p[0].error(), None, "not found is not an error");
    assert_eq!(lookup.fetches(), 1);

    // The key appears in the source, but "not found" is still cached.
    lookup.set(9i64, "late");
    let_time_pass(4 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[9]).await;
    assert_eq!(p[0].fields().count(), 0);
    assert_eq!(lookup.fetches(), 1, "negative hit within the negative TTL");
    assert_eq!(h.stats().negative_hits, 1);

    // Past the negative TTL (far short of the value TTL) it is refetched.
    let_time_pass(2 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[9]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!("late")));
    assert_eq!(lookup.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_negative_ttl_does_not_cache_not_found() {
    let lookup = TestLookup::new();
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .negative_ttl(Duration::ZERO)
        .build();
    let h = Harness::new("user");

    h.run_keys(&enricher, "user_id", &[1]).await;
    h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(lookup.fetches(), 2);
    assert_eq!(h.stats().negative_hits, 0);
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one").behave(Behaviour::Fail);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::new("user");

    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].error(), Some("backend down"));
    assert_eq!(p[0].fields().count(), 0);

    // No time passes: the very next batch fetches again and succeeds.
    lookup.behave(Behaviour::Ok);
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].error(), None);
    assert_eq!(patch_field(&p[0], "user"), Some(json!("one")));
    assert_eq!(lookup.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_on_error_serves_an_expired_value_for_up_to_max_stale() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one");
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(10 * SEC)
        .stale_on_error(30 * SEC)
        .build();
    let h = Harness::new("user");
    h.run_keys(&enricher, "user_id", &[1]).await;

    // Expired and the refresh fails: the old value is served, no error.
    lookup.behave(Behaviour::Fail);
    let_time_pass(11 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(lookup.fetches(), 2, "an expired value is refreshed");
    assert_eq!(patch_field(&p[0], "user"), Some(json!("one")));
    assert_eq!(p[0].error(), None);
    assert_eq!(h.stats().stale_served, 1);

    // Past ttl + max_stale the value is gone: the failure shows.
    let_time_pass(30 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].fields().count(), 0);
    assert_eq!(p[0].error(), Some("backend down"));
    assert_eq!(h.stats().stale_served, 1);
}

#[tokio::test(start_paused = true)]
async fn without_stale_on_error_an_expired_value_is_not_served() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one");
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(10 * SEC)
        .build();
    let h = Harness::new("user");
    h.run_keys(&enricher, "user_id", &[1]).await;

    lookup.behave(Behaviour::Fail);
    let_time_pass(11 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[1]).await;
    assert_eq!(p[0].fields().count(), 0);
    assert_eq!(p[0].error(), Some("backend down"));
}

#[tokio::test(start_paused = true)]
async fn the_cache_holds_at_most_max_entries() {
    let lookup = TestLookup::new();
    for k in 0..1000i64 {
        lookup.set(k, k * 10);
    }
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .max_entries(50)
        .build();
    let h = Harness::new("user");

    for chunk in (0..1000i64).collect::<Vec<_>>().chunks(100) {
        let p = h.run_keys(&enricher, "user_id", chunk).await;
        // Eviction never costs the current batch its values.
        for (k, patch) in chunk.iter().zip(&p) {
            assert_eq!(patch_field(patch, "user"), Some(json!(k * 10)));
        }
    }
    let held = enricher.cached_entries().await;
    assert!(held <= 50, "cache holds {held} entries, bound is 50");
    assert!(held > 0, "the cache keeps something");
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_keeps_a_hot_key_fresh_without_a_miss_or_a_wait() {
    let lookup = TestLookup::new();
    lookup.set(7i64, json!({"name": "ada"}));
    lookup.set(8i64, json!({"name": "bob"}));
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(60 * SEC)
        .refresh_ahead(10 * SEC)
        .build();
    let h = Harness::new("user");
    let p = h.run_keys(&enricher, "user_id", &[7, 8]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    assert_eq!(lookup.fetches(), 1);

    // Outside the window: a plain hit, no refresh.
    let_time_pass(45 * SEC).await;
    h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(lookup.fetches(), 1);

    // Inside the window (55 s of 60): served the current value at once,
    // and refreshed behind the batch's back; the source has changed.
    lookup
        .set(7i64, json!({"name": "grace"}))
        .latency(Duration::from_millis(200));
    let_time_pass(10 * SEC).await;
    let before = tokio::time::Instant::now();
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "the batch did not wait for the refresh"
    );
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    let_time_pass(3 * SEC).await;
    assert_eq!(lookup.fetches(), 2, "one background refresh");
    assert_eq!(lookup.key_sets()[1], vec![Key::from(7i64)]);

    // Past the original TTL the refreshed value is served, as a hit.
    let_time_pass(10 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "grace"})));
    let s = h.stats();
    assert_eq!(
        s.cache_misses, 2,
        "only the first batch's two keys ever missed"
    );
    assert_eq!(s.refreshes, 1);
    assert_eq!(lookup.fetches(), 2);

    // Key 8 was never read in its window: it expired and misses as usual.
    h.run_keys(&enricher, "user_id", &[8]).await;
    assert_eq!(h.stats().cache_misses, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_current_value_until_it_expires() {
    let lookup = TestLookup::new();
    lookup.set(7i64, json!({"name": "ada"}));
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .ttl(60 * SEC)
        .refresh_ahead(10 * SEC)
        .build();
    let h = Harness::new("user");
    h.run_keys(&enricher, "user_id", &[7]).await;
    lookup.behave(Behaviour::Fail);
    let_time_pass(55 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    let_time_pass(SEC).await;
    assert_eq!(lookup.fetches(), 2, "the refresh was tried");
    // Still served (a hit) until the TTL ends, though the refresh failed.
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert_eq!(patch_field(&p[0], "user"), Some(json!({"name": "ada"})));
    assert_eq!(h.stats().refreshes, 0);
    // Then it is gone: a miss, whose fetch fails as usual.
    let_time_pass(5 * SEC).await;
    let p = h.run_keys(&enricher, "user_id", &[7]).await;
    assert!(p[0].error().is_some(), "expired, and the source is down");
}
