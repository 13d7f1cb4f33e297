//! Lookup enrichment against a dependency that takes 1 ms per call:
//! `LookupEnricher` (cache, single-flight, cross-event batching) next to the
//! design it replaces, an enricher that awaits one lookup per event, in
//! order, with no cache.
//!
//! The dependency is in-process: a [`Lookup`] whose every `fetch` call, for
//! one key or a hundred, sleeps 1 ms on the worker's tokio timer (so each
//! call really takes 1 ms to the next timer tick, about 1–2 ms; the mean is
//! printed) and then answers every key with a small user object.
//!
//! The events are a fixed sequence of `user_id`s drawn from a Zipf
//! distribution (s = 1.0) over 10 000 users with a fixed seed, so every run
//! and every setup replays the same keys. One thread logs them, timing each
//! `tracing::info!` call with `Instant`; the pipeline writes to a sink that
//! discards the events after checking them.
//!
//! Setups:
//!
//! * `lookup_enricher`: `LookupEnricher::builder("user", lookup)
//!   .key_field("user_id").build()`, every other setting at its default
//!   (max_batch 100, 5 min TTL, 10 000 entries), on all 200 000 events.
//! * `naive_per_event`: an `AsyncEnricher` that calls the same lookup once
//!   per event, one after the other. At about 1–2 ms per event all 200 000
//!   would take minutes, so it runs on the first 5 000 events of the same
//!   sequence; events/s is what is compared.
//! * `no_enricher`: the same pipeline with no enricher, all 200 000 events:
//!   the caller's cost of a log call when nothing is enriched, and the
//!   pipeline's ceiling.
//! * `no_enricher_held`: no enricher either, but the sink holds the worker
//!   until the last log call has returned, so the queue fills up as it does
//!   behind an enricher slower than the caller. A backlog means every event
//!   the caller allocates is fresh memory (page faults) instead of memory
//!   the worker just freed; this control separates that effect from any
//!   effect of enrichment itself on the caller.
//!
//! Every setup: `Overflow::Block`, a queue as large as the run (so a log
//! call never waits for room and the per-call timings are the caller's own
//! cost), batches of 1024 with 1 ms linger (the defaults), and a call
//! timeout, batch deadline and shutdown timeout of 10 minutes, so nothing
//! can time out. Each run asserts that every event was emitted, none
//! carries an `enrichment_errors` entry, and every event of an enriched
//! setup holds the user whose id it logged.
//!
//! A run is timed from the first log call until `Guard::shutdown_blocking`
//! has returned, i.e. until the last event went through enrichment and the
//! sink. Each run also reports the worker thread's CPU time per event and
//! its time waiting for a CPU (`/proc/thread-self/schedstat`, read by the
//! sink on the worker's thread), and the minor page faults of the logging
//! thread during the log calls. Like `throughput`, the parent re-executes
//! this binary once per setup and repetition (rotating the order) and
//! prints every run and the medians.
//!
//! * `cargo bench --bench lookup`: 200 000 events (5 000 for the naive
//!   enricher), 5 repetitions.
//! * Without `--bench` (as `cargo test --all-targets` runs it): a smoke run
//!   of 20 000 events (200 for the naive enricher), 1 repetition, with the
//!   same checks.
//! * `--events N`, `--naive-events N`, `--reps N` and `--setups a,b`
//!   override the defaults; `--batch-size N` sets the pipeline's batch size
//!   for every setup.

mod support;

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, EnricherOptions, Patch};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::{Event, Overflow, Value};
use support::{
    Args, CheckingSink, Run, Tally, median, quantile, run_child, thread_minor_faults,
    thread_schedstat,
};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const SETUPS: [&str; 4] = [
    "lookup_enricher",
    "naive_per_event",
    "no_enricher",
    "no_enricher_held",
];
const LOOKUP: &str = "lookup_enricher";
const NAIVE: &str = "naive_per_event";
const NONE: &str = "no_enricher";
const HELD: &str = "no_enricher_held";

/// Distinct users the keys are drawn from.
const USERS: u64 = 10_000;
/// Zipf exponent.
const ZIPF_S: f64 = 1.0;
/// Seed of the key sequence.
const SEED: u64 = 0x00fa_9109;
/// Simulated latency of one `fetch` call.
const LATENCY: Duration = Duration::from_millis(1);
/// Timeouts long enough that nothing in a run can reach them.
const PATIENT: Duration = Duration::from_secs(600);
/// The goal: `LookupEnricher` events/s over the naive enricher's.
const GOAL_RATIO: f64 = 100.0;

/// The fixed key sequence: `n` user ids in 1..=10 000, Zipf-distributed.
/// A shorter sequence is a prefix of a longer one.
fn user_ids(n: usize) -> Vec<i64> {
    support::zipf_ids(n, USERS, ZIPF_S, SEED)
}

/// What the simulated dependency knows about a user.
fn user(id: i64) -> Value {
    const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
    serde_json::json!({
        "id": id,
        "name": format!("user {id}"),
        "tier": TIERS[id.rem_euclid(3) as usize],
    })
}

/// Calls the simulated dependency received.
#[derive(Default)]
struct Calls {
    fetches: AtomicU64,
    keys: AtomicU64,
    nanos: AtomicU64,
}

/// A dependency answering any batch of keys in one call of 1 ms.
struct SimulatedUsers {
    calls: Arc<Calls>,
}

impl Lookup for SimulatedUsers {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        let started = Instant::now();
        tokio::time::sleep(LATENCY).await;
        let found = keys
            .iter()
            .filter_map(|k| match k {
                Key::Int(id) => Some((k.clone(), user(*id))),
                _ => None,
            })
            .collect();
        self.calls.fetches.fetch_add(1, Ordering::Relaxed);
        self.calls
            .keys
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.calls
            .nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(found)
    }
}

/// The design `LookupEnricher` replaces: one lookup per event, awaited in
/// order, no cache.
struct NaivePerEvent {
    users: SimulatedUsers,
}

impl AsyncEnricher for NaivePerEvent {
    fn name(&self) -> &str {
        "user"
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        for (event, patch) in events.iter().zip(out.iter_mut()) {
            let Some(key) = event.field("user_id").and_then(Key::from_value) else {
                continue;
            };
            match self.users.fetch(std::slice::from_ref(&key)).await {
                Ok(mut found) => {
                    if let Some(v) = found.remove(&key) {
                        patch.insert("user", v);
                    }
                }
                Err(e) => patch.fail(e.message().to_owned()),
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
    let events = num("--events", if full { 200_000 } else { 20_000 });
    let batch_size = opt("--batch-size").map(|_| num("--batch-size", 0));
    if let Some(setup) = opt("--child") {
        return child(&setup, events, batch_size);
    }
    let naive_events = num("--naive-events", if full { 5_000 } else { 200 });
    let reps = num("--reps", if full { 5 } else { 1 });
    let setups = args.setups(&SETUPS);
    parent(&setups, events, naive_events, reps, batch_size, full)
}

fn parent(
    setups: &[String],
    events: usize,
    naive_events: usize,
    reps: usize,
    batch_size: Option<usize>,
    full: bool,
) -> ExitCode {
    for s in setups {
        if !SETUPS.contains(&s.as_str()) {
            eprintln!("unknown setup {s:?}; known: {}", SETUPS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    let exe = std::env::current_exe().expect("own executable");
    println!(
        "lookup: user_id ~ Zipf(s = {ZIPF_S}) over {USERS} users, seed {SEED:#x}; lookup latency {} ms per fetch call; {events} events ({naive_events} for {NAIVE}), {reps} repetition(s) per setup",
        LATENCY.as_millis()
    );
    println!(
        "pipeline batch size {}",
        batch_size.map_or("1024 (default)".to_owned(), |n| n.to_string())
    );
    let mut runs: Vec<Run> = Vec::new();
    for rep in 0..reps {
        for i in 0..setups.len() {
            let setup = &setups[(i + rep) % setups.len()];
            let n = if setup == NAIVE { naive_events } else { events };
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", setup, "--events", &n.to_string()]);
            if let Some(b) = batch_size {
                cmd.args(["--batch-size", &b.to_string()]);
            }
            match run_child(&mut cmd, setup) {
                Some(run) => {
                    println!(
                        "rep {} {:<16} {:>7} events {:>8.3} s {:>10.0} events/s  fetch calls {:>6}  worker {:>5.2} us/event  caller p50 {:>6.0} ns  p99 {:>7.0} ns",
                        rep + 1,
                        run.setup(),
                        run.num("events"),
                        run.num("secs"),
                        run.num("events_per_s"),
                        run.num("fetch_calls"),
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
        "\n{:<16} {:>4} {:>7} {:>15} {:>10} {:>10} {:>11} {:>12} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "setup",
        "runs",
        "events",
        "median events/s",
        "min",
        "max",
        "fetch calls",
        "keys fetched",
        "fetch ms",
        "worker us/ev",
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
            "{setup:<16} {:>4} {:>7} {:>15.0} {min:>10.0} {max:>10.0} {:>11.0} {:>12.0} {:>10.2} {:>12.2} {:>7.0} ns {:>7.0} ns {:>7.0} ns {:>7.1} ms",
            eps.len(),
            med(setup, "events"),
            median(eps.clone()),
            med(setup, "fetch_calls"),
            med(setup, "fetched_keys"),
            med(setup, "fetch_ms_mean"),
            med(setup, "worker_cpu_us_per_event"),
            med(setup, "caller_p50_ns"),
            med(setup, "caller_p99_ns"),
            med(setup, "caller_p999_ns"),
            med(setup, "caller_runq_ms"),
        );
    }
    let has = |s: &str| runs.iter().any(|r| r.setup() == s);
    println!("\nmedians compared:");
    if has(LOOKUP) && has(NAIVE) {
        let ratio = med(LOOKUP, "events_per_s") / med(NAIVE, "events_per_s");
        let verdict = judge(ratio >= GOAL_RATIO);
        println!("{LOOKUP} / {NAIVE} events/s: {ratio:.0}x (goal >= {GOAL_RATIO:.0}x: {verdict})");
    }
    for base in [NONE, HELD].into_iter().filter(|b| has(b)) {
        for setup in [LOOKUP, NAIVE].into_iter().filter(|s| has(s)) {
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

fn child(setup: &str, events: usize, batch_size: Option<usize>) -> ExitCode {
    let ids = user_ids(events);
    let tally = Arc::new(Tally::default());
    let caller_done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Calls::default());
    let users = SimulatedUsers {
        calls: calls.clone(),
    };
    let builder = fapilog::builder()
        .queue_capacity(events)
        .overflow(Overflow::Block)
        .enrich_deadline(PATIENT)
        .shutdown_timeout(PATIENT)
        .sink(CheckingSink {
            tally: tally.clone(),
            hold: (setup == HELD).then(|| caller_done.clone()),
        });
    let builder = match batch_size {
        Some(n) => builder.batch_size(n),
        None => builder,
    };
    let options = EnricherOptions::new().call_timeout(PATIENT);
    let builder = match setup {
        LOOKUP => builder.async_enricher_with(
            LookupEnricher::builder("user", users)
                .key_field("user_id")
                .build(),
            options,
        ),
        NAIVE => builder.async_enricher_with(NaivePerEvent { users }, options),
        NONE | HELD => builder,
        other => {
            eprintln!("unknown setup {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let enriched = setup != NONE && setup != HELD;
    let (layer, guard) = builder.build().expect("fapilog pipeline starts");
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

    let n = events as u64;
    let mut problems = support::delivery_problems(&report, &tally, n, if enriched { n } else { 0 });
    let stats = report.enrichers.first();
    if let Some(s) = stats
        && (s.failures != 0 || s.timeouts != 0 || s.short_circuits != 0)
    {
        problems.push(format!("enricher stats: {s:?}"));
    }
    let stat = |f: fn(&fapilog::observe::EnricherStats) -> u64| stats.map_or(0, f);
    if !problems.is_empty() {
        eprintln!("{setup}: {}", problems.join("; "));
        return ExitCode::FAILURE;
    }

    let fetch_calls = calls.fetches.load(Ordering::Relaxed);
    let fetch_ms_mean = if fetch_calls == 0 {
        0.0
    } else {
        calls.nanos.load(Ordering::Relaxed) as f64 / fetch_calls as f64 / 1e6
    };
    caller_ns.sort_unstable();
    let worker_cpu = tally.worker_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let worker_runq = tally.worker_runq_ns.load(Ordering::Relaxed) as f64 / 1e9;
    println!(
        "RESULT setup={setup} events={n} secs={secs:.6} events_per_s={:.1} log_secs={logged:.6} worker_cpu_s={worker_cpu:.3} worker_runq_s={worker_runq:.3} worker_cpu_us_per_event={:.2} caller_minor_faults={caller_faults} caller_runq_ms={caller_runq_ms:.3} fetch_calls={fetch_calls} fetched_keys={} fetch_ms_mean={fetch_ms_mean:.3} stats_fetches={} cache_hits={} cache_misses={} singleflight_waits={} caller_p50_ns={} caller_p99_ns={} caller_p999_ns={} caller_max_ns={}",
        n as f64 / secs,
        worker_cpu * 1e6 / n as f64,
        calls.keys.load(Ordering::Relaxed),
        stat(|s| s.fetches),
        stat(|s| s.cache_hits),
        stat(|s| s.cache_misses),
        stat(|s| s.singleflight_waits),
        quantile(&caller_ns, 0.50),
        quantile(&caller_ns, 0.99),
        quantile(&caller_ns, 0.999),
        caller_ns.last().copied().unwrap_or(0),
    );
    ExitCode::SUCCESS
}
