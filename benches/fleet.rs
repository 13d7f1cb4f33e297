//! A fleet simulation: N instances of a service start at once (like a fleet
//! right after a deploy), each with an empty local cache, and log the same
//! stream of `user_id`s enriched by `SqlLookup` from one PostgreSQL — with
//! and without a `SharedCache` (Redis) tier between their local caches and
//! the database. What it measures: how many queries reach the database for
//! the whole fleet (counted on the server), and what the tier costs each
//! instance in throughput and on the caller's thread.
//!
//! How: the parent re-executes this binary as N child processes at once
//! (N = 1, 2, 4, 8 by default), one per instance. Each child builds its
//! pipeline (its own pool, all connections opened, and its own tier
//! client), prints `READY`, and waits on its standard input; once all N are
//! ready the parent writes `GO` to every one of them, so that the N start
//! logging together. Each child logs its events from one thread, timing
//! each `tracing::info!` call with `Instant`, shuts its pipeline down and
//! prints one `RESULT key=value …` line: its events/s (events over the time
//! from its first log call until `Guard::shutdown_blocking` returned), its
//! caller p50/p99/p99.9 per log call, its enricher's counters (`fetches`,
//! `fetched_keys`, cache hits and misses) and its tier's counters (hits,
//! misses, writes, errors, bypassed round trips, lease waits and
//! takeovers). The parent counts the queries of the whole fleet on the
//! server (below), checks that they equal the sum of the children's
//! `fetches`, and prints one line per fleet run and one table per workload.
//!
//! The database: PostgreSQL from `FAPILOG_BENCH_PG_URL` (else
//! `FAPILOG_TEST_PG_URL`, else `postgres://postgres@127.0.0.1:5432/test`),
//! the tables of `benches/sql_lookup.rs` — `bench_users` (`id int8 PRIMARY
//! KEY, name text, tier text`, ids 1..=100 000) and `bench_users_cold` (ids
//! 1..=200 000) — created or refilled when they do not hold exactly those
//! rows. Every lookup query carries an uncorrelated scalar subquery, `AND
//! (SELECT nextval('<sequence>')) > 0`, which PostgreSQL evaluates once per
//! executed statement, so a sequence counts on the server the queries that
//! really reached it. The sequence, `bench_fleet_queries_<pid>`, belongs to
//! this parent process (created at its start, dropped at its end), so that
//! another bench or test run on the same database at the same time cannot
//! add to the count. A fleet run's count is the sequence's advance from
//! before its children start until the last one has exited.
//!
//! Redis from `FAPILOG_BENCH_REDIS_URL` (else `FAPILOG_TEST_REDIS_URL`,
//! else `redis://127.0.0.1:6379`). Each `shared` fleet run uses a key prefix
//! of its own (`fapilog-bench-fleet-<pid>-<time>-<workload>-n<N>-r<rep>`),
//! so it starts with an empty tier; afterwards the parent deletes the run's
//! keys with `SCAN MATCH <prefix>:*` + `DEL` (and reports how many). Values
//! are written with the enricher's TTL (10 min), so a run killed before its
//! clean-up leaves nothing for longer than that. Nothing else in Redis is
//! touched (no `FLUSHDB`).
//!
//! Workloads (every instance logs the same sequence):
//!
//! * `warm`: 200 000 `user_id`s drawn from a Zipf distribution (s = 1.0)
//!   over users 1..=10 000 with a fixed seed — the sequence of
//!   `sql_lookup`'s warm runs (9 657 distinct ids), from `bench_users`.
//! * `cold`: 200 000 distinct ids, 1..=200 000 in a seeded random order,
//!   from `bench_users_cold`: every key misses every local cache.
//!
//! Setups (per instance):
//!
//! * `local`: `LookupEnricher` over `SqlLookup` (`… WHERE id = ANY($1) …`)
//!   with its local cache only: defaults (10 000 entries, up to 100 keys
//!   per query, single-flight within the instance) but a 10-minute TTL, far
//!   longer than a run.
//! * `shared`: the same plus `.shared(SharedCache::redis(url).prefix(…))`,
//!   the tier's defaults otherwise: 250 ms timeout per round trip, leases
//!   on (fleet-wide single-flight: held 2 s, waited for up to 400 ms).
//!
//! Every instance: a pool of 5 connections all opened at start-up
//! (`min_connections` 5), 60 s acquire timeout, no ping before a query, as
//! in `sql_lookup`; `Overflow::Block` with a queue as large as the run (a
//! log call never waits for room), a 10-minute call timeout, batch deadline
//! and shutdown timeout. Each child asserts that every event was emitted and
//! holds the row of the id it logged, that none carries an
//! `enrichment_errors` entry, and that its enricher had no failure, timeout
//! or short circuit; the parent asserts that the server counted exactly the
//! queries the children report.
//!
//! The goals, printed with a verdict after the tables:
//!
//! * With the tier, the fleet's total queries for N = 8 are at most 1.25×
//!   those for N = 1 (without it they grow about N×), for each workload.
//! * Per-instance warm events/s with the tier (the median over the N
//!   children) is at least 0.8× the local-only figure at the same N.
//! * The caller's cost is unchanged: the median over the children of the
//!   caller p99 with the tier is within 1.25× of the local-only one at the
//!   same N (the tier's work is on the worker, never on the caller).
//!
//! N children share the machine's cores with each other, PostgreSQL and
//! Redis, so per-instance events/s falls as N grows in both setups; the
//! comparisons that mean something are between the setups at the same N.
//!
//! Running it:
//!
//! * `cargo bench --bench fleet --features "postgres redis"`: 200 000
//!   events per instance, N = 1, 2, 4, 8, both setups, both workloads, 1
//!   repetition (60 child processes, 12 million events in all).
//! * Without `--bench` (as `cargo test --all-targets --all-features` runs
//!   it): a smoke run of 2 000 events per instance, N = 1, 2, 1 repetition,
//!   with the same checks and no verdicts. It needs PostgreSQL and Redis
//!   like the tests, and leaves nothing behind in either.
//! * `--events N` (per instance; the cold run has 200 000 ids at most),
//!   `--reps N` (repeats every fleet run, rotating the setups' order; the
//!   table then shows medians over the repetitions), `--ns 1,2,4,8`,
//!   `--setups local,shared` and `--workloads warm,cold` override the
//!   defaults; `--tier-timeout-ms N` sets the tier's timeout per round trip
//!   (default 250 ms), to see what the instances' load on Redis does to it.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fapilog::Overflow;
use fapilog::enrich::EnricherOptions;
use fapilog::lookup::{LookupEnricher, SharedCache};
use fapilog::sources::{PoolSettings, SqlLookup};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Executor};
use support::{Args, CheckingSink, Run, Tally, median, quantile};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const LOCAL: &str = "local";
const SHARED: &str = "shared";
const SETUPS: [&str; 2] = [LOCAL, SHARED];
const WARM: &str = "warm";
const COLD: &str = "cold";
const WORKLOADS: [&str; 2] = [WARM, COLD];

/// Rows of `bench_users`.
const ROWS: i64 = 100_000;
/// Rows of `bench_users_cold`.
const COLD_ROWS: i64 = 200_000;
/// Distinct users the warm keys are drawn from.
const USERS: u64 = 10_000;
/// Zipf exponent.
const ZIPF_S: f64 = 1.0;
/// Seed of the key sequences (the same as `sql_lookup`'s).
const SEED: u64 = 0x00fa_9109;
/// Timeouts long enough that nothing in a run can reach them.
const PATIENT: Duration = Duration::from_secs(600);
/// The enricher's TTL, local and in the tier: far longer than a run.
const TTL: Duration = Duration::from_secs(600);

/// The goals.
const GOAL_QUERIES: f64 = 1.25;
const GOAL_EPS: f64 = 0.8;
const GOAL_CALLER: f64 = 1.25;
/// The N the query goal is about.
const GOAL_N: usize = 8;

fn redis_url() -> String {
    std::env::var("FAPILOG_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("FAPILOG_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// This parent's query counter (its children are told its name).
fn sequence_name() -> String {
    format!("bench_fleet_queries_{}", std::process::id())
}

fn query(workload: &str, sequence: &str) -> String {
    let table = if workload == COLD {
        "bench_users_cold"
    } else {
        "bench_users"
    };
    format!(
        "SELECT id, name, tier FROM {table} WHERE id = ANY($1) AND (SELECT nextval('{sequence}')) > 0"
    )
}

/// Every instance's pool: all its connections opened at start-up (as in a
/// service that has been running for a while), a generous acquire timeout,
/// no ping before each query.
fn pool() -> PoolSettings {
    let s = PoolSettings::default();
    s.min_connections(s.max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
}

// ---------------------------------------------------------------------------
// PostgreSQL and Redis, on the parent's side

use pg::{connect, ensure_table, pg_url};

/// The warm key sequence: `n` user ids in 1..=10 000, Zipf-distributed.
fn user_ids(n: usize) -> Vec<i64> {
    support::zipf_ids(n, USERS, ZIPF_S, SEED)
}

/// The cold key sequence: ids 1..=n, each once, in a seeded random order.
fn cold_ids(n: usize) -> Vec<i64> {
    support::shuffled_ids(n, SEED)
}

/// Queries counted by the server so far.
async fn server_queries(db: &PgPool, sequence: &str) -> Result<i64, sqlx::Error> {
    pg::counted_queries(db, sequence).await
}

fn redis_connection(url: &str) -> Result<redis::Connection, String> {
    let unreachable = |e: redis::RedisError| {
        format!(
            "Redis is not reachable at {url} ({e}); start it (`bash scripts/test.sh` does) or set FAPILOG_BENCH_REDIS_URL"
        )
    };
    let client = redis::Client::open(url).map_err(unreachable)?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(unreachable)?;
    redis::cmd("PING")
        .query::<String>(&mut con)
        .map_err(unreachable)?;
    Ok(con)
}

/// Deletes every key under `<prefix>:`; returns how many there were.
fn delete_prefix(url: &str, prefix: &str) -> Result<u64, String> {
    assert!(
        prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "prefix {prefix:?} must be plain (no glob characters, nothing percent-encoded)"
    );
    let mut con = redis_connection(url)?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .map_err(|e| format!("SCAN {pattern}: {e}"))?;
        if !keys.is_empty() {
            let mut del = redis::cmd("DEL");
            for k in &keys {
                del.arg(k.as_slice());
            }
            deleted += del
                .query::<u64>(&mut con)
                .map_err(|e| format!("DEL under {prefix}: {e}"))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

// ---------------------------------------------------------------------------
// The parent

fn main() -> ExitCode {
    let args = Args::from_env();
    let full = args.has("--bench");
    let events = args.num("--events", if full { 200_000 } else { 2_000 });
    if let Some(setup) = args.opt("--child") {
        return child(&args, &setup, events);
    }
    let reps = args.num("--reps", 1);
    let ns: Vec<usize> = match args.opt("--ns") {
        Some(list) => list
            .split(',')
            .map(|n| match n.trim().parse() {
                Ok(n) if n > 0 => n,
                _ => panic!("--ns takes a list of positive numbers, e.g. 1,2,4,8"),
            })
            .collect(),
        None if full => vec![1, 2, 4, 8],
        None => vec![1, 2],
    };
    let setups = args.setups(&SETUPS);
    let workloads: Vec<String> = match args.opt("--workloads") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => WORKLOADS.iter().map(|w| (*w).to_owned()).collect(),
    };
    for s in &setups {
        if !SETUPS.contains(&s.as_str()) {
            eprintln!("unknown setup {s:?}; known: {}", SETUPS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    for w in &workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            eprintln!("unknown workload {w:?}; known: {}", WORKLOADS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    if workloads.iter().any(|w| w == COLD) && events as i64 > COLD_ROWS {
        eprintln!("the cold workload has {COLD_ROWS} ids at most; --events {events} is more");
        return ExitCode::FAILURE;
    }
    let plan = Plan {
        events,
        reps,
        ns,
        setups,
        workloads,
        full,
        tier_timeout_ms: args
            .opt("--tier-timeout-ms")
            .map(|_| args.num("--tier-timeout-ms", 0)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = pg_url();
    let db = match rt.block_on(connect(&url)) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let sequence = sequence_name();
    let prepared = rt.block_on(async {
        ensure_table(&db, "bench_users", ROWS).await?;
        ensure_table(&db, "bench_users_cold", COLD_ROWS).await?;
        db.execute(AssertSqlSafe(format!("DROP SEQUENCE IF EXISTS {sequence}")))
            .await?;
        db.execute(AssertSqlSafe(format!("CREATE SEQUENCE {sequence}")))
            .await?;
        Ok::<_, sqlx::Error>(())
    });
    if let Err(e) = prepared {
        eprintln!("could not prepare the tables and the query counter: {e}");
        return ExitCode::FAILURE;
    }
    let code = parent(&plan, &rt, &db, &sequence);
    // Whatever happened, the counter goes.
    let dropped =
        rt.block_on(db.execute(AssertSqlSafe(format!("DROP SEQUENCE IF EXISTS {sequence}"))));
    if let Err(e) = dropped {
        eprintln!("could not drop the sequence {sequence}: {e}");
    }
    rt.block_on(db.close());
    code
}

/// What the command line asked for.
struct Plan {
    events: usize,
    reps: usize,
    ns: Vec<usize>,
    setups: Vec<String>,
    workloads: Vec<String>,
    full: bool,
    /// The tier's timeout per round trip, if not its default.
    tier_timeout_ms: Option<usize>,
}

/// One fleet run: N instances of one setup on one workload.
struct FleetRun {
    workload: String,
    setup: String,
    n: usize,
    /// Queries the server counted for the whole fleet.
    server_queries: i64,
    /// The children's results, in instance order.
    children: Vec<Run>,
    /// From `GO` until the last child exited.
    wall_secs: f64,
}

impl FleetRun {
    fn sum(&self, key: &str) -> f64 {
        self.children.iter().map(|r| r.num(key)).sum()
    }

    fn median(&self, key: &str) -> f64 {
        median(self.children.iter().map(|r| r.num(key)).collect())
    }

    fn min(&self, key: &str) -> f64 {
        self.children
            .iter()
            .map(|r| r.num(key))
            .fold(f64::INFINITY, f64::min)
    }
}

fn parent(plan: &Plan, rt: &tokio::runtime::Runtime, db: &PgPool, sequence: &str) -> ExitCode {
    let redis = redis_url();
    if plan.setups.iter().any(|s| s == SHARED)
        && let Err(e) = redis_connection(&redis)
    {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let s = pool();
    println!(
        "fleet: N instances (child processes) started at once, each logging {} events; N = {}; setups {}; workloads {}; {} repetition(s)",
        plan.events,
        plan.ns
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.setups.join(", "),
        plan.workloads.join(", "),
        plan.reps,
    );
    println!(
        "warm: user_id ~ Zipf(s = {ZIPF_S}) over {USERS} of {ROWS} users, seed {SEED:#x}; cold: {} distinct ids of {COLD_ROWS} in a seeded order; every instance logs the same sequence",
        plan.events
    );
    let timeout = plan
        .tier_timeout_ms
        .map_or("timeout 250 ms".to_owned(), |ms| {
            format!("but timeout {ms} ms")
        });
    println!(
        "per instance: pool of {} connections (all opened at start-up), LookupEnricher defaults but ttl {:?}; shared: + SharedCache defaults ({timeout}, leases held 2 s, waited for 400 ms), a fresh prefix per fleet run",
        s.max_connections, TTL
    );
    println!("queries counted on the server by the sequence {sequence}\n");
    let exe = std::env::current_exe().expect("own executable");
    let started = Instant::now();
    let mut runs: Vec<FleetRun> = Vec::new();
    for rep in 0..plan.reps {
        for workload in &plan.workloads {
            for (i, &n) in plan.ns.iter().enumerate() {
                // Rotate the setups so that neither always runs first.
                for j in 0..plan.setups.len() {
                    let setup = &plan.setups[(i + j + rep) % plan.setups.len()];
                    let prefix = (setup == SHARED).then(|| unique_prefix(workload, n, rep));
                    let run = fleet_run(
                        &exe,
                        rt,
                        db,
                        sequence,
                        Fleet {
                            workload,
                            setup,
                            n,
                            events: plan.events,
                            prefix: prefix.as_deref(),
                            tier_timeout_ms: plan.tier_timeout_ms,
                        },
                    );
                    // The tier's keys go whether the run succeeded or not.
                    let deleted = match &prefix {
                        Some(p) => match delete_prefix(&redis, p) {
                            Ok(k) => Some(k),
                            Err(e) => {
                                eprintln!("could not delete the keys under {p}: {e}");
                                return ExitCode::FAILURE;
                            }
                        },
                        None => None,
                    };
                    let run = match run {
                        Ok(run) => run,
                        Err(e) => {
                            eprintln!("{workload} {setup} N={n}: {e}");
                            return ExitCode::FAILURE;
                        }
                    };
                    print_run(rep, &run, deleted);
                    runs.push(run);
                }
            }
        }
    }
    for workload in &plan.workloads {
        print_table(plan, workload, &runs);
    }
    print_goals(plan, &runs);
    println!(
        "\nwhole bench: {:.1} s of fleet runs",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// A prefix nobody else uses, of plain characters (the tier keeps
/// `A-Z a-z 0-9 - . _` as they are, so `<prefix>:*` matches its keys).
fn unique_prefix(workload: &str, n: usize, rep: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "fapilog-bench-fleet-{}-{nanos:x}-{workload}-n{n}-r{rep}",
        std::process::id()
    )
}

/// What one fleet run is.
struct Fleet<'a> {
    workload: &'a str,
    setup: &'a str,
    n: usize,
    events: usize,
    prefix: Option<&'a str>,
    tier_timeout_ms: Option<usize>,
}

/// A child started and waiting for `GO`.
struct Instance {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Starts the fleet's N children, lets them go at once, collects their
/// results and the server's count.
fn fleet_run(
    exe: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    db: &PgPool,
    sequence: &str,
    fleet: Fleet<'_>,
) -> Result<FleetRun, String> {
    let before = rt
        .block_on(server_queries(db, sequence))
        .map_err(|e| format!("reading the query counter: {e}"))?;
    let mut instances: Vec<Instance> = Vec::with_capacity(fleet.n);
    let result = (|| {
        for i in 0..fleet.n {
            let mut cmd = Command::new(exe);
            cmd.args(["--child", fleet.setup, "--workload", fleet.workload])
                .args(["--events", &fleet.events.to_string()])
                .args(["--instance", &i.to_string()])
                .args(["--sequence", sequence])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(p) = fleet.prefix {
                cmd.args(["--prefix", p]);
            }
            if let Some(ms) = fleet.tier_timeout_ms {
                cmd.args(["--tier-timeout-ms", &ms.to_string()]);
            }
            let mut child = cmd.spawn().map_err(|e| format!("starting a child: {e}"))?;
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            instances.push(Instance { child, stdout });
        }
        // Every child up, pipeline started and pool connected...
        for (i, inst) in instances.iter_mut().enumerate() {
            let mut line = String::new();
            loop {
                line.clear();
                let read = inst
                    .stdout
                    .read_line(&mut line)
                    .map_err(|e| format!("reading instance {i}: {e}"))?;
                if read == 0 {
                    return Err(format!("instance {i} ended before it was ready"));
                }
                if line.trim_end() == "READY" {
                    break;
                }
            }
        }
        // ...then all go at once.
        let go = Instant::now();
        for inst in &mut instances {
            let stdin = inst.child.stdin.as_mut().expect("piped stdin");
            stdin
                .write_all(b"GO\n")
                .and_then(|()| stdin.flush())
                .map_err(|e| format!("starting an instance: {e}"))?;
        }
        let mut children = Vec::with_capacity(fleet.n);
        for (i, inst) in instances.iter_mut().enumerate() {
            let mut rest = String::new();
            inst.stdout
                .read_to_string(&mut rest)
                .map_err(|e| format!("reading instance {i}: {e}"))?;
            let status = inst
                .child
                .wait()
                .map_err(|e| format!("waiting for instance {i}: {e}"))?;
            match (status.success(), rest.lines().find_map(Run::parse)) {
                (true, Some(run)) => children.push(run),
                _ => return Err(format!("instance {i} failed ({status}):\n{rest}")),
            }
        }
        Ok((children, go.elapsed().as_secs_f64()))
    })();
    let (children, wall_secs) = match result {
        Ok(r) => r,
        Err(e) => {
            // Stop the children this run started, one by one.
            for inst in &mut instances {
                let _ = inst.child.kill();
                let _ = inst.child.wait();
            }
            return Err(e);
        }
    };
    let after = rt
        .block_on(server_queries(db, sequence))
        .map_err(|e| format!("reading the query counter: {e}"))?;
    let run = FleetRun {
        workload: fleet.workload.to_owned(),
        setup: fleet.setup.to_owned(),
        n: fleet.n,
        server_queries: after - before,
        children,
        wall_secs,
    };
    let client = run.sum("fetches");
    if client != run.server_queries as f64 {
        return Err(format!(
            "the server counted {} queries, the instances' fetches add up to {client}",
            run.server_queries
        ));
    }
    Ok(run)
}

fn print_run(rep: usize, run: &FleetRun, deleted: Option<u64>) {
    let tier = if run.setup == SHARED {
        format!(
            "  tier hits {:.0} misses {:.0} writes {:.0} errors {:.0} bypassed {:.0}  lease waits {:.0} takeovers {:.0}  keys deleted {}",
            run.sum("tier_hits"),
            run.sum("tier_misses"),
            run.sum("tier_writes"),
            run.sum("tier_errors"),
            run.sum("tier_bypassed"),
            run.sum("lease_waits"),
            run.sum("lease_takeovers"),
            deleted.unwrap_or(0),
        )
    } else {
        String::new()
    };
    println!(
        "rep {} {:<4} {:<6} N={:<2} {:>7.2} s  queries {:>6} (keys {:>7.0})  events/s per instance median {:>7.0} min {:>7.0}  caller p99 median {:>6.0} ns{tier}",
        rep + 1,
        run.workload,
        run.setup,
        run.n,
        run.wall_secs,
        run.server_queries,
        run.sum("fetched_keys"),
        run.median("events_per_s"),
        run.min("events_per_s"),
        run.median("caller_p99_ns"),
    );
}

/// The median over repetitions of `f` of the runs of (workload, setup, n).
fn over_reps(
    runs: &[FleetRun],
    workload: &str,
    setup: &str,
    n: usize,
    f: impl Fn(&FleetRun) -> f64,
) -> Option<f64> {
    let v: Vec<f64> = runs
        .iter()
        .filter(|r| r.workload == workload && r.setup == setup && r.n == n)
        .map(f)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

fn print_table(plan: &Plan, workload: &str, runs: &[FleetRun]) {
    let what = if workload == WARM {
        "Zipf, warm phase: every instance starts with an empty local cache"
    } else {
        "distinct ids: every key misses every local cache"
    };
    let per_rep = if plan.reps > 1 {
        format!(", medians over {} repetitions", plan.reps)
    } else {
        String::new()
    };
    println!(
        "\n{workload} ({what}; {} events per instance{per_rep})",
        plan.events
    );
    println!(
        "{:>2} {:<6} {:>10} {:>8} {:>12} {:>16} {:>10} {:>13} {:>11} {:>9} {:>9} {:>8} {:>8} {:>7}",
        "N",
        "setup",
        "DB queries",
        "vs N=1",
        "keys fetched",
        "events/s/inst",
        "min",
        "caller p99",
        "lease waits",
        "takeovers",
        "tier hits",
        "tier err",
        "bypassed",
        "wall s",
    );
    for &n in &plan.ns {
        for setup in &plan.setups {
            let get = |f: &dyn Fn(&FleetRun) -> f64| over_reps(runs, workload, setup, n, f);
            let Some(queries) = get(&|r| r.server_queries as f64) else {
                continue;
            };
            let rel = get_base(runs, workload, setup)
                .map_or("-".to_owned(), |base| format!("{:.2}x", queries / base));
            let shared = setup == SHARED;
            let tier = |key: &'static str| {
                if shared {
                    format!("{:.0}", get(&|r| r.sum(key)).unwrap_or(f64::NAN))
                } else {
                    "-".to_owned()
                }
            };
            println!(
                "{n:>2} {setup:<6} {queries:>10.0} {rel:>8} {:>12.0} {:>16.0} {:>10.0} {:>10.0} ns {:>11} {:>9} {:>9} {:>8} {:>8} {:>7.2}",
                get(&|r| r.sum("fetched_keys")).unwrap_or(f64::NAN),
                get(&|r| r.median("events_per_s")).unwrap_or(f64::NAN),
                get(&|r| r.min("events_per_s")).unwrap_or(f64::NAN),
                get(&|r| r.median("caller_p99_ns")).unwrap_or(f64::NAN),
                tier("lease_waits"),
                tier("lease_takeovers"),
                tier("tier_hits"),
                tier("tier_errors"),
                tier("tier_bypassed"),
                get(&|r| r.wall_secs).unwrap_or(f64::NAN),
            );
        }
    }
}

/// Total queries of the N = 1 runs of (workload, setup).
fn get_base(runs: &[FleetRun], workload: &str, setup: &str) -> Option<f64> {
    over_reps(runs, workload, setup, 1, |r| r.server_queries as f64)
}

fn print_goals(plan: &Plan, runs: &[FleetRun]) {
    // The goals are about full runs; a smoke run is too short to judge.
    let judge = |met: bool| match (plan.full, met) {
        (false, _) => "smoke run, not judged",
        (true, true) => "met",
        (true, false) => "NOT met",
    };
    println!("\ngoals:");
    let top = plan.ns.iter().copied().max().unwrap_or(1);
    for workload in &plan.workloads {
        for setup in &plan.setups {
            let (Some(base), Some(q)) = (
                get_base(runs, workload, setup),
                over_reps(runs, workload, setup, top, |r| r.server_queries as f64),
            ) else {
                continue;
            };
            let ratio = q / base;
            if setup == SHARED && top == GOAL_N {
                println!(
                    "{workload} {setup}: total queries N={top} / N=1: {q:.0} / {base:.0} = {ratio:.2}x (goal <= {GOAL_QUERIES}x: {})",
                    judge(ratio <= GOAL_QUERIES)
                );
            } else {
                println!(
                    "{workload} {setup}: total queries N={top} / N=1: {q:.0} / {base:.0} = {ratio:.2}x"
                );
            }
        }
    }
    for workload in &plan.workloads {
        for &n in &plan.ns {
            let med = |setup: &str, key: &'static str| {
                over_reps(runs, workload, setup, n, |r| r.median(key))
            };
            let (Some(local), Some(shared)) =
                (med(LOCAL, "events_per_s"), med(SHARED, "events_per_s"))
            else {
                continue;
            };
            let ratio = shared / local;
            let goal = if workload == WARM {
                format!(" (goal >= {GOAL_EPS}x: {})", judge(ratio >= GOAL_EPS))
            } else {
                String::new()
            };
            println!(
                "{workload} N={n}: events/s per instance, shared / local: {shared:.0} / {local:.0} = {ratio:.2}x{goal}"
            );
        }
    }
    for workload in &plan.workloads {
        for &n in &plan.ns {
            let med =
                |setup: &str| over_reps(runs, workload, setup, n, |r| r.median("caller_p99_ns"));
            let (Some(local), Some(shared)) = (med(LOCAL), med(SHARED)) else {
                continue;
            };
            let ratio = shared / local;
            println!(
                "{workload} N={n}: caller p99, shared / local: {shared:.0} / {local:.0} ns = {ratio:.2}x (goal unchanged, <= {GOAL_CALLER}x: {})",
                judge(ratio <= GOAL_CALLER)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A child: one instance

fn child(args: &Args, setup: &str, events: usize) -> ExitCode {
    let instance = args.num("--instance", 0);
    let workload = args.opt("--workload").unwrap_or_else(|| WARM.to_owned());
    let sequence = args.opt("--sequence").expect("--sequence from the parent");
    let fail = |what: String| {
        eprintln!("{workload} {setup} instance {instance}: {what}");
        ExitCode::FAILURE
    };
    let ids = match workload.as_str() {
        WARM => user_ids(events),
        COLD => cold_ids(events),
        other => return fail(format!("unknown workload {other:?}")),
    };
    let lookup = SqlLookup::builder(pg_url())
        .query(query(&workload, &sequence))
        .pool(pool())
        .build()
        .expect("valid sql lookup");
    let mut enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .ttl(TTL);
    match setup {
        LOCAL => {}
        SHARED => {
            let prefix = args.opt("--prefix").expect("--prefix from the parent");
            let mut tier = SharedCache::redis(redis_url()).prefix(prefix);
            if let Some(ms) = args.opt("--tier-timeout-ms") {
                let ms = ms.parse().expect("--tier-timeout-ms takes a number");
                tier = tier.timeout(Duration::from_millis(ms));
            }
            let tier = tier.build().expect("valid shared cache");
            enricher = enricher.shared(tier);
        }
        other => return fail(format!("unknown setup {other:?}")),
    }
    let tally = Arc::new(Tally::default());
    let built = fapilog::builder()
        .queue_capacity(events)
        .overflow(Overflow::Block)
        .enrich_deadline(PATIENT)
        .shutdown_timeout(PATIENT)
        .sink(CheckingSink {
            tally: tally.clone(),
            hold: None,
        })
        .async_enricher_with(
            enricher.build(),
            EnricherOptions::new().call_timeout(PATIENT),
        )
        .build();
    let (layer, guard) = match built {
        Ok(p) => p,
        Err(e) => return fail(format!("the pipeline did not start: {e}")),
    };
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
    )
    .expect("first subscriber");
    let mut caller_ns: Vec<u64> = Vec::with_capacity(events);
    // Touch the buffer's pages now (a non-zero fill: zeroed memory may be
    // mapped lazily), so recording a timing never page-faults in the loop.
    caller_ns.resize(events, u64::MAX);
    caller_ns.clear();

    // Ready; wait for the rest of the fleet.
    println!("READY");
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).is_err() || go.trim_end() != "GO" {
        return fail("no GO from the parent".to_owned());
    }

    let t0 = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        let t = Instant::now();
        tracing::info!(user_id = id, seq = i as u64, "request handled");
        caller_ns.push(t.elapsed().as_nanos() as u64);
    }
    let logged = t0.elapsed().as_secs_f64();
    let report = guard.shutdown_blocking();
    let secs = t0.elapsed().as_secs_f64();

    let n = events as u64;
    let mut problems = support::delivery_problems(&report, &tally, n, n);
    let Some(stats) = report.enrichers.first() else {
        return fail("no enricher stats in the shutdown report".to_owned());
    };
    if stats.failures != 0 || stats.timeouts != 0 || stats.short_circuits != 0 {
        problems.push(format!("enricher stats: {stats:?}"));
    }
    let tier = stats.shared_cache.as_ref();
    if setup == SHARED && tier.is_none() {
        problems.push("no shared cache stats for the shared setup".to_owned());
    }
    if !problems.is_empty() {
        return fail(problems.join("; "));
    }
    let t = |f: fn(&fapilog::observe::SharedCacheStats) -> u64| tier.map_or(0, f);

    caller_ns.sort_unstable();
    println!(
        "RESULT setup={setup} workload={workload} instance={instance} events={n} secs={secs:.6} events_per_s={:.1} log_secs={logged:.6} fetches={} fetched_keys={} cache_hits={} cache_misses={} singleflight_waits={} fetch_p50_us={} fetch_p99_us={} tier_hits={} tier_misses={} tier_writes={} tier_errors={} tier_bypassed={} tier_undecodable={} lease_waits={} lease_takeovers={} caller_p50_ns={} caller_p99_ns={} caller_p999_ns={} caller_max_ns={}",
        n as f64 / secs,
        stats.fetches,
        stats.fetched_keys,
        stats.cache_hits,
        stats.cache_misses,
        stats.singleflight_waits,
        stats.latency.p50.as_micros(),
        stats.latency.p99.as_micros(),
        t(|s| s.hits),
        t(|s| s.misses),
        t(|s| s.writes),
        t(|s| s.errors),
        t(|s| s.bypassed),
        t(|s| s.undecodable),
        t(|s| s.lease_waits),
        t(|s| s.lease_takeovers),
        quantile(&caller_ns, 0.50),
        quantile(&caller_ns, 0.99),
        quantile(&caller_ns, 0.999),
        caller_ns.last().copied().unwrap_or(0),
    );
    ExitCode::SUCCESS
}
