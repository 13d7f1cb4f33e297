//! `SqlLookup` against real PostgreSQL, MariaDB and SQLite: values and
//! column types, one query per batch (counted by the server), the pool
//! bound (seen by the server), outages and recovery, hostile keys.
//!
//! Servers come from `FAPILOG_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `FAPILOG_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`); `scripts/test.sh` starts
//! them when they are not running. A missing server fails these tests.
#![cfg(all(feature = "postgres", feature = "mysql", feature = "sqlite"))]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::resilience::{BreakerConfig, FailurePolicy};
use fapilog::sources::{PoolSettings, SqlLookup};
use fapilog::{Event, Value};
use serde_json::json;
use sqlx::Executor;
use support::{Collected, PATIENCE};

fn pg_url() -> String {
    std::env::var("FAPILOG_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn mysql_url() -> String {
    std::env::var("FAPILOG_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

async fn pg() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); run `bash scripts/test.sh`, which starts it, or set FAPILOG_TEST_PG_URL",
                pg_url()
            )
        })
}

async fn mysql() -> sqlx::MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&mysql_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL is not reachable at {} ({e}); run `bash scripts/test.sh`, which starts it, or set FAPILOG_TEST_MYSQL_URL",
                mysql_url()
            )
        })
}

async fn exec<'e, E: Executor<'e>>(db: E, sql: &'static str)
where
    E::Database: sqlx::Database,
{
    db.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs a pipeline with `enricher`, logs `user_id` for each key (each in
/// its own span, as a request would), and returns the events written.
async fn enrich_keys(
    enricher: LookupEnricher<SqlLookup>,
    options: EnricherOptions,
    keys: Vec<Value>,
) -> Vec<Event> {
    let out = Collected::new();
    let (dispatch, guard) = support::start_async(
        fapilog::builder()
            .async_enricher_with(enricher, options)
            .enrich_deadline(Duration::from_secs(20))
            // All the events in one batch even on a slow machine (logging
            // them can take longer than the default 1 ms linger): the
            // tests count queries per batch.
            .linger(Duration::from_millis(500))
            .sink(out.sink()),
    )
    .await;
    tracing::dispatcher::with_default(&dispatch, || {
        for (i, k) in keys.iter().enumerate() {
            let span = tracing::info_span!("request", user_id = tracing::field::Empty);
            match k {
                Value::Number(n) => span.record("user_id", n.as_i64().unwrap()),
                Value::String(s) => span.record("user_id", s.as_str()),
                other => panic!("unsupported key {other}"),
            };
            let _e = span.enter();
            tracing::info!(seq = i as u64, "handled");
        }
    });
    let report = guard.shutdown().await;
    assert_eq!(report.dropped, 0);
    let events = out.app_events();
    assert_eq!(events.len(), keys.len(), "every event written");
    events
}

fn patient() -> EnricherOptions {
    EnricherOptions::new().call_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_values_keep_their_types() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_types").await;
    exec(
        &db,
        "CREATE TABLE fl_types (id int8 PRIMARY KEY, small int2, medium int4, real4 float4,
         real8 float8, flag bool, name text, code varchar(8), seen timestamptz,
         local_seen timestamp, born date, doc jsonb, missing text)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO fl_types VALUES (1, 2, 3, 1.5, 2.25, true, 'Ada', 'A1',
         '2024-01-02T03:04:05.678Z', '2024-01-02 03:04:05', '1815-12-10',
         '{\"tier\": \"gold\", \"n\": [1, 2]}', NULL)",
    )
    .await;
    let lookup = SqlLookup::builder(pg_url())
        .query("SELECT * FROM fl_types WHERE id = ANY($1)")
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let events = enrich_keys(enricher, patient(), vec![json!(1), json!(2)]).await;

    let user = events[0].field("user").expect("event 1 enriched");
    assert_eq!(
        user,
        &json!({
            "id": 1, "small": 2, "medium": 3, "real4": 1.5, "real8": 2.25, "flag": true,
            "name": "Ada", "code": "A1", "seen": "2024-01-02T03:04:05.678Z",
            "local_seen": "2024-01-02T03:04:05Z", "born": "1815-12-10",
            "doc": {"tier": "gold", "n": [1, 2]}
        })
    );
    // Not found: no field, and not an error.
    assert!(events[1].field("user").is_none());
    assert_eq!(events[1].enrichment_errors().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nulls_can_be_kept() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_nulls").await;
    exec(
        &db,
        "CREATE TABLE fl_nulls (id int8 PRIMARY KEY, nick text)",
    )
    .await;
    exec(&db, "INSERT INTO fl_nulls VALUES (1, NULL)").await;
    let lookup = SqlLookup::builder(pg_url())
        .query("SELECT id, nick FROM fl_nulls WHERE id = ANY($1)")
        .nulls_as_null()
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let events = enrich_keys(enricher, patient(), vec![json!(1)]).await;
    assert_eq!(
        events[0].field("user"),
        Some(&json!({"id": 1, "nick": null}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_values_keep_their_types() {
    let db = mysql().await;
    exec(&db, "DROP TABLE IF EXISTS fl_types").await;
    exec(
        &db,
        "CREATE TABLE fl_types (id BIGINT PRIMARY KEY, small SMALLINT, big BIGINT UNSIGNED,
         real4 FLOAT, real8 DOUBLE, flag BOOLEAN, name VARCHAR(32), note TEXT,
         seen DATETIME(3), born DATE, missing VARCHAR(8) NULL)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO fl_types VALUES (1, -2, 18446744073709551615, 1.5, 2.25, TRUE, 'Ada',
         'analytical engine', '2024-01-02 03:04:05.678', '1815-12-10', NULL)",
    )
    .await;
    let lookup = SqlLookup::builder(mysql_url())
        .query("SELECT * FROM fl_types WHERE id IN ({keys})")
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let events = enrich_keys(enricher, patient(), vec![json!(1), json!(7)]).await;
    assert_eq!(
        events[0].field("user"),
        Some(&json!({
            "id": 1, "small": -2, "big": 18446744073709551615u64, "real4": 1.5, "real8": 2.25,
            "flag": true, "name": "Ada", "note": "analytical engine",
            "seen": "2024-01-02T03:04:05.678Z", "born": "1815-12-10"
        }))
    );
    assert!(events[1].field("user").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_values_keep_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("users.db").display()
    );
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    exec(
        &db,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score REAL, admin BOOLEAN,
         seen DATETIME, missing TEXT)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO users VALUES (1, 'Ada', 9.5, 1, '2024-01-02T03:04:05Z', NULL)",
    )
    .await;
    db.close().await;
    let lookup = SqlLookup::builder(url)
        .query("SELECT * FROM users WHERE id IN ({keys})")
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let events = enrich_keys(enricher, patient(), vec![json!(1), json!(2)]).await;
    assert_eq!(
        events[0].field("user"),
        Some(&json!({
            "id": 1, "name": "Ada", "score": 9.5, "admin": true, "seen": "2024-01-02T03:04:05Z"
        }))
    );
    assert!(events[1].field("user").is_none());
}

/// The lookup query bumps a sequence once per execution (an uncorrelated
/// scalar subquery is evaluated once per query), so the server counts the
/// queries the lookup ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch_of_misses_is_one_query() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_batch").await;
    exec(&db, "DROP SEQUENCE IF EXISTS fl_batch_calls").await;
    exec(&db, "CREATE SEQUENCE fl_batch_calls").await;
    exec(
        &db,
        "CREATE TABLE fl_batch (id int8 PRIMARY KEY, name text)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO fl_batch SELECT g, 'user ' || g FROM generate_series(1, 100) g",
    )
    .await;
    let lookup = SqlLookup::builder(pg_url())
        .query(
            "SELECT id, name FROM fl_batch
             WHERE id = ANY($1) AND (SELECT nextval('fl_batch_calls')) > 0",
        )
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .max_batch(1000)
        .build();
    // 60 events over 40 distinct keys (30 present, 10 absent) in one batch.
    let keys: Vec<Value> = (0..60).map(|i| json!(71 + (i % 40))).collect();
    let events = enrich_keys(enricher, patient(), keys).await;
    let calls: i64 = sqlx::query_scalar("SELECT last_value FROM fl_batch_calls")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(calls, 1, "one query for the whole batch of misses");
    for e in &events {
        let id = e.field("user_id").unwrap().as_i64().unwrap();
        if id <= 100 {
            assert_eq!(
                e.field("user").unwrap()["name"],
                json!(format!("user {id}"))
            );
        } else {
            assert!(e.field("user").is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_batch_of_misses_is_one_query() {
    let db = mysql().await;
    exec(&db, "DROP TABLE IF EXISTS fl_batch").await;
    exec(&db, "DROP SEQUENCE IF EXISTS fl_batch_calls").await;
    exec(&db, "CREATE SEQUENCE fl_batch_calls").await;
    exec(
        &db,
        "CREATE TABLE fl_batch (id BIGINT PRIMARY KEY, name TEXT)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO fl_batch SELECT seq, CONCAT('user ', seq) FROM seq_1_to_100",
    )
    .await;
    let lookup = SqlLookup::builder(mysql_url())
        .query(
            "SELECT id, name FROM fl_batch
             WHERE id IN ({keys}) AND (SELECT NEXTVAL(fl_batch_calls)) > 0",
        )
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .max_batch(1000)
        .build();
    let keys: Vec<Value> = (0..60).map(|i| json!(71 + (i % 40))).collect();
    let events = enrich_keys(enricher, patient(), keys).await;
    let next: i64 = sqlx::query_scalar("SELECT NEXTVAL(fl_batch_calls)")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(next - 1, 1, "one query for the whole batch of misses");
    assert_eq!(events[0].field("user").unwrap()["name"], json!("user 71"));
}

/// `pg_stat_activity` never shows more of the lookup's connections than
/// `max_connections`, while 200 fetches compete for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_never_exceeds_its_maximum() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_pool").await;
    exec(&db, "CREATE TABLE fl_pool (id int8 PRIMARY KEY, name text)").await;
    exec(
        &db,
        "INSERT INTO fl_pool SELECT g, 'u' || g FROM generate_series(1, 200) g",
    )
    .await;
    let app = format!("fl_pool_{}", std::process::id());
    let url = format!("{}?application_name={app}", pg_url());
    let lookup = SqlLookup::builder(url)
        .query("SELECT id, name, (SELECT pg_sleep(0.005))::text AS slept FROM fl_pool WHERE id = ANY($1)")
        .pool(PoolSettings::default().max_connections(3))
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .max_batch(1) // one fetch per key: 200 fetches at once
        .build();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let db = db.clone();
        let stop = stop.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let mut max_seen = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&app)
                .fetch_one(&db)
                .await
                .unwrap();
                max_seen = max_seen.max(n);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max_seen
        })
    };
    let keys: Vec<Value> = (1..=200).map(|i| json!(i)).collect();
    let events = enrich_keys(enricher, patient(), keys).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_seen = sampler.await.unwrap();
    assert!(max_seen >= 1, "the sampler saw the lookup's connections");
    assert!(
        max_seen <= 3,
        "server saw {max_seen} connections, pool max is 3"
    );
    assert!(events.iter().all(|e| e.field("user").is_some()));
}

const HOSTILE: [&str; 9] = [
    "O'Brien",
    "'; DROP TABLE fl_hostile; --",
    "Robert'); DROP TABLE fl_hostile;--",
    "\"quoted\"",
    "back\\slash",
    "ключ-鍵-🔑",
    "?",
    "$1",
    "{keys}",
];

/// Looks every hostile key up through `url` with `query` and checks each
/// event got exactly its own row.
async fn assert_hostile_keys_found(url: String, query: &str, backend: &str) {
    let lookup = SqlLookup::builder(url).query(query).build().unwrap();
    let enricher = LookupEnricher::builder("row", lookup)
        .key_field("user_id")
        .build();
    let keys: Vec<Value> = HOSTILE.iter().map(|k| json!(k)).collect();
    let events = enrich_keys(enricher, patient(), keys).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.field("row"),
            Some(&json!({"name": HOSTILE[i], "n": i})),
            "{backend} key {i}: {:?}",
            e.enrichment_errors().collect::<Vec<_>>()
        );
    }
}

/// Keys are bound parameters: quotes, SQL, backslashes and non-ASCII text
/// are looked up as data, and the table survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_data_on_every_backend() {
    // PostgreSQL
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_hostile").await;
    exec(
        &db,
        "CREATE TABLE fl_hostile (name text PRIMARY KEY, n int4)",
    )
    .await;
    for (i, k) in HOSTILE.iter().enumerate() {
        sqlx::query("INSERT INTO fl_hostile VALUES ($1, $2)")
            .bind(*k)
            .bind(i as i32)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_hostile_keys_found(
        pg_url(),
        "SELECT name, n FROM fl_hostile WHERE name = ANY($1)",
        "pg",
    )
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fl_hostile")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, HOSTILE.len() as i64);

    // MariaDB
    let db = mysql().await;
    exec(&db, "DROP TABLE IF EXISTS fl_hostile").await;
    exec(
        &db,
        "CREATE TABLE fl_hostile (name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PRIMARY KEY, n INT)",
    )
    .await;
    for (i, k) in HOSTILE.iter().enumerate() {
        sqlx::query("INSERT INTO fl_hostile VALUES (?, ?)")
            .bind(*k)
            .bind(i as i32)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_hostile_keys_found(
        mysql_url(),
        "SELECT name, n FROM fl_hostile WHERE name IN ({keys})",
        "mariadb",
    )
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fl_hostile")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, HOSTILE.len() as i64);

    // SQLite
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    exec(
        &db,
        "CREATE TABLE fl_hostile (name TEXT PRIMARY KEY, n INTEGER)",
    )
    .await;
    for (i, k) in HOSTILE.iter().enumerate() {
        sqlx::query("INSERT INTO fl_hostile VALUES (?, ?)")
            .bind(*k)
            .bind(i as i64)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_hostile_keys_found(
        url,
        "SELECT name, n FROM fl_hostile WHERE name IN ({keys})",
        "sqlite",
    )
    .await;
}

/// A key PostgreSQL cannot store (a NUL byte) is not found for itself
/// alone: the other keys of its batch are enriched, the event carries no
/// error, and nothing else happens to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unencodable_key_is_not_found_alone() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_nul").await;
    exec(&db, "CREATE TABLE fl_nul (name text PRIMARY KEY)").await;
    exec(&db, "INSERT INTO fl_nul VALUES ('a'), ('b')").await;
    let lookup = SqlLookup::builder(pg_url())
        .query("SELECT name FROM fl_nul WHERE name = ANY($1)")
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("row", lookup)
        .key_field("user_id")
        .build();
    let events = enrich_keys(
        enricher,
        patient(),
        vec![json!("a"), json!("nul\u{0}byte"), json!("b")],
    )
    .await;
    assert_eq!(events[0].field("row"), Some(&json!({"name": "a"})));
    assert_eq!(events[1].field("row"), None);
    assert_eq!(events[2].field("row"), Some(&json!({"name": "b"})));
    for e in &events {
        assert_eq!(e.enrichment_errors().count(), 0, "{e:?}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fl_nul")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

/// Logs one event with `key` and waits until the sink has it.
fn log_one(dispatch: &tracing::Dispatch, out: &Collected, key: i64) -> Event {
    let before = out.app_events().len();
    tracing::dispatcher::with_default(dispatch, || {
        tracing::info!(user_id = key, "request");
    });
    assert!(
        support::wait_until(|| out.app_events().len() > before),
        "event for key {key} never reached the sink"
    );
    out.app_events().pop().unwrap()
}

fn pg_addr() -> SocketAddr {
    let url = pg_url();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().expect("FAPILOG_TEST_PG_URL host:port")
}

/// The database becomes unreachable mid-run (port refusing, connections
/// cut): events are still written, with error entries; the breaker opens
/// and short-circuits; when the database is back, enrichment resumes on its
/// own and health returns to up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_degrades_then_recovers_without_restart() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_outage").await;
    exec(
        &db,
        "CREATE TABLE fl_outage (id int8 PRIMARY KEY, name text)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO fl_outage SELECT g, 'u' || g FROM generate_series(1, 1000) g",
    )
    .await;
    let mut proxy = support::proxy::Proxy::start(pg_addr()).await;
    let user = pg_url()
        .split("://")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    let db_name = pg_url().rsplit('/').next().unwrap().to_owned();
    let url = format!("postgres://{user}@{}/{db_name}", proxy.addr());
    let lookup = SqlLookup::builder(url)
        .query("SELECT id, name FROM fl_outage WHERE id = ANY($1)")
        .pool(PoolSettings::default().acquire_timeout(Duration::from_millis(500)))
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let out = Collected::new();
    let (dispatch, guard) = support::start_async(
        fapilog::builder()
            .async_enricher_with(
                enricher,
                EnricherOptions::new()
                    .call_timeout(Duration::from_secs(2))
                    .breaker(
                        BreakerConfig::default()
                            .policy(FailurePolicy::Consecutive(2))
                            .recovery_timeout(Duration::from_millis(300)),
                    ),
            )
            .enrich_deadline(Duration::from_secs(5))
            .health_interval(Duration::from_millis(100))
            .linger(Duration::ZERO)
            .sink(out.sink()),
    )
    .await;

    let e = log_one(&dispatch, &out, 1);
    assert_eq!(e.field("user").unwrap()["name"], json!("u1"));

    proxy.cut().await;
    // New keys miss the cache and need the database.
    let mut errors = Vec::new();
    for key in 2..=6 {
        let e = log_one(&dispatch, &out, key);
        assert!(e.field("user").is_none());
        let errs: Vec<(String, String)> = e
            .enrichment_errors()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(errs.len(), 1, "event {key} has its error entry: {errs:?}");
        errors.push(errs[0].1.clone());
    }
    assert!(
        errors.iter().any(|r| r == "circuit_open"),
        "breaker opened: {errors:?}"
    );
    // Cached keys are still served while the database is away.
    let e = log_one(&dispatch, &out, 1);
    assert_eq!(e.field("user").unwrap()["name"], json!("u1"));
    let stats = guard.stats();
    assert!(stats.enrichers[0].short_circuits >= 1);
    assert!(stats.enrichers[0].failures >= 2);

    proxy.restore().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut key = 100;
    loop {
        key += 1;
        let e = log_one(&dispatch, &out, key);
        if e.field("user").is_some() {
            assert_eq!(e.field("user").unwrap()["name"], json!(format!("u{key}")));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "enrichment never resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        support::wait_until(|| {
            let h = guard.health();
            h[0].status == fapilog::observe::HealthStatus::Up
        }),
        "health returned to up"
    );
    guard.shutdown().await;
}

/// The server terminates the pool's connections: the pool replaces them
/// and enrichment carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_connections_are_replaced() {
    let db = pg().await;
    exec(&db, "DROP TABLE IF EXISTS fl_term").await;
    exec(&db, "CREATE TABLE fl_term (id int8 PRIMARY KEY, name text)").await;
    exec(
        &db,
        "INSERT INTO fl_term SELECT g, 'u' || g FROM generate_series(1, 100) g",
    )
    .await;
    let app = format!("fl_term_{}", std::process::id());
    let lookup = SqlLookup::builder(format!("{}?application_name={app}", pg_url()))
        .query("SELECT id, name FROM fl_term WHERE id = ANY($1)")
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let out = Collected::new();
    let (dispatch, guard) = support::start_async(
        fapilog::builder()
            .async_enricher_with(enricher, patient())
            .linger(Duration::ZERO)
            .sink(out.sink()),
    )
    .await;
    assert!(log_one(&dispatch, &out, 1).field("user").is_some());
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
    )
    .bind(&app)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(killed >= 1, "terminated the lookup's connections");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut key = 2;
    loop {
        let e = log_one(&dispatch, &out, key);
        if e.field("user").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "enrichment never resumed"
        );
        key += 1;
    }
    guard.shutdown().await;
}
