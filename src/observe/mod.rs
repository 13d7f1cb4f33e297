//! What a running pipeline tells about itself: counters ([`Stats`],
//! [`ShutdownReport`]), each async enricher's counters and latency
//! ([`EnricherStats`]) and health ([`EnricherHealth`]), and the same
//! numbers on the [`metrics`] facade (`fapilog_*`), so a Prometheus
//! exporter works as is.
//!
//! Snapshots are plain structs; the live counters are lock-free atomics
//! that the worker and the enrichers update.

mod enricher;
mod health;
mod pipeline;
mod stats;

pub use enricher::{Counter, EnricherMetrics, EnricherStats, LatencyStats, SharedCacheStats};
pub use health::{EnricherHealth, HealthStatus};
pub(crate) use pipeline::PipelineMetrics;
pub(crate) use stats::SinkCounters;
pub use stats::{ShutdownReport, SinkStats, Stats};
