//! Enrichment from Redis: a few user records are written to Redis, then
//! every event carrying a `user_id` (on the event or on its request span)
//! gets the user's record, looked up off the caller's thread — one `MGET`
//! per batch of cold keys, cached afterwards. The events are written as
//! JSON lines to stdout; the shutdown report and the enricher's stats go to
//! stderr.
//!
//! Needs a Redis server: `REDIS_URL` (default `redis://127.0.0.1:6379`).
//! Run with `cargo run --example redis --features redis`.

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::sources::{RedisLookup, ValueFormat};

/// Where the example's records live; they expire on their own.
const PREFIX: &str = "fapilog-example:user:";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    seed(&url).await.map_err(|e| {
        format!("could not write the example's records to Redis at {url} ({e}); start a server with `redis-server`, or set REDIS_URL")
    })?;

    // `fapilog-example:user:<id>` holds a JSON object; `user_id` 3 has no
    // record.
    let users = RedisLookup::builder(&url)
        .key_template(format!("{PREFIX}{{key}}"))
        .get(ValueFormat::Json)
        .build()?;
    let user_enricher = LookupEnricher::builder("user", users)
        .key_field("user_id")
        .ttl(Duration::from_secs(60))
        .build();

    let guard = fapilog::builder()
        .filter("info")
        .service("redis-example")
        .async_enricher_with(
            user_enricher,
            EnricherOptions::new().call_timeout(Duration::from_millis(250)),
        )
        .init_async()
        .await?;

    for user_id in [1u64, 2, 3, 1, 2] {
        let span = tracing::info_span!("request", user_id, path = "/cart");
        let _entered = span.enter();
        tracing::info!(items = user_id + 1, "cart viewed");
    }
    tracing::info!(user_id = "svc-batch", "a string key works too");

    let report = guard.shutdown().await;
    eprintln!(
        "shutdown: emitted={} dropped={} sink_failures={}",
        report.emitted, report.dropped, report.sink_failures
    );
    for e in &report.enrichers {
        eprintln!(
            "enricher {}: fetches={} keys_fetched={} cache_hits={} misses={} not_found_hits={} failures={} p50={:?} p99={:?}",
            e.name,
            e.fetches,
            e.fetched_keys,
            e.cache_hits,
            e.cache_misses,
            e.negative_hits,
            e.failures,
            e.latency.p50,
            e.latency.p99
        );
    }
    Ok(())
}

/// Writes the example's user records, expiring in ten minutes.
async fn seed(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let records = [
        ("1", r#"{"name":"Ada","tier":"gold"}"#),
        ("2", r#"{"name":"Grace","tier":"standard"}"#),
        ("svc-batch", r#"{"name":"nightly batch","tier":"internal"}"#),
    ];
    let mut pipe = redis::pipe();
    for (id, json) in records {
        pipe.cmd("SET")
            .arg(format!("{PREFIX}{id}"))
            .arg(json)
            .arg("EX")
            .arg(600)
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await
}
