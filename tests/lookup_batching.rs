//! Batching across events: a batch's distinct missing keys go to the
//! lookup together, at most `max_batch` per fetch, and each event still
//! gets its own key's value.

mod support;

use std::collections::HashSet;

use fapilog::Event;
use fapilog::lookup::{Key, LookupEnricher};
use serde_json::{Value, json};
use support::async_support::{
    Emitted, Harness, Running, TestLookup, errors, event_with, inserted, patch_field, pipeline,
};

const KEYS: i64 = 50;
const EVENTS: i64 = 1000;
const MAX_BATCH: usize = 16;

fn user(k: i64) -> Value {
    json!({"name": format!("user-{k}")})
}

fn lookup_with_users() -> TestLookup {
    let lookup = TestLookup::new();
    for k in 0..KEYS {
        lookup.set(k, user(k));
    }
    lookup
}

/// Every fetch asked for at most `MAX_BATCH` keys, no key twice, and all
/// the keys together.
fn assert_fetched_each_key_once(lookup: &TestLookup) {
    let sets = lookup.key_sets();
    let mut all = HashSet::new();
    for set in &sets {
        assert!(set.len() <= MAX_BATCH, "a fetch of {} keys", set.len());
        for k in set {
            assert!(all.insert(k.clone()), "key {k} fetched twice");
        }
    }
    let expected: HashSet<Key> = (0..KEYS).map(Key::from).collect();
    assert_eq!(all, expected);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_events_over_fifty_keys_take_ceil_50_over_max_batch_fetches() {
    let lookup = lookup_with_users();
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .max_batch(MAX_BATCH)
        .build();
    let h = Harness::new("user");
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| event_with("user_id", i % KEYS))
        .collect();

    let patches = h.run(&enricher, &events).await;

    assert_eq!(lookup.fetches(), (KEYS as usize).div_ceil(MAX_BATCH));
    assert_fetched_each_key_once(&lookup);
    for (i, p) in patches.iter().enumerate() {
        let k = i as i64 % KEYS;
        assert_eq!(patch_field(p, "user"), Some(user(k)), "event {i}");
    }
    let s = h.stats();
    assert_eq!(s.fetches, 4);
    assert_eq!(s.fetched_keys, 50);
    assert_eq!(s.batch_size_max, 16);
    assert_eq!(s.cache_misses, 50, "one miss per distinct key");
}

#[tokio::test(start_paused = true)]
async fn through_the_pipeline_each_event_gets_its_own_keys_value() {
    let lookup = lookup_with_users();
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .max_batch(MAX_BATCH)
        .build();
    let out = Emitted::new();
    let running = Running::start(pipeline(out.sink()).async_enricher(enricher)).await;

    for i in 0..EVENTS {
        tracing::info!(user_id = i % KEYS, seq = i, "request");
    }
    let events = out.wait_for(EVENTS as usize).await;

    assert!(
        lookup.fetches() <= (KEYS as usize).div_ceil(MAX_BATCH),
        "{} fetches",
        lookup.fetches()
    );
    assert_fetched_each_key_once(&lookup);
    assert_eq!(events.len(), EVENTS as usize);
    for (i, e) in events.iter().enumerate() {
        let i = i as i64;
        assert_eq!(e.field("seq"), Some(&json!(i)), "events stay in order");
        assert_eq!(inserted(e, "user"), Some(user(i % KEYS)), "event {i}");
        assert!(errors(e).is_empty());
    }
    let report = running.shutdown().await;
    assert_eq!((report.emitted, report.dropped), (1000, 0));
}

#[tokio::test(start_paused = true)]
async fn keys_found_in_the_cache_are_not_fetched_again() {
    let lookup = lookup_with_users();
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .max_batch(MAX_BATCH)
        .build();
    let h = Harness::new("user");

    h.run_keys(&enricher, "user_id", &[0, 1, 2]).await;
    assert_eq!(lookup.fetches(), 1);
    let p = h.run_keys(&enricher, "user_id", &[0, 1, 2, 3, 4]).await;
    assert_eq!(lookup.fetches(), 2);
    let mut second = lookup.key_sets().remove(1);
    second.sort();
    assert_eq!(second, vec![Key::from(3i64), Key::from(4i64)]);
    for (k, patch) in p.iter().enumerate() {
        assert_eq!(patch_field(patch, "user"), Some(user(k as i64)));
    }
}
