//! End-to-end throughput to a file, with peak memory and total CPU per event,
//! fapilog next to `slog-async` and to `tracing_subscriber`'s JSON formatter
//! behind `tracing_appender`.
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
//! * `slog_async_json_file`: `slog` with `slog_json::Json::default` (its
//!   default keys: `ts` as RFC 3339, `level`, `msg`) writing to a 64 KiB
//!   `std::io::BufWriter` around a plain `std::fs::File`, behind
//!   `slog_async::Async` with `OverflowStrategy::Block` (no loss) and its
//!   default 128-record channel. Buffering is what slog users do for a file:
//!   `Json` makes many small writes per record (one per JSON token), which
//!   on an unbuffered `File` are as many syscalls; it is also the kindest
//!   choice for slog, as nothing flushes the buffer before it is full or
//!   dropped. slog has no spans: the two span levels are child loggers,
//!   `root.new(o!("method" => "POST", "user_id" => t))` and under it
//!   `o!("table" => "orders")`, built once per thread before the first log
//!   call just as the `tracing` setups enter their two spans once per thread,
//!   so each line carries the same key-values (span names are not carried:
//!   a slog logger has none). `slog-async` turns each record into an owned
//!   one on the caller's thread (message formatted, fields copied) and the
//!   worker thread serializes it; `ts` is therefore the time the line is
//!   written, not the time of the log call. Ends by dropping the `Logger`s
//!   and then the `AsyncGuard` (`Async::build_with_guard`), which sends the
//!   worker its finish message behind every queued record and joins it; the
//!   worker drops the `BufWriter` on its way out, which flushes it.
//! * `fmt_json_file`: `tracing_subscriber::fmt::layer().json()` writing
//!   through `tracing_appender::non_blocking::NonBlockingBuilder::default()
//!   .lossy(false)` to `tracing_appender::rolling::never` (an unbuffered
//!   file). Ends by dropping the `WorkerGuard`.
//! * `fmt_json_bufwriter`: the same with a 64 KiB `std::io::BufWriter`
//!   around a plain `std::fs::File` instead, the faster way to use
//!   `non_blocking` (its worker flushes whenever its channel runs empty).
//!
//! Measured per run:
//!
//! * events/s: events over the wall time from the first log call to the end
//!   of the shutdown.
//! * total CPU per event: user + system time of the whole process over the
//!   same span, from `getrusage(RUSAGE_SELF)`, read just before the
//!   producers are released and right after the shutdown returned, nothing
//!   subtracted, divided by the events. It covers the callers, the worker
//!   thread (fapilog's, slog-async's or tracing-appender's) and anything
//!   else in the process. Linux sums it over every thread of the process,
//!   the live ones and those that have already exited (an exiting thread's
//!   times are added to the process's), so a worker that is gone by the
//!   time of the second reading still counts; the sum of user + system is
//!   the scheduler's precise runtime, reported in microseconds. (The same
//!   total is in `/proc/self/stat` fields 14 and 15, but in clock ticks of
//!   10 ms, too coarse for the smoke run; `/proc/self/task/*/schedstat`
//!   misses the threads that have exited.)
//! * caller CPU per event: the producer threads' own CPU time over their
//!   logging loops (`CLOCK_THREAD_CPUTIME_ID`), summed, divided by the
//!   events; the rest of the total is the worker's and the shutdown's.
//! * peak RSS (`VmHWM` from `/proc/self/status`, right after shutdown) and
//!   bytes per line of the file.
//! * as a check on the CPU reading: how many threads besides the main one
//!   are still alive when the shutdown has returned, and the CPU they spend
//!   until they are gone (the process's, less the main thread's, waiting at
//!   most 2 s). It is not in the total; the per-run line shows it when a
//!   thread was left.
//!
//! Peak RSS must be measured per setup, so each run is a child process: the
//! parent re-executes this binary once per setup and repetition, rotating
//! the order of setups between repetitions, and each child reports its
//! measurements on one machine-readable line. The parent prints every run, a
//! table of medians, the ratios of medians to `fmt_json_file`, and fapilog's
//! events/s and CPU per event against every other setup with the goals (on
//! full `--bench` runs only: at least 2.5x the events/s of
//! `slog_async_json_file` and 4x those of the `tracing_appender` setups, at
//! equal or lower total CPU per event than each).
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
use std::time::{Duration, Instant};
use support::{Args, Run, median, run_child, vm_hwm_kib};

use fapilog::Overflow;
use slog::Drain;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const THREADS: u64 = 2;
const FAPILOG: &str = "fapilog_file";
const SLOG: &str = "slog_async_json_file";
const SETUPS: [&str; 4] = [FAPILOG, SLOG, "fmt_json_file", "fmt_json_bufwriter"];
const BASELINE: &str = "fmt_json_file";
/// fapilog's events/s must be at least this many times each setup's, at
/// equal or lower total CPU per event.
const GOALS: [(&str, f64); 3] = [
    (SLOG, 2.5),
    ("fmt_json_file", 4.0),
    ("fmt_json_bufwriter", 4.0),
];

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // only read through `Debug`
enum Status {
    Pending { retries: u8 },
    Paid,
}

fn main() -> ExitCode {
    let args = Args::from_env();
    let full = args.has("--bench");
    let events = args.num("--events", if full { 1_000_000 } else { 20_000 }) as u64;
    if let Some(setup) = args.opt("--child") {
        return child(&setup, events);
    }
    let reps = args.num("--reps", if full { 5 } else { 1 });
    parent(&args.setups(&SETUPS), events, reps, full)
}

fn parent(setups: &[String], events: u64, reps: usize, full: bool) -> ExitCode {
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
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", setup, "--events", &events.to_string()]);
            let Some(run) = run_child(&mut cmd, setup) else {
                return ExitCode::FAILURE;
            };
            println!(
                "rep {} {:<20} {:>8.3} s {:>12.0} events/s  CPU {:>5.2} us/event (caller {:>5.2}, user {:>5.2}, sys {:>5.2})  peak RSS {:>8.1} MiB",
                rep + 1,
                run.setup(),
                run.num("secs"),
                run.num("events_per_s"),
                run.num("cpu_us_per_event"),
                run.num("caller_cpu_us_per_event"),
                run.num("user_us_per_event"),
                run.num("sys_us_per_event"),
                run.num("peak_rss_kib") / 1024.0,
            );
            let left = run.num("threads_left");
            if left > 0.0 {
                println!(
                    "      {left:.0} thread(s) other than main still alive after shutdown; {:.0} us more CPU until they were gone",
                    run.num("cpu_after_us"),
                );
            }
            runs.push(run);
        }
    }
    print_table(setups, &runs, full);
    ExitCode::SUCCESS
}

fn print_table(setups: &[String], runs: &[Run], full: bool) {
    let judge = |met: bool| support::verdict(full, met);
    let med = |setup: &str, key: &str| support::median_of(runs, setup, key);
    let has = |s: &str| runs.iter().any(|r| r.setup() == s);
    println!(
        "\n{:<20} {:>4} {:>16} {:>12} {:>12} {:>16} {:>11} {:>11} {:>12}",
        "setup",
        "runs",
        "median events/s",
        "min",
        "max",
        "median peak RSS",
        "bytes/line",
        "CPU us/ev",
        "caller us/ev"
    );
    for setup in setups.iter().filter(|s| has(s)) {
        let eps: Vec<f64> = runs
            .iter()
            .filter(|r| r.setup() == setup)
            .map(|r| r.num("events_per_s"))
            .collect();
        let min = eps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = eps.iter().copied().fold(0.0, f64::max);
        let rss = format!("{:.1} MiB", med(setup, "peak_rss_kib") / 1024.0);
        println!(
            "{setup:<20} {:>4} {:>16.0} {min:>12.0} {max:>12.0} {rss:>16} {:>11.0} {:>11.2} {:>12.2}",
            eps.len(),
            median(eps.clone()),
            med(setup, "bytes_per_line"),
            med(setup, "cpu_us_per_event"),
            med(setup, "caller_cpu_us_per_event"),
        );
    }
    if has(BASELINE) {
        println!("\nratios to {BASELINE} (medians):");
        for setup in setups.iter().filter(|s| *s != BASELINE && has(s)) {
            println!(
                "{setup:<20} events/s {:.2}x   peak RSS {:.2}x   CPU per event {:.2}x",
                med(setup, "events_per_s") / med(BASELINE, "events_per_s"),
                med(setup, "peak_rss_kib") / med(BASELINE, "peak_rss_kib"),
                med(setup, "cpu_us_per_event") / med(BASELINE, "cpu_us_per_event"),
            );
        }
    }
    if !has(FAPILOG) {
        return;
    }
    let (f_eps, f_cpu) = (
        med(FAPILOG, "events_per_s"),
        med(FAPILOG, "cpu_us_per_event"),
    );
    println!("\n{FAPILOG} against each setup (medians):");
    for setup in setups.iter().filter(|s| *s != FAPILOG && has(s)) {
        let goal = GOALS.iter().find(|g| g.0 == setup).map(|g| g.1);
        let ratio = f_eps / med(setup, "events_per_s");
        let speed = match goal {
            Some(goal) => format!("goal >= {goal}x: {}", judge(ratio >= goal)),
            None => "no goal".to_owned(),
        };
        let cpu = med(setup, "cpu_us_per_event");
        println!(
            "{FAPILOG} / {setup}: events/s {ratio:.2}x ({speed}); CPU per event {setup} / {FAPILOG} {:.2}x, {cpu:.2} vs {f_cpu:.2} us (goal >= 1x: {})",
            cpu / f_cpu,
            judge(f_cpu <= cpu),
        );
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

/// The same event through slog, on the logger that stands for the spans.
#[inline(always)]
fn slog_one(log: &slog::Logger, i: u64) {
    slog::info!(log, "order placed";
        "order_id" => i,
        "amount" => 12.5_f64,
        "express" => i.is_multiple_of(2),
        "currency" => "EUR",
        "status" => ?Status::Pending { retries: 2 },
    );
}

/// What the producer threads log through.
#[derive(Clone)]
enum Api {
    /// The `tracing` macros, into the global subscriber.
    Tracing,
    /// A slog root logger.
    Slog(slog::Logger),
}

/// This process's CPU time so far, user and system, in microseconds: every
/// thread's, including those that have exited.
fn process_cpu_us() -> (u64, u64) {
    // SAFETY: `rusage` is plain data, for which all zeroes is a valid value,
    // and `getrusage` only writes into the struct it is given.
    let (rc, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut ru), ru)
    };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes into the struct it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Threads of this process other than the calling one.
fn other_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count().saturating_sub(1))
}

fn child(setup: &str, events: u64) -> ExitCode {
    let dir = tempfile::tempdir().expect("temporary directory");
    type Finish = Box<dyn FnOnce() -> Result<(), String>>;
    let (path, finish, api): (PathBuf, Finish, Api) = match setup {
        FAPILOG => {
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
            (path, Box::new(finish), Api::Tracing)
        }
        SLOG => {
            let path = dir.path().join("slog.log");
            let file = File::create(&path).expect("log file");
            let buffered = std::io::BufWriter::with_capacity(64 * 1024, file);
            let json = slog_json::Json::default(buffered).fuse();
            let (drain, guard) = slog_async::Async::new(json)
                .overflow_strategy(slog_async::OverflowStrategy::Block)
                .build_with_guard();
            let root = slog::Logger::root(drain.fuse(), slog::o!());
            let finish = move || {
                // The loggers are gone by now (the producers' with their
                // threads, the root before the run); the guard sends the
                // worker its finish message and waits for it to write what
                // is queued.
                drop(guard);
                Ok(())
            };
            (path, Box::new(finish), Api::Slog(root))
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
            (path, Box::new(finish), Api::Tracing)
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
            let api = api.clone();
            // Split the events as evenly as they go.
            let n = events / THREADS + u64::from(t < events % THREADS);
            // Runs the logging loop; returns the thread's CPU time in it.
            let timed = move |log: &dyn Fn(u64)| {
                start.wait();
                let cpu0 = thread_cpu_ns();
                for i in 0..n {
                    log(i);
                }
                thread_cpu_ns() - cpu0
            };
            std::thread::Builder::new()
                .name(format!("producer-{t}"))
                .spawn(move || match api {
                    Api::Tracing => {
                        let request = tracing::info_span!("request", method = "POST", user_id = t);
                        let _request = request.enter();
                        let db = tracing::info_span!("db_query", table = "orders");
                        let _db = db.enter();
                        timed(&log_one)
                    }
                    Api::Slog(root) => {
                        let request = root.new(slog::o!("method" => "POST", "user_id" => t));
                        let db = request.new(slog::o!("table" => "orders"));
                        timed(&|i| slog_one(&db, i))
                    }
                })
                .expect("producer thread")
        })
        .collect();
    // The producers' loggers keep the slog drain alive; the root is no
    // longer needed.
    drop(api);
    let (user0, sys0) = process_cpu_us();
    start.wait();
    let t0 = Instant::now();
    let caller_cpu_ns: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("producer finished"))
        .sum();
    let finished = finish();
    let secs = t0.elapsed().as_secs_f64();
    let (user1, sys1) = process_cpu_us();
    let main_cpu1 = thread_cpu_ns();
    let peak_rss_kib = vm_hwm_kib();
    // Threads that outlive the shutdown (a worker winding down) may still
    // spend CPU that the reading above misses: wait for them (up to 2 s)
    // and report how much they spent, without this thread's own.
    let threads_left = other_threads();
    let give_up = Instant::now() + Duration::from_secs(2);
    while other_threads() > 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (user2, sys2) = process_cpu_us();
    let main_after_us = (thread_cpu_ns() - main_cpu1) / 1000;
    let cpu_after_us = ((user2 + sys2) - (user1 + sys1)).saturating_sub(main_after_us);

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
    let per_event = |us: u64| us as f64 / events as f64;
    println!(
        "RESULT setup={setup} events={events} secs={secs:.6} events_per_s={:.1} peak_rss_kib={peak_rss_kib} bytes_per_line={:.1} cpu_us_per_event={:.4} user_us_per_event={:.4} sys_us_per_event={:.4} caller_cpu_us_per_event={:.4} threads_left={threads_left} cpu_after_us={cpu_after_us}",
        events as f64 / secs,
        bytes as f64 / lines.max(1) as f64,
        per_event((user1 + sys1) - (user0 + sys0)),
        per_event(user1 - user0),
        per_event(sys1 - sys0),
        caller_cpu_ns as f64 / 1000.0 / events as f64,
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
