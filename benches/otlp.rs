//! End-to-end export to a loopback OTLP/gRPC receiver: fapilog's
//! `OtlpSink` next to what a user would pick instead,
//! `opentelemetry-appender-tracing` over the SDK's `BatchLogProcessor`
//! with `opentelemetry-otlp`'s gRPC (tonic) exporter.
//!
//! The parent process runs the receiver (a tonic server of the OTLP logs
//! service that counts the records it is sent, reading just enough of the
//! wire format) and re-executes this binary once per setup and
//! repetition, alternating the order. Each child logs from two threads
//! (each inside two nested spans, five fields of mixed types), then shuts
//! its pipeline down, and reports: the time from the first log call until
//! shutdown returned (everything sent), the callers' time per event, and
//! its peak RSS. The parent then counts what the receiver got: `lost` is
//! what was logged but never arrived.
//!
//! Each child runs two phases, on the same pipeline:
//!
//! 1. *paced* (caller cost): each thread logs `events / 10` events in
//!    bursts of 16 with a 1 ms pause between bursts (at most ~32 000
//!    events/s in all, which both setups keep up with, so that neither
//!    caller is measured while its pipeline is overrun); the time spent
//!    inside the log calls, per event, is the caller cost.
//! 2. *flood* (throughput): each thread logs its share of `events` as fast
//!    as it can; `delivered/s` is what the receiver got of this phase per
//!    second, from the first call until shutdown returned.
//!
//! Setups, each at its defaults:
//!
//! * `fapilog_otlp`: `fapilog::builder().otlp(OtlpSinkBuilder::new()
//!   .protocol(Grpc).endpoint(..))`, `Overflow::Block` (nothing dropped).
//! * `otel_batch`: `OpenTelemetryTracingBridge` over an `SdkLoggerProvider`
//!   `with_batch_exporter(LogExporter::builder().with_tonic()
//!   .with_endpoint(..))`; shut down with `SdkLoggerProvider::shutdown`.
//!
//! * `cargo bench --bench otlp --features otlp`: 1 000 000 events, 5
//!   repetitions.
//! * Without `--bench` (as `cargo test --all-targets` runs it): a smoke run
//!   of 20 000 events, 1 repetition.
//! * `--events N`, `--reps N` and `--setups a,b` override the defaults.

mod support;

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use support::{median, vm_hwm_kib};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const THREADS: u64 = 2;
const SETUPS: [&str; 2] = ["fapilog_otlp", "otel_batch"];
const BASELINE: &str = "otel_batch";
/// Events a thread logs between 1 ms pauses in the paced phase.
const BURST: u64 = 16;

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // only read through `Debug`
enum Status {
    Pending { retries: u8 },
    Paid,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let full = args.iter().any(|a| a == "--bench");
    let events: u64 = opt("--events")
        .map(|v| v.parse().expect("--events takes a number"))
        .unwrap_or(if full { 1_000_000 } else { 20_000 });
    if let Some(setup) = opt("--child") {
        let endpoint = opt("--endpoint").expect("--endpoint");
        return child(&setup, events, &endpoint);
    }
    let reps: usize = opt("--reps")
        .map(|v| v.parse().expect("--reps takes a number"))
        .unwrap_or(if full { 5 } else { 1 });
    let setups: Vec<String> = match opt("--setups") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => SETUPS.iter().map(|s| (*s).to_owned()).collect(),
    };
    parent(&setups, events, reps)
}

/// Counts the records it receives, and those of the flood phase (their
/// body is "order placed"; the paced phase's is "order paced").
///
/// It reads the protobuf wire format just enough to count (a walk over
/// the bytes, no message built): a receiver decoding every record into
/// the generated types would spend more CPU than either exporter on this
/// 2-core machine, and more for the setup that delivers more. A real
/// collector runs elsewhere.
#[derive(Clone, Default)]
struct Receiver {
    records: Arc<AtomicU64>,
    flood: Arc<AtomicU64>,
}

/// The counts of one request.
#[derive(Default)]
struct Counts {
    records: u64,
    flood: u64,
}

/// Reads a varint at `*at`.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, bytes)` for each length-delimited field of a message;
/// skips the others.
fn each_len_field(b: &[u8], mut f: impl FnMut(u64, &[u8])) -> Option<()> {
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        match key & 7 {
            0 => {
                varint(b, &mut at)?;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).ok()?;
                f(key >> 3, b.get(at..at + len)?);
                at += len;
            }
            _ => return None,
        }
    }
    Some(())
}

fn count(request: &[u8]) -> Counts {
    let mut c = Counts::default();
    // ExportLogsServiceRequest.resource_logs(1) → ResourceLogs.scope_logs(2)
    // → ScopeLogs.log_records(2) → LogRecord.body(5) → AnyValue.string_value(1)
    each_len_field(request, |f, rl| {
        if f != 1 {
            return;
        }
        each_len_field(rl, |f, sl| {
            if f != 2 {
                return;
            }
            each_len_field(sl, |f, record| {
                if f != 2 {
                    return;
                }
                c.records += 1;
                each_len_field(record, |f, body| {
                    if f == 5 {
                        each_len_field(body, |f, s| {
                            if f == 1 && s == b"order placed" {
                                c.flood += 1;
                            }
                        });
                    }
                });
            });
        });
    });
    c
}

/// Encodes responses, and decodes requests into their counts.
#[derive(Clone, Copy, Default)]
struct CountCodec;

impl tonic::codec::Codec for CountCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = Counts;
    type Encoder = CountCodec;
    type Decoder = CountCodec;
    fn encoder(&mut self) -> Self::Encoder {
        CountCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        CountCodec
    }
}

impl tonic::codec::Encoder for CountCodec {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        prost::Message::encode(&item, dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for CountCodec {
    type Item = Counts;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use prost::bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(count(&bytes)))
    }
}

impl tonic::server::UnaryService<Counts> for Receiver {
    type Response = ExportLogsServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Counts>) -> Self::Future {
        let c = request.get_ref();
        self.records.fetch_add(c.records, Ordering::Relaxed);
        self.flood.fetch_add(c.flood, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(
            ExportLogsServiceResponse::default(),
        )))
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Receiver
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CountCodec)
                .apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(svc, req).await)
        })
    }
}

impl tonic::server::NamedService for Receiver {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// Starts the receiver on a runtime of its own; returns its address.
fn start_receiver(receiver: Receiver) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("send");
            tonic::transport::Server::builder()
                .add_service(receiver)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("receiver runs");
        });
    });
    rx.recv().expect("receiver address")
}

#[derive(Debug)]
struct Run {
    setup: String,
    secs: f64,
    events_per_s: f64,
    caller_ns: f64,
    peak_rss_kib: u64,
    lost: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.strip_prefix("RESULT ")?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn parent(setups: &[String], events: u64, reps: usize) -> ExitCode {
    for s in setups {
        if !SETUPS.contains(&s.as_str()) {
            eprintln!("unknown setup {s:?}; known: {}", SETUPS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone());
    let endpoint = format!("http://{addr}");
    let exe = std::env::current_exe().expect("own executable");
    println!(
        "otlp: {events} events from {THREADS} threads to a loopback OTLP/gRPC receiver, {reps} repetition(s) per setup"
    );
    let mut runs: Vec<Run> = Vec::new();
    for rep in 0..reps {
        for i in 0..setups.len() {
            let setup = &setups[(i + rep) % setups.len()];
            receiver.records.store(0, Ordering::Relaxed);
            receiver.flood.store(0, Ordering::Relaxed);
            let out = Command::new(&exe)
                .args([
                    "--child",
                    setup,
                    "--events",
                    &events.to_string(),
                    "--endpoint",
                    &endpoint,
                ])
                .output()
                .expect("child runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().find(|l| l.starts_with("RESULT "));
            let parsed = line.and_then(|l| {
                Some((
                    field(l, "secs")?.parse::<f64>().ok()?,
                    field(l, "caller_ns")?.parse::<f64>().ok()?,
                    field(l, "peak_rss_kib")?.parse::<u64>().ok()?,
                    field(l, "paced")?.parse::<u64>().ok()?,
                ))
            });
            let Some((secs, caller_ns, peak_rss_kib, paced)) =
                parsed.filter(|_| out.status.success())
            else {
                eprintln!(
                    "run {setup} failed ({}):\n{stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                return ExitCode::FAILURE;
            };
            // The child has exited: whatever it sent has arrived.
            let received = receiver.records.load(Ordering::Relaxed);
            let flood_received = receiver.flood.load(Ordering::Relaxed);
            let run = Run {
                setup: setup.clone(),
                secs,
                events_per_s: flood_received as f64 / secs,
                caller_ns,
                peak_rss_kib,
                lost: (events + paced).saturating_sub(received),
            };
            println!(
                "rep {} {:<14} {:>8.3} s {:>12.0} delivered/s  caller {:>7.0} ns/event  peak RSS {:>7.1} MiB  lost {}",
                rep + 1,
                run.setup,
                run.secs,
                run.events_per_s,
                run.caller_ns,
                run.peak_rss_kib as f64 / 1024.0,
                run.lost,
            );
            runs.push(run);
        }
    }
    print_table(setups, &runs);
    ExitCode::SUCCESS
}

fn print_table(setups: &[String], runs: &[Run]) {
    println!(
        "\n{:<14} {:>4} {:>20} {:>18} {:>16} {:>12}",
        "setup", "runs", "median delivered/s", "median caller ns", "median peak RSS", "lost (sum)"
    );
    let mut medians: Vec<(&str, f64, f64, f64)> = Vec::new();
    for setup in setups {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.setup == setup).collect();
        if mine.is_empty() {
            continue;
        }
        let eps = median(mine.iter().map(|r| r.events_per_s).collect());
        let caller = median(mine.iter().map(|r| r.caller_ns).collect());
        let rss = median(
            mine.iter()
                .map(|r| r.peak_rss_kib as f64 / 1024.0)
                .collect(),
        );
        let lost: u64 = mine.iter().map(|r| r.lost).sum();
        println!(
            "{setup:<14} {:>4} {eps:>20.0} {caller:>18.0} {:>16} {lost:>12}",
            mine.len(),
            format!("{rss:.1} MiB"),
        );
        medians.push((setup.as_str(), eps, caller, rss));
    }
    let Some(&(_, base_eps, base_caller, base_rss)) = medians.iter().find(|m| m.0 == BASELINE)
    else {
        return;
    };
    println!("\nratios to {BASELINE} (medians):");
    for (setup, eps, caller, rss) in &medians {
        if *setup != BASELINE {
            println!(
                "{setup:<14} delivered/s {:.2}x   caller cost {:.2}x   peak RSS {:.2}x",
                eps / base_eps,
                caller / base_caller,
                rss / base_rss
            );
        }
    }
}

/// The logged event, inside the caller's two spans.
#[inline(always)]
fn log_one(i: u64) {
    tracing::info!(
        order_id = i,
        amount = 12.5_f64,
        express = i.is_multiple_of(2),
        currency = "EUR",
        status = ?Status::Pending { retries: 2 },
        "order placed"
    );
}

/// The same event for the paced phase, told apart by its message.
#[inline(always)]
fn log_paced(i: u64) {
    tracing::info!(
        order_id = i,
        amount = 12.5_f64,
        express = i.is_multiple_of(2),
        currency = "EUR",
        status = ?Status::Pending { retries: 2 },
        "order paced"
    );
}

fn child(setup: &str, events: u64, endpoint: &str) -> ExitCode {
    // The OTel exporter's tonic channel lives on a runtime of the
    // application's; the batch processor's thread drives its exports.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let finish: Box<dyn FnOnce() -> Result<(), String>> = match setup {
        "fapilog_otlp" => {
            let (layer, guard) = fapilog::builder()
                .overflow(fapilog::Overflow::Block)
                .service("bench")
                .otlp(
                    fapilog::OtlpSinkBuilder::new()
                        .ignore_env()
                        .protocol(fapilog::OtlpProtocol::Grpc)
                        .endpoint(endpoint),
                )
                .build()
                .expect("fapilog pipeline starts");
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
            )
            .expect("first subscriber");
            Box::new(move || {
                let r = guard.shutdown_blocking();
                if r.emitted == events + events / 10
                    && r.dropped == 0
                    && !r.timed_out
                    && r.undelivered == 0
                {
                    Ok(())
                } else {
                    Err(format!("shutdown report: {r:?}"))
                }
            })
        }
        "otel_batch" => {
            use opentelemetry_otlp::WithExportConfig;
            let _enter = rt.enter();
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .expect("exporter");
            let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let layer =
                opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&provider);
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
            )
            .expect("first subscriber");
            Box::new(move || {
                provider
                    .shutdown()
                    .map_err(|e| format!("provider shutdown: {e}"))
            })
        }
        other => {
            eprintln!("unknown setup {other:?}");
            return ExitCode::FAILURE;
        }
    };

    let paced = events / 10;
    let start = Arc::new(Barrier::new(THREADS as usize + 1));
    let flood = Arc::new(Barrier::new(THREADS as usize + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (start, flood) = (start.clone(), flood.clone());
            let n = events / THREADS + u64::from(t < events % THREADS);
            let p = paced / THREADS + u64::from(t < paced % THREADS);
            std::thread::Builder::new()
                .name(format!("producer-{t}"))
                .spawn(move || {
                    let request = tracing::info_span!("request", method = "POST", user_id = t);
                    let _request = request.enter();
                    let db = tracing::info_span!("db_query", table = "orders");
                    let _db = db.enter();
                    start.wait();
                    let mut in_calls = Duration::ZERO;
                    let mut i = 0;
                    while i < p {
                        let t0 = Instant::now();
                        for _ in 0..BURST.min(p - i) {
                            log_paced(i);
                            i += 1;
                        }
                        in_calls += t0.elapsed();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    flood.wait();
                    for i in 0..n {
                        log_one(i);
                    }
                    in_calls
                })
                .expect("producer thread")
        })
        .collect();
    start.wait();
    flood.wait();
    let t0 = Instant::now();
    let caller: Duration = threads
        .into_iter()
        .map(|t| t.join().expect("producer finished"))
        .sum();
    let finished = finish();
    let secs = t0.elapsed().as_secs_f64();
    let peak_rss_kib = vm_hwm_kib();
    drop(rt);
    if let Err(e) = finished {
        // Reported, not fatal: losing events is what the parent measures.
        eprintln!("{setup}: {e}");
    }
    println!(
        "RESULT setup={setup} events={events} paced={paced} secs={secs:.6} caller_ns={:.1} peak_rss_kib={peak_rss_kib}",
        caller.as_nanos() as f64 / paced.max(1) as f64,
    );
    ExitCode::SUCCESS
}
