//! Enrich events with rows from a database: PostgreSQL when `DATABASE_URL`
//! is set (`postgres://…`), else an embedded SQLite file. Prints the
//! enriched events and the enricher's stats.
//!
//! ```sh
//! cargo run --example database --features sql
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example database --features sql
//! ```

use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::sources::{PoolSettings, SqlLookup};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir().join(format!("fapilog-database-{}", std::process::id()));
    let (url, query) = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            seed_postgres(&url).await?;
            (
                url,
                "SELECT id, name, tier, created_at FROM example_users WHERE id = ANY($1)",
            )
        }
        Ok(other) => {
            return Err(format!(
                "DATABASE_URL must be postgres://…, got a different scheme ({})",
                other.split(':').next().unwrap_or("")
            )
            .into());
        }
        Err(_) => {
            std::fs::create_dir_all(&tmp)?;
            let url = format!("sqlite://{}?mode=rwc", tmp.join("example.db").display());
            seed_sqlite(&url).await?;
            (
                url,
                "SELECT id, name, tier, created_at FROM example_users WHERE id IN ({keys})",
            )
        }
    };

    let users = SqlLookup::builder(&url)
        .query(query)
        .pool(PoolSettings::default().max_connections(4))
        .build()?;
    let enricher = LookupEnricher::builder("user", users)
        .key_field("user_id")
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(5))
        .build();
    let guard = fapilog::builder()
        .service("database-example")
        .async_enricher_with(
            enricher,
            EnricherOptions::new().call_timeout(Duration::from_millis(500)),
        )
        .init_async()
        .await?;

    for (i, user_id) in [1i64, 2, 3, 2, 1, 99].into_iter().enumerate() {
        let span = tracing::info_span!("request", user_id, request = i);
        let _in = span.enter();
        tracing::info!(action = "checkout", "request handled");
    }

    let report = guard.shutdown().await;
    eprintln!("emitted={} dropped={}", report.emitted, report.dropped);
    for e in &report.enrichers {
        eprintln!(
            "{}: fetches={} keys_fetched={} cache_hits={} misses={} failures={} latency p50={:?} p99={:?}",
            e.name,
            e.fetches,
            e.fetched_keys,
            e.cache_hits,
            e.cache_misses,
            e.failures,
            e.latency.p50,
            e.latency.p99
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

async fn seed_postgres(url: &str) -> Result<(), sqlx::Error> {
    let db = sqlx::PgPool::connect(url).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS example_users (id int8 PRIMARY KEY, name text, tier text, created_at timestamptz)",
    )
    .execute(&db)
    .await?;
    sqlx::query(
        "INSERT INTO example_users VALUES
           (1, 'Ada', 'gold', '2024-01-02T03:04:05Z'),
           (2, 'Grace', 'standard', '2024-02-03T04:05:06Z'),
           (3, 'Edsger', 'gold', '2024-03-04T05:06:07Z')
         ON CONFLICT (id) DO NOTHING",
    )
    .execute(&db)
    .await?;
    db.close().await;
    Ok(())
}

async fn seed_sqlite(url: &str) -> Result<(), sqlx::Error> {
    let db = sqlx::SqlitePool::connect(url).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS example_users (id INTEGER PRIMARY KEY, name TEXT, tier TEXT, created_at DATETIME)",
    )
    .execute(&db)
    .await?;
    sqlx::query(
        "INSERT OR REPLACE INTO example_users VALUES
           (1, 'Ada', 'gold', '2024-01-02T03:04:05Z'),
           (2, 'Grace', 'standard', '2024-02-03T04:05:06Z'),
           (3, 'Edsger', 'gold', '2024-03-04T05:06:07Z')",
    )
    .execute(&db)
    .await?;
    db.close().await;
    Ok(())
}
