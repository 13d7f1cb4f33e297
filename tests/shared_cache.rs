//! `SharedCache`, the Redis tier between a lookup enricher's local cache
//! and its source, against a real Redis and a real PostgreSQL: a second
//! instance is served from Redis without asking the source (one claim
//! script per fetch chunk that reads the values and leases the missing
//! ones, one pipeline per write-back with the values and a lease-release
//! script, counted by the server), leases that make the
//! fleet fetch each key once, not-found entries shared for the not-found TTL,
//! local expiry following the TTL left in Redis, hostile keys that stay
//! data inside their namespace, foreign or garbled values treated as
//! misses, Redis down / slow / unreachable at start without losing an
//! event or a value, recovery without a restart, isolation by schema
//! version and prefix, and a password that never shows.
//!
//! Redis: the shared server of `FAPILOG_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), each test under a prefix of its own that is
//! deleted afterwards; tests that count commands, stop the server or
//! change its settings run a private `redis-server` instead. PostgreSQL:
//! `FAPILOG_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! one table per test, whose lookup query bumps a sequence so the server
//! counts the queries it ran. A missing server fails the tests.
#![cfg(all(feature = "redis", feature = "postgres"))]

#[path = "support/redis_support.rs"]
mod redis_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fapilog::enrich::{EnrichError, EnricherOptions};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher, SharedCache};
use fapilog::observe::{HealthStatus, SharedCacheStats};
use fapilog::resilience::{BreakerConfig, BreakerState, FailurePolicy};
use fapilog::sources::{PoolSettings, SqlLookup};
use fapilog::{Event, Guard, Value};
use redis::aio::MultiplexedConnection;
use redis_support::{
    Cleanup, PrivateRedis, command_calls, connect, redis_url, shared, unique_prefix,
};
use serde_json::json;
use sqlx::{AssertSqlSafe, Executor, PgPool};
use support::Collected;
use support::async_support::{errors, inserted};
use tokio::runtime::Handle;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

/// Longest a test waits for the events it logged to be written; reached
/// only when the behaviour under test is broken.
const EVENT_PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// PostgreSQL

fn pg_url() -> String {
    std::env::var("FAPILOG_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn pg() -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); run `bash scripts/test.sh`, which starts it, or set FAPILOG_TEST_PG_URL",
                pg_url()
            )
        })
}

async fn exec(db: &PgPool, sql: String) {
    db.execute(AssertSqlSafe(sql.clone()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A table of this test's own whose lookup query the server counts: every
/// execution bumps the sequence `<name>_calls` once (an uncorrelated scalar
/// subquery is evaluated once per query), as in `tests/sql_lookup.rs`.
struct Table {
    db: PgPool,
    name: String,
    /// `id int8` (users 1..=n) or `k text` (arbitrary text keys).
    text_keys: bool,
}

impl Table {
    /// `name (id int8 PRIMARY KEY, name text)` holding users `1..=n`, each
    /// `{"id": i, "name": "user i"}`.
    async fn users(name: &str, n: i64) -> Table {
        let db = pg().await;
        Self::reset(&db, name).await;
        exec(
            &db,
            format!("CREATE TABLE {name} (id int8 PRIMARY KEY, name text)"),
        )
        .await;
        exec(
            &db,
            format!("INSERT INTO {name} SELECT g, 'user ' || g FROM generate_series(1, {n}) g"),
        )
        .await;
        Table {
            db,
            name: name.to_owned(),
            text_keys: false,
        }
    }

    /// `name (k text PRIMARY KEY)` holding `keys`, each row `{"k": key}`.
    async fn text(name: &str, keys: &[&str]) -> Table {
        let db = pg().await;
        Self::reset(&db, name).await;
        exec(&db, format!("CREATE TABLE {name} (k text PRIMARY KEY)")).await;
        for k in keys {
            sqlx::query(AssertSqlSafe(format!("INSERT INTO {name} VALUES ($1)")))
                .bind(*k)
                .execute(&db)
                .await
                .unwrap_or_else(|e| panic!("insert {k:?}: {e}"));
        }
        Table {
            db,
            name: name.to_owned(),
            text_keys: true,
        }
    }

    async fn reset(db: &PgPool, name: &str) {
        exec(db, format!("DROP TABLE IF EXISTS {name}")).await;
        exec(db, format!("DROP SEQUENCE IF EXISTS {name}_calls")).await;
        exec(db, format!("CREATE SEQUENCE {name}_calls")).await;
    }

    /// A new `SqlLookup` on the table (a pool of its own, as another
    /// instance of the service would have), counted on this side too.
    fn lookup(&self) -> Counted<SqlLookup> {
        let (cols, key) = if self.text_keys {
            ("k", "k")
        } else {
            ("id, name", "id")
        };
        let sql = SqlLookup::builder(pg_url())
            .query(format!(
                "SELECT {cols} FROM {} WHERE {key} = ANY($1) AND (SELECT nextval('{}_calls')) > 0",
                self.name, self.name
            ))
            .pool(PoolSettings::default().max_connections(1))
            .build()
            .expect("valid sql lookup");
        Counted::new(sql)
    }

    /// Lookup queries the server has run on this table.
    async fn queries(&self) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}_calls",
            self.name
        )))
        .fetch_one(&self.db)
        .await
        .expect("read the query counter")
    }
}

/// Drops the table and its counter, also when the test fails.
impl Drop for Table {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be the one unwinding: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let db = pg().await;
                exec(&db, format!("DROP TABLE IF EXISTS {name}")).await;
                exec(&db, format!("DROP SEQUENCE IF EXISTS {name}_calls")).await;
            });
        })
        .join();
    }
}

/// The row `users` holds for `id`, as the enricher merges it.
fn user(id: i64) -> Value {
    json!({"id": id, "name": format!("user {id}")})
}

// ---------------------------------------------------------------------------
// A lookup that counts its fetches

/// Forwards to a lookup and keeps the keys of every `fetch` it passes on.
/// Clones share the record.
struct Counted<L> {
    inner: Arc<L>,
    fetched: Arc<Mutex<Vec<Vec<Key>>>>,
}

impl<L> Clone for Counted<L> {
    fn clone(&self) -> Self {
        Counted {
            inner: self.inner.clone(),
            fetched: self.fetched.clone(),
        }
    }
}

impl<L: Lookup> Counted<L> {
    fn new(inner: L) -> Self {
        Counted {
            inner: Arc::new(inner),
            fetched: Arc::default(),
        }
    }

    /// `fetch` calls that reached the source.
    fn fetches(&self) -> usize {
        self.fetched.lock().unwrap().len()
    }

    /// Keys those calls asked for, all together.
    fn keys(&self) -> Vec<Key> {
        self.fetched.lock().unwrap().concat()
    }
}

impl<L: Lookup> Lookup for Counted<L> {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        self.fetched.lock().unwrap().push(keys.to_vec());
        self.inner.fetch(keys).await
    }

    async fn startup(&self) -> Result<(), EnrichError> {
        self.inner.startup().await
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        self.inner.shutdown().await
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        self.inner.health_check().await
    }
}

// ---------------------------------------------------------------------------
// Redis key names, computed as the `SharedCache` docs describe them

/// Percent-encodes all but `A-Z a-z 0-9 - . _`.
fn enc(part: &str) -> String {
    let mut out = String::new();
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<prefix>:<enricher>:<schema version>:`, encoded.
fn namespace(prefix: &str, enricher: &str, version: u32) -> String {
    format!("{}:{}:{version}:", enc(prefix), enc(enricher))
}

/// The Redis name of `key` in `ns`: the key tagged with its type.
fn name_of(ns: &str, key: &Key) -> String {
    match key {
        Key::Int(i) => format!("{ns}i{i}"),
        Key::UInt(u) => format!("{ns}u{u}"),
        Key::Bool(b) => format!("{ns}b{}", u8::from(*b)),
        Key::Str(s) => format!("{ns}s{}", enc(s)),
    }
}

/// Deletes the tier's keys (under the encoded prefix) and anything under
/// the raw prefix, when dropped.
struct Keys(#[allow(dead_code)] Cleanup, #[allow(dead_code)] Cleanup);

fn cleanup(url: &str, prefix: &str) -> Keys {
    Keys(Cleanup::new(url, &enc(prefix)), Cleanup::new(url, prefix))
}

/// Every key name under `prefix` (a literal prefix: SCAN's glob characters
/// are escaped).
async fn scan(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut pattern = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        out.extend(
            keys.into_iter()
                .map(|k| String::from_utf8(k).expect("key names are ASCII")),
        );
        if next == 0 {
            out.sort();
            return out;
        }
        cursor = next;
    }
}

async fn get_raw(conn: &mut MultiplexedConnection, name: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(name)
        .query_async(conn)
        .await
        .expect("GET")
}

async fn pttl(conn: &mut MultiplexedConnection, name: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(name)
        .query_async(conn)
        .await
        .expect("PTTL")
}

/// `SET name value [PX ms]`.
async fn set_raw(conn: &mut MultiplexedConnection, name: &str, value: &[u8], px: Option<u64>) {
    let mut cmd = redis::cmd("SET");
    cmd.arg(name).arg(value);
    if let Some(ms) = px {
        cmd.arg("PX").arg(ms);
    }
    cmd.query_async::<()>(conn).await.expect("SET");
}

/// The JSON of a found entry (`F` + JSON), or `None` for anything else.
fn found_json(raw: &[u8]) -> Option<Value> {
    raw.strip_prefix(b"F")
        .and_then(|json| serde_json::from_slice(json).ok())
}

/// Calls of the commands the tier uses, from the server's `INFO
/// commandstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Commands {
    eval: u64,
    mget: u64,
    pttl: u64,
    set: u64,
    del: u64,
    get: u64,
}

impl Commands {
    async fn read(conn: &mut MultiplexedConnection) -> Commands {
        Commands {
            eval: command_calls(conn, "eval").await,
            mget: command_calls(conn, "mget").await,
            pttl: command_calls(conn, "pttl").await,
            set: command_calls(conn, "set").await,
            del: command_calls(conn, "del").await,
            get: command_calls(conn, "get").await,
        }
    }

    fn since(self, before: Commands) -> Commands {
        Commands {
            eval: self.eval - before.eval,
            mget: self.mget - before.mget,
            pttl: self.pttl - before.pttl,
            set: self.set - before.set,
            del: self.del - before.del,
            get: self.get - before.get,
        }
    }
}

// ---------------------------------------------------------------------------
// Pipelines

/// A pipeline on the test's (current-thread) runtime with one lookup
/// enricher, fed through a dispatcher of its own, so that two pipelines —
/// two instances of a service — can run side by side. Events logged
/// without awaiting in between form one batch.
struct Pipe {
    guard: Guard,
    out: Collected,
    dispatch: Dispatch,
}

/// The enricher under test: `user`, keyed by `user_id`.
fn enricher<L: Lookup>(lookup: L, tier: SharedCache) -> fapilog::lookup::LookupEnricherBuilder<L> {
    LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .shared(tier)
}

impl Pipe {
    /// A batch may take 8 s: long enough never to cut a test short.
    async fn start<L: Lookup>(enricher: LookupEnricher<L>) -> Pipe {
        Self::start_with_deadline(enricher, Duration::from_secs(8)).await
    }

    async fn start_with_deadline<L: Lookup>(
        enricher: LookupEnricher<L>,
        deadline: Duration,
    ) -> Pipe {
        let out = Collected::new();
        let (layer, guard) = fapilog::builder()
            .runtime(Handle::current())
            .async_enricher_with(
                enricher,
                EnricherOptions::new().call_timeout(Duration::from_secs(5)),
            )
            .enrich_deadline(deadline)
            .bridge_log(false)
            .sink(out.sink())
            .build_async()
            .await
            .expect("pipeline starts");
        Pipe {
            guard,
            out,
            dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)),
        }
    }

    /// Logs one event per id, tagged with `phase`, as one batch.
    fn log_ids(&self, ids: impl IntoIterator<Item = i64>, phase: &str) {
        tracing::dispatcher::with_default(&self.dispatch, || {
            for id in ids {
                tracing::info!(user_id = id, phase, "request");
            }
        });
    }

    /// Logs one event per key (strings, integers, booleans), as one batch.
    fn log_keys(&self, keys: &[Value], phase: &str) {
        tracing::dispatcher::with_default(&self.dispatch, || {
            for k in keys {
                match k {
                    Value::String(s) => tracing::info!(user_id = s.as_str(), phase, "request"),
                    Value::Bool(b) => tracing::info!(user_id = *b, phase, "request"),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => tracing::info!(user_id = i, phase, "request"),
                        None => tracing::info!(user_id = n.as_u64().unwrap(), phase, "request"),
                    },
                    other => panic!("unsupported key {other}"),
                }
            }
        });
    }

    /// Waits until `n` events of `phase` have been written; returns them.
    async fn written(&self, phase: &str, n: usize) -> Vec<Event> {
        let deadline = Instant::now() + EVENT_PATIENCE;
        loop {
            let events: Vec<Event> = self
                .out
                .app_events()
                .into_iter()
                .filter(|e| e.field("phase") == Some(&Value::from(phase)))
                .collect();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events of phase {phase:?} written within {EVENT_PATIENCE:?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// [`log_ids`](Self::log_ids), then waits for the events.
    async fn run_ids(&self, ids: impl IntoIterator<Item = i64>, phase: &str) -> Vec<Event> {
        let ids: Vec<i64> = ids.into_iter().collect();
        self.log_ids(ids.iter().copied(), phase);
        self.written(phase, ids.len()).await
    }

    /// The tier's stats as the pipeline reports them.
    fn tier(&self) -> SharedCacheStats {
        self.guard.stats().enrichers[0]
            .shared_cache
            .clone()
            .expect("a lookup enricher with a shared tier reports it in stats")
    }

    async fn finish(self) -> Vec<Event> {
        let report = self.guard.shutdown().await;
        assert_eq!(report.dropped, 0, "{report:?}");
        self.out.app_events()
    }
}

/// The event logged with `user_id = id` (ids are unique within `events`).
fn by_id(events: &[Event], id: impl Into<Value>) -> &Event {
    let id = id.into();
    events
        .iter()
        .find(|e| e.field("user_id") == Some(&id))
        .unwrap_or_else(|| panic!("no event with user_id {id} in {events:#?}"))
}

/// Every event carries its own user's row and no enrichment error.
fn assert_enriched(events: &[Event]) {
    for e in events {
        let id = e.field("user_id").and_then(Value::as_i64).expect("user_id");
        assert_eq!(inserted(e, "user"), Some(user(id)), "user_id {id}: {e:?}");
        assert!(errors(e).is_empty(), "user_id {id}: {:?}", errors(e));
    }
}

// ---------------------------------------------------------------------------
// 1. A second instance is served from Redis

#[tokio::test]
async fn a_second_instance_is_served_from_redis_without_asking_the_source() {
    // A private server, so that nothing else moves its command counters.
    let server = PrivateRedis::start().await;
    let mut conn = connect(&server.url()).await.unwrap();
    let table = Table::users("fl_sc_fleet", 100).await;
    // Two instances of one service: same prefix and enricher name, each
    // with its own tier handle (own connection and counters) and cache.
    let tier = || {
        SharedCache::redis(server.url())
            .prefix("svc")
            .build()
            .unwrap()
    };
    let (source_a, source_b, source_c) = (table.lookup(), table.lookup(), table.lookup());
    let a = Pipe::start(enricher(source_a.clone(), tier()).build()).await;
    let b = Pipe::start(enricher(source_b.clone(), tier()).build()).await;

    // A: 50 local misses → one claim script (50 GETs, all misses, 50
    // leases SET … NX PX); one query to the source; one pipeline writing
    // back 50 SET … PX and releasing the leases.
    let before = Commands::read(&mut conn).await;
    let events = a.run_ids(1..=50, "a").await;
    assert_enriched(&events);
    let on_server = Commands::read(&mut conn).await.since(before);
    assert_eq!(table.queries().await, 1, "one source query for the batch");
    assert_eq!(source_a.fetches(), 1);
    assert_eq!(source_a.keys().len(), 50);
    let sa = a.tier();
    assert_eq!(
        (
            sa.hits,
            sa.misses,
            sa.writes,
            sa.errors,
            sa.undecodable,
            sa.bypassed
        ),
        (0, 50, 50, 0, 0, 0),
        "{sa:?}"
    );
    assert_eq!(
        on_server,
        Commands {
            eval: 2,
            mget: 0,
            pttl: 0,
            set: 100,
            del: 50,
            get: 100
        },
        "one claim script per batch (a GET per key, a lease SET for each missing one) and one \
         release script (a GET per lease to check it is still this instance's, then DEL), \
         with the 50 value SETs in the same pipeline"
    );
    let ns = namespace("svc", "user", 1);
    let mut values: Vec<String> = (1..=50).map(|i| name_of(&ns, &Key::Int(i))).collect();
    values.sort();
    assert_eq!(
        scan(&mut conn, &ns).await,
        values,
        "the 50 values and no lease left behind"
    );

    // B, another instance with a cold local cache: all 50 from Redis, the
    // source is not asked, nothing is written.
    let before = Commands::read(&mut conn).await;
    let events = b.run_ids(1..=50, "b").await;
    assert_enriched(&events);
    let on_server = Commands::read(&mut conn).await.since(before);
    assert_eq!(table.queries().await, 1, "no source query for B");
    assert_eq!(source_b.fetches(), 0, "B's source was not asked");
    let sb = b.tier();
    assert_eq!(
        (sb.hits, sb.misses, sb.writes, sb.errors),
        (50, 0, 0, 0),
        "{sb:?}"
    );
    assert_eq!(
        on_server,
        Commands {
            eval: 1,
            mget: 0,
            pttl: 50,
            set: 0,
            del: 0,
            get: 50
        },
        "B only reads: one claim script, a GET and a PTTL per key, no lease taken"
    );
    assert_eq!((sb.lease_waits, sb.lease_takeovers), (0, 0), "{sb:?}");
    assert_eq!(sb.status, HealthStatus::Up);
    assert_eq!(sb.breaker, BreakerState::Closed);
    assert_eq!(b.guard.health()[0].shared_cache.as_ref(), Some(&sb));
    assert_eq!(b.guard.health()[0].status, HealthStatus::Up);

    // B again: its local cache now holds them (for the TTL left in Redis);
    // Redis is not asked.
    let before = Commands::read(&mut conn).await;
    let events = b.run_ids(1..=50, "b again").await;
    assert_enriched(&events);
    assert_eq!(
        Commands::read(&mut conn).await.since(before),
        Commands::default()
    );
    assert_eq!(b.tier().hits, 50);

    // C, a third instance with smaller fetch chunks, over keys nobody has
    // asked for: one claim round trip and one source query per chunk.
    let c = Pipe::start(enricher(source_c.clone(), tier()).max_batch(20).build()).await;
    let before = Commands::read(&mut conn).await;
    let events = c.run_ids(51..=100, "c").await;
    assert_enriched(&events);
    let on_server = Commands::read(&mut conn).await.since(before);
    assert_eq!(source_c.fetches(), 3, "50 keys in chunks of 20");
    assert_eq!(table.queries().await, 1 + 3);
    assert_eq!(
        on_server,
        Commands {
            eval: 6,
            mget: 0,
            pttl: 0,
            set: 100,
            del: 50,
            get: 100
        },
        "a claim and a release script per chunk"
    );
    assert_eq!(c.tier().writes, 50);

    for p in [a, b, c] {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// 2. Not-found is shared, with its own TTL

#[tokio::test]
async fn not_found_is_shared_for_the_not_found_ttl() {
    let url = redis_url();
    let mut conn = shared().await;
    let prefix = unique_prefix("shared_not_found");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_not_found", 10).await;
    let tier = || SharedCache::redis(&url).prefix(&prefix).build().unwrap();
    let ttl = Duration::from_secs(60);
    let negative_ttl = Duration::from_secs(5);
    let (source_a, source_b) = (table.lookup(), table.lookup());
    let a = Pipe::start(
        enricher(source_a.clone(), tier())
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .build(),
    )
    .await;
    let b = Pipe::start(
        enricher(source_b.clone(), tier())
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .build(),
    )
    .await;

    // A: user 1 exists, user 999 does not.
    let events = a.run_ids([1, 999], "a").await;
    assert_eq!(inserted(by_id(&events, 1), "user"), Some(user(1)));
    let missing = by_id(&events, 999);
    assert_eq!(inserted(missing, "user"), None);
    assert!(errors(missing).is_empty(), "{:?}", errors(missing));
    assert_eq!(a.tier().writes, 2, "the value and the not-found entry");

    let ns = namespace(&prefix, "user", 1);
    let found = name_of(&ns, &Key::Int(1));
    let absent = name_of(&ns, &Key::Int(999));
    assert_eq!(
        get_raw(&mut conn, &absent).await.as_deref(),
        Some(&b"N"[..]),
        "not-found is stored as N"
    );
    let left = pttl(&mut conn, &absent).await;
    assert!(
        (4_000..=5_000).contains(&left),
        "the not-found entry lives for the negative TTL (5 s), PTTL {left}"
    );
    let raw = get_raw(&mut conn, &found).await.expect("value written");
    assert_eq!(
        found_json(&raw),
        Some(user(1)),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    let left = pttl(&mut conn, &found).await;
    assert!(
        (55_000..=60_000).contains(&left),
        "a value lives for the TTL (60 s), PTTL {left}"
    );

    // B: not found, from Redis, without a source query.
    let queries = table.queries().await;
    let events = b.run_ids([999], "b").await;
    let missing = by_id(&events, 999);
    assert_eq!(inserted(missing, "user"), None);
    assert!(errors(missing).is_empty(), "{:?}", errors(missing));
    assert_eq!(source_b.fetches(), 0);
    assert_eq!(table.queries().await, queries);
    let sb = b.tier();
    assert_eq!((sb.hits, sb.misses, sb.writes), (1, 0, 0), "{sb:?}");
    // And B keeps it locally: asked again, Redis is not.
    b.run_ids([999], "b again").await;
    let sb = b.tier();
    assert_eq!((sb.hits, sb.misses), (1, 0), "{sb:?}");

    // With no not-found TTL, not-found is neither cached nor shared.
    let c_source = table.lookup();
    let c = Pipe::start(
        enricher(c_source, tier())
            .negative_ttl(Duration::ZERO)
            .build(),
    )
    .await;
    c.run_ids([998], "c").await;
    assert_eq!(
        get_raw(&mut conn, &name_of(&ns, &Key::Int(998))).await,
        None
    );
    assert_eq!(c.tier().writes, 0);

    for p in [a, b, c] {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// 3. Local expiry follows the TTL left in Redis

#[tokio::test]
async fn an_entry_read_from_redis_expires_locally_when_it_expires_there() {
    let url = redis_url();
    let _ = shared().await;
    let prefix = unique_prefix("shared_expiry");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_expiry", 10).await;
    let tier = || SharedCache::redis(&url).prefix(&prefix).build().unwrap();
    let ttl = Duration::from_secs(2);
    let (source_a, source_b) = (table.lookup(), table.lookup());
    let a = Pipe::start(enricher(source_a, tier()).ttl(ttl).build()).await;
    let b = Pipe::start(enricher(source_b.clone(), tier()).ttl(ttl).build()).await;

    // A fetches user 1 and writes it with PX 2000.
    let events = a.run_ids([1], "a").await;
    assert_enriched(&events);
    let written = Instant::now();

    // 1.5 s later B reads it from Redis, with ~0.5 s left there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = b.run_ids([1], "b read").await;
    let read = Instant::now();
    assert_enriched(&events);
    assert_eq!(source_b.fetches(), 0, "served from Redis");
    let sb = b.tier();
    assert_eq!((sb.hits, sb.misses), (1, 0), "{sb:?}");

    // Right after, B serves it from its local cache: Redis is not asked.
    let events = b.run_ids([1], "b local").await;
    assert_enriched(&events);
    let sb = b.tier();
    assert_eq!((sb.hits, sb.misses), (1, 0), "local hit: {sb:?}");
    assert!(
        read.elapsed() < Duration::from_millis(300),
        "the machine is too slow for this test's timings"
    );

    // 0.7 s after B's read (2.2 s after A's write) the entry has expired in
    // Redis, and so locally in B, although B has held it for less than the
    // 2 s TTL: B asks Redis again (a miss) and then the source.
    tokio::time::sleep_until((read + Duration::from_millis(700)).into()).await;
    let events = b.run_ids([1], "b expired").await;
    assert_enriched(&events);
    let sb = b.tier();
    assert_eq!(
        (sb.hits, sb.misses),
        (1, 1),
        "B asked Redis again once the entry had expired there: {sb:?}"
    );
    assert_eq!(
        source_b.fetches(),
        1,
        "B kept the entry it read for its full TTL instead of the ~0.5 s left in Redis"
    );
    assert!(written.elapsed() < Duration::from_secs(4));

    for p in [a, b] {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// 4. Hostile keys

#[tokio::test]
async fn hostile_keys_stay_data_inside_their_namespace() {
    let url = redis_url();
    let mut conn = shared().await;
    let prefix = unique_prefix("shared_hostile");
    let _keys = cleanup(&url, &prefix);
    let ns = namespace(&prefix, "user", 1);

    let long = ":*".repeat(300);
    let strings: Vec<&str> = vec![
        "a:b",
        "a:",
        "a%3A",
        "100%",
        "%",
        "*",
        "user:*",
        "[a-z]?",
        "with space",
        "line\nbreak",
        "\r\nFLUSHALL\r\n",
        "{tag}",
        "{",
        "i7",
        "s7",
        "7",
        "b1",
        "1:other",
        "x:user:1:i7",
        ":1:i7",
        "ключ 🦀",
        "back\\slash",
        &long,
    ];
    // Rows for every string key, and "true" (a boolean key is text there).
    let mut rows = strings.clone();
    rows.push("true");
    let table = Table::text("fl_sc_hostile", &rows).await;

    // Entries the keys must not reach: one under the integer 7's name
    // (which the string "i7" spells), one outside the namespace.
    let int7 = name_of(&ns, &Key::Int(7));
    let canary_value = json!({"k": "the integer 7, from redis"});
    set_raw(
        &mut conn,
        &int7,
        format!("F{canary_value}").as_bytes(),
        Some(60_000),
    )
    .await;
    let outside = format!("{}:canary", enc(&prefix));
    set_raw(&mut conn, &outside, b"alive", None).await;

    let mut keys: Vec<Value> = strings.iter().map(|s| json!(s)).collect();
    keys.extend([
        json!("nul\0byte"),
        json!(""),
        json!(7),
        json!(-7),
        json!(u64::MAX),
        json!(true),
    ]);
    let tier = || SharedCache::redis(&url).prefix(&prefix).build().unwrap();
    let source_a = table.lookup();
    let a = Pipe::start(enricher(source_a.clone(), tier()).build()).await;
    a.log_keys(&keys, "a");
    let events = a.written("a", keys.len()).await;

    let expected_a = |k: &Value| -> Option<Value> {
        match k {
            Value::String(s) if s.is_empty() || s.contains('\0') => None,
            Value::String(s) => Some(json!({"k": s})),
            Value::Bool(true) => Some(json!({"k": "true"})),
            _ if k == &json!(7) => Some(canary_value.clone()),
            _ => None, // -7, u64::MAX: no such row
        }
    };
    for k in &keys {
        let e = by_id(&events, k.clone());
        assert_eq!(inserted(e, "user"), expected_a(k), "key {k}");
        assert!(errors(e).is_empty(), "key {k}: {:?}", errors(e));
    }
    // Every key but the empty one (never looked up) has an entry of its
    // own, exactly where the docs say, and nothing else was written.
    let looked_up: Vec<Key> = keys
        .iter()
        .filter_map(Key::from_value)
        .filter(|k| k != &Key::from(""))
        .collect();
    let mut names: Vec<String> = looked_up.iter().map(|k| name_of(&ns, k)).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        looked_up.len(),
        "distinct keys, distinct names"
    );
    let mut expected_names = names.clone();
    expected_names.push(outside.clone());
    expected_names.sort();
    assert_eq!(scan(&mut conn, &enc(&prefix)).await, expected_names);
    assert!(
        scan(&mut conn, &prefix).await.is_empty(),
        "nothing written under the unencoded prefix"
    );
    for name in &names {
        assert!(name.starts_with(&ns), "{name}");
        assert_eq!(
            name.matches(':').count(),
            3,
            "no ':' from a key reaches the name: {name}"
        );
    }
    assert_eq!(
        get_raw(&mut conn, &int7)
            .await
            .as_deref()
            .and_then(found_json),
        Some(canary_value.clone()),
        "the string \"i7\" did not overwrite the integer 7's entry"
    );
    assert_eq!(
        get_raw(&mut conn, &outside).await.as_deref(),
        Some(&b"alive"[..])
    );

    // Tag every entry with its own name; a fresh instance must read, for
    // each key, the entry of that key and no other.
    for name in &names {
        set_raw(
            &mut conn,
            name,
            format!("F{}", json!({ "name": name })).as_bytes(),
            Some(60_000),
        )
        .await;
    }
    let source_b = table.lookup();
    let b = Pipe::start(enricher(source_b.clone(), tier()).build()).await;
    b.log_keys(&keys, "b");
    let events = b.written("b", keys.len()).await;
    for k in &keys {
        let e = by_id(&events, k.clone());
        let want = Key::from_value(k)
            .filter(|k| k != &Key::from(""))
            .map(|key| json!({ "name": name_of(&ns, &key) }));
        assert_eq!(inserted(e, "user"), want, "key {k}");
        assert!(errors(e).is_empty(), "key {k}: {:?}", errors(e));
    }
    assert_eq!(source_b.fetches(), 0);
    assert_eq!(b.tier().hits, looked_up.len() as u64);

    for p in [a, b] {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// 5. Undecodable and foreign values

#[tokio::test]
async fn foreign_or_garbled_entries_are_misses_and_the_source_answers() {
    let url = redis_url();
    let mut conn = shared().await;
    let prefix = unique_prefix("shared_garbage");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_garbage", 20).await;
    let ns = namespace(&prefix, "user", 1);
    let name = |id: i64| name_of(&ns, &Key::Int(id));

    let big = format!("F{}", json!({"id": 4, "name": "x".repeat(1000)}));
    let garbage: Vec<(i64, Vec<u8>)> = vec![
        (1, b"garbage".to_vec()),
        (2, b"F{not json".to_vec()),
        (3, b"Nextra".to_vec()),
        (4, big.into_bytes()), // over the tier's 256-byte limit
        (5, Vec::new()),
        (6, vec![0xff, 0xfe, 0x00]),
        (7, b"X{\"id\":7}".to_vec()),
    ];
    for (id, raw) in &garbage {
        set_raw(&mut conn, &name(*id), raw, Some(60_000)).await;
    }
    // A well-formed value without an expiry: not the tier's, a miss.
    set_raw(
        &mut conn,
        &name(8),
        format!("F{}", json!({"id": 8, "name": "forever"})).as_bytes(),
        None,
    )
    .await;
    // Not a string at all: the claim script's GET fails for it, a miss.
    redis::cmd("RPUSH")
        .arg(name(9))
        .arg("a list")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // A control entry that is the tier's own.
    let control = json!({"id": 10, "name": "from redis"});
    set_raw(
        &mut conn,
        &name(10),
        format!("F{control}").as_bytes(),
        Some(60_000),
    )
    .await;

    let tier = SharedCache::redis(&url)
        .prefix(&prefix)
        .max_value_bytes(256)
        .build()
        .unwrap();
    let source = table.lookup();
    let p = Pipe::start(enricher(source.clone(), tier.clone()).build()).await;
    let events = p.run_ids(1..=10, "a").await;

    for id in 1..=9 {
        let e = by_id(&events, id);
        assert_eq!(
            inserted(e, "user"),
            Some(user(id)),
            "user {id} from the source"
        );
        assert!(errors(e).is_empty(), "user {id}: {:?}", errors(e));
    }
    assert_eq!(inserted(by_id(&events, 10), "user"), Some(control.clone()));
    let mut asked = source.keys();
    asked.sort();
    assert_eq!(asked, (1..=9i64).map(Key::from).collect::<Vec<_>>());
    assert_eq!(source.fetches(), 1, "one fetch for all the misses");
    let s = p.tier();
    assert_eq!(
        (s.hits, s.misses, s.undecodable, s.errors),
        (1, 9, 7, 0),
        "7 undecodable, the expiry-less value and the list are plain misses: {s:?}"
    );
    assert_eq!(
        s.status,
        HealthStatus::Up,
        "bad entries are not a Redis failure"
    );
    assert_eq!(
        tier.stats(),
        s,
        "the handle and the pipeline see the same counters"
    );

    // The source's answers replaced them, with the TTL.
    for id in 1..=9 {
        let raw = get_raw(&mut conn, &name(id)).await;
        assert_eq!(
            raw.as_deref().and_then(found_json),
            Some(user(id)),
            "user {id}"
        );
        assert!(pttl(&mut conn, &name(id)).await > 0, "user {id} expires");
    }
    p.finish().await;
}

// ---------------------------------------------------------------------------
// 6. Redis down, slow, or unreachable at start

fn fast_breaker() -> BreakerConfig {
    BreakerConfig::default()
        .policy(FailurePolicy::Consecutive(2))
        .recovery_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn redis_going_down_and_coming_back_never_stops_enrichment() {
    let started = Instant::now();
    let mut server = PrivateRedis::start().await;
    let table = Table::users("fl_sc_outage", 500).await;
    let tier = SharedCache::redis(server.url())
        .prefix("outage")
        .timeout(Duration::from_millis(200))
        .breaker(fast_breaker())
        .build()
        .unwrap();
    let ns = namespace("outage", "user", 1);
    let source = table.lookup();
    let p = Pipe::start(enricher(source.clone(), tier.clone()).build()).await;

    // Up.
    assert_enriched(&p.run_ids([1], "up").await);
    assert_eq!(tier.stats().writes, 1);

    // Down: each event (a new key, so a local miss) is still written and
    // enriched from the source; the tier's failures are counted, then its
    // breaker opens and Redis is skipped.
    server.kill();
    let fetches = source.fetches();
    let down = Instant::now();
    for id in 100..120 {
        assert_enriched(&p.run_ids([id], &format!("down {id}")).await);
    }
    assert_eq!(source.fetches() - fetches, 20, "every key from the source");
    assert!(
        down.elapsed() < Duration::from_secs(4),
        "20 events took {:?} with Redis down",
        down.elapsed()
    );
    let s = tier.stats();
    assert!(s.errors >= 2, "{s:?}");
    assert!(s.bypassed >= 1, "the breaker opened: {s:?}");
    assert_eq!(s.breaker, BreakerState::Open, "{s:?}");
    assert_eq!(s.status, HealthStatus::Down, "{s:?}");
    assert!(s.last_error.is_some(), "{s:?}");
    let health = &p.guard.health()[0];
    assert_eq!(
        health.status,
        HealthStatus::Up,
        "the enricher itself is fine"
    );
    assert_eq!(health.breaker, BreakerState::Closed);
    assert_eq!(
        health.shared_cache.as_ref().map(|s| s.status),
        Some(HealthStatus::Down)
    );
    assert_eq!(p.guard.stats().enrichers[0].failures, 0);

    // Back, empty, on the same port: the tier is used again without a
    // restart of the pipeline, once its breaker lets a probe through.
    server.restart().await;
    let mut conn = connect(&server.url()).await.unwrap();
    let writes = tier.stats().writes;
    let back = Instant::now();
    let mut id = 200;
    loop {
        assert_enriched(&p.run_ids([id], &format!("back {id}")).await);
        if tier.stats().writes > writes {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(8),
            "the tier did not recover within 8 s of Redis coming back: {:?}",
            tier.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        id += 1;
    }
    let raw = get_raw(&mut conn, &name_of(&ns, &Key::Int(id))).await;
    assert_eq!(
        raw.as_deref().and_then(found_json),
        Some(user(id)),
        "written to the restarted server"
    );
    // And read from again.
    let from_redis = json!({"id": 400, "name": "from redis"});
    set_raw(
        &mut conn,
        &name_of(&ns, &Key::Int(400)),
        format!("F{from_redis}").as_bytes(),
        Some(60_000),
    )
    .await;
    let hits = tier.stats().hits;
    let events = p.run_ids([400], "read back").await;
    assert_eq!(inserted(&events[0], "user"), Some(from_redis));
    let s = tier.stats();
    assert_eq!(s.hits, hits + 1, "{s:?}");
    assert_eq!(
        (s.breaker, s.status),
        (BreakerState::Closed, HealthStatus::Up),
        "{s:?}"
    );
    assert_eq!(s.last_error, None);
    assert_eq!(
        p.guard.health()[0].shared_cache.as_ref().map(|s| s.status),
        Some(HealthStatus::Up)
    );

    let events = p.finish().await;
    assert_eq!(events.len(), 1 + 20 + (id - 200 + 1) as usize + 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_redis_costs_at_most_its_timeout_per_batch() {
    let server = PrivateRedis::start().await;
    let mut conn = connect(&server.url()).await.unwrap();
    let table = Table::users("fl_sc_slow", 100).await;
    let timeout = Duration::from_millis(250);
    let tier = SharedCache::redis(server.url())
        .prefix("slow")
        .timeout(timeout)
        .breaker(
            BreakerConfig::default()
                .policy(FailurePolicy::Consecutive(3))
                .recovery_timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let source = table.lookup();
    let p = Pipe::start(enricher(source.clone(), tier.clone()).build()).await;
    assert_enriched(&p.run_ids([1], "warm").await);

    // Redis stops answering anyone for 2 s (the test's own connection too).
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut slowest = Duration::ZERO;
    for id in 10..14 {
        let t = Instant::now();
        assert_enriched(&p.run_ids([id], &format!("slow {id}")).await);
        slowest = slowest.max(t.elapsed());
    }
    let s = tier.stats();
    assert!(s.errors >= 3, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out") || e.contains("took longer than")),
        "{s:?}"
    );
    assert_eq!(s.breaker, BreakerState::Open, "{s:?}");
    assert_eq!(s.status, HealthStatus::Down);
    assert_eq!(p.guard.health()[0].status, HealthStatus::Up);
    // With the breaker open, Redis costs nothing.
    let t = Instant::now();
    assert_enriched(&p.run_ids([20], "open").await);
    assert!(
        t.elapsed() < timeout,
        "{:?} with the breaker open",
        t.elapsed()
    );
    assert!(tier.stats().bypassed >= 1);
    // The documented bound: Redis unresponsive costs a batch at most one
    // tier timeout (the read; the lease and the write-back are then
    // skipped), not one per round trip.
    assert!(
        slowest < timeout + Duration::from_millis(200),
        "an event waited {slowest:?} on a Redis that did not answer, with a {timeout:?} tier timeout"
    );
    p.finish().await;
}

/// What a user sees of the bound above: with the default 1 s batch
/// deadline and a 400 ms tier timeout (well under it), a Redis that stops
/// answering must not cost events the value their healthy source has.
#[tokio::test]
async fn a_slow_redis_does_not_cost_events_their_enrichment() {
    let server = PrivateRedis::start().await;
    let mut conn = connect(&server.url()).await.unwrap();
    let table = Table::users("fl_sc_slow_deadline", 10).await;
    let tier = SharedCache::redis(server.url())
        .prefix("slow")
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let p = Pipe::start_with_deadline(
        enricher(table.lookup(), tier.clone()).build(),
        Duration::from_secs(1),
    )
    .await;
    assert_enriched(&p.run_ids([1], "warm").await);
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let t = Instant::now();
    let events = p.run_ids([2], "slow").await;
    let took = t.elapsed();
    // One tier timeout (400 ms), not three, stays inside the 1 s batch
    // deadline: the event gets PostgreSQL's value.
    assert_eq!(
        inserted(&events[0], "user"),
        Some(user(2)),
        "after {took:?}, errors {:?}, tier {:?}",
        errors(&events[0]),
        tier.stats()
    );
    p.finish().await;
}

#[tokio::test]
async fn redis_unreachable_at_start_leaves_the_pipeline_and_lookups_working() {
    let port = redis_support::free_port();
    let table = Table::users("fl_sc_unreachable", 10).await;
    let tier = SharedCache::redis(format!("redis://127.0.0.1:{port}"))
        .prefix("unreachable")
        .breaker(fast_breaker())
        .build()
        .expect("building does not connect");
    let source = table.lookup();
    let t = Instant::now();
    let p = Pipe::start(enricher(source.clone(), tier.clone()).build()).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "start took {:?}",
        t.elapsed()
    );

    assert_enriched(&p.run_ids(1..=5, "first").await);
    assert_enriched(&p.run_ids(6..=10, "second").await);
    assert_eq!(source.fetches(), 2);
    let s = tier.stats();
    assert!(s.errors >= 1, "{s:?}");
    assert_eq!((s.hits, s.writes), (0, 0), "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{s:?}"
    );
    assert_ne!(s.status, HealthStatus::Up, "{s:?}");
    let health = &p.guard.health()[0];
    assert_eq!(health.status, HealthStatus::Up, "{health:?}");
    assert_eq!(p.guard.stats().enrichers[0].failures, 0);
    p.finish().await;
}

// ---------------------------------------------------------------------------
// Leases: fleet-wide single-flight

#[tokio::test]
async fn instances_missing_the_same_keys_at_once_fetch_each_key_once() {
    let url = redis_url();
    let _ = shared().await;
    let prefix = unique_prefix("shared_lease");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_lease", 20).await;
    let tier = || SharedCache::redis(&url).prefix(&prefix).build().unwrap();
    let (source_a, source_b) = (table.lookup(), table.lookup());
    let a = Pipe::start(enricher(source_a.clone(), tier()).build()).await;
    let b = Pipe::start(enricher(source_b.clone(), tier()).build()).await;

    // Both instances miss keys 1..=10 at the same moment.
    a.log_ids(1..=10, "a");
    b.log_ids(1..=10, "b");
    assert_enriched(&a.written("a", 10).await);
    assert_enriched(&b.written("b", 10).await);

    let mut fetched = source_a.keys();
    fetched.extend(source_b.keys());
    fetched.sort();
    assert_eq!(
        fetched,
        (1..=10i64).map(Key::from).collect::<Vec<_>>(),
        "each key fetched by one instance of the two"
    );
    let (sa, sb) = (a.tier(), b.tier());
    assert_eq!(
        sa.lease_waits + sb.lease_waits,
        10,
        "the other instance waited for each key: {sa:?} {sb:?}"
    );
    assert_eq!(sa.lease_takeovers + sb.lease_takeovers, 0, "{sa:?} {sb:?}");
    assert_eq!(sa.writes + sb.writes, 10, "{sa:?} {sb:?}");
    for p in [a, b] {
        p.finish().await;
    }
}

/// An instance that fetched a key but has nothing to write for it (a
/// not-found with no not-found TTL, or a value over the tier's size limit)
/// must not leave its lease behind: another instance would wait the whole
/// lease wait for a value that never comes, on every local miss of that key
/// within the lease hold.
#[tokio::test]
async fn a_lease_is_released_when_nothing_is_written() {
    let url = redis_url();
    let _ = shared().await;
    let prefix = unique_prefix("shared_lease_release");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_lease_release", 20).await;
    let wait = Duration::from_millis(400);
    // Values of this table are ~30 bytes of JSON: over a 16-byte limit.
    let tier = || {
        SharedCache::redis(&url)
            .prefix(&prefix)
            .lease(Duration::from_secs(5), wait)
            .max_value_bytes(16)
            .build()
            .unwrap()
    };
    let (source_a, source_b) = (table.lookup(), table.lookup());
    let a = Pipe::start(
        enricher(source_a.clone(), tier())
            .negative_ttl(Duration::ZERO)
            .build(),
    )
    .await;
    let b = Pipe::start(
        enricher(source_b.clone(), tier())
            .negative_ttl(Duration::ZERO)
            .build(),
    )
    .await;

    // A: user 1 (too large to share) and user 999 (not found, not cached).
    let events = a.run_ids([1, 999], "a").await;
    assert_eq!(inserted(by_id(&events, 1), "user"), Some(user(1)));
    assert_eq!(inserted(by_id(&events, 999), "user"), None);
    assert_eq!(a.tier().writes, 0, "nothing to write");

    // B misses both later: nobody is fetching them, there is nothing to
    // wait for.
    let t = Instant::now();
    let events = b.run_ids([1, 999], "b").await;
    let took = t.elapsed();
    assert_eq!(inserted(by_id(&events, 1), "user"), Some(user(1)));
    assert_eq!(inserted(by_id(&events, 999), "user"), None);
    let sb = b.tier();
    assert_eq!(source_b.fetches(), 1, "B fetched them itself");
    // A's leases are released even for keys it had nothing to write (zero
    // TTL, value over `max_value_bytes`): B does not wait them out.
    assert_eq!(
        (sb.lease_waits, sb.lease_takeovers),
        (0, 0),
        "B waited {took:?} for leases A kept although it had nothing to write: {sb:?}"
    );
    assert!(took < wait, "B's events took {took:?}");
    for p in [a, b] {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// 7. Schema version and prefix

#[tokio::test]
async fn schema_versions_and_prefixes_do_not_share_entries() {
    let url = redis_url();
    let mut conn = shared().await;
    let prefix = unique_prefix("shared_schema");
    let other_prefix = unique_prefix("shared_schema_other");
    let _keys = cleanup(&url, &prefix);
    let _other = cleanup(&url, &other_prefix);
    let table = Table::users("fl_sc_schema", 10).await;
    let tier = |prefix: &str, version: u32| {
        SharedCache::redis(&url)
            .prefix(prefix)
            .schema_version(version)
            .build()
            .unwrap()
    };

    let run = async |prefix: &str, version: u32, phase: &str| {
        let source = table.lookup();
        let p = Pipe::start(enricher(source.clone(), tier(prefix, version)).build()).await;
        assert_enriched(&p.run_ids(1..=5, phase).await);
        let s = p.tier();
        p.finish().await;
        (s, source.fetches())
    };
    let (v1, fetched) = run(&prefix, 1, "v1").await;
    assert_eq!((v1.hits, v1.writes, fetched), (0, 5, 1));
    let (v2, fetched) = run(&prefix, 2, "v2").await;
    assert_eq!(
        (v2.hits, v2.misses, v2.writes, fetched),
        (0, 5, 5, 1),
        "version 2 reads none of version 1's entries"
    );
    let (other, fetched) = run(&other_prefix, 1, "other prefix").await;
    assert_eq!(
        (other.hits, other.misses, fetched),
        (0, 5, 1),
        "another prefix reads none of them either"
    );
    let (again, fetched) = run(&prefix, 1, "v1 again").await;
    assert_eq!(
        (again.hits, fetched),
        (5, 0),
        "the same version and prefix do"
    );

    for (p, v) in [(&prefix, 1), (&prefix, 2), (&other_prefix, 1)] {
        assert_eq!(
            scan(&mut conn, &namespace(p, "user", v)).await.len(),
            5,
            "{p} v{v}"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. Secrets

#[tokio::test]
async fn the_password_never_shows_in_debug_errors_or_health() {
    let secret = "hunter2";
    let table = Table::users("fl_sc_secret", 5).await;

    // Nothing listens on port 1.
    let tier = SharedCache::redis(format!("redis://:{secret}@127.0.0.1:1"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let shown = format!("{tier:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("redis://:***@127.0.0.1:1"), "{shown}");

    // A real server that wants another password: WRONGPASS.
    let server = PrivateRedis::start().await;
    let mut conn = connect(&server.url()).await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("sesame")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let wrong = SharedCache::redis(format!(
        "redis://admin:{secret}@127.0.0.1:{}/0",
        server.port()
    ))
    .timeout(Duration::from_millis(500))
    .build()
    .unwrap();
    let unix = SharedCache::redis(format!(
        "redis+unix:///nonexistent/redis.sock?db=0&pass={secret}"
    ))
    .build()
    .unwrap();
    let shown = format!("{unix:?}");
    assert!(!shown.contains(secret), "{shown}");

    for (what, tier) in [("refused", tier), ("wrong password", wrong), ("unix", unix)] {
        let source = table.lookup();
        let p = Pipe::start(enricher(source, tier.clone()).build()).await;
        let events = p.run_ids(1..=3, what).await;
        assert_enriched(&events);
        let s = tier.stats();
        let last = s
            .last_error
            .clone()
            .unwrap_or_else(|| panic!("{what}: no error in {s:?}"));
        for text in [
            last.clone(),
            format!("{s:?}"),
            format!("{:?}", p.guard.stats()),
            format!("{:?}", p.guard.health()),
            format!("{events:?}"),
        ] {
            assert!(!text.contains(secret), "{what}: {text}");
            assert!(!text.contains("sesame"), "{what}: {text}");
        }
        p.finish().await;
    }

    // Settings the builder rejects say so without the password.
    for bad in [
        format!("redis://:{secret}@[::1"),
        format!("redis://admin:{secret}@127.0.0.1:6379/notadb"),
        format!("nosuch://:{secret}@127.0.0.1"),
    ] {
        let e = SharedCache::redis(bad.clone())
            .build()
            .expect_err("a bad url");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(secret), "{bad}: {shown}");
    }
}

/// The builder's `Debug` redacts the URL's password, as the tier's does.
#[test]
fn the_builder_does_not_show_the_password_either() {
    let builder = SharedCache::redis("redis://:hunter2@127.0.0.1:1").prefix("svc");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// A lease whose holder crashed mid-fetch (taken here by hand, as another
/// instance's, never released) costs the others one lease wait, not an
/// outage: they wait for a value that does not come, then fetch the key
/// themselves, counted as takeovers. Keys leased by nobody are fetched at
/// once meanwhile.
#[tokio::test]
async fn a_crashed_lease_holder_costs_one_wait() {
    let url = redis_url();
    let mut conn = shared().await;
    let prefix = unique_prefix("shared_lease_crash");
    let _keys = cleanup(&url, &prefix);
    let table = Table::users("fl_sc_lease_crash", 20).await;
    let wait = Duration::from_millis(300);
    let tier = SharedCache::redis(&url)
        .prefix(&prefix)
        .lease(Duration::from_secs(30), wait)
        .build()
        .unwrap();
    // The crashed instance's lease of key 3, with 30 s left.
    let ns = namespace(&prefix, "user", 1);
    let value_name = name_of(&ns, &Key::Int(3));
    let lease_name = format!("{ns}l{}", &value_name[ns.len()..]);
    redis::cmd("SET")
        .arg(&lease_name)
        .arg("crashed-instance")
        .arg("PX")
        .arg(30_000)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET lease");

    let source = table.lookup();
    let p = Pipe::start(enricher(source.clone(), tier).build()).await;
    let started = Instant::now();
    let events = p.run_ids(1..=5, "after a crash").await;
    let took = started.elapsed();
    assert_enriched(&events);
    assert!(
        took >= wait && took < wait * 4,
        "one lease wait ({wait:?}), not the 30 s lease: {took:?}"
    );
    let s = p.tier();
    assert_eq!((s.lease_waits, s.lease_takeovers), (1, 1), "{s:?}");
    assert_eq!(source.fetches(), 2, "keys 1, 2, 4, 5 at once, then key 3");
    // Key 3's value is shared now for the next instance; the crashed
    // instance's lease is not this instance's to release.
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&value_name)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(raw.as_deref().and_then(found_json), Some(user(3)));
    let lease: Option<String> = redis::cmd("GET")
        .arg(&lease_name)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(lease.as_deref(), Some("crashed-instance"));
    p.finish().await;
}
