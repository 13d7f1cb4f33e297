//! With fapilog installed as the global subscriber at `trace`, the lookup's
//! own queries — run by sqlx on threads the pipeline does not own, such as
//! SQLite's connection workers — do not come back into the stream: the sink
//! sees exactly the application's events. (One test: it installs the global
//! subscriber.)
#![cfg(feature = "sqlite")]

mod support;

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::sources::SqlLookup;
use sqlx::Executor;
use support::Collected;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_queries_do_not_feed_back_into_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("fb.db").display());
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    db.execute("INSERT INTO users VALUES (1, 'Ada'), (2, 'Grace')")
        .await
        .unwrap();
    db.close().await;
    let lookup = SqlLookup::builder(url)
        .query("SELECT id, name FROM users WHERE id IN ({keys})")
        .build()
        .unwrap();
    let out = Collected::new();
    let guard = fapilog::builder()
        .filter("trace")
        .linger(Duration::ZERO)
        .async_enricher_with(
            LookupEnricher::builder("user", lookup)
                .key_field("user_id")
                .ttl(Duration::ZERO) // every event queries the database
                .build(),
            EnricherOptions::new().call_timeout(Duration::from_secs(10)),
        )
        .sink(out.sink())
        .init_async()
        .await
        .expect("pipeline installs");
    for i in 0..20i64 {
        let before = out.len();
        tracing::info!(user_id = 1 + i % 2, "request");
        assert!(support::wait_until(|| out.len() > before));
    }
    guard.shutdown().await;
    let events = out.events();
    let foreign: Vec<String> = events
        .iter()
        .filter(|e| e.message() != Some("request"))
        .map(|e| format!("{}: {:?}", e.target(), e.message()))
        .collect();
    assert!(
        foreign.is_empty(),
        "captured the pipeline's own work: {foreign:?}"
    );
    assert_eq!(events.len(), 20);
    assert!(events.iter().all(|e| e.field("user").is_some()));
}
