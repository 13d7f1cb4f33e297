//! End-to-end throughput to a file, with peak memory, fapilog next to
//! `tracing_subscriber`'s JSON formatter behind `tracing_appender`.
//!
//! Two threads log 1 000 000 events between them (each inside two nested
//! spans, five fields of mixed types) to a file in a temporary directory, with
//! no event allowed to be dropped. A run is timed from the first log call to
//! the moment the pipeline's shutdown has returned, i.e. until every line is
//! in the file. Each run then checks the file holds exactly one line per
//! event.
//!
//! Setups:
//!
//! * `fapilog_file`: fapilog's `FileSink`, `Overflow::Block`, every other
//!   setting at its default (10 000-event queue, batches of 1024, 1 ms
//!   linger). Ends with `Guard::shutdown_blocking`.
//! * `fmt_json_file`: `tracing_subscriber::fmt::layer().json()` writing
//!   through `tracing_appender::non_blocking::NonBlockingBuilder::default()
//!   .lossy(false)` to `tracing_appender::rolling::never` (an unbuffered
//!   file). Ends by dropping the `WorkerGuard`.
//! * `fmt_json_bufwriter`: the same with a 64 KiB `std::io::BufWriter`
//!   around a plain `std::fs::File` instead, the faster way to use
//!   `non_blocking` (its worker flushes whenever its channel runs empty).
//!
//! Peak RSS must be measured per setup, so each run is a child process: the
//! parent re-executes this binary once per setup and repetition, alternating
//! the order of setups between repetitions, and each child reports its own
//! `VmHWM` (from `/proc/self/status`, read right after shutdown) on one
//! machine-readable line. The parent prints every run and a table of medians.
//!
//! * `cargo bench --bench throughput`: 1 000 000 events, 5 repetitions.
//! * Without `--bench` (as `cargo test --all-targets` runs it): a smoke run
//!   of 20 000 events, 1 repetition, checking the same things.
//! * `--events N`, `--reps N` and `--setups a,b` override the defaults.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Barrier};
use std::time::Instant;
use support::{median, vm_hwm_kib};

use fapilog::Overflow;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const THREADS: u64 = 2;
const SETUPS: [&str; 3] = ["fapilog_file", "fmt_json_file", "fmt_json_bufwriter"];
const BASELINE: &str = "fmt_json_file";

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
        return child(&setup, events);
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

/// One finished run, as a child reports it.
#[derive(Debug)]
struct Run {
    setup: String,
    secs: f64,
    events_per_s: f64,
    peak_rss_kib: u64,
    bytes_per_line: f64,
}

impl Run {
    fn parse(line: &str) -> Option<Run> {
        let rest = line.strip_prefix("RESULT ")?;
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        Some(Run {
            setup: get("setup")?.to_owned(),
            secs: get("secs")?.parse().ok()?,
            events_per_s: get("events_per_s")?.parse().ok()?,
            peak_rss_kib: get("peak_rss_kib")?.parse().ok()?,
            bytes_per_line: get("bytes_per_line")?.parse().ok()?,
        })
    }
}

fn parent(setups: &[String], events: u64, reps: usize) -> ExitCode {
    for s in setups {
        if !SETUPS.contains(&s.as_str()) {
            eprintln!("unknown setup {s:?}; known: {}", SETUPS.join(", "));
            return ExitCode::FAILURE;
        }
    }
    let exe = std::env::current_exe().expect("own executable");
    println!(
        "throughput: {events} events from {THREADS} threads to a file, {reps} repetition(s) per setup"
    );
    let mut runs: Vec<Run> = Vec::new();
    for rep in 0..reps {
        // Rotate the order so that no setup always runs first or last.
        for i in 0..setups.len() {
            let setup = &setups[(i + rep) % setups.len()];
            let out = Command::new(&exe)
                .args(["--child", setup, "--events", &events.to_string()])
                .output()
                .expect("child runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let run = stdout.lines().find_map(Run::parse);
            match (out.status.success(), run) {
                (true, Some(run)) => {
                    println!(
                        "rep {} {:<20} {:>8.3} s {:>12.0} events/s  peak RSS {:>8.1} MiB",
                        rep + 1,
                        run.setup,
                        run.secs,
                        run.events_per_s,
                        run.peak_rss_kib as f64 / 1024.0,
                    );
                    runs.push(run);
                }
                _ => {
                    eprintln!(
                        "run {setup} failed ({}):\n{stdout}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print_table(setups, &runs);
    ExitCode::SUCCESS
}

fn print_table(setups: &[String], runs: &[Run]) {
    println!(
        "\n{:<20} {:>4} {:>16} {:>12} {:>12} {:>16} {:>11}",
        "setup", "runs", "median events/s", "min", "max", "median peak RSS", "bytes/line"
    );
    let mut medians: Vec<(&str, f64, f64)> = Vec::new();
    for setup in setups {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.setup == setup).collect();
        if mine.is_empty() {
            continue;
        }
        let eps: Vec<f64> = mine.iter().map(|r| r.events_per_s).collect();
        let min = eps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = eps.iter().copied().fold(0.0, f64::max);
        let eps = median(eps);
        let rss_mib = median(
            mine.iter()
                .map(|r| r.peak_rss_kib as f64 / 1024.0)
                .collect(),
        );
        let bytes_per_line = median(mine.iter().map(|r| r.bytes_per_line).collect());
        let rss = format!("{rss_mib:.1} MiB");
        println!(
            "{setup:<20} {:>4} {eps:>16.0} {min:>12.0} {max:>12.0} {rss:>16} {bytes_per_line:>11.0}",
            mine.len(),
        );
        medians.push((setup.as_str(), eps, rss_mib));
    }
    let Some(&(_, base_eps, base_rss)) = medians.iter().find(|m| m.0 == BASELINE) else {
        return;
    };
    println!("\nratios to {BASELINE} (medians):");
    for (setup, eps, rss) in &medians {
        if *setup != BASELINE {
            println!(
                "{setup:<20} events/s {:.2}x   peak RSS {:.2}x",
                eps / base_eps,
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

fn child(setup: &str, events: u64) -> ExitCode {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (path, finish): (PathBuf, Box<dyn FnOnce() -> Result<(), String>>) = match setup {
        "fapilog_file" => {
            let path = dir.path().join("fapilog.log");
            let (layer, guard) = fapilog::builder()
                .overflow(Overflow::Block)
                .file(fapilog::sink::FileSink::builder(&path))
                .build()
                .expect("fapilog pipeline starts");
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
            )
            .expect("first subscriber");
            let finish = move || {
                let r = guard.shutdown_blocking();
                if r.emitted == events && r.dropped == 0 && !r.timed_out {
                    Ok(())
                } else {
                    Err(format!("shutdown report: {r:?}"))
                }
            };
            (path, Box::new(finish))
        }
        "fmt_json_file" | "fmt_json_bufwriter" => {
            let builder =
                tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false);
            let (path, (writer, guard)) = if setup == "fmt_json_file" {
                let appender = tracing_appender::rolling::never(dir.path(), "fmt.log");
                (dir.path().join("fmt.log"), builder.finish(appender))
            } else {
                let path = dir.path().join("fmt.log");
                let file = File::create(&path).expect("log file");
                let buffered = std::io::BufWriter::with_capacity(64 * 1024, file);
                (path, builder.finish(buffered))
            };
            let errors = writer.error_counter();
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(LevelFilter::INFO);
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("first subscriber");
            let finish = move || {
                drop(guard);
                match errors.dropped_lines() {
                    0 => Ok(()),
                    n => Err(format!("{n} lines dropped")),
                }
            };
            (path, Box::new(finish))
        }
        other => {
            eprintln!("unknown setup {other:?}");
            return ExitCode::FAILURE;
        }
    };

    let start = Arc::new(Barrier::new(THREADS as usize + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let start = start.clone();
            // Split the events as evenly as they go.
            let n = events / THREADS + u64::from(t < events % THREADS);
            std::thread::Builder::new()
                .name(format!("producer-{t}"))
                .spawn(move || {
                    let request = tracing::info_span!("request", method = "POST", user_id = t);
                    let _request = request.enter();
                    let db = tracing::info_span!("db_query", table = "orders");
                    let _db = db.enter();
                    start.wait();
                    for i in 0..n {
                        log_one(i);
                    }
                })
                .expect("producer thread")
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for t in threads {
        t.join().expect("producer finished");
    }
    let finished = finish();
    let secs = t0.elapsed().as_secs_f64();
    let peak_rss_kib = vm_hwm_kib();

    if let Err(e) = finished {
        eprintln!("{setup}: {e}");
        return ExitCode::FAILURE;
    }
    let (lines, bytes) = match check_file(&path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{setup}: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if lines != events {
        eprintln!("{setup}: expected {events} lines in the file, found {lines}");
        return ExitCode::FAILURE;
    }
    println!(
        "RESULT setup={setup} events={events} secs={secs:.6} events_per_s={:.1} peak_rss_kib={peak_rss_kib} bytes_per_line={:.1}",
        events as f64 / secs,
        bytes as f64 / lines.max(1) as f64,
    );
    ExitCode::SUCCESS
}

/// Counts the lines and bytes of the file, and checks that its first and last
/// lines are JSON objects of the logged event.
fn check_file(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        bytes += n as u64;
    }
    let mut first = String::new();
    BufReader::new(File::open(path)?).read_line(&mut first)?;
    let mut tail = Vec::new();
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(bytes.saturating_sub(64 * 1024)))?;
    file.read_to_end(&mut tail)?;
    let tail = String::from_utf8_lossy(&tail);
    let last = tail.trim_end().rsplit('\n').next().unwrap_or("");
    for line in [first.trim_end(), last] {
        let ok = line.contains("\"order placed\"")
            && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object());
        if !ok {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected line: {line:?}"),
            ));
        }
    }
    Ok((lines, bytes))
}
