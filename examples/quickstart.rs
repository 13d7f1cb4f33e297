//! The quickstart: structured events with span context, enriched off the
//! caller's thread — by a sync enricher and by an async lookup on an
//! embedded SQLite database (no server needed) — written as JSON lines to
//! stdout, then a clean shutdown with its report and the enricher's stats.
//!
//! Run with `cargo run --example quickstart --features sqlite`.

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::sources::SqlLookup;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An embedded database with a `users` table, standing in for yours.
    let dir = std::env::temp_dir().join(format!("fapilog-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("users.db").display());
    seed(&url).await?;

    // Look users up by the `user_id` of the event or of its request span:
    // cached, batched, with a timeout and a circuit breaker.
    let users = SqlLookup::builder(&url)
        .query("SELECT id, name, tier FROM users WHERE id IN ({keys})")
        .build()?;
    let user_enricher = LookupEnricher::builder("user", users)
        .key_field("user_id")
        .ttl(Duration::from_secs(60))
        .build();

    let guard = fapilog::builder()
        .filter("info")
        .service("quickstart")
        .version(env!("CARGO_PKG_VERSION"))
        .environment("dev")
        .with_hostname()
        .with_pid()
        .async_enricher_with(
            user_enricher,
            EnricherOptions::new().call_timeout(Duration::from_millis(250)),
        )
        // A sync enricher, run after the lookup (declared order): it sees
        // the looked-up user.
        .enricher(|e: &mut fapilog::Event| {
            let gold = e
                .field("user")
                .and_then(|u| u.get("tier"))
                .is_some_and(|t| t == "gold");
            e.insert("priority", if gold { "high" } else { "normal" });
        })
        .init_async()
        .await?;

    for user_id in [1u64, 2, 3, 1, 42] {
        let span = tracing::info_span!("request", user_id, path = "/orders");
        let _entered = span.enter();
        tracing::info!(order_id = user_id * 100, amount = 12.5, "order placed");
    }
    // Records from the `log` crate are bridged too.
    log::warn!(target: "legacy", "a record from the log crate");

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
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

async fn seed(url: &str) -> Result<(), sqlx::Error> {
    let db = sqlx::SqlitePool::connect(url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, tier TEXT)")
        .execute(&db)
        .await?;
    sqlx::query(
        "INSERT OR REPLACE INTO users VALUES (1, 'Ada', 'gold'), (2, 'Grace', 'standard'), (3, 'Edsger', 'gold')",
    )
    .execute(&db)
    .await?;
    db.close().await;
    Ok(())
}
