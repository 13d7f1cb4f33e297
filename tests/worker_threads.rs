//! `Builder::worker_threads`: with more than one thread, batches are
//! enriched in parallel on the pipeline's own multi-thread runtime, yet
//! sinks still see every event once, in the order each thread logged it;
//! the default stays one thread; bad values are errors naming the setting.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::{Event, Settings};
use serde_json::json;
use support::{Collected, LoggingSink, SINK_OWN_MESSAGE, start, u64_field};

/// Records the threads it runs on and holds each one for a while (so
/// another thread takes the next batch).
#[derive(Clone, Default)]
struct Busy {
    threads: Arc<Mutex<HashSet<ThreadId>>>,
}

impl AsyncEnricher for Busy {
    fn name(&self) -> &str {
        "busy"
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        std::thread::sleep(Duration::from_millis(1));
        // Batches finish out of order: a later one may be done first.
        let first = events.first().map_or(0, |e| u64_field(e, "seq"));
        tokio::time::sleep(Duration::from_micros((first * 7919) % 3000)).await;
        for p in out.iter_mut() {
            p.insert("busy", true);
        }
        Ok(())
    }
}

/// Doubles integer keys.
struct Double;

impl Lookup for Double {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        Ok(keys
            .iter()
            .filter_map(|k| match k {
                Key::Int(i) => Some((k.clone(), json!({ "double": i * 2 }))),
                _ => None,
            })
            .collect())
    }
}

const PRODUCERS: u64 = 2;
const PER_PRODUCER: u64 = 4_000;

/// Logs from two threads, shuts down, and checks that every event arrived
/// once, enriched, in each producer's order. Returns the enricher's threads.
fn run(threads: Option<usize>) -> HashSet<ThreadId> {
    let out = Collected::new();
    let busy = Busy::default();
    let mut builder = fapilog::builder()
        .batch_size(16)
        .pipeline_depth(8)
        .queue_capacity(1024)
        .async_enricher(busy.clone())
        .async_enricher(
            LookupEnricher::builder("user", Double)
                .key_field("user_id")
                .build(),
        )
        .sink(out.sink());
    if let Some(n) = threads {
        builder = builder.worker_threads(n);
    }
    let (dispatch, guard) = start(builder);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for seq in 0..PER_PRODUCER {
                        // Keys shared by both producers: the cache and the
                        // single-flight are used from several threads.
                        tracing::info!(producer = p, seq, user_id = seq % 300, "tick");
                    }
                });
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
    assert!(!report.timed_out, "{report:?}");
    let events = out.events();
    assert_eq!(events.len() as u64, PRODUCERS * PER_PRODUCER, "{report:?}");
    let mut next: HashMap<u64, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let (p, seq) = (u64_field(e, "producer"), u64_field(e, "seq"));
        let expected = next.entry(p).or_insert(0);
        assert_eq!(seq, *expected, "event #{i}: producer {p} out of order");
        *expected += 1;
        assert_eq!(e.field("busy"), Some(&json!(true)), "event #{i}: {e:?}");
        assert_eq!(
            e.field("user"),
            Some(&json!({ "double": (seq % 300) * 2 })),
            "event #{i}: {e:?}"
        );
        assert!(e.enrichment_errors().next().is_none(), "event #{i}: {e:?}");
    }
    busy.threads.lock().unwrap().clone()
}

#[test]
fn two_worker_threads_enrich_in_parallel_and_sinks_still_get_every_event_in_order() {
    let threads = run(Some(2));
    assert_eq!(
        threads.len(),
        2,
        "batches were enriched on {} thread(s)",
        threads.len()
    );
}

#[test]
fn by_default_the_worker_is_one_thread() {
    let threads = run(None);
    assert_eq!(threads.len(), 1);
    assert!(!threads.contains(&std::thread::current().id()));
}

#[test]
fn a_sink_that_logs_on_a_multi_thread_worker_does_not_loop() {
    let out = Collected::new();
    let dispatch = Arc::new(std::sync::OnceLock::new());
    let logged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = LoggingSink {
        out: out.clone(),
        dispatch: dispatch.clone(),
        logged: logged.clone(),
    };
    let (d, guard) = start(
        fapilog::builder()
            .worker_threads(3)
            .batch_size(8)
            .sink(sink),
    );
    dispatch.set(d.clone()).unwrap();
    tracing::dispatcher::with_default(&d, || {
        for seq in 0..500u64 {
            tracing::info!(seq, "app");
        }
    });
    let report = guard.shutdown_blocking();
    assert!(logged.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let events = out.events();
    assert!(events.iter().all(|e| e.message() != Some(SINK_OWN_MESSAGE)));
    let seqs: Vec<u64> = events.iter().map(|e| u64_field(e, "seq")).collect();
    assert_eq!(seqs, (0..500).collect::<Vec<_>>());
    assert_eq!(report.emitted, 500, "{report:?}");
}

#[test]
fn bad_thread_counts_are_errors_naming_the_setting() {
    for n in [0, 257] {
        let err = fapilog::builder()
            .worker_threads(n)
            .build()
            .expect_err("bad thread count");
        let config = err.config_error().expect("a configuration error");
        assert_eq!(config.key(), Some("worker_threads"), "{err}");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = fapilog::builder()
        .runtime(rt.handle().clone())
        .worker_threads(2)
        .build()
        .expect_err("threads with an application runtime");
    assert_eq!(
        err.config_error().and_then(|c| c.key()),
        Some("worker_threads"),
        "{err}"
    );
    assert!(err.to_string().contains("Builder::runtime"), "{err}");
}

#[test]
fn threads_come_from_settings() {
    let s = Settings::from_toml_str("[worker]\nthreads = 2\n").expect("settings");
    assert_eq!(s.worker.threads, 2);
    assert_eq!(Settings::default().worker.threads, 1);
    let err = Settings::from_toml_str("[worker]\nthreads = \"many\"\n").unwrap_err();
    assert_eq!(err.key(), Some("worker.threads"), "{err}");
    // Applied: zero threads from the settings fails the build, naming it.
    let s = Settings::from_toml_str("[worker]\nthreads = 0\n").expect("settings");
    let err = fapilog::builder().settings(&s).build().unwrap_err();
    assert_eq!(
        err.config_error().and_then(|c| c.key()),
        Some("worker_threads"),
        "{err}"
    );
}
