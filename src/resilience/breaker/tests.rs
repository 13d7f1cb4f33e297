use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn breaker(config: BreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new(config).expect("valid config")
}

fn consecutive(n: u32) -> BreakerConfig {
    BreakerConfig::default()
        .policy(FailurePolicy::Consecutive(n))
        .recovery_timeout(10 * SEC)
}

fn rate(threshold: f64, min_calls: u32, window: Duration) -> BreakerConfig {
    BreakerConfig::default()
        .policy(FailurePolicy::Rate {
            threshold,
            min_calls,
            window,
        })
        .recovery_timeout(10 * SEC)
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().expect("admitted").failure();
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire().expect("admitted").success();
}

fn refused(b: &CircuitBreaker) -> ShortCircuited {
    b.try_acquire().expect_err("short-circuited")
}

#[test]
fn default_config() {
    let c = BreakerConfig::default();
    assert_eq!(c.policy, FailurePolicy::Consecutive(5));
    assert_eq!(c.recovery_timeout, 30 * SEC);
    assert_eq!(c.half_open_max_calls, 1);
    assert_eq!(c.half_open_successes, 1);
    assert!(c.validate().is_ok());
}

#[test]
fn out_of_range_settings_are_rejected() {
    let bad = [
        consecutive(0),
        rate(0.0, 1, SEC),
        rate(1.5, 1, SEC),
        rate(f64::NAN, 1, SEC),
        rate(0.5, 0, SEC),
        rate(0.5, 1, Duration::ZERO),
        consecutive(1).half_open_max_calls(0),
        consecutive(1).half_open_successes(0),
    ];
    for config in bad {
        let err = CircuitBreaker::new(config.clone()).expect_err("rejected");
        let message = err.to_string();
        assert!(
            message.starts_with("invalid circuit breaker config: "),
            "{message}"
        );
        assert_eq!(message, message.to_lowercase(), "{config:?}");
    }
    assert!(CircuitBreaker::new(rate(1.0, 1, MS)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_at_exactly_the_threshold() {
    let b = breaker(consecutive(3));
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);

    let s = b.snapshot();
    assert_eq!((s.calls, s.failures, s.successes), (3, 3, 0));
    assert_eq!(s.times_opened, 1);
    assert_eq!(s.short_circuited, 0);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let b = breaker(consecutive(3));
    fail(&b);
    fail(&b);
    succeed(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_refuses_without_calling() {
    let b = breaker(consecutive(1));
    fail(&b);

    let made = AtomicUsize::new(0);
    for _ in 0..7 {
        let result = b
            .call(|| async {
                made.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            })
            .await;
        match result {
            Err(BreakerError::ShortCircuited(e)) => assert_eq!(e.state(), BreakerState::Open),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(made.load(Ordering::SeqCst), 0);
    let s = b.snapshot();
    assert_eq!(s.short_circuited, 7);
    assert_eq!(s.calls, 1);
}

#[tokio::test(start_paused = true)]
async fn half_open_after_recovery_timeout_admits_exactly_max_calls() {
    let b = breaker(consecutive(1).half_open_max_calls(2));
    fail(&b);

    advance(10 * SEC - MS).await;
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(refused(&b).state(), BreakerState::Open);

    advance(MS).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let p1 = b.try_acquire().expect("first probe");
    let p2 = b.try_acquire().expect("second probe");
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(refused(&b).state(), BreakerState::HalfOpen);
    assert_eq!(refused(&b).state(), BreakerState::HalfOpen);

    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::HalfOpen);
    assert_eq!(s.short_circuited, 3);
    assert_eq!(s.in_flight, 2);
    p1.success();
    assert_eq!(b.state(), BreakerState::Closed);
    p2.success();
}

#[tokio::test(start_paused = true)]
async fn a_probe_success_closes_with_history_cleared() {
    let b = breaker(consecutive(2));
    fail(&b);
    fail(&b);
    advance(10 * SEC).await;

    let probe = b.try_acquire().expect("probe");
    advance(SEC).await;
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().last_state_change, Instant::now());
    let permit = b.try_acquire().expect("closed");
    assert!(!permit.is_probe());
    permit.success();

    // The failures before opening no longer count.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_successes_are_all_required() {
    let b = breaker(consecutive(1).half_open_successes(3));
    fail(&b);
    advance(10 * SEC).await;

    for _ in 0..2 {
        let probe = b.try_acquire().expect("probe");
        assert_eq!(refused(&b).state(), BreakerState::HalfOpen);
        probe.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_failure_reopens_and_restarts_the_timer() {
    let b = breaker(consecutive(1).half_open_successes(2));
    fail(&b);
    advance(10 * SEC).await;
    succeed(&b); // one probe success of two
    advance(3 * SEC).await;

    let reopened_at = Instant::now();
    fail(&b);
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.times_opened, 2);
    assert_eq!(s.last_state_change, reopened_at);
    assert_eq!(s.open_until, Some(reopened_at + 10 * SEC));

    advance(10 * SEC - MS).await;
    refused(&b);
    advance(MS).await;
    // The earlier probe success does not carry over.
    succeed(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn rate_waits_for_min_calls() {
    let b = breaker(rate(0.5, 4, 10 * SEC));
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn rate_opens_when_the_share_reaches_the_threshold() {
    let b = breaker(rate(0.5, 4, 10 * SEC));
    for _ in 0..3 {
        succeed(&b);
    }
    fail(&b); // 1 of 4
    fail(&b); // 2 of 5
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b); // 3 of 6
    assert_eq!(b.state(), BreakerState::Open);

    // Decimal thresholds compare exactly: 3 of 10 is 0.3.
    let b = breaker(rate(0.3, 10, 10 * SEC));
    for _ in 0..7 {
        succeed(&b);
    }
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn rate_forgets_calls_older_than_the_window() {
    // Still within the window: the four failures open it.
    let b = breaker(rate(0.5, 4, 10 * SEC));
    for _ in 0..3 {
        fail(&b);
    }
    advance(9 * SEC).await;
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);

    // A full window later the first three no longer count.
    let b = breaker(rate(0.5, 4, 10 * SEC));
    for _ in 0..3 {
        fail(&b);
    }
    advance(10 * SEC).await;
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);

    // Aged-out successes no longer dilute the rate either.
    let b = breaker(rate(0.5, 4, 10 * SEC));
    for _ in 0..10 {
        succeed(&b);
    }
    advance(11 * SEC).await;
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn rate_history_is_cleared_when_the_breaker_closes() {
    let b = breaker(rate(0.5, 4, 60 * SEC));
    for _ in 0..4 {
        fail(&b);
    }
    advance(10 * SEC).await;
    succeed(&b); // probe
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_counts_as_a_cancelled_failure() {
    let b = breaker(consecutive(2));
    drop(b.try_acquire().expect("admitted"));
    let s = b.snapshot();
    assert_eq!((s.failures, s.cancelled, s.in_flight), (1, 1, 0));
    assert_eq!(s.last_failure, Some(Instant::now()));

    drop(b.try_acquire().expect("admitted"));
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_cut_off_by_a_timeout_counts_as_a_failure() {
    let b = breaker(consecutive(1));
    let slow = b.call(|| async {
        tokio::time::sleep(5 * SEC).await;
        Ok::<_, std::io::Error>(())
    });
    assert!(tokio::time::timeout(SEC, slow).await.is_err());

    let s = b.snapshot();
    assert_eq!(
        (s.calls, s.failures, s.cancelled, s.in_flight),
        (1, 1, 1, 0)
    );
    assert_eq!(s.state, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_reopens() {
    let b = breaker(consecutive(1));
    fail(&b);
    advance(10 * SEC).await;
    drop(b.try_acquire().expect("probe"));
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_counts_as_a_failure() {
    let b = Arc::new(breaker(consecutive(1)));
    let task: tokio::task::JoinHandle<Result<(), String>> = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            b.call(|| async { panic!("boom") })
                .await
                .map_err(|e: BreakerError<std::io::Error>| e.to_string())
        })
    };
    assert!(task.await.is_err());
    let s = b.snapshot();
    assert_eq!((s.failures, s.cancelled, s.in_flight), (1, 1, 0));
    assert_eq!(s.state, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn verdicts_from_an_earlier_state_only_update_counters() {
    let b = breaker(consecutive(1));
    let late_failure = b.try_acquire().expect("closed");
    let late_success = b.try_acquire().expect("closed");
    fail(&b);
    let opened = b.snapshot();

    // A failure admitted while closed does not restart the timer...
    advance(5 * SEC).await;
    late_failure.failure();
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.times_opened, 1);
    assert_eq!(s.open_until, opened.open_until);
    assert_eq!(s.failures, 2);

    // ...and a success admitted while closed is not a probe.
    advance(5 * SEC).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    late_success.success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("the probe slot is still free");
    assert!(probe.is_probe());
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);

    let s = b.snapshot();
    assert_eq!(
        (s.calls, s.successes, s.failures, s.in_flight),
        (4, 2, 2, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn state_turns_half_open_without_a_call() {
    let b = breaker(consecutive(1));
    let start = Instant::now();
    assert_eq!(b.snapshot().last_state_change, start);
    fail(&b);
    assert_eq!(b.snapshot().open_until, Some(start + 10 * SEC));

    advance(25 * SEC).await;
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::HalfOpen);
    // Dated to when the timeout ran out, not to when it was noticed.
    assert_eq!(s.last_state_change, start + 10 * SEC);
    assert_eq!(s.open_until, None);
    assert_eq!(s.last_failure, Some(start));
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_transition() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let b = {
        let seen = Arc::clone(&seen);
        breaker(consecutive(1)).on_transition(move |t| seen.lock().unwrap().push(*t))
    };
    let start = Instant::now();
    fail(&b);
    advance(10 * SEC).await;
    fail(&b);
    advance(10 * SEC).await;
    succeed(&b);

    use BreakerState::*;
    let seen: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|t| (t.from, t.to, t.at - start))
        .collect();
    assert_eq!(
        seen,
        [
            (Closed, Open, Duration::ZERO),
            (Open, HalfOpen, 10 * SEC),
            (HalfOpen, Open, 10 * SEC),
            (Open, HalfOpen, 20 * SEC),
            (HalfOpen, Closed, 20 * SEC),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_is_ignored() {
    let b = breaker(consecutive(1)).on_transition(|_| panic!("observer"));
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    advance(10 * SEC).await;
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn call_reports_the_outcome() {
    let b = breaker(consecutive(5));
    assert_eq!(b.call(|| async { Ok::<_, String>(7) }).await.unwrap(), 7);
    let err = b
        .call(|| async { Err::<(), _>("down".to_owned()) })
        .await
        .unwrap_err();
    assert!(!err.is_short_circuited());
    assert_eq!(err.into_inner().as_deref(), Some("down"));
    let s = b.snapshot();
    assert_eq!(
        (s.calls, s.successes, s.failures, s.cancelled),
        (2, 1, 1, 0)
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        ShortCircuited::new(BreakerState::Open).to_string(),
        "circuit breaker is open"
    );
    assert_eq!(
        ShortCircuited::new(BreakerState::HalfOpen).to_string(),
        "circuit breaker is half-open and probing"
    );
    let inner: BreakerError<std::io::Error> =
        BreakerError::Inner(std::io::Error::other("connection refused"));
    assert_eq!(inner.to_string(), "connection refused");
    let refused: BreakerError<std::io::Error> = ShortCircuited::new(BreakerState::Open).into();
    assert!(refused.is_short_circuited());
    assert_eq!(refused.to_string(), "circuit breaker is open");
    assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<CircuitBreaker>();
    send_sync::<Permit<'static>>();
    send_sync::<BreakerSnapshot>();
    send_sync::<ShortCircuited>();
    send_sync::<BreakerError<std::io::Error>>();
    send_sync::<InvalidConfig>();

    let b = breaker(BreakerConfig::default());
    send(&b.call(|| async { Ok::<_, std::io::Error>(()) }));
}

fn assert_consistent(s: &BreakerSnapshot) {
    assert_eq!(s.calls, s.successes + s.failures + s.in_flight, "{s:?}");
    assert!(s.cancelled <= s.failures, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_consistent_across_threads() {
    const TASKS: u64 = 16;
    const ATTEMPTS: u64 = 500;
    let b = Arc::new(breaker(
        BreakerConfig::default()
            .policy(FailurePolicy::Consecutive(3))
            // Reopens at once, so the breaker keeps changing state under load.
            .recovery_timeout(Duration::ZERO)
            .half_open_max_calls(2),
    ));

    let workers: Vec<_> = (0..TASKS)
        .map(|task| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for i in 0..ATTEMPTS {
                    let Ok(permit) = b.try_acquire() else {
                        continue;
                    };
                    tokio::task::yield_now().await;
                    match (task + i) % 4 {
                        0 | 1 => permit.failure(),
                        2 => drop(permit),
                        _ => permit.success(),
                    }
                }
            })
        })
        .collect();
    let monitor = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            for _ in 0..200 {
                assert_consistent(&b.snapshot());
                tokio::task::yield_now().await;
            }
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    monitor.await.unwrap();

    let s = b.snapshot();
    assert_consistent(&s);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.calls + s.short_circuited, TASKS * ATTEMPTS);
    assert!(s.times_opened > 0);
}

#[tokio::test(start_paused = true)]
async fn many_tasks_on_the_paused_clock_keep_counters_consistent() {
    let b = Arc::new(breaker(
        BreakerConfig::default()
            .policy(FailurePolicy::Rate {
                threshold: 0.5,
                min_calls: 10,
                window: 5 * SEC,
            })
            .recovery_timeout(2 * SEC)
            .half_open_max_calls(3),
    ));
    let attempts = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..100u64)
        .map(|task| {
            let b = Arc::clone(&b);
            let attempts = Arc::clone(&attempts);
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() - start < 12 * SEC {
                    i += 1;
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let result = b
                        .call(|| async move {
                            tokio::time::sleep(Duration::from_millis((task * 7 + i * 13) % 400))
                                .await;
                            // Down for three seconds, flaky otherwise.
                            let down = (2 * SEC..5 * SEC).contains(&(Instant::now() - start));
                            if down || (task + i).is_multiple_of(5) {
                                Err(())
                            } else {
                                Ok(())
                            }
                        })
                        .await;
                    assert_consistent(&b.snapshot());
                    if result.is_err() {
                        tokio::time::sleep(100 * MS).await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    let s = b.snapshot();
    assert_consistent(&s);
    assert_eq!(s.in_flight, 0);
    assert_eq!(
        s.calls + s.short_circuited,
        attempts.load(Ordering::SeqCst) as u64
    );
    assert!(s.times_opened > 0 && s.short_circuited > 0, "{s:?}");
    assert_eq!(
        s.state,
        BreakerState::Closed,
        "recovered once the outage ended"
    );
}

#[tokio::test(start_paused = true)]
async fn abandoned_calls_are_counted_apart_from_verdicts() {
    let b = breaker(consecutive(3));
    succeed(&b);
    fail(&b);
    b.try_acquire().unwrap().abandon();
    let _held = b.try_acquire().unwrap();
    let s = b.snapshot();
    assert_eq!(
        (s.calls, s.successes, s.failures, s.abandoned, s.in_flight),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(
        s.calls,
        s.successes + s.failures + s.abandoned + s.in_flight
    );
}
