//! The OTLP sink when the collector is not there, goes away, sheds load,
//! rejects part of a request, refuses it for good or stalls — against real
//! OTLP receivers on loopback (see `support/otlp.rs`) that are started late,
//! killed and restarted on the same port. What a user would notice: every
//! record held within the buffer arrives exactly once, what does not fit is
//! counted, `Retry-After`/`RetryInfo` is honoured, the caller never waits
//! for the collector, and shutdown is bounded.

#![cfg(feature = "otlp")]

#[path = "support/otlp.rs"]
mod otlp_support;
mod support;

use std::time::{Duration, Instant};

use fapilog::observe::HealthStatus;
use fapilog::sink::OtlpProtocol;
use fapilog::{Guard, Overflow, SinkStats};
use otlp_support::{Mode, Outcome, Receiver, seq_anomalies, wait_until};
use support::start;

const BOTH: [OtlpProtocol; 2] = [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf];

fn sink_stats(guard: &Guard) -> SinkStats {
    guard.stats().sinks[0].clone()
}

/// Logs events numbered `seq` from `from` to `to` (excluded).
fn log_range(dispatch: &tracing::Dispatch, from: i64, to: i64) {
    tracing::dispatcher::with_default(dispatch, || {
        for seq in from..to {
            tracing::info!(seq, "event {seq}");
        }
    });
}

#[test]
fn a_collector_absent_at_start_gets_everything_once_it_comes_up() {
    for protocol in BOTH {
        let receiver = Receiver::absent(protocol);
        let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
        const N: i64 = 500;
        log_range(&dispatch, 0, N);
        // Tried and failed: held, degraded.
        assert!(wait_until(|| {
            let s = sink_stats(&guard);
            s.failures >= 2 && s.buffered == N as u64
        }));
        let s = sink_stats(&guard);
        assert_eq!(s.status, HealthStatus::Degraded, "{protocol:?}: {s:?}");
        assert_eq!((s.written, s.undelivered), (0, 0), "{s:?}");

        receiver.up();
        assert!(
            wait_until(|| sink_stats(&guard).written == N as u64),
            "{protocol:?}: {:?}",
            sink_stats(&guard)
        );
        let s = sink_stats(&guard);
        assert_eq!((s.undelivered, s.buffered), (0, 0), "{s:?}");
        assert_eq!(s.status, HealthStatus::Up, "{s:?}");
        let report = guard.shutdown_blocking();
        assert_eq!(
            (report.sinks[0].written, report.sinks[0].undelivered),
            (N as u64, 0),
            "{report:?}"
        );
        let anomalies = seq_anomalies(&receiver.accepted_app(), N);
        assert!(
            anomalies.is_empty(),
            "{protocol:?}: (seq, times) {anomalies:?}"
        );
    }
}

#[test]
fn a_collector_killed_mid_run_and_restarted_loses_nothing_within_the_buffer() {
    for protocol in BOTH {
        let receiver = Receiver::start(protocol);
        let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
        log_range(&dispatch, 0, 200);
        assert!(wait_until(|| sink_stats(&guard).written == 200));
        assert_eq!(receiver.accepted_app().len(), 200);

        receiver.kill();
        log_range(&dispatch, 200, 400);
        // The sink notices: failures, degraded, the records held.
        let failures = sink_stats(&guard).failures;
        assert!(wait_until(|| {
            let s = sink_stats(&guard);
            s.failures >= failures + 2 && s.buffered == 200
        }));
        assert_eq!(sink_stats(&guard).status, HealthStatus::Degraded);
        log_range(&dispatch, 400, 500);

        receiver.up();
        assert!(
            wait_until(|| sink_stats(&guard).written == 500),
            "{protocol:?}: {:?}",
            sink_stats(&guard)
        );
        let s = sink_stats(&guard);
        assert_eq!((s.undelivered, s.buffered), (0, 0), "{s:?}");
        assert_eq!(s.status, HealthStatus::Up);
        guard.shutdown_blocking();
        // Each record exactly once: none lost, none duplicated.
        let anomalies = seq_anomalies(&receiver.accepted_app(), 500);
        assert!(
            anomalies.is_empty(),
            "{protocol:?}: (seq, times) {anomalies:?}"
        );
    }
}

#[test]
fn past_the_buffer_records_are_counted_undelivered_and_the_rest_arrive() {
    for protocol in BOTH {
        let receiver = Receiver::absent(protocol);
        let (dispatch, guard) =
            start(fapilog::builder().otlp(receiver.sink().buffer(100, 64 << 20)));
        log_range(&dispatch, 0, 250);
        assert!(
            wait_until(|| {
                let stats = guard.stats();
                let s = &stats.sinks[0];
                stats.emitted == 250 && s.undelivered + s.buffered == 250
            }),
            "{:?}",
            guard.stats()
        );
        let s = sink_stats(&guard);
        assert_eq!(
            (s.undelivered, s.buffered, s.written),
            (150, 100, 0),
            "{protocol:?}: {s:?}"
        );
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("buffer full")),
            "{s:?}"
        );

        receiver.up();
        assert!(
            wait_until(|| sink_stats(&guard).written == 100),
            "{:?}",
            sink_stats(&guard)
        );
        let report = guard.shutdown_blocking();
        assert_eq!(
            (report.sinks[0].written, report.sinks[0].undelivered),
            (100, 150),
            "{report:?}"
        );
        // The oldest 100 were kept, each once.
        let anomalies = seq_anomalies(&receiver.accepted_app(), 100);
        assert!(
            anomalies.is_empty(),
            "{protocol:?}: (seq, times) {anomalies:?}"
        );
    }
}

/// The first request is answered "unavailable, retry in 1 s": the retry
/// waits for it, although the backoff alone would retry after 20 ms.
#[test]
fn a_collectors_retry_delay_is_honoured() {
    for protocol in BOTH {
        let receiver = Receiver::start(protocol);
        receiver.script([Mode::Unavailable {
            retry_after: Some(Duration::from_secs(1)),
        }]);
        let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
        log_range(&dispatch, 0, 10);
        assert!(
            wait_until(|| sink_stats(&guard).written == 10),
            "{:?}",
            sink_stats(&guard)
        );
        // Up to two requests are in flight at once: find the retry by its
        // records, not by its place.
        let requests = receiver.requests();
        assert_eq!(requests[0].outcome, Outcome::Unavailable);
        let seqs = |r: &otlp_support::Received| -> Vec<i64> {
            let mut s: Vec<i64> = r.records().iter().filter_map(|x| x.seq()).collect();
            s.sort_unstable();
            s
        };
        let first = seqs(&requests[0]);
        assert!(!first.is_empty());
        let retry = requests[1..]
            .iter()
            .find(|r| seqs(r) == first)
            .unwrap_or_else(|| panic!("no retry of {first:?} in {requests:?}"));
        assert!(
            matches!(retry.outcome, Outcome::Accepted { rejected: 0 }),
            "{retry:?}"
        );
        let gap = retry.at - requests[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "{protocol:?}: retried after {gap:?}, not the 1 s the collector asked for"
        );
        assert!(gap < Duration::from_secs(5), "{protocol:?}: {gap:?}");
        let report = guard.shutdown_blocking();
        assert_eq!(report.sinks[0].undelivered, 0, "{report:?}");
        let anomalies = seq_anomalies(&receiver.accepted_app(), 10);
        assert!(
            anomalies.is_empty(),
            "{protocol:?}: (seq, times) {anomalies:?}"
        );
    }
}

/// A collector that takes 10 s per request holds up neither the log calls
/// nor the pipeline: 10 000 events under `Overflow::Block` are logged long
/// before the first answer, and arrive once the collector answers again.
#[test]
fn a_stalled_collector_does_not_hold_the_caller() {
    let receiver = Receiver::start(OtlpProtocol::Grpc);
    receiver.set_mode(Mode::Stall(Duration::from_secs(10)));
    let (dispatch, guard) = start(
        fapilog::builder()
            .overflow(Overflow::Block)
            .otlp(receiver.sink()),
    );
    const N: i64 = 10_000;
    let started = Instant::now();
    log_range(&dispatch, 0, N);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "logging took {took:?}");
    assert!(receiver.wait_for_requests(1));
    assert_eq!(receiver.accepted_count(), 0, "still stalled");
    let stats = guard.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");

    receiver.set_mode(Mode::Accept);
    assert!(
        wait_until(|| sink_stats(&guard).written == N as u64),
        "{:?}",
        sink_stats(&guard)
    );
    let report = guard.shutdown_blocking();
    assert_eq!(
        (report.dropped, report.sinks[0].undelivered),
        (0, 0),
        "{report:?}"
    );
    let anomalies = seq_anomalies(&receiver.accepted_app(), N);
    assert!(anomalies.is_empty(), "(seq, times) {anomalies:?}");
}

#[test]
fn a_partial_success_counts_the_rejected_records_undelivered() {
    const MESSAGE: &str = "attribute value too long";
    for protocol in BOTH {
        let receiver = Receiver::start(protocol);
        receiver.set_mode(Mode::Reject {
            rejected: 3,
            message: MESSAGE.to_owned(),
        });
        let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
        const N: u64 = 50;
        // In a few bursts, for a few requests.
        for burst in 0..5 {
            log_range(&dispatch, burst * 10, burst * 10 + 10);
            let n = (burst as u64 + 1) * 10;
            assert!(wait_until(|| {
                let s = sink_stats(&guard);
                s.written + s.undelivered == n
            }));
        }
        let requests = receiver.requests();
        let rejected: u64 = requests
            .iter()
            .map(|r| match r.outcome {
                Outcome::Accepted { rejected } => rejected as u64,
                other => panic!("{other:?}"),
            })
            .sum();
        assert!(rejected >= 3, "{requests:?}");
        let s = sink_stats(&guard);
        assert_eq!(
            (s.undelivered, s.written),
            (rejected, N - rejected),
            "{protocol:?}: {s:?}"
        );
        let last = s.last_error.clone().unwrap_or_default();
        assert!(
            last.contains("rejected") && last.contains(MESSAGE),
            "{last}"
        );
        assert_eq!(
            receiver.requests().len(),
            requests.len(),
            "a partial success is not retried"
        );
        let report = guard.shutdown_blocking();
        assert_eq!(
            (report.sinks[0].written, report.sinks[0].undelivered),
            (N - rejected, rejected),
            "{report:?}"
        );
    }
}

#[test]
fn a_refusal_for_good_is_counted_and_not_retried() {
    for protocol in BOTH {
        let receiver = Receiver::start(protocol);
        receiver.set_mode(Mode::Refuse);
        let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
        log_range(&dispatch, 0, 20);
        assert!(
            wait_until(|| sink_stats(&guard).undelivered == 20),
            "{:?}",
            sink_stats(&guard)
        );
        let s = sink_stats(&guard);
        assert_eq!(s.status, HealthStatus::Down, "{protocol:?}: {s:?}");
        assert_eq!((s.written, s.buffered), (0, 0), "{s:?}");
        assert!(s.last_error.is_some(), "{s:?}");
        // Several backoff periods later, nothing was sent again.
        let sent = receiver.requests().len();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(receiver.requests().len(), sent, "retried a refused request");
        let anomalies = seq_anomalies(&receiver.all_records(), 20);
        assert!(
            anomalies.is_empty(),
            "each record sent once: (seq, times) {anomalies:?}"
        );

        // Accepted again: up again.
        receiver.set_mode(Mode::Accept);
        log_range(&dispatch, 20, 21);
        assert!(wait_until(|| sink_stats(&guard).written == 1));
        assert_eq!(sink_stats(&guard).status, HealthStatus::Up);
        guard.shutdown_blocking();
    }
}

/// With the collector away, shutdown waits for it no longer than its
/// timeout and reports what the sink still held as undelivered.
#[test]
fn shutdown_with_the_collector_down_is_bounded() {
    for protocol in BOTH {
        let receiver = Receiver::absent(protocol);
        let (dispatch, guard) = start(
            fapilog::builder()
                .shutdown_timeout(Duration::from_secs(1))
                .otlp(receiver.sink()),
        );
        log_range(&dispatch, 0, 30);
        assert!(wait_until(|| {
            let s = sink_stats(&guard);
            s.buffered == 30 && s.failures >= 1
        }));
        let started = Instant::now();
        let report = guard.shutdown_blocking();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{protocol:?}: shutdown took {took:?}"
        );
        assert_eq!(report.emitted, 30, "{report:?}");
        assert_eq!(report.sinks[0].written, 0, "{report:?}");
        assert_eq!(report.sinks[0].undelivered, 30, "{protocol:?}: {report:?}");
        assert_eq!(report.undelivered, 30, "{report:?}");
    }
}

/// The same through `shutdown().await` on an application runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_shutdown_with_the_collector_down_is_bounded() {
    let receiver = Receiver::absent(OtlpProtocol::Grpc);
    let (dispatch, guard) = start(
        fapilog::builder()
            .shutdown_timeout(Duration::from_secs(1))
            .otlp(receiver.sink()),
    );
    log_range(&dispatch, 0, 30);
    let deadline = Instant::now() + otlp_support::PATIENCE;
    while sink_stats(&guard).buffered != 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let report = guard.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    assert_eq!(report.sinks[0].undelivered, 30, "{report:?}");
}

#[test]
fn records_are_given_up_on_after_give_up_after() {
    let receiver = Receiver::absent(OtlpProtocol::Grpc);
    let (dispatch, guard) =
        start(fapilog::builder().otlp(receiver.sink().give_up_after(Duration::from_millis(300))));
    log_range(&dispatch, 0, 20);
    assert!(
        wait_until(|| sink_stats(&guard).undelivered == 20),
        "{:?}",
        sink_stats(&guard)
    );
    let s = sink_stats(&guard);
    assert_eq!((s.written, s.buffered), (0, 0), "{s:?}");
    assert_eq!(s.status, HealthStatus::Down, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("gave up")),
        "{s:?}"
    );
    // The collector back: later records go through, the given-up ones not.
    receiver.up();
    log_range(&dispatch, 20, 21);
    assert!(wait_until(|| sink_stats(&guard).written == 1));
    assert_eq!(sink_stats(&guard).status, HealthStatus::Up);
    let report = guard.shutdown_blocking();
    assert_eq!(
        (report.sinks[0].written, report.sinks[0].undelivered),
        (1, 20),
        "{report:?}"
    );
    let seqs: Vec<i64> = receiver
        .accepted_app()
        .iter()
        .filter_map(|r| r.seq())
        .collect();
    assert_eq!(seqs, [20]);
}

#[test]
fn requests_are_split_at_max_request_and_oversized_records_are_undelivered() {
    let receiver = Receiver::start(OtlpProtocol::HttpProtobuf);
    let (dispatch, guard) =
        start(fapilog::builder().otlp(receiver.sink().max_request(7, 64 * 1024)));
    log_range(&dispatch, 0, 50);
    let huge = "x".repeat(100 * 1024);
    tracing::dispatcher::with_default(&dispatch, || tracing::info!(seq = 50, "{huge}"));
    assert!(
        wait_until(|| {
            let s = sink_stats(&guard);
            s.written == 50 && s.undelivered == 1
        }),
        "{:?}",
        sink_stats(&guard)
    );
    let s = sink_stats(&guard);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("larger than the request limit")),
        "{s:?}"
    );
    let report = guard.shutdown_blocking();
    assert_eq!(
        (report.sinks[0].written, report.sinks[0].undelivered),
        (50, 1),
        "{report:?}"
    );
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r.len() <= 7),
        "{:?}",
        requests.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert!(requests.len() >= 8, "50 records, at most 7 a request");
    let anomalies = seq_anomalies(&receiver.accepted_app(), 50);
    assert!(anomalies.is_empty(), "(seq, times) {anomalies:?}");
}

/// The collector crashes while a request waits for its answer, and is back
/// 100 ms later: the request is sent again and its records arrive.
fn a_request_cut_short_by_a_crash_is_sent_again(protocol: OtlpProtocol) {
    let receiver = Receiver::start(protocol);
    receiver.set_mode(Mode::Stall(Duration::from_secs(30)));
    let (dispatch, guard) = start(fapilog::builder().otlp(receiver.sink()));
    log_range(&dispatch, 0, 10);
    assert!(receiver.wait_for_requests(1));
    receiver.kill();
    receiver.set_mode(Mode::Accept);
    std::thread::sleep(Duration::from_millis(100));
    receiver.up();
    assert!(wait_until(|| {
        let s = sink_stats(&guard);
        s.written + s.undelivered == 10
    }));
    let s = sink_stats(&guard);
    assert_eq!(
        (s.written, s.undelivered),
        (10, 0),
        "{protocol:?}: the collector was back 100 ms after the crash: {s:?}"
    );
    assert_eq!(s.status, HealthStatus::Up, "{s:?}");
    guard.shutdown_blocking();
    let anomalies = seq_anomalies(&receiver.accepted_app(), 10);
    assert!(anomalies.is_empty(), "(seq, times) {anomalies:?}");
}

#[test]
fn http_a_request_cut_short_by_a_collector_crash_is_sent_again() {
    a_request_cut_short_by_a_crash_is_sent_again(OtlpProtocol::HttpProtobuf);
}

// ---------------------------------------------------------------------------
// Regressions

/// A connection broken while a request waits for its answer (the collector
/// crashes or restarts) is reported by tonic as `Code::Unknown` ("transport
/// error"), a status no collector sent: the request is retried like
/// `UNAVAILABLE`, not given up as refused.
#[test]
fn grpc_a_request_cut_short_by_a_collector_crash_is_sent_again() {
    a_request_cut_short_by_a_crash_is_sent_again(OtlpProtocol::Grpc);
}

/// A flush asked for while a sink's channel is full is not lost: the OTLP
/// sink sends a partial request on a flush, so after a burst an idle
/// pipeline still delivers everything within moments (small batches, so
/// that four are often queued at once).
#[test]
fn an_idle_pipeline_sends_what_a_burst_left_in_the_otlp_buffer() {
    let receiver = Receiver::start(OtlpProtocol::HttpProtobuf);
    let (dispatch, guard) = start(fapilog::builder().batch_size(16).otlp(receiver.sink()));
    let mut total = 0i64;
    for round in 0..150i64 {
        // Bursts of one to nine batches and a bit.
        let burst = 16 * (1 + round % 9) + round % 3;
        log_range(&dispatch, total, total + burst);
        total += burst;
        let deadline = Instant::now() + Duration::from_secs(3);
        while sink_stats(&guard).written != total as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let s = sink_stats(&guard);
        assert_eq!(
            s.written, total as u64,
            "round {round}: idle for 3 s after a burst of {burst}, yet {} records still sit in the OTLP buffer, unsent: {s:?}",
            s.buffered
        );
    }
    guard.shutdown_blocking();
    let anomalies = seq_anomalies(&receiver.accepted_app(), total);
    assert!(anomalies.is_empty(), "(seq, times) {anomalies:?}");
}

/// A sink with a retry buffer of its own is waited for until the shutdown
/// deadline (less the enrichers' share), not only the sink timeout: a
/// collector back within the shutdown timeout gets the records.
#[test]
fn shutdown_waits_for_the_collector_until_the_shutdown_timeout() {
    let receiver = Receiver::absent(OtlpProtocol::HttpProtobuf);
    let (dispatch, guard) = start(
        fapilog::builder()
            .shutdown_timeout(Duration::from_secs(10))
            .sink_timeout(Duration::from_secs(1))
            .otlp(receiver.sink()),
    );
    log_range(&dispatch, 0, 30);
    assert!(wait_until(|| sink_stats(&guard).buffered == 30));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            receiver.up();
        });
        let report = guard.shutdown_blocking();
        assert_eq!(
            (report.sinks[0].written, report.sinks[0].undelivered),
            (30, 0),
            "the collector came back 2 s into a 10 s shutdown: {report:?}"
        );
    });
}
