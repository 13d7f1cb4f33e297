//! What the PostgreSQL benches share: the server's URL, the users tables
//! they fill, and the server-side query counter (a sequence every query
//! bumps once).

// Each bench uses most, not all, of these.
#![allow(dead_code)]

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

/// `FAPILOG_BENCH_PG_URL`, else `FAPILOG_TEST_PG_URL`, else the local
/// test server.
pub fn pg_url() -> String {
    std::env::var("FAPILOG_BENCH_PG_URL")
        .or_else(|_| std::env::var("FAPILOG_TEST_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One connection for the bench's own statements; the error says how to
/// get a server.
pub async fn connect(url: &str) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| {
            format!(
                "PostgreSQL is not reachable at {url} ({e}); start it (`bash scripts/test.sh` does) or set FAPILOG_BENCH_PG_URL"
            )
        })
}

/// Makes `table` hold exactly ids 1..=rows (names `user <id>`).
pub async fn ensure_table(db: &PgPool, table: &str, rows: i64) -> Result<(), sqlx::Error> {
    db.execute(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (id int8 PRIMARY KEY, name text NOT NULL, tier text NOT NULL)"
    )))
    .await?;
    let (n, min, max): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM {table}"
    )))
    .fetch_one(db)
    .await?;
    if (n, min, max) != (rows, 1, rows) {
        println!("filling {table} with {rows} rows");
        db.execute(AssertSqlSafe(format!("TRUNCATE {table}")))
            .await?;
        db.execute(AssertSqlSafe(format!(
            "INSERT INTO {table} SELECT g, 'user ' || g, (ARRAY['gold', 'silver', 'bronze'])[g % 3 + 1] FROM generate_series(1, {rows}) g"
        )))
        .await?;
        db.execute(AssertSqlSafe(format!("ANALYZE {table}")))
            .await?;
    }
    Ok(())
}

/// Queries the server has counted on `sequence` so far.
pub async fn counted_queries(db: &PgPool, sequence: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"
    )))
    .fetch_one(db)
    .await
}
