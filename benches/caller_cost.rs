//! Cost on the caller's thread of one `tracing::info!` call, fapilog next to
//! the alternative a user would otherwise pick: `tracing_subscriber`'s JSON
//! formatter writing through `tracing_appender::non_blocking`.
//!
//! Every setup hands its records to a background thread that throws them
//! away, so what is timed is the log call itself (capture or formatting,
//! plus the hand-off), not I/O:
//!
//! * `fapilog_null_sink`: fapilog with a [`Sink`] that does nothing with the
//!   batch (the worker only pops events off the queue and frees them).
//! * `fapilog_file_devnull`: fapilog with its real JSON file sink writing to
//!   `/dev/null`, so the worker serializes every event; on a machine with few
//!   cores that work competes with the caller for CPU.
//! * `fmt_json_non_blocking`: `tracing_subscriber::fmt::layer().json()` on a
//!   registry, writing through `tracing_appender::non_blocking` (default
//!   settings: lossy, 128 000 buffered lines) to `std::io::sink()`.
//! * `otel_appender_batch`: what a user sending logs over OTLP would pick
//!   instead: `opentelemetry-appender-tracing`'s bridge over an SDK
//!   `SdkLoggerProvider` with the default `BatchLogProcessor` (its own
//!   thread, 2 048 queued records, lossy) and an exporter that drops what it
//!   is given.
//!
//! fapilog uses `Overflow::DropNewest` with a 128 000-event queue, the same
//! bound and policy as `non_blocking`'s defaults, so a slow consumer shows up
//! as drops (printed after each benchmark) rather than as the caller waiting.
//!
//! With `--features opentelemetry` and the environment variable
//! `FAPILOG_BENCH_OTEL=1`, every setup also has `tracing-opentelemetry`'s
//! layer in its subscriber (an SDK tracer with no exporter), and fapilog
//! reads each record's trace context from it: the cost of trace
//! correlation next to `fmt::layer().json()` under the same layer. Group
//! names then end in `_otel`.
//!
//! Run: `cargo bench --bench caller_cost`. After criterion's own output a
//! summary table gives the median time per call of each setup and its ratio
//! to `fmt_json_non_blocking`. Criterion measures the setups one after the
//! other; an interleaved check follows that alternates them in short blocks
//! (200 rounds of 10 000 calls per setup), so that a change in background
//! load cannot favour one setup, and reports the median per-round ratio.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fapilog::{Event, Overflow, Sink, SinkError};
use tracing::Dispatch;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const QUEUE: usize = 128_000;

/// Throws every batch away.
struct NullSink;

impl Sink for NullSink {
    fn name(&self) -> &str {
        "null"
    }

    async fn write_batch(&mut self, _events: &[Event]) -> Result<(), SinkError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // only read through `Debug`
enum Status {
    Pending { retries: u8 },
    Paid,
}

/// The measured call: five fields of mixed types and a message.
#[inline(always)]
fn log_one() {
    tracing::info!(
        order_id = black_box(1_234_567_u64),
        amount = black_box(12.5_f64),
        express = black_box(true),
        currency = black_box("EUR"),
        status = ?black_box(Status::Pending { retries: 2 }),
        "order placed"
    );
}

/// Runs `f` inside two nested spans, created and entered once (outside any
/// timed loop), as in a request handler that logs.
fn in_spans<R>(f: impl FnOnce() -> R) -> R {
    let request = tracing::info_span!("request", method = "POST", user_id = 42_u64);
    let _request = request.enter();
    let db = tracing::info_span!("db_query", table = "orders");
    let _db = db.enter();
    f()
}

fn with_spans(b: &mut criterion::Bencher<'_>) {
    in_spans(|| b.iter(log_one));
}

fn without_spans(b: &mut criterion::Bencher<'_>) {
    b.iter(log_one);
}

enum Setup {
    FapilogNull,
    FapilogDevNull,
    FmtJson,
    OtelAppender,
}

/// An OpenTelemetry log exporter that drops every batch.
#[derive(Debug)]
struct DropExporter;

impl opentelemetry_sdk::logs::LogExporter for DropExporter {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::FapilogNull,
        Setup::FapilogDevNull,
        Setup::FmtJson,
        Setup::OtelAppender,
    ];

    fn id(&self) -> &'static str {
        match self {
            Setup::FapilogNull => "fapilog_null_sink",
            Setup::FapilogDevNull => "fapilog_file_devnull",
            Setup::FmtJson => "fmt_json_non_blocking",
            Setup::OtelAppender => "otel_appender_batch",
        }
    }

    /// Builds the subscriber; the returned closure shuts it down and says
    /// how many events were written and dropped.
    fn start(&self) -> (Dispatch, Box<dyn FnOnce() -> String>) {
        match self {
            Setup::FapilogNull | Setup::FapilogDevNull => {
                let builder = fapilog::builder()
                    .queue_capacity(QUEUE)
                    .overflow(Overflow::DropNewest);
                let builder = match self {
                    Setup::FapilogNull => builder.sink(NullSink),
                    _ => builder.file(fapilog::sink::FileSink::builder("/dev/null")),
                };
                let (layer, guard) = builder.build().expect("fapilog pipeline starts");
                let dispatch = Dispatch::new(
                    tracing_subscriber::registry()
                        .with(layer.with_filter(LevelFilter::INFO))
                        .with(otel_layer()),
                );
                let done = move || {
                    let r = guard.shutdown_blocking();
                    format!("emitted {}, dropped {}", r.emitted, r.dropped)
                };
                (dispatch, Box::new(done))
            }
            Setup::FmtJson => {
                let (writer, guard) = tracing_appender::non_blocking(std::io::sink());
                let errors = writer.error_counter();
                let layer = tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer)
                    .with_filter(LevelFilter::INFO);
                let dispatch = Dispatch::new(
                    tracing_subscriber::registry()
                        .with(layer)
                        .with(otel_layer()),
                );
                let done = move || {
                    drop(guard);
                    format!("dropped {}", errors.dropped_lines())
                };
                (dispatch, Box::new(done))
            }
            Setup::OtelAppender => {
                let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                    .with_batch_exporter(DropExporter)
                    .build();
                let layer = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                    &provider,
                )
                .with_filter(LevelFilter::INFO);
                let dispatch = Dispatch::new(
                    tracing_subscriber::registry()
                        .with(layer)
                        .with(otel_layer()),
                );
                let done = move || match provider.shutdown() {
                    Ok(()) => "shut down".to_owned(),
                    Err(e) => format!("shutdown: {e}"),
                };
                (dispatch, Box::new(done))
            }
        }
    }
}

/// Whether this run puts `tracing-opentelemetry`'s layer under every setup.
fn with_otel() -> bool {
    std::env::var_os("FAPILOG_BENCH_OTEL").is_some_and(|v| v == "1")
}

/// `tracing-opentelemetry`'s layer on an SDK tracer without an exporter,
/// when this run asks for it.
#[cfg(feature = "opentelemetry")]
fn otel_layer<S>()
-> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    if !with_otel() {
        return None;
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    Some(tracing_opentelemetry::layer().with_tracer(provider.tracer("caller_cost")))
}

#[cfg(not(feature = "opentelemetry"))]
fn otel_layer() -> Option<tracing_subscriber::layer::Identity> {
    assert!(
        !with_otel(),
        "FAPILOG_BENCH_OTEL=1 needs `--features opentelemetry`"
    );
    None
}

/// A scenario's group name, marked when the OpenTelemetry layer is on.
fn group_name(base: &str) -> String {
    if with_otel() {
        format!("{base}_otel")
    } else {
        base.to_owned()
    }
}

type Scenario = (&'static str, fn(&mut criterion::Bencher<'_>), bool);

const SCENARIOS: [Scenario; 2] = [
    ("caller_5_fields_2_spans", with_spans, true),
    ("caller_5_fields_no_span", without_spans, false),
];

fn bench(c: &mut Criterion) {
    for (base, routine, _) in SCENARIOS {
        let group_name = group_name(base);
        let mut group = c.benchmark_group(&group_name);
        for setup in Setup::ALL {
            let (dispatch, done) = setup.start();
            group.bench_function(setup.id(), |b| {
                tracing::dispatcher::with_default(&dispatch, || routine(b));
            });
            drop(dispatch);
            eprintln!("{group_name}/{}: {}", setup.id(), done());
        }
        group.finish();
    }
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion`
/// in the target directory this benchmark was built in.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    // <target>/<profile>/deps/caller_cost-<hash>
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

fn median_ns(dir: &std::path::Path, group: &str, id: &str) -> Option<f64> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn summary() {
    let Some(dir) = criterion_dir() else { return };
    println!();
    println!("median time per call (criterion's median of sample means)");
    println!(
        "{:<26} {:<24} {:>12} {:>14} {:>14}",
        "scenario", "setup", "median ns", "vs fmt_json", "vs otel"
    );
    for (name, _, _) in SCENARIOS {
        let group = &group_name(name);
        let base = median_ns(&dir, group, Setup::FmtJson.id());
        let otel = median_ns(&dir, group, Setup::OtelAppender.id());
        for setup in Setup::ALL {
            let Some(ns) = median_ns(&dir, group, setup.id()) else {
                continue;
            };
            let ratio = base.map_or("-".to_owned(), |b| format!("{:.2}x", ns / b));
            let vs_otel = otel.map_or("-".to_owned(), |b| format!("{:.2}x", ns / b));
            println!(
                "{group:<26} {:<24} {ns:>12.1} {ratio:>14} {vs_otel:>14}",
                setup.id()
            );
        }
    }
}

/// Criterion measures one setup after the other, so on a shared machine a
/// change in background load between them skews the comparison. This check
/// alternates the setups instead: each round times a block of calls with
/// every setup, in rotating order, and the per-round ratios are summarized.
fn interleaved(rounds: usize, block: u32) {
    println!();
    println!(
        "interleaved check: {rounds} rounds, each timing {block} calls per setup (rotating order)"
    );
    println!(
        "{:<26} {:<24} {:>12} {:>10} {:>10} {:>22} {:>18}",
        "scenario", "setup", "median ns", "p25", "p75", "median ratio to fmt_json", "ratio to otel"
    );
    for (name, _, spans) in SCENARIOS {
        let group = &group_name(name);
        let started: Vec<_> = Setup::ALL.iter().map(Setup::start).collect();
        let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); started.len()];
        for round in 0..rounds {
            for k in 0..started.len() {
                let i = (k + round) % started.len();
                let per_call = tracing::dispatcher::with_default(&started[i].0, || {
                    let timed = || {
                        let t = Instant::now();
                        for _ in 0..block {
                            log_one();
                        }
                        t.elapsed().as_nanos() as f64 / f64::from(block)
                    };
                    if spans { in_spans(timed) } else { timed() }
                });
                ns[i].push(per_call);
            }
        }
        let base = Setup::ALL
            .iter()
            .position(|s| matches!(s, Setup::FmtJson))
            .expect("baseline setup");
        let otel = Setup::ALL
            .iter()
            .position(|s| matches!(s, Setup::OtelAppender))
            .expect("otel setup");
        for (i, setup) in Setup::ALL.iter().enumerate() {
            let ratio_to = |b: usize| {
                let ratios = ns[i].iter().zip(&ns[b]).map(|(a, b)| a / b).collect();
                percentile(ratios, 0.5)
            };
            let q = |p| percentile(ns[i].clone(), p);
            println!(
                "{group:<26} {:<24} {:>12.1} {:>10.1} {:>10.1} {:>21.2}x {:>17.2}x",
                setup.id(),
                q(0.5),
                q(0.25),
                q(0.75),
                ratio_to(base),
                ratio_to(otel)
            );
        }
        for (setup, (dispatch, done)) in Setup::ALL.iter().zip(started) {
            drop(dispatch);
            eprintln!("interleaved {group}/{}: {}", setup.id(), done());
        }
    }
}

/// The `p` quantile (0..=1) of `v`, nearest rank.
fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    // Under `cargo test` criterion runs each benchmark once and records
    // nothing; only a real run has fresh numbers to summarize.
    if std::env::args().any(|a| a == "--bench") {
        summary();
        interleaved(200, 10_000);
    } else {
        interleaved(1, 10);
    }
}
