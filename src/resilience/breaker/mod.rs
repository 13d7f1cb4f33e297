//! A circuit breaker for enrichers that call other systems (databases,
//! HTTP APIs, Redis).
//!
//! # Why
//!
//! Enrichers run on the pipeline's worker. When the system an enricher
//! calls is down, every event waits out the enricher's per-call timeout
//! before it is written, the queue fills, and events are dropped. A breaker
//! that has seen the dependency fail refuses further calls at once, so
//! events go out un-enriched (with the refusal in `enrichment_errors`)
//! instead of late or not at all, and the struggling dependency gets room
//! to recover.
//!
//! Two [`FailurePolicy`]s decide when to open, because outages come in two
//! shapes. A dependency that is down fails every call:
//! [`Consecutive`](FailurePolicy::Consecutive) failures catch that quickly
//! and need no tuning. A degraded one (an overloaded database, one bad node
//! behind a load balancer) fails, say, every other call: a single success
//! resets a consecutive count, so it never opens, yet half the events still
//! wait out a timeout. [`Rate`](FailurePolicy::Rate) catches that. Its
//! window is measured in time, not in calls, because enricher traffic
//! follows log volume: at night a window of the last 100 calls may reach
//! back hours, and `min_calls` keeps a quiet period's one failure out of
//! one call from opening the breaker.
//!
//! The `recloser` crate was considered and not used: it keeps its state
//! private (no state accessor or counters for health and metrics), reads
//! `std::time::Instant` so tokio's paused test clock cannot drive it, and
//! lets every caller through while half-open.
//!
//! # States
//!
//! * **Closed**: calls go through; each outcome feeds the policy. When the
//!   policy trips, the breaker opens.
//! * **Open**: calls are refused without being made (counted as
//!   `short_circuited`) until `recovery_timeout` has passed.
//! * **Half-open**: up to `half_open_max_calls` probe calls may be in
//!   flight at once; the rest are refused. After `half_open_successes`
//!   probe successes it closes, with the policy's history cleared. A single
//!   probe failure opens it again, with the recovery timeout started anew.
//!
//! The open → half-open change is made by the first [`try_acquire`],
//! [`call`] or [`state`](CircuitBreaker::state) after the timeout; it is
//! dated to when the timeout ran out.
//!
//! # Verdicts
//!
//! [`try_acquire`] hands out a [`Permit`]; the caller reports
//! [`success`](Permit::success) or [`failure`](Permit::failure). A permit
//! dropped without a verdict counts as a **failure** (and as `cancelled`):
//! that is what happens when an outer timeout drops the call's future, and
//! a dependency that does not answer in time is failing as far as the
//! pipeline is concerned. A panic in the call counts the same way.
//!
//! Only permits handed out in the current state affect the state. A call
//! admitted while closed that finishes after the breaker opened is counted
//! in the snapshot but neither restarts the recovery timer nor counts as a
//! probe.
//!
//! # Cost
//!
//! One `std::sync::Mutex`, locked briefly (never across an `.await`, never
//! while user code runs) once to admit a call and once for its verdict.
//! Share the breaker with an `Arc`; it is `Send + Sync`.
//!
//! [`try_acquire`]: CircuitBreaker::try_acquire
//! [`call`]: CircuitBreaker::call

// The pipeline uses admission, verdicts and state; the observer, `call`
// and snapshots are the breaker's own API, kept whole and exercised by its
// unit tests.
#![cfg_attr(not(test), allow(dead_code))]

mod config;
mod error;
mod state;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

pub use config::{BreakerConfig, FailurePolicy};
pub(crate) use error::{BreakerError, InvalidConfig, ShortCircuited};
pub use state::BreakerState;
pub(crate) use state::{BreakerSnapshot, Transition};

use window::Window;

type Observer = Box<dyn Fn(&Transition) + Send + Sync>;

/// A circuit breaker; see the [module docs](self) for how it behaves.
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    observer: Option<Observer>,
}

impl CircuitBreaker {
    /// A closed breaker, or an error if a setting is out of range (see
    /// [`BreakerConfig::validate`]).
    pub(crate) fn new(config: BreakerConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let now = Instant::now();
        let window = match config.policy {
            FailurePolicy::Rate { window, .. } => Some(Window::new(window, now)),
            FailurePolicy::Consecutive(_) => None,
        };
        Ok(CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                changed_at: now,
                consecutive_failures: 0,
                window,
                counters: Counters::default(),
                last_failure: None,
            }),
            observer: None,
        })
    }

    /// Calls `observer` on every change of state. It runs after the
    /// breaker's lock is released, so it may call back into the breaker;
    /// when changes race, it may see them out of order (each carries its
    /// time). A panic in it is caught and ignored.
    pub(crate) fn on_transition<F>(mut self, observer: F) -> Self
    where
        F: Fn(&Transition) + Send + Sync + 'static,
    {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Admits a call, or refuses it at once. Report the call's outcome
    /// through the [`Permit`]; dropping it unreported counts as a failure.
    pub(crate) fn try_acquire(&self) -> Result<Permit<'_>, ShortCircuited> {
        let (result, transition) = {
            let mut inner = self.lock();
            let transition = inner.refresh(&self.config);
            let result = match &mut inner.state {
                State::Closed => Ok(()),
                State::Open { .. } => Err(ShortCircuited::new(BreakerState::Open)),
                State::HalfOpen { in_flight, .. } => {
                    if *in_flight < self.config.half_open_max_calls {
                        *in_flight += 1;
                        Ok(())
                    } else {
                        Err(ShortCircuited::new(BreakerState::HalfOpen))
                    }
                }
            };
            let result = match result {
                Ok(()) => {
                    inner.counters.calls += 1;
                    inner.counters.in_flight += 1;
                    Ok(Permit {
                        breaker: self,
                        generation: inner.generation,
                        probe: matches!(inner.state, State::HalfOpen { .. }),
                        settled: false,
                    })
                }
                Err(e) => {
                    inner.counters.short_circuited += 1;
                    Err(e)
                }
            };
            (result, transition)
        };
        self.notify(transition);
        result
    }

    /// Runs `f` if the breaker admits the call: `Ok` counts as a success,
    /// `Err` as a failure. If the returned future is dropped before it
    /// finishes (say, by an outer timeout), the call counts as a failure.
    /// When the call is refused, `f` is not called.
    pub(crate) async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        match f().await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(e) => {
                permit.failure();
                Err(BreakerError::Inner(e))
            }
        }
    }

    /// The current state. Reports half-open as soon as the recovery timeout
    /// has passed, even before the next call.
    pub(crate) fn state(&self) -> BreakerState {
        let (state, transition) = {
            let mut inner = self.lock();
            let transition = inner.refresh(&self.config);
            (inner.state.public(), transition)
        };
        self.notify(transition);
        state
    }

    /// State and counters, taken together.
    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let (snapshot, transition) = {
            let mut inner = self.lock();
            let transition = inner.refresh(&self.config);
            let c = inner.counters;
            let snapshot = BreakerSnapshot {
                state: inner.state.public(),
                calls: c.calls,
                successes: c.successes,
                failures: c.failures,
                cancelled: c.cancelled,
                abandoned: c.abandoned,
                in_flight: c.in_flight,
                short_circuited: c.short_circuited,
                times_opened: c.times_opened,
                last_state_change: inner.changed_at,
                last_failure: inner.last_failure,
                open_until: match inner.state {
                    State::Open { since } => since.checked_add(self.config.recovery_timeout),
                    _ => None,
                },
            };
            (snapshot, transition)
        };
        self.notify(transition);
        snapshot
    }

    fn settle(&self, generation: u64, verdict: Verdict) {
        let transition = {
            let mut inner = self.lock();
            inner.settle(&self.config, generation, verdict)
        };
        self.notify(transition);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under the lock, so poisoning cannot leave the
        // state half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, transition: Option<Transition>) {
        if let (Some(observer), Some(t)) = (&self.observer, transition) {
            let _ = catch_unwind(AssertUnwindSafe(|| observer(&t)));
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("state", &self.lock().state.public())
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`]. Report
/// the outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); dropped unreported, it counts as a failure.
#[must_use = "a permit dropped without a verdict counts as a failure"]
pub(crate) struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// The call succeeded.
    pub(crate) fn success(mut self) {
        self.settled = true;
        self.breaker.settle(self.generation, Verdict::Success);
    }

    /// The call failed.
    pub(crate) fn failure(mut self) {
        self.settled = true;
        self.breaker.settle(self.generation, Verdict::Failure);
    }

    /// The call was cut short by something that is not the dependency's
    /// fault (the batch's deadline ran out while it was waiting its turn):
    /// frees the permit without a verdict, so it neither opens nor closes
    /// the breaker. Counted in [`BreakerSnapshot::abandoned`].
    pub(crate) fn abandon(mut self) {
        self.settled = true;
        self.breaker.settle(self.generation, Verdict::Abandoned);
    }

    /// Whether this is a half-open probe, whose outcome decides whether the
    /// breaker closes.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.generation, Verdict::Cancelled);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Cancelled,
    Abandoned,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    calls: u64,
    successes: u64,
    failures: u64,
    cancelled: u64,
    abandoned: u64,
    in_flight: u64,
    short_circuited: u64,
    times_opened: u64,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { since: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every change of state; a permit from an older generation
    /// only updates counters.
    generation: u64,
    changed_at: Instant,
    consecutive_failures: u32,
    /// Present with [`FailurePolicy::Rate`].
    window: Option<Window>,
    counters: Counters,
    last_failure: Option<Instant>,
}

impl Inner {
    /// Turns open into half-open once the recovery timeout has passed.
    fn refresh(&mut self, config: &BreakerConfig) -> Option<Transition> {
        let State::Open { since } = self.state else {
            return None;
        };
        let now = Instant::now();
        if now.saturating_duration_since(since) < config.recovery_timeout {
            return None;
        }
        let at = since.checked_add(config.recovery_timeout).unwrap_or(now);
        Some(self.enter(
            State::HalfOpen {
                in_flight: 0,
                successes: 0,
            },
            at,
        ))
    }

    fn settle(
        &mut self,
        config: &BreakerConfig,
        generation: u64,
        verdict: Verdict,
    ) -> Option<Transition> {
        let c = &mut self.counters;
        c.in_flight -= 1;
        if verdict == Verdict::Abandoned {
            c.abandoned += 1;
            if generation == self.generation
                && let State::HalfOpen { in_flight, .. } = &mut self.state
            {
                *in_flight -= 1;
            }
            return None;
        }
        let failed = verdict != Verdict::Success;
        let now = if failed {
            c.failures += 1;
            if verdict == Verdict::Cancelled {
                c.cancelled += 1;
            }
            let now = Instant::now();
            self.last_failure = Some(now);
            Some(now)
        } else {
            c.successes += 1;
            None
        };

        if generation != self.generation {
            return None;
        }
        match &mut self.state {
            State::Closed => {
                let trips = match config.policy {
                    FailurePolicy::Consecutive(n) => {
                        if failed {
                            self.consecutive_failures += 1;
                        } else {
                            self.consecutive_failures = 0;
                        }
                        self.consecutive_failures >= n
                    }
                    FailurePolicy::Rate {
                        threshold,
                        min_calls,
                        ..
                    } => {
                        let window = self.window.as_mut()?;
                        let (calls, failures) =
                            window.record(now.unwrap_or_else(Instant::now), failed);
                        calls >= min_calls && f64::from(failures) / f64::from(calls) >= threshold
                    }
                };
                trips.then(|| self.open(now.unwrap_or_else(Instant::now)))
            }
            State::HalfOpen {
                in_flight,
                successes,
            } => {
                *in_flight -= 1;
                if failed {
                    return Some(self.open(now.unwrap_or_else(Instant::now)));
                }
                *successes += 1;
                (*successes >= config.half_open_successes)
                    .then(|| self.enter(State::Closed, Instant::now()))
            }
            // No permit is handed out while open, so none carries an open
            // generation.
            State::Open { .. } => None,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.counters.times_opened += 1;
        self.enter(State::Open { since: now }, now)
    }

    fn enter(&mut self, state: State, at: Instant) -> Transition {
        let from = self.state.public();
        self.state = state;
        self.generation += 1;
        self.changed_at = at;
        self.consecutive_failures = 0;
        if let Some(window) = &mut self.window {
            window.clear();
        }
        Transition {
            from,
            to: self.state.public(),
            at,
        }
    }
}
