//! What a breaker reports about itself, for health checks and metrics.

use std::fmt;

use tokio::time::Instant;

/// The state of an enricher's circuit breaker; see [`BreakerConfig`](super::BreakerConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are judged by the
    /// [`FailurePolicy`](super::FailurePolicy).
    Closed,
    /// Calls are refused until the recovery timeout has passed.
    Open,
    /// A limited number of probe calls go through; their outcomes decide
    /// between closing and opening again.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`: for metric labels and health
    /// reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, as passed to the observer set with
/// [`CircuitBreaker::on_transition`](super::CircuitBreaker::on_transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct Transition {
    /// The state left.
    pub(crate) from: BreakerState,
    /// The state entered.
    pub(crate) to: BreakerState,
    /// When it happened. For open → half-open this is when the recovery
    /// timeout ran out, even if the breaker noticed later.
    pub(crate) at: Instant,
}

/// Counters and state of a breaker at one moment, all taken together
/// (`calls == successes + failures + abandoned + in_flight` always holds).
///
/// Counters are totals since the breaker was created; they are never reset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct BreakerSnapshot {
    /// The state.
    pub(crate) state: BreakerState,
    /// Calls admitted (permits handed out).
    pub(crate) calls: u64,
    /// Admitted calls that reported success.
    pub(crate) successes: u64,
    /// Admitted calls that reported failure, cancelled ones included.
    pub(crate) failures: u64,
    /// Of the failures, permits dropped without a verdict (cancelled or
    /// panicked calls).
    pub(crate) cancelled: u64,
    /// Admitted calls released without a verdict (see
    /// [`Permit::abandon`](super::Permit::abandon)); neither successes nor
    /// failures.
    pub(crate) abandoned: u64,
    /// Admitted calls with no verdict yet.
    pub(crate) in_flight: u64,
    /// Calls refused without being made.
    pub(crate) short_circuited: u64,
    /// How many times the breaker has opened (from closed or half-open).
    pub(crate) times_opened: u64,
    /// When the state last changed; the breaker's creation if it never has.
    pub(crate) last_state_change: Instant,
    /// When the last failure was reported.
    pub(crate) last_failure: Option<Instant>,
    /// While open: when it turns half-open.
    pub(crate) open_until: Option<Instant>,
}
