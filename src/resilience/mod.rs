//! Resilience for calls to other systems: circuit breaking and caching.

pub mod breaker;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerSnapshot, BreakerState, CircuitBreaker, FailurePolicy,
    InvalidConfig, Permit, ShortCircuited, Transition,
};

pub(crate) mod cache;
