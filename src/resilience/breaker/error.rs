//! Errors of the circuit breaker.

use std::error::Error;
use std::fmt;

use super::state::BreakerState;

/// The breaker refused a call without making it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShortCircuited {
    state: BreakerState,
}

impl ShortCircuited {
    pub(super) fn new(state: BreakerState) -> Self {
        ShortCircuited { state }
    }

    /// The breaker's state when it refused: [`BreakerState::Open`], or
    /// [`BreakerState::HalfOpen`] with every probe slot taken.
    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }
}

impl fmt::Display for ShortCircuited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            BreakerState::HalfOpen => f.write_str("circuit breaker is half-open and probing"),
            _ => f.write_str("circuit breaker is open"),
        }
    }
}

impl Error for ShortCircuited {}

/// Why [`CircuitBreaker::call`](super::CircuitBreaker::call) failed.
#[derive(Debug)]
pub(crate) enum BreakerError<E> {
    /// The breaker refused the call; it was not made.
    ShortCircuited(ShortCircuited),
    /// The call was made and returned this error (counted as a failure).
    Inner(E),
}

impl<E> BreakerError<E> {
    /// Whether the call was refused without being made.
    pub(crate) fn is_short_circuited(&self) -> bool {
        matches!(self, BreakerError::ShortCircuited(_))
    }

    /// The call's own error, if it was made.
    pub(crate) fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::ShortCircuited(_) => None,
            BreakerError::Inner(e) => Some(e),
        }
    }
}

impl<E> From<ShortCircuited> for BreakerError<E> {
    fn from(e: ShortCircuited) -> Self {
        BreakerError::ShortCircuited(e)
    }
}

/// Shows the call's own error as it is, or why the call was refused.
impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::ShortCircuited(e) => fmt::Display::fmt(e, f),
            BreakerError::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: Error + 'static> Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BreakerError::ShortCircuited(_) => None,
            // Display already shows `e`, so its source comes next.
            BreakerError::Inner(e) => e.source(),
        }
    }
}

/// A [`BreakerConfig`](super::BreakerConfig) setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidConfig {
    reason: &'static str,
}

impl InvalidConfig {
    pub(super) fn new(reason: &'static str) -> Self {
        InvalidConfig { reason }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker config: {}", self.reason)
    }
}

impl Error for InvalidConfig {}
