//! `SqlLookup` on PostgreSQL: a fixed stream of 200 000 `user_id`s enriched
//! from a `users` table, one query per event next to the lookup enricher
//! with and without batching, warm and cold.
//!
//! PostgreSQL comes from `FAPILOG_BENCH_PG_URL` (else `FAPILOG_TEST_PG_URL`,
//! else `postgres://postgres@127.0.0.1:5432/test`). Before the runs the
//! parent makes sure two tables hold what the runs expect, creating or
//! refilling them if not: `bench_users` (`id int8 PRIMARY KEY, name text,
//! tier text`, ids 1..=100 000) and `bench_users_cold` (the same columns,
//! ids 1..=200 000), plus a sequence `bench_users_queries`.
//!
//! Every query the runs make carries an uncorrelated scalar subquery,
//! `AND (SELECT nextval('bench_users_queries')) > 0`, which PostgreSQL
//! evaluates exactly once per executed statement, so the sequence counts on
//! the server the queries that really reached it. Each run reports that
//! count next to the client's own (`fetches` in the enricher's stats, or the
//! naive enricher's counter) and fails if they differ.
//!
//! The events: `user_id`s drawn from a Zipf distribution (s = 1.0) over
//! users 1..=10 000 with a fixed seed (every setup replays the same
//! sequence), or for the cold run 200 000 distinct ids, 1..=200 000 in a
//! seeded random order, all present in `bench_users_cold`. One thread logs
//! them, timing each `tracing::info!` call with `Instant`; the pipeline
//! writes to a sink that discards the events after checking them.
//!
//! Setups:
//!
//! * `per_event_query` (a): an `AsyncEnricher` that runs `SELECT id, name,
//!   tier FROM bench_users WHERE id = $1 …` with sqlx for each event, one
//!   after the other, no cache (the design the lookup enricher replaces), on
//!   its own pool with the same settings.
//! * `cache_no_batching` (b): `LookupEnricher` over `SqlLookup` (`… WHERE
//!   id = ANY($1) …`) with `.max_batch(1)`: cache and single-flight, but one
//!   key per query (a batch's missing keys are still fetched concurrently).
//! * `cache_batching` (c): `LookupEnricher` defaults (cache, single-flight,
//!   up to 100 keys per query).
//! * `cold_batching`: (c) on the 200 000 distinct ids: every event misses
//!   the cache.
//! * `no_enricher`: the same pipeline with no enricher, for the caller's
//!   cost of a log call when nothing is enriched.
//! * `db_limit`: no pipeline: the cold ids fetched straight with sqlx on a
//!   pool of the same settings, `max_batch` (100) keys per query with the
//!   cold run's query, as many queries in flight as the pool has
//!   connections, rows decoded into `(i64, String, String)` and nothing
//!   else, on one current-thread runtime (as the worker is): the
//!   database's own batched-lookup rate, the limit `cold_batching` is
//!   compared with in the same run. Its "worker" CPU is that thread's.
//! * `no_enricher_held`: no enricher, but the sink holds the worker until
//!   the last log call has returned, so the queue fills up as it does behind
//!   an enricher slower than the caller (a backlog makes the caller allocate
//!   fresh memory: page faults); the control for the enriched setups'
//!   caller timings.
//!
//! Pool settings for every enricher ([`Knobs::pool`]): `PoolSettings`
//! defaults (5 connections) except that all 5 are opened at start-up
//! (`min_connections` 5, as in a service that has been up for a while), a
//! 60 s acquire timeout, and `test_before_acquire` off, so that no query
//! pays an extra ping round trip (`--ping` turns it back on). Every setup:
//! `Overflow::Block`, a queue as large as the run (a log call never waits
//! for room, so the per-call timings are the caller's own cost), batches of
//! 1024 with 1 ms linger (the defaults), a 10-minute call timeout, batch
//! deadline and shutdown timeout. Each run asserts that every event was
//! emitted, none carries an `enrichment_errors` entry, every event of an
//! enriched setup holds the row of the id it logged, and the server counted
//! as many queries as the client made.
//!
//! A run is timed from the first log call until `Guard::shutdown_blocking`
//! has returned. Each run also reports the pipeline's CPU time per event
//! (the whole process's user + system time over the run, from
//! `getrusage(RUSAGE_SELF)`, which counts exited threads too, less the
//! logging thread's own from `/proc/thread-self/schedstat`: whatever
//! threads the worker runs on), the worker thread's CPU time per event and
//! its time waiting for a CPU (`/proc/thread-self/schedstat`, read by the
//! sink on the thread it runs on: the worker's with one worker thread; not
//! meaningful with more), and the minor page faults of
//! the logging thread during the log calls. Like `throughput`, the parent
//! re-executes this binary once per setup and repetition (rotating the
//! order) and prints every run and the medians.
//!
//! * `cargo bench --bench sql_lookup --features postgres`: 200 000 events
//!   per setup, 5 repetitions (about 15 s per `per_event_query` run on an
//!   idle 2-core machine; `--naive-events 20000` runs it on a prefix).
//! * Without `--bench` (as `cargo test --all-targets --all-features` runs
//!   it): a smoke run of 5 000 events (500 for `per_event_query`), 1
//!   repetition, with the same checks.
//! * `--events N`, `--naive-events N`, `--reps N` and `--setups a,b`
//!   override the defaults; `--ping` (`test_before_acquire` on),
//!   `--connections N` (pool size), `--max-batch N` (keys per query of (c)
//!   and the cold run), `--max-entries N` (cache size of the lookup
//!   enrichers), `--batch-size N` (the pipeline's batch size) and
//!   `--worker-threads N` (`Builder::worker_threads`) change one setting
//!   for every setup, to see where the time goes.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, EnricherOptions, Patch};
use fapilog::lookup::LookupEnricher;
use fapilog::sources::{PoolSettings, SqlLookup};
use fapilog::{Event, Overflow};
use pg::{ensure_table, pg_url};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use support::{
    Args, CheckingSink, Run, Tally, median, process_cpu_ns, quantile, run_child, shuffled_ids,
    thread_minor_faults, thread_schedstat, zipf_ids,
};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const PER_EVENT: &str = "per_event_query";
const NO_BATCHING: &str = "cache_no_batching";
const BATCHING: &str = "cache_batching";
const COLD: &str = "cold_batching";
const NONE: &str = "no_enricher";
const HELD: &str = "no_enricher_held";
const DB_LIMIT: &str = "db_limit";
const SETUPS: [&str; 7] = [PER_EVENT, NO_BATCHING, BATCHING, COLD, NONE, HELD, DB_LIMIT];

/// Rows of `bench_users`.
const ROWS: i64 = 100_000;
/// Rows of `bench_users_cold`.
const COLD_ROWS: i64 = 200_000;
/// Distinct users the warm keys are drawn from.
const USERS: u64 = 10_000;
/// Zipf exponent.
const ZIPF_S: f64 = 1.0;
/// Seed of the key sequences.
const SEED: u64 = 0x00fa_9109;
/// Timeouts long enough that nothing in a run can reach them.
const PATIENT: Duration = Duration::from_secs(600);
/// The goals: (c) over (a) events/s, and cold (c) events/s.
const GOAL_RATIO: f64 = 20.0;
const GOAL_COLD_EPS: f64 = 100_000.0;
/// Cold enrichment against `db_limit`, and its CPU per event.
const GOAL_COLD_OF_LIMIT: f64 = 0.5;
const GOAL_COLD_CPU_US: f64 = 2.5;
/// Warm enrichment (`cache_batching`).
const GOAL_WARM_EPS: f64 = 1_000_000.0;
const GOAL_WARM_CPU_US: f64 = 0.7;

const SEQUENCE: &str = "bench_users_queries";
/// (a)'s query, one id per statement.
const ONE_QUERY: &str = "SELECT id, name, tier FROM bench_users WHERE id = $1 AND (SELECT nextval('bench_users_queries')) > 0";
/// (b), (c): the batch query.
const BATCH_QUERY: &str = "SELECT id, name, tier FROM bench_users WHERE id = ANY($1) AND (SELECT nextval('bench_users_queries')) > 0";
/// The cold run's batch query.
const COLD_QUERY: &str = "SELECT id, name, tier FROM bench_users_cold WHERE id = ANY($1) AND (SELECT nextval('bench_users_queries')) > 0";

/// Settings changed from the command line, the same for every setup.
#[derive(Debug, Clone, Copy, Default)]
struct Knobs {
    ping: bool,
    connections: Option<u32>,
    max_batch: Option<usize>,
    max_entries: Option<u64>,
    batch_size: Option<usize>,
    worker_threads: Option<usize>,
}

impl Knobs {
    fn parse(args: &Args) -> Knobs {
        let opt = |name: &str| args.opt(name).map(|_| args.num(name, 0) as u64);
        Knobs {
            ping: args.has("--ping"),
            connections: opt("--connections").map(|n| n as u32),
            max_batch: opt("--max-batch").map(|n| n as usize),
            max_entries: opt("--max-entries"),
            batch_size: opt("--batch-size").map(|n| n as usize),
            worker_threads: opt("--worker-threads").map(|n| n as usize),
        }
    }

    /// The arguments that give a child the same knobs.
    fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ping {
            out.push("--ping".to_owned());
        }
        let mut push = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                out.push(name.to_owned());
                out.push(v.to_string());
            }
        };
        push("--connections", self.connections.map(u64::from));
        push("--max-batch", self.max_batch.map(|n| n as u64));
        push("--max-entries", self.max_entries);
        push("--batch-size", self.batch_size.map(|n| n as u64));
        push("--worker-threads", self.worker_threads.map(|n| n as u64));
        out
    }

    /// The pool every enricher of a run uses: all its connections opened at
    /// start-up (as in a service that has been running for a while), a
    /// generous acquire timeout, no ping before each query.
    fn pool(&self) -> PoolSettings {
        let s = PoolSettings::default();
        let n = self.connections.unwrap_or(s.max_connections);
        s.max_connections(n)
            .min_connections(n)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(self.ping)
    }
}

async fn connect(url: &str) -> PgPool {
    pg::connect(url).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The warm key sequence: `n` user ids in 1..=10 000, Zipf-distributed. A
/// shorter sequence is a prefix of a longer one.
fn user_ids(n: usize) -> Vec<i64> {
    zipf_ids(n, USERS, ZIPF_S, SEED)
}

/// The cold key sequence: ids 1..=n, each once, in a seeded random order.
fn cold_ids(n: usize) -> Vec<i64> {
    assert!(
        n as i64 <= COLD_ROWS,
        "the cold run has {COLD_ROWS} ids at most"
    );
    shuffled_ids(n, SEED)
}

async fn prepare(url: &str) -> Result<(), sqlx::Error> {
    let db = connect(url).await;
    ensure_table(&db, "bench_users", ROWS).await?;
    ensure_table(&db, "bench_users_cold", COLD_ROWS).await?;
    db.execute(AssertSqlSafe(format!(
        "CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}"
    )))
    .await?;
    db.close().await;
    Ok(())
}

/// Queries counted by the server so far.
async fn server_queries(db: &PgPool) -> i64 {
    pg::counted_queries(db, SEQUENCE)
        .await
        .expect("sequence readable")
}

/// (a): one query per event, awaited in order, no cache.
struct PerEventQuery {
    url: String,
    settings: PoolSettings,
    pool: OnceLock<PgPool>,
    queries: Arc<AtomicU64>,
}

impl AsyncEnricher for PerEventQuery {
    fn name(&self) -> &str {
        "user"
    }

    async fn startup(&self) -> Result<(), EnrichError> {
        let s = self.settings;
        let pool = PgPoolOptions::new()
            .min_connections(s.min_connections)
            .max_connections(s.max_connections)
            .acquire_timeout(s.acquire_timeout)
            .idle_timeout(Some(s.idle_timeout))
            .test_before_acquire(s.test_before_acquire)
            .connect(&self.url)
            .await
            .map_err(|e| EnrichError::new("could not connect", e))?;
        let _ = self.pool.set(pool);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
        Ok(())
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        let pool = self
            .pool
            .get()
            .ok_or_else(|| EnrichError::msg("not started"))?;
        for (event, patch) in events.iter().zip(out.iter_mut()) {
            let Some(id) = event.field("user_id").and_then(|v| v.as_i64()) else {
                continue;
            };
            self.queries.fetch_add(1, Ordering::Relaxed);
            let row: Result<Option<(i64, String, String)>, _> = sqlx::query_as(ONE_QUERY)
                .bind(id)
                .fetch_optional(pool)
                .await;
            match row {
                Ok(Some((id, name, tier))) => patch.insert(
                    "user",
                    serde_json::json!({"id": id, "name": name, "tier": tier}),
                ),
                Ok(None) => {}
                Err(e) => patch.fail(format!("database query failed: {e}")),
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::from_env();
    let opt = |name: &str| args.opt(name);
    let num = |name: &str, default: usize| args.num(name, default);
    let full = args.has("--bench");
    let knobs = Knobs::parse(&args);
    let events = num("--events", if full { 200_000 } else { 5_000 });
    if let Some(setup) = opt("--child") {
        return child(&setup, events, knobs);
    }
    let naive_events = num("--naive-events", if full { 200_000 } else { 500 });
    let reps = num("--reps", if full { 5 } else { 1 });
    let setups = args.setups(&SETUPS);
    parent(&setups, events, naive_events, reps, knobs, full)
}

fn parent(
    setups: &[String],
    events: usize,
    naive_events: usize,
    reps: usize,
    knobs: Knobs,
    full: bool,
) -> ExitCode {
    for s in setups {
        if !SETUPS.contains(&s.as_str()) {
            eprintln!("unknown setup {s:?}; known: {}", SETUPS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    let url = pg_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(prepare(&url)) {
        eprintln!("could not prepare the tables: {e}");
        return ExitCode::FAILURE;
    }
    let s = knobs.pool();
    println!(
        "sql_lookup: user_id ~ Zipf(s = {ZIPF_S}) over {USERS} of {ROWS} users (cold: {events} distinct ids of {COLD_ROWS}), seed {SEED:#x}; {events} events ({naive_events} for {PER_EVENT}), {reps} repetition(s) per setup"
    );
    println!(
        "pool: max_connections {}, min_connections {}, acquire_timeout {:?}, idle_timeout {:?}, test_before_acquire {}",
        s.max_connections,
        s.min_connections,
        s.acquire_timeout,
        s.idle_timeout,
        s.test_before_acquire
    );
    println!(
        "lookup enrichers: max_batch {} for (c) and cold, 1 for (b); max_entries {}; pipeline batch size {}",
        knobs
            .max_batch
            .map_or("100 (default)".to_owned(), |n| n.to_string()),
        knobs
            .max_entries
            .map_or("10000 (default)".to_owned(), |n| n.to_string()),
        knobs
            .batch_size
            .map_or("1024 (default)".to_owned(), |n| n.to_string()),
    );
    let exe = std::env::current_exe().expect("own executable");
    let mut runs: Vec<Run> = Vec::new();
    for rep in 0..reps {
        for i in 0..setups.len() {
            let setup = &setups[(i + rep) % setups.len()];
            let n = if setup == PER_EVENT {
                naive_events
            } else {
                events
            };
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", setup, "--events", &n.to_string()]);
            cmd.args(knobs.args());
            match run_child(&mut cmd, setup) {
                Some(run) => {
                    println!(
                        "rep {} {:<17} {:>7} events {:>8.3} s {:>10.0} events/s  queries client {:>6} server {:>6}  worker {:>5.2} us/event  caller p50 {:>5.0} ns  p99 {:>6.0} ns",
                        rep + 1,
                        run.setup(),
                        run.num("events"),
                        run.num("secs"),
                        run.num("events_per_s"),
                        run.num("client_queries"),
                        run.num("server_queries"),
                        run.num("worker_cpu_us_per_event"),
                        run.num("caller_p50_ns"),
                        run.num("caller_p99_ns"),
                    );
                    runs.push(run);
                }
                None => return ExitCode::FAILURE,
            }
        }
    }
    print_table(setups, &runs, full);
    ExitCode::SUCCESS
}

fn print_table(setups: &[String], runs: &[Run], full: bool) {
    let judge = |met: bool| support::verdict(full, met);
    let med = |setup: &str, key: &str| support::median_of(runs, setup, key);
    println!(
        "\n{:<17} {:>4} {:>7} {:>15} {:>10} {:>10} {:>9} {:>9} {:>10} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "setup",
        "runs",
        "events",
        "median events/s",
        "min",
        "max",
        "q client",
        "q server",
        "cache hits",
        "worker us/ev",
        "pipeline us/ev",
        "caller p50",
        "caller p99",
        "p99.9",
        "caller runq"
    );
    for setup in setups {
        let eps: Vec<f64> = runs
            .iter()
            .filter(|r| r.setup() == setup)
            .map(|r| r.num("events_per_s"))
            .collect();
        if eps.is_empty() {
            continue;
        }
        let min = eps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = eps.iter().copied().fold(0.0, f64::max);
        println!(
            "{setup:<17} {:>4} {:>7} {:>15.0} {min:>10.0} {max:>10.0} {:>9.0} {:>9.0} {:>10.0} {:>12.2} {:>14.2} {:>7.0} ns {:>7.0} ns {:>7.0} ns {:>7.1} ms",
            eps.len(),
            med(setup, "events"),
            median(eps.clone()),
            med(setup, "client_queries"),
            med(setup, "server_queries"),
            med(setup, "cache_hits"),
            med(setup, "worker_cpu_us_per_event"),
            med(setup, "pipeline_cpu_us_per_event"),
            med(setup, "caller_p50_ns"),
            med(setup, "caller_p99_ns"),
            med(setup, "caller_p999_ns"),
            med(setup, "caller_runq_ms"),
        );
    }
    let has = |s: &str| runs.iter().any(|r| r.setup() == s);
    println!("\nmedians compared:");
    if has(BATCHING) && has(PER_EVENT) {
        let ratio = med(BATCHING, "events_per_s") / med(PER_EVENT, "events_per_s");
        let verdict = judge(ratio >= GOAL_RATIO);
        println!(
            "(c) {BATCHING} / (a) {PER_EVENT} events/s: {ratio:.1}x (goal >= {GOAL_RATIO:.0}x: {verdict})"
        );
    }
    if has(BATCHING) && has(NO_BATCHING) {
        println!(
            "(c) {BATCHING} / (b) {NO_BATCHING} events/s: {:.2}x; queries {:.0} vs {:.0}",
            med(BATCHING, "events_per_s") / med(NO_BATCHING, "events_per_s"),
            med(BATCHING, "server_queries"),
            med(NO_BATCHING, "server_queries"),
        );
    }
    if has(COLD) {
        let eps = med(COLD, "events_per_s");
        let verdict = judge(eps >= GOAL_COLD_EPS);
        println!("cold (c) {COLD}: {eps:.0} events/s (goal >= {GOAL_COLD_EPS:.0}: {verdict})");
    }
    if has(COLD) && has(DB_LIMIT) {
        let ratio = med(COLD, "events_per_s") / med(DB_LIMIT, "events_per_s");
        println!(
            "cold (c) {COLD} / {DB_LIMIT}: {ratio:.2}x of the database's own batched-lookup rate ({:.0} vs {:.0} rows/s) (goal >= {GOAL_COLD_OF_LIMIT}x: {}); CPU per event {:.2} us (pipeline) vs {:.2} us (sqlx alone)",
            med(COLD, "events_per_s"),
            med(DB_LIMIT, "events_per_s"),
            judge(ratio >= GOAL_COLD_OF_LIMIT),
            med(COLD, "pipeline_cpu_us_per_event"),
            med(DB_LIMIT, "pipeline_cpu_us_per_event"),
        );
    }
    if has(COLD) {
        let cpu = med(COLD, "pipeline_cpu_us_per_event");
        println!(
            "cold (c) {COLD}: pipeline CPU per event {cpu:.2} us (goal <= {GOAL_COLD_CPU_US} us: {})",
            judge(cpu <= GOAL_COLD_CPU_US)
        );
    }
    if has(BATCHING) {
        let (eps, cpu) = (
            med(BATCHING, "events_per_s"),
            med(BATCHING, "pipeline_cpu_us_per_event"),
        );
        println!(
            "warm (c) {BATCHING}: {eps:.0} events/s (goal >= {GOAL_WARM_EPS:.0}: {}), pipeline CPU per event {cpu:.2} us (goal <= {GOAL_WARM_CPU_US} us: {})",
            judge(eps >= GOAL_WARM_EPS),
            judge(cpu <= GOAL_WARM_CPU_US)
        );
    }
    for base in [NONE, HELD].into_iter().filter(|b| has(b)) {
        for setup in setups
            .iter()
            .filter(|s| *s != NONE && *s != HELD && *s != DB_LIMIT && has(s))
        {
            println!(
                "caller per log call, {setup} vs {base}: p50 {:.0} vs {:.0} ns, p99 {:.0} vs {:.0} ns, minor page faults {:.0} vs {:.0}",
                med(setup, "caller_p50_ns"),
                med(base, "caller_p50_ns"),
                med(setup, "caller_p99_ns"),
                med(base, "caller_p99_ns"),
                med(setup, "caller_minor_faults"),
                med(base, "caller_minor_faults"),
            );
        }
    }
}

fn child(setup: &str, events: usize, knobs: Knobs) -> ExitCode {
    if setup == DB_LIMIT {
        return db_limit(events, knobs);
    }
    let url = pg_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = rt.block_on(connect(&url));
    let ids = if setup == COLD {
        cold_ids(events)
    } else {
        user_ids(events)
    };
    let tally = Arc::new(Tally::default());
    let caller_done = Arc::new(AtomicBool::new(false));
    let naive_queries = Arc::new(AtomicU64::new(0));
    let builder = fapilog::builder()
        .queue_capacity(events)
        .overflow(Overflow::Block)
        .enrich_deadline(PATIENT)
        .shutdown_timeout(PATIENT)
        .sink(CheckingSink {
            tally: tally.clone(),
            hold: (setup == HELD).then(|| caller_done.clone()),
        });
    let builder = match knobs.batch_size {
        Some(n) => builder.batch_size(n),
        None => builder,
    };
    let builder = match knobs.worker_threads {
        Some(n) => builder.worker_threads(n),
        None => builder,
    };
    let options = EnricherOptions::new().call_timeout(PATIENT);
    let enricher = |query: &str, max_batch: Option<usize>| {
        let lookup = SqlLookup::builder(url.clone())
            .query(query)
            .pool(knobs.pool())
            .build()
            .expect("valid sql lookup");
        let mut b = LookupEnricher::builder("user", lookup).key_field("user_id");
        if let Some(n) = max_batch {
            b = b.max_batch(n);
        }
        if let Some(n) = knobs.max_entries {
            b = b.max_entries(n);
        }
        b.build()
    };
    let builder = match setup {
        PER_EVENT => builder.async_enricher_with(
            PerEventQuery {
                url: url.clone(),
                settings: knobs.pool(),
                pool: OnceLock::new(),
                queries: naive_queries.clone(),
            },
            options,
        ),
        NO_BATCHING => builder.async_enricher_with(enricher(BATCH_QUERY, Some(1)), options),
        BATCHING => builder.async_enricher_with(enricher(BATCH_QUERY, knobs.max_batch), options),
        COLD => builder.async_enricher_with(enricher(COLD_QUERY, knobs.max_batch), options),
        NONE | HELD => builder,
        other => {
            eprintln!("unknown setup {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let enriched = setup != NONE && setup != HELD;
    let (layer, guard) = builder.build().expect("fapilog pipeline starts");
    let server_before = rt.block_on(server_queries(&admin));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
    )
    .expect("first subscriber");

    let mut caller_ns: Vec<u64> = Vec::with_capacity(events);
    // Touch the buffer's pages now (a non-zero fill: zeroed memory may be
    // mapped lazily), so recording a timing never page-faults in the loop.
    caller_ns.resize(events, u64::MAX);
    caller_ns.clear();
    let faults_before = thread_minor_faults();
    let sched_before = thread_schedstat().unwrap_or((0, 0));
    let process_before = process_cpu_ns();
    let t0 = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        let t = Instant::now();
        tracing::info!(user_id = id, seq = i as u64, "request handled");
        caller_ns.push(t.elapsed().as_nanos() as u64);
    }
    let logged = t0.elapsed().as_secs_f64();
    let caller_faults = thread_minor_faults() - faults_before;
    let sched_after = thread_schedstat().unwrap_or((0, 0));
    // Time the logging thread was runnable but not running (preempted).
    let caller_runq_ms = sched_after.1.saturating_sub(sched_before.1) as f64 / 1e6;
    caller_done.store(true, Ordering::Release);
    let report = guard.shutdown_blocking();
    let secs = t0.elapsed().as_secs_f64();
    // Everything the process spent from the first log call until the
    // shutdown returned; less the logging thread's own share, what the
    // pipeline's threads spent (however many there are).
    let total_cpu = process_cpu_ns().saturating_sub(process_before) as f64 / 1e9;
    let caller_cpu =
        thread_schedstat().map_or(0, |s| s.0.saturating_sub(sched_before.0)) as f64 / 1e9;
    let pipeline_cpu = (total_cpu - caller_cpu).max(0.0);
    let server = rt.block_on(server_queries(&admin)) - server_before;

    let n = events as u64;
    let mut problems = support::delivery_problems(&report, &tally, n, if enriched { n } else { 0 });
    let stats = report.enrichers.first();
    if let Some(s) = stats
        && (s.failures != 0 || s.timeouts != 0 || s.short_circuits != 0)
    {
        problems.push(format!("enricher stats: {s:?}"));
    }
    let stat = |f: fn(&fapilog::observe::EnricherStats) -> u64| stats.map_or(0, f);
    let client = if setup == PER_EVENT {
        naive_queries.load(Ordering::Relaxed)
    } else {
        stat(|s| s.fetches)
    };
    if server != client as i64 {
        problems.push(format!(
            "the server counted {server} queries, the client {client}"
        ));
    }
    if !problems.is_empty() {
        eprintln!("{setup}: {}", problems.join("; "));
        return ExitCode::FAILURE;
    }

    caller_ns.sort_unstable();
    let worker_cpu = tally.worker_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let worker_runq = tally.worker_runq_ns.load(Ordering::Relaxed) as f64 / 1e9;
    println!(
        "RESULT setup={setup} events={n} secs={secs:.6} events_per_s={:.1} log_secs={logged:.6} worker_cpu_s={worker_cpu:.3} worker_runq_s={worker_runq:.3} worker_cpu_us_per_event={:.2} pipeline_cpu_us_per_event={:.2} total_cpu_us_per_event={:.2} caller_minor_faults={caller_faults} caller_runq_ms={caller_runq_ms:.3} client_queries={client} server_queries={server} fetched_keys={} cache_hits={} cache_misses={} singleflight_waits={} fetch_p50_us={} fetch_p99_us={} caller_p50_ns={} caller_p99_ns={} caller_p999_ns={} caller_max_ns={}",
        n as f64 / secs,
        worker_cpu * 1e6 / n as f64,
        pipeline_cpu * 1e6 / n as f64,
        total_cpu * 1e6 / n as f64,
        stat(|s| s.fetched_keys),
        stat(|s| s.cache_hits),
        stat(|s| s.cache_misses),
        stat(|s| s.singleflight_waits),
        stats.map_or(0, |s| s.latency.p50.as_micros()),
        stats.map_or(0, |s| s.latency.p99.as_micros()),
        quantile(&caller_ns, 0.50),
        quantile(&caller_ns, 0.99),
        quantile(&caller_ns, 0.999),
        caller_ns.last().copied().unwrap_or(0),
    );
    ExitCode::SUCCESS
}

/// The `db_limit` setup: the cold ids fetched straight with sqlx, batched
/// and concurrent as the enricher would, nothing else.
fn db_limit(events: usize, knobs: Knobs) -> ExitCode {
    use futures_util::StreamExt;
    let url = pg_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = rt.block_on(connect(&url));
    let ids = cold_ids(events);
    let s = knobs.pool();
    let pool = rt
        .block_on(
            PgPoolOptions::new()
                .max_connections(s.max_connections)
                .min_connections(s.min_connections)
                .acquire_timeout(s.acquire_timeout)
                .test_before_acquire(s.test_before_acquire)
                .connect(&url),
        )
        .expect("pool");
    let batch = knobs.max_batch.unwrap_or(100).max(1);
    let in_flight = s.max_connections.max(1) as usize;
    let server_before = rt.block_on(server_queries(&admin));
    let sched_before = thread_schedstat().unwrap_or((0, 0));
    let process_before = process_cpu_ns();
    let t0 = Instant::now();
    let (rows, queries, wrong) = rt.block_on(async {
        let results = futures_util::stream::iter(ids.chunks(batch))
            .map(|chunk| {
                let pool = &pool;
                async move {
                    let rows: Vec<(i64, String, String)> = sqlx::query_as(COLD_QUERY)
                        .bind(chunk)
                        .fetch_all(pool)
                        .await
                        .expect("batched lookup");
                    let wrong = rows
                        .iter()
                        .filter(|(id, name, _)| *name != format!("user {id}"))
                        .count();
                    (rows.len(), wrong)
                }
            })
            .buffer_unordered(in_flight)
            .collect::<Vec<_>>()
            .await;
        let rows: usize = results.iter().map(|r| r.0).sum();
        let wrong: usize = results.iter().map(|r| r.1).sum();
        (rows, results.len(), wrong)
    });
    let secs = t0.elapsed().as_secs_f64();
    let sched_after = thread_schedstat().unwrap_or((0, 0));
    let total = process_cpu_ns().saturating_sub(process_before) as f64 / 1e9;
    let server = rt.block_on(server_queries(&admin)) - server_before;
    if rows != events || wrong != 0 || server != queries as i64 {
        eprintln!(
            "{DB_LIMIT}: {rows} rows for {events} ids, {wrong} wrong, server counted {server} queries, client {queries}"
        );
        return ExitCode::FAILURE;
    }
    let cpu = sched_after.0.saturating_sub(sched_before.0) as f64 / 1e9;
    let runq = sched_after.1.saturating_sub(sched_before.1) as f64 / 1e9;
    let n = events as u64;
    println!(
        "RESULT setup={DB_LIMIT} events={n} secs={secs:.6} events_per_s={:.1} log_secs=0 worker_cpu_s={cpu:.3} worker_runq_s={runq:.3} worker_cpu_us_per_event={:.2} pipeline_cpu_us_per_event={:.2} total_cpu_us_per_event={:.2} caller_minor_faults=0 caller_runq_ms=0 client_queries={queries} server_queries={server} fetched_keys={n} cache_hits=0 cache_misses=0 singleflight_waits=0 fetch_p50_us=0 fetch_p99_us=0 caller_p50_ns=0 caller_p99_ns=0 caller_p999_ns=0 caller_max_ns=0",
        n as f64 / secs,
        cpu * 1e6 / n as f64,
        total * 1e6 / n as f64,
        total * 1e6 / n as f64,
    );
    ExitCode::SUCCESS
}
