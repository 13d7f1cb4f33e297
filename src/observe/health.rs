//! Health of async enrichers: up, degraded or down, with the breaker's
//! state and the last check's outcome.

use std::time::SystemTime;

use crate::resilience::BreakerState;

/// Whether an async enricher (or a sink, in [`SinkStats`](crate::SinkStats))
/// is doing its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Started, last health check passed, circuit closed.
    #[default]
    Up,
    /// Started and the last health check passed, but the circuit is open
    /// or half-open: calls are failing or being probed.
    Degraded,
    /// Not started (start-up failed; retrying) or the last health check
    /// failed.
    Down,
}

impl HealthStatus {
    /// `up`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

/// One async enricher's health, from [`Guard::health`](crate::Guard::health).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnricherHealth {
    /// The enricher's name.
    pub name: String,
    /// Up, degraded or down.
    pub status: HealthStatus,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// The last start-up or health-check error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the last health check (or start-up attempt) finished.
    pub last_check: Option<SystemTime>,
    /// The shared (Redis) cache tier's state, apart from the source's, for
    /// a `LookupEnricher` with one: Redis down leaves the enricher up
    /// (lookups go to the source) and this `Down`.
    pub shared_cache: Option<super::SharedCacheStats>,
}
