//! Resilience for calls to other systems: the circuit breaker that guards
//! each async enricher, and deadline arithmetic.
//!
//! Configure a breaker per enricher with
//! [`EnricherOptions::breaker`](crate::enrich::EnricherOptions::breaker);
//! its state shows in [`Guard::health`](crate::Guard::health). How it
//! behaves — why two failure policies, the closed / open / half-open
//! states, what counts as a failure — is described on [`BreakerConfig`]
//! and [`FailurePolicy`].

pub(crate) mod breaker;
pub(crate) mod deadline;

pub use breaker::{BreakerConfig, BreakerState, FailurePolicy};
