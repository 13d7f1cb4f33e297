//! Nothing is lost silently at the sink, and slow I/O stays where it is:
//! per-sink accounting of written and undelivered events, retries, the
//! "events undelivered" record on the other sinks, a disk that blocks
//! without stalling enrichment, and log calls on a current-thread runtime
//! that never park it.

mod support;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fapilog::enrich::{EnrichError, EnricherOptions};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::observe::HealthStatus;
use fapilog::resilience::BreakerState;
use fapilog::sink::FileSink;
use fapilog::{Event, Overflow, Sink, SinkError};
use support::{Collected, Gate, Signal, StallingSink, start};

const FAST_RETRIES: (u32, Duration, Duration) =
    (2, Duration::from_millis(1), Duration::from_millis(2));

#[test]
fn a_sink_that_always_fails_counts_every_event_it_missed() {
    const N: u64 = 1000;
    let out = Collected::new();
    let (r, min, max) = FAST_RETRIES;
    let (dispatch, guard) = start(
        fapilog::builder()
            // A full disk, as the kernel has one for everybody.
            .file(FileSink::builder("/dev/full"))
            .sink(out.sink())
            .sink_retries(r, min, max)
            .drop_report_interval(Duration::from_millis(10)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..N {
            tracing::info!(seq, "x");
        }
    });
    let report = guard.shutdown_blocking();

    assert_eq!(report.emitted, N, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
    let file = &report.sinks[0];
    assert_eq!(file.name, "file");
    assert_eq!((file.written, file.undelivered), (0, N), "{file:?}");
    assert!(file.failures > 0 && file.last_error.is_some(), "{file:?}");
    let other = &report.sinks[1];
    assert_eq!((other.written, other.undelivered), (N, 0), "{other:?}");
    assert_eq!(report.undelivered, N);

    // The other sink got every event, and was told what the file missed.
    assert_eq!(out.app_events().len() as u64, N);
    let told: u64 = out
        .internal_events()
        .iter()
        .filter(|e| e.message() == Some("events undelivered"))
        .inspect(|e| assert_eq!(e.field("sink"), Some(&"file".into())))
        .map(|e| support::u64_field(e, "undelivered"))
        .sum();
    assert_eq!(told, N, "the records add up to what the file missed");
}

/// Fails its first `fail_first` writes, then writes; remembers what it got.
struct Flaky {
    fail_first: u64,
    attempts: Arc<AtomicU64>,
    out: Collected,
    partial: bool,
}

impl Sink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            if self.partial && !events.is_empty() {
                // Half of it made it out before the failure.
                let half = events.len().div_ceil(2);
                let mut inner = self.out.sink();
                inner.write_batch(&events[..half]).await?;
                return Err(SinkError::msg("connection reset").after_writing(half));
            }
            return Err(SinkError::msg("connection reset"));
        }
        self.out.sink().write_batch(events).await
    }
}

#[test]
fn a_transient_failure_is_retried_without_loss_or_duplicates() {
    for partial in [false, true] {
        let out = Collected::new();
        let attempts = Arc::new(AtomicU64::new(0));
        let (r, min, max) = FAST_RETRIES;
        let (dispatch, guard) = start(
            fapilog::builder()
                .batch_size(10)
                .sink(Flaky {
                    fail_first: 2,
                    attempts: attempts.clone(),
                    out: out.clone(),
                    partial,
                })
                .sink_retries(r, min, max),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            for seq in 0..10u64 {
                tracing::info!(seq, "x");
            }
        });
        let report = guard.shutdown_blocking();
        let seqs: Vec<u64> = out
            .app_events()
            .iter()
            .map(|e| support::u64_field(e, "seq"))
            .collect();
        assert_eq!(
            seqs,
            (0..10).collect::<Vec<_>>(),
            "partial={partial}: in order, once each"
        );
        let s = &report.sinks[0];
        assert_eq!(
            (s.written, s.undelivered, s.failures),
            (10, 0, 2),
            "partial={partial}: {s:?}"
        );
    }
}

/// A lookup that, like acquire-then-query, awaits twice per fetch.
#[derive(Clone, Default)]
struct TwoAwaits {
    fetches: Arc<AtomicU64>,
}

impl Lookup for TwoAwaits {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_micros(2500)).await;
        tokio::time::sleep(Duration::from_micros(2500)).await;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), serde_json::json!({"id": k.to_value()})))
            .collect())
    }
}

#[test]
fn a_disk_that_blocks_does_not_stall_enrichment() {
    const N: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    // A named pipe read slowly stands for a disk that blocks: writes to it
    // block whenever its 64 KiB buffer is full.
    let fifo = dir.path().join("slow.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(&fifo).expect("open the pipe for reading");
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) => panic!("reading the pipe: {e}"),
                }
                // About 640 KiB/s, 64 KiB at a time: a write blocks for up
                // to 100 ms whenever the pipe is full.
                std::thread::sleep(Duration::from_millis(100));
            }
            total
        })
    };

    let out = Collected::new();
    let lookup = TwoAwaits::default();
    let (dispatch, guard) = start(
        fapilog::builder()
            .file(FileSink::builder(&fifo))
            .sink(out.sink())
            .sink_timeout(Duration::from_secs(60))
            .batch_size(64)
            .async_enricher_with(
                LookupEnricher::builder("user", lookup.clone())
                    .key_field("user_id")
                    .max_batch(16)
                    .build(),
                EnricherOptions::new().call_timeout(Duration::from_millis(50)),
            ),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..N {
            tracing::info!(seq, user_id = seq, "x");
        }
    });
    let health = guard.health();
    let report = guard.shutdown_blocking();
    let read = reader.join().expect("reader");

    let events = out.app_events();
    assert_eq!(events.len() as u64, N);
    let unenriched: Vec<_> = events
        .iter()
        .filter(|e| e.field("user").is_none())
        .collect();
    assert!(
        unenriched.is_empty(),
        "{} of {N} not enriched, e.g. {:?}",
        unenriched.len(),
        unenriched.first()
    );
    assert_eq!(health[0].status, HealthStatus::Up, "{health:?}");
    assert_eq!(health[0].breaker, BreakerState::Closed);
    let e = &report.enrichers[0];
    assert_eq!((e.failures, e.timeouts), (0, 0), "{e:?}");
    // The lookup's latency is its own, not the disk's.
    assert!(e.latency.p50 < Duration::from_millis(50), "{:?}", e.latency);
    // And the disk got everything too.
    assert_eq!(report.sinks[0].written, N, "{:?}", report.sinks[0]);
    assert!(read > (N as usize) * 100, "{read} bytes read from the pipe");
}

#[test]
fn block_on_a_current_thread_runtime_never_parks_it_for_long() {
    let out = Collected::new();
    let gate = Gate::new();
    let entered = Signal::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .queue_capacity(1)
            .overflow(Overflow::Block)
            // Were a log call to wait this long, the test would not end.
            .block_timeout(Duration::from_secs(3600))
            .sink(StallingSink::new(&out, &gate, &entered)),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let _default = tracing::dispatcher::set_default(&dispatch);
        tracing::info!(seq = 0u64, "x");
        assert!(entered.wait_for(1), "the sink got the first batch");
        // The sink is stuck: the pipeline fills, and every later call would
        // wait for room. On this runtime's thread each waits 2 ms at most.
        for seq in 1..200u64 {
            tracing::info!(seq, "x");
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ticker.abort();
    });
    assert!(
        ticks.load(Ordering::SeqCst) > 0,
        "the runtime's other task ran"
    );
    let dropped = guard.stats().dropped;
    gate.open();
    let report = guard.shutdown_blocking();
    assert!(
        dropped > 0,
        "calls that found no room dropped instead of waiting"
    );
    assert_eq!(report.emitted + report.dropped, 200, "{report:?}");
}

/// Set in the child that runs [`a_full_disk_leaves_only_whole_lines_and_writing_resumes`]
/// inside a mount namespace of its own.
const FULL_DISK_CASE: &str = "FAPILOG_FULL_DISK_CASE";

/// The file's lines, each checked to be a whole JSON record.
fn whole_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends mid-line"
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole record ({e}): {l:?}"))
        })
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    assert!(
        support::wait_until(&mut cond),
        "timed out waiting until {what}"
    );
}

/// On a 64 KiB tmpfs of its own (a mount namespace, so nothing outside
/// sees it; `unshare` maps an unprivileged user to root for it): a disk
/// that is full, then has room, then fills up mid-batch.
#[test]
fn a_full_disk_leaves_only_whole_lines_and_writing_resumes() {
    if std::env::var(FULL_DISK_CASE).is_err() {
        let exe = std::env::current_exe().unwrap();
        let name = "a_full_disk_leaves_only_whole_lines_and_writing_resumes";
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n");
        let run = |propagation: Option<&str>| {
            let mut cmd = std::process::Command::new("unshare");
            if !matches!(root, Ok(true)) {
                cmd.args(["--user", "--map-root-user"]);
            }
            cmd.arg("--mount");
            if let Some(p) = propagation {
                cmd.args(["--propagation", p]);
            }
            cmd.arg("--")
                .arg(&exe)
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(FULL_DISK_CASE, "1")
                .output()
                .expect(
                    "could not run `unshare` (util-linux) to give the test a small disk of its own",
                )
        };
        let mut output = run(None);
        // In a chroot `/` is no mount point, and unshare cannot make it
        // private; the mounts there are private already.
        if String::from_utf8_lossy(&output.stderr)
            .contains("cannot change root filesystem propagation")
        {
            output = run(Some("unchanged"));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("full disk case done"),
            "the full-disk child failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "could not mount a 64 KiB tmpfs in the namespace"
    );

    // Fill the disk completely.
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![b'f'; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(b"f").is_ok() {}
    }
    let path = dir.path().join("app.log");
    let out = Collected::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .file(FileSink::builder(&path))
            .sink(out.sink())
            .sink_retries(1, Duration::from_millis(1), Duration::from_millis(1)),
    );
    let log = |range: std::ops::Range<u64>| {
        tracing::dispatcher::with_default(&dispatch, || {
            for seq in range {
                tracing::info!(seq, "x");
            }
        })
    };

    // Full: nothing gets in, every event is counted, no partial line.
    log(0..50);
    wait_until("the 50 are accounted", || {
        let s = &guard.stats().sinks[0];
        s.written + s.undelivered == 50
    });
    assert_eq!(guard.stats().sinks[0].undelivered, 50);
    assert!(whole_lines(&path).is_empty());

    // Room again: writing resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    log(50..60);
    wait_until("the 10 are written", || {
        guard.stats().sinks[0].written == 10
    });
    let seqs: Vec<u64> = whole_lines(&path)
        .iter()
        .map(|l| l["fields"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (50..60).collect::<Vec<_>>());

    // Far more than fits: the disk fills mid-batch, and still only whole
    // lines are in the file, each counted once.
    log(60..2060);
    let report = guard.shutdown_blocking();
    let file = &report.sinks[0];
    assert_eq!(file.written + file.undelivered, 2060, "{file:?}");
    assert!(file.undelivered > 50, "the disk filled again: {file:?}");
    let lines = whole_lines(&path);
    assert_eq!(
        lines.len() as u64,
        file.written,
        "every written event is one whole line"
    );
    assert_eq!(
        out.app_events().len(),
        2060,
        "the other sink got everything"
    );
    println!("full disk case done");
}

/// Never finishes a write.
struct Hung;

impl Sink for Hung {
    fn name(&self) -> &str {
        "hung"
    }
    async fn write_batch(&mut self, _events: &[Event]) -> Result<(), SinkError> {
        std::future::pending().await
    }
}

#[test]
fn a_hung_sink_does_not_keep_shutdown_from_closing_the_enrichers() {
    let out = Collected::new();
    let lookup = support::async_support::TestLookup::new();
    lookup.set(1i64, "one");
    let (dispatch, guard) = start(
        fapilog::builder()
            .sink(Hung)
            .sink(out.sink())
            .sink_timeout(Duration::from_millis(200))
            .async_enricher(
                LookupEnricher::builder("user", lookup.clone())
                    .key_field("user_id")
                    .build(),
            ),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..10 {
            tracing::info!(user_id = 1, "x");
        }
    });
    let report = guard.shutdown_blocking();
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(
        lookup.lifecycle().shutdowns(),
        1,
        "the enricher was shut down (its pool closed)"
    );
    let hung = &report.sinks[0];
    assert_eq!(hung.written, 0, "{hung:?}");
    assert_eq!(
        hung.undelivered, 10,
        "what the hung sink holds is reported as undelivered: {hung:?}"
    );
    assert_eq!(report.sinks[1].written, 10, "the other sink got everything");
    assert_eq!(out.app_events().len(), 10);
}
