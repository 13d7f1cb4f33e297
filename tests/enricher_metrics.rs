//! Enricher metrics count exactly what happened: calls, successes,
//! failures, timeouts, short-circuits, cache hits / misses / negative hits,
//! single-flight waits, fetches and their sizes, latency — in
//! `EnrichContext::stats`, in `Guard::stats`, and through the
//! `metrics` facade (`fapilog_enricher_*`, labelled with the enricher).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fapilog::enrich::{EnrichContext, EnricherOptions};
use fapilog::lookup::LookupEnricher;
use fapilog::observe::EnricherStats;
use fapilog::resilience::{BreakerConfig, FailurePolicy};
use futures_util::future::join_all;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::async_support::{
    Behaviour, Emitted, Harness, Running, TestEnricher, TestLookup, pipeline,
};

const MS: Duration = Duration::from_millis(1);

fn consecutive(n: u32) -> BreakerConfig {
    BreakerConfig::default().policy(FailurePolicy::Consecutive(n))
}

#[tokio::test(start_paused = true)]
async fn lookup_counters_match_what_happened() {
    let lookup = TestLookup::new();
    lookup.set(1i64, "one").set(2i64, "two").latency(20 * MS);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::new("user").call_timeout(100 * MS);

    // Three distinct misses (3 not found), one fetch of three keys.
    h.run_keys(&enricher, "user_id", &[1, 2, 3, 1]).await;
    // Two hits and a negative hit.
    h.run_keys(&enricher, "user_id", &[1, 3, 2]).await;
    // A failed fetch.
    lookup.behave(Behaviour::Fail);
    h.run_keys(&enricher, "user_id", &[4]).await;
    // A timed-out fetch.
    lookup.behave(Behaviour::Hang);
    h.run_keys(&enricher, "user_id", &[5]).await;
    // Three concurrent misses of one key: one fetch, two waits.
    lookup.behave(Behaviour::Ok).set(6i64, "six");
    join_all((0..3).map(|_| h.run_keys(&enricher, "user_id", &[6]))).await;

    let s = h.stats();
    assert_eq!(s.name, "user");
    assert_eq!(lookup.fetches(), 4);
    assert_eq!(
        (
            s.calls,
            s.successes,
            s.failures,
            s.timeouts,
            s.short_circuits
        ),
        (4, 2, 2, 1, 0),
        "calls, successes, failures, timeouts, short-circuits"
    );
    assert_eq!(
        (
            s.cache_hits,
            s.cache_misses,
            s.negative_hits,
            s.stale_served
        ),
        (2, 8, 1, 0),
        "hits, misses, negative hits, stale served"
    );
    assert_eq!(s.singleflight_waits, 2);
    assert_eq!((s.fetches, s.fetched_keys), (4, 6));
    assert_eq!(s.batch_size_max, 3);
    assert!(
        (s.batch_size_mean - 1.5).abs() < 1e-9,
        "{}",
        s.batch_size_mean
    );

    // Latency: one sample per call, in real units (20 ms fetches, one
    // 100 ms timeout), read off the paused clock.
    assert_eq!(s.latency.count, 4);
    assert!(
        s.latency.p50 >= 20 * MS && s.latency.p50 < 21 * MS,
        "{:?}",
        s.latency
    );
    assert!(
        s.latency.max >= 100 * MS && s.latency.max < 101 * MS,
        "{:?}",
        s.latency
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_circuited_fetch_is_not_counted_as_a_fetch() {
    let lookup = TestLookup::new();
    lookup.behave(Behaviour::Fail);
    let enricher = LookupEnricher::builder("user", lookup.clone())
        .key_field("user_id")
        .build();
    let h = Harness::with_breaker("user", consecutive(1));

    h.run_keys(&enricher, "user_id", &[1]).await; // fails, opens
    let p = h.run_keys(&enricher, "user_id", &[2, 3]).await; // refused
    assert_eq!(p[0].error(), Some("circuit_open"));

    let s = h.stats();
    assert_eq!((s.calls, s.short_circuits), (1, 1));
    assert_eq!(lookup.fetches(), 1);
    assert_eq!(
        (s.fetches, s.fetched_keys, s.batch_size_max),
        (1, 1, 1),
        "`fetches` is documented as the lookup's fetch calls; a refused call made none"
    );
}

#[tokio::test(start_paused = true)]
async fn pipeline_stats_count_each_batch_call() {
    let geo = TestEnricher::new("geo", "country", "NZ");
    geo.latency(10 * MS);
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink()).async_enricher_with(
            geo.clone(),
            EnricherOptions::new()
                .call_timeout(100 * MS)
                .breaker(consecutive(3)),
        ),
    )
    .await;

    let mut n = 0;
    for behaviour in [
        Behaviour::Ok,   // success
        Behaviour::Fail, // failure
        Behaviour::Hang, // timeout (a failure too)
        Behaviour::Fail, // third failure in a row: opens
        Behaviour::Ok,   // refused while open
    ] {
        geo.behave(behaviour);
        tracing::info!("one batch");
        n += 1;
        out.wait_for(n).await;
    }

    let stats = running.guard.stats();
    assert_eq!(stats.enrichers.len(), 1);
    let s: &EnricherStats = &stats.enrichers[0];
    assert_eq!(s.name, "geo");
    assert_eq!(
        (
            s.calls,
            s.successes,
            s.failures,
            s.timeouts,
            s.short_circuits
        ),
        (4, 1, 3, 1, 1),
        "calls, successes, failures, timeouts, short-circuits"
    );
    assert_eq!(geo.calls(), 4);
    assert_eq!(s.latency.count, 4);
    assert_eq!((s.cache_hits, s.cache_misses, s.fetches), (0, 0, 0));
    running.shutdown().await;
}

type Facade = HashMap<(String, String), DebugValue>;

/// Every metric recorded, keyed by name and `enricher` label.
fn facade(snapshotter: &metrics_util::debugging::Snapshotter) -> Facade {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let label = key
                .labels()
                .find(|l| l.key() == "enricher")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            ((key.name().to_owned(), label), value)
        })
        .collect()
}

fn counter(f: &Facade, name: &str, enricher: &str) -> u64 {
    match f.get(&(name.to_owned(), enricher.to_owned())) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("counter {name}{{enricher={enricher}}}: {other:?}"),
    }
}

fn histogram(f: &Facade, name: &str, enricher: &str) -> Vec<f64> {
    match f.get(&(name.to_owned(), enricher.to_owned())) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!("histogram {name}{{enricher={enricher}}}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_metrics_facade_gets_the_same_numbers() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let lookup = TestLookup::new();
    lookup.set(1i64, "one").set(2i64, "two").latency(5 * MS);
    let out = Emitted::new();
    // The recorder only needs to be in place while the pipeline is built.
    let builder = metrics::with_local_recorder(&recorder, || {
        pipeline(out.sink()).async_enricher_with(
            LookupEnricher::builder("user", lookup.clone())
                .key_field("user_id")
                .build(),
            EnricherOptions::new().breaker(consecutive(5)),
        )
    });
    let running = Running::start(builder).await;

    for k in [1, 2, 3, 1] {
        tracing::info!(user_id = k, "batch one");
    }
    out.wait_for(4).await;
    for k in [1, 3] {
        tracing::info!(user_id = k, "batch two");
    }
    out.wait_for(6).await;
    lookup.behave(Behaviour::Fail);
    tracing::info!(user_id = 4, "batch three");
    out.wait_for(7).await;

    let s = running.guard.stats().enrichers.remove(0);
    let f = facade(&snapshotter);
    let expected = [
        ("fapilog_enricher_calls_total", s.calls, 2),
        ("fapilog_enricher_successes_total", s.successes, 1),
        ("fapilog_enricher_failures_total", s.failures, 1),
        ("fapilog_enricher_timeouts_total", s.timeouts, 0),
        ("fapilog_enricher_short_circuits_total", s.short_circuits, 0),
        ("fapilog_enricher_cache_hits_total", s.cache_hits, 1),
        ("fapilog_enricher_cache_misses_total", s.cache_misses, 4),
        (
            "fapilog_enricher_cache_negative_hits_total",
            s.negative_hits,
            1,
        ),
        (
            "fapilog_enricher_singleflight_waits_total",
            s.singleflight_waits,
            0,
        ),
        ("fapilog_enricher_fetches_total", s.fetches, 2),
    ];
    for (name, from_stats, what_happened) in expected {
        assert_eq!(from_stats, what_happened, "stats: {name}");
        assert_eq!(counter(&f, name, "user"), what_happened, "facade: {name}");
    }

    let mut sizes = histogram(&f, "fapilog_enricher_batch_size", "user");
    sizes.sort_by(f64::total_cmp);
    assert_eq!(sizes, [1.0, 3.0]);
    let latency = histogram(&f, "fapilog_enricher_latency_seconds", "user");
    assert_eq!(latency.len(), 2);
    for secs in latency {
        assert!((secs - 0.005).abs() < 1e-6, "latency in seconds: {secs}");
    }
    running.shutdown().await;
}

#[test]
fn metrics_of_different_enrichers_are_labelled_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (a, b) = metrics::with_local_recorder(&recorder, || {
        (EnrichContext::detached("a"), EnrichContext::detached("b"))
    });
    a.metrics().count(fapilog::observe::Counter::Call, 3);
    b.metrics().count(fapilog::observe::Counter::Call, 1);
    a.metrics().record_fetch(7);

    let f = facade(&snapshotter);
    assert_eq!(counter(&f, "fapilog_enricher_calls_total", "a"), 3);
    assert_eq!(counter(&f, "fapilog_enricher_calls_total", "b"), 1);
    assert_eq!(counter(&f, "fapilog_enricher_fetches_total", "a"), 1);
    assert_eq!(histogram(&f, "fapilog_enricher_batch_size", "a"), [7.0]);
    assert_eq!((a.stats().calls, b.stats().calls), (3, 1));
}
