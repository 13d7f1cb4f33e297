//! One bad key hurts no other key: whatever mix of mistyped, empty, NUL,
//! overlong or injection-shaped keys a batch holds, on PostgreSQL, MariaDB
//! and SQLite, the well-formed keys are enriched, the others are simply
//! not found, no event carries an error, and the circuit breaker never
//! hears of it.

#![cfg(feature = "sql")]

use fapilog::Event;
use fapilog::enrich::{AsyncEnricher, EnrichContext, Patch};
use fapilog::lookup::LookupEnricher;
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use fapilog::sources::SqlLookup;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use sqlx::Executor;

fn pg_url() -> String {
    std::env::var("FAPILOG_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn mysql_url() -> String {
    std::env::var("FAPILOG_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A key as an event carries it, and whether it names a row.
#[derive(Debug, Clone)]
enum Spec {
    /// Row `n` (1..=50), logged as an integer.
    Row(i64),
    /// Row `n`, logged as its decimal text (`"7"`), as headers carry ids.
    RowText(i64),
    /// A well-formed id with no row.
    Missing(i64),
    /// Text no integer column can match, or no text column can hold.
    Hostile(String),
    /// A boolean.
    Flag(bool),
}

impl Spec {
    fn value(&self) -> Value {
        match self {
            Spec::Row(n) | Spec::Missing(n) => json!(n),
            Spec::RowText(n) => json!(n.to_string()),
            Spec::Hostile(s) => json!(s),
            Spec::Flag(b) => json!(b),
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        3 => (1i64..=50).prop_map(Spec::Row),
        1 => (1i64..=50).prop_map(Spec::RowText),
        1 => prop_oneof![Just(0i64), 1000i64..100_000, Just(i64::MAX), Just(i64::MIN)].prop_map(Spec::Missing),
        3 => prop_oneof![
            Just(String::new()),
            Just("\0".to_owned()),
            Just("7\0".to_owned()),
            Just("7abc".to_owned()),
            Just(" 7".to_owned()),
            Just("7.0".to_owned()),
            Just("1e3".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just("'; DROP TABLE fl_hk; --".to_owned()),
            Just("x".repeat(5000)),
            "[a-z\\u{0}-\\u{1f}'\"%_\\\\]{1,12}",
        ]
        .prop_map(Spec::Hostile),
        1 => any::<bool>().prop_map(Spec::Flag),
    ]
}

fn event(key: &Value) -> Event {
    let e = Event::new(tracing::Level::INFO, "t", "m");
    e.with_field("user_id", key.clone())
}

/// Starts `lookup` and checks random batches of keys against it.
fn check_backend(lookup: SqlLookup, backend: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        // Every batch asks the database: nothing is answered from the cache.
        .ttl(std::time::Duration::ZERO)
        .negative_ttl(std::time::Duration::ZERO)
        .build();
    rt.block_on(enricher.startup())
        .unwrap_or_else(|e| panic!("{backend}: lookup starts: {e}"));
    // A breaker that would open on the first failed call.
    let ctx = EnrichContext::detached("user")
        .with_call_timeout(std::time::Duration::from_secs(10))
        .with_breaker(BreakerConfig::default().policy(FailurePolicy::Consecutive(1)))
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(spec(), 1..40), |specs| {
        let events: Vec<Event> = specs.iter().map(|s| event(&s.value())).collect();
        let mut out = vec![Patch::default(); events.len()];
        let ctx = ctx.clone().with_budget(std::time::Duration::from_secs(20));
        rt.block_on(enricher.enrich(&events, &mut out, &ctx))
            .expect("a lookup enricher reports failures per event");
        for (spec, patch) in specs.iter().zip(&out) {
            prop_assert_eq!(patch.error(), None, "{}: {:?}", backend, spec);
            let got = patch
                .fields()
                .find(|(k, _)| *k == "user")
                .map(|(_, v)| v.clone());
            match spec {
                Spec::Row(n) | Spec::RowText(n) => {
                    prop_assert_eq!(
                        got,
                        Some(json!({"id": n, "name": format!("user {n}")})),
                        "{}: {:?}",
                        backend,
                        spec
                    )
                }
                _ => prop_assert_eq!(got, None, "{}: {:?} found a row", backend, spec),
            }
        }
        prop_assert_eq!(ctx.breaker_state(), BreakerState::Closed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{backend}: {e}");
    }
    let stats = ctx.stats();
    assert_eq!(stats.failures, 0, "{backend}: {stats:?}");
    assert_eq!(stats.short_circuits, 0, "{backend}: {stats:?}");
    assert!(stats.fetches > 0, "{backend}: the database was asked");
    rt.block_on(enricher.shutdown()).unwrap();
}

/// Creates `table` on PostgreSQL with an id column of `id_type` and rows
/// 1..=50 named `user <n>`, and returns a lookup over it.
fn pg_users(table: &str, id_type: &str) -> SqlLookup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = sqlx::PgPool::connect(&pg_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); run `bash scripts/test.sh`",
                pg_url()
            )
        });
        for sql in [
            format!("DROP TABLE IF EXISTS {table}"),
            format!("CREATE TABLE {table} (id {id_type} PRIMARY KEY, name text)"),
            format!("INSERT INTO {table} SELECT n, 'user ' || n FROM generate_series(1, 50) n"),
        ] {
            db.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        }
    });
    SqlLookup::builder(pg_url())
        .query(format!("SELECT id, name FROM {table} WHERE id = ANY($1)"))
        .build()
        .unwrap()
}

/// [`pg_users`] on MariaDB.
fn mariadb_users(table: &str, id_type: &str) -> SqlLookup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = sqlx::MySqlPool::connect(&mysql_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB is not reachable at {} ({e}); run `bash scripts/test.sh`",
                    mysql_url()
                )
            });
        for sql in [
            format!("DROP TABLE IF EXISTS {table}"),
            format!("CREATE TABLE {table} (id {id_type} PRIMARY KEY, name TEXT)"),
        ] {
            db.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        }
        for n in 1..=50i64 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES (?, ?)"
            )))
            .bind(n)
            .bind(format!("user {n}"))
            .execute(&db)
            .await
            .unwrap();
        }
    });
    SqlLookup::builder(mysql_url())
        .query(format!(
            "SELECT id, name FROM {table} WHERE id IN ({{keys}})"
        ))
        .build()
        .unwrap()
}

#[test]
fn postgres_any_mix_of_hostile_keys_leaves_the_good_ones_enriched() {
    check_backend(pg_users("fl_hk", "int8"), "postgres int8");
}

#[test]
fn postgres_int4_keys_out_of_range_are_not_found_alone() {
    check_backend(pg_users("fl_hk4", "int4"), "postgres int4");
}

#[test]
fn mariadb_any_mix_of_hostile_keys_leaves_the_good_ones_enriched() {
    // `7abc` must not be row 7, as MySQL's own comparison would make it.
    check_backend(mariadb_users("fl_hk", "BIGINT"), "mariadb bigint");
}

#[test]
fn mariadb_unsigned_keys_take_text_ids_and_refuse_the_rest() {
    check_backend(
        mariadb_users("fl_hku", "INT UNSIGNED"),
        "mariadb int unsigned",
    );
}

#[test]
fn sqlite_any_mix_of_hostile_keys_leaves_the_good_ones_enriched() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hk.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = sqlx::SqlitePool::connect(&url).await.unwrap();
        db.execute("CREATE TABLE fl_hk (id INTEGER PRIMARY KEY, name TEXT)")
            .await
            .unwrap();
        for n in 1..=50i64 {
            sqlx::query("INSERT INTO fl_hk VALUES (?, ?)")
                .bind(n)
                .bind(format!("user {n}"))
                .execute(&db)
                .await
                .unwrap();
        }
        db.close().await;
    });
    drop(rt);
    let lookup = SqlLookup::builder(&url)
        .query("SELECT id, name FROM fl_hk WHERE id IN ({keys})")
        .build()
        .unwrap();
    check_backend(lookup, "sqlite integer");
}
