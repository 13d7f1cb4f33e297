//! What makes a breaker open, and how it recovers.

use std::time::Duration;

use super::error::InvalidConfig;

/// When a closed breaker opens.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Opens after this many failures in a row; any success resets the
    /// count. Reacts fast to a dependency that is down outright.
    Consecutive(u32),
    /// Opens when, among the calls that finished within the last `window`,
    /// there are at least `min_calls` and the share that failed is at least
    /// `threshold` (`0.0 < threshold <= 1.0`). Catches a dependency that
    /// fails often but not every time.
    ///
    /// The window is kept in ten time buckets, so a call stops counting
    /// between `window - window / 10` and `window` after it finished.
    Rate {
        /// Failure share that opens the breaker, in `(0.0, 1.0]`.
        threshold: f64,
        /// Fewest finished calls in the window before the rate is judged.
        min_calls: u32,
        /// How far back finished calls count.
        window: Duration,
    },
}

impl Default for FailurePolicy {
    /// Five failures in a row.
    fn default() -> Self {
        FailurePolicy::Consecutive(5)
    }
}

/// Configures the circuit breaker that guards one async enricher's calls
/// (set it with [`EnricherOptions::breaker`](crate::enrich::EnricherOptions::breaker)).
///
/// **Why.** Enrichers run on the pipeline's worker. When the system an
/// enricher calls is down, every batch would wait out the call timeout.
/// A breaker that has seen the dependency fail refuses further calls at
/// once, so events go out un-enriched (with `circuit_open` in
/// `enrichment_errors`) instead of late, and the struggling dependency gets
/// room to recover. Cached keys are still served while it is open.
///
/// **States.** *Closed*: calls go through; each outcome feeds the
/// [`FailurePolicy`]; when it trips, the breaker opens. *Open*: calls are
/// refused without being made (counted as short-circuits) until
/// `recovery_timeout` has passed. *Half-open*: up to `half_open_max_calls`
/// probe calls at once; after `half_open_successes` probe successes it
/// closes with the policy's history cleared; one probe failure opens it
/// again for a full `recovery_timeout`. Health shows the state
/// ([`BreakerState`](super::BreakerState)); stats count short-circuits and
/// how often it opened.
///
/// **What counts as a failure**: an error, a panic, or the call timeout.
/// A call cut short by the batch deadline after earlier enrichers used
/// most of the batch's time is a timeout for the events but is not held
/// against the breaker.
///
/// | setting | default |
/// | --- | --- |
/// | `policy` | [`FailurePolicy::Consecutive(5)`](FailurePolicy::Consecutive) |
/// | `recovery_timeout` | 30 s |
/// | `half_open_max_calls` | 1 |
/// | `half_open_successes` | 1 |
///
/// Fields can be read and assigned directly, or set with the chained
/// methods of the same names:
///
/// ```
/// use std::time::Duration;
/// use fapilog::resilience::{BreakerConfig, FailurePolicy};
///
/// let config = BreakerConfig::default()
///     .policy(FailurePolicy::Rate {
///         threshold: 0.5,
///         min_calls: 20,
///         window: Duration::from_secs(60),
///     })
///     .recovery_timeout(Duration::from_secs(10));
/// assert_eq!(config.half_open_max_calls, 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// When the closed breaker opens.
    pub policy: FailurePolicy,
    /// How long the breaker stays open before it lets probe calls through.
    pub recovery_timeout: Duration,
    /// How many probe calls may be in flight at once while half-open;
    /// further calls are short-circuited. At least 1.
    pub half_open_max_calls: u32,
    /// How many probe calls must succeed, with none failing, before the
    /// half-open breaker closes. At least 1.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            policy: FailurePolicy::default(),
            recovery_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
            half_open_successes: 1,
        }
    }
}

impl BreakerConfig {
    /// Sets [`policy`](Self::policy).
    #[must_use]
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets [`recovery_timeout`](Self::recovery_timeout).
    #[must_use]
    pub fn recovery_timeout(mut self, timeout: Duration) -> Self {
        self.recovery_timeout = timeout;
        self
    }

    /// Sets [`half_open_max_calls`](Self::half_open_max_calls).
    #[must_use]
    pub fn half_open_max_calls(mut self, calls: u32) -> Self {
        self.half_open_max_calls = calls;
        self
    }

    /// Sets [`half_open_successes`](Self::half_open_successes).
    #[must_use]
    pub fn half_open_successes(mut self, successes: u32) -> Self {
        self.half_open_successes = successes;
        self
    }

    /// Checks the settings; [`CircuitBreaker::new`](super::CircuitBreaker::new)
    /// does the same.
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        match self.policy {
            FailurePolicy::Consecutive(0) => {
                return Err(InvalidConfig::new(
                    "consecutive failure count must be at least 1",
                ));
            }
            FailurePolicy::Consecutive(_) => {}
            FailurePolicy::Rate {
                threshold,
                min_calls,
                window,
            } => {
                // Also rejects NaN.
                if !(threshold > 0.0 && threshold <= 1.0) {
                    return Err(InvalidConfig::new(
                        "failure rate threshold must be above 0.0 and at most 1.0",
                    ));
                }
                if min_calls == 0 {
                    return Err(InvalidConfig::new(
                        "failure rate min_calls must be at least 1",
                    ));
                }
                if window.is_zero() {
                    return Err(InvalidConfig::new("failure rate window must not be zero"));
                }
            }
        }
        if self.half_open_max_calls == 0 {
            return Err(InvalidConfig::new("half_open_max_calls must be at least 1"));
        }
        if self.half_open_successes == 0 {
            return Err(InvalidConfig::new("half_open_successes must be at least 1"));
        }
        Ok(())
    }
}
