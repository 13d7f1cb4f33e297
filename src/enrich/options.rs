//! How the pipeline treats one async enricher: its call timeout, its
//! place among the others, whether it must start, its circuit breaker.

use std::time::Duration;

use crate::resilience::BreakerConfig;

/// How the pipeline treats one async enricher.
///
/// | setting | default |
/// | --- | --- |
/// | [`call_timeout`](EnricherOptions::call_timeout) | 500 ms |
/// | [`depends_on`](EnricherOptions::depends_on) | none |
/// | [`required`](EnricherOptions::required) | no |
/// | [`breaker`](EnricherOptions::breaker) | [`BreakerConfig::default`] |
#[derive(Debug, Clone)]
pub struct EnricherOptions {
    pub(crate) call_timeout: Duration,
    pub(crate) depends_on: Vec<String>,
    pub(crate) required: bool,
    pub(crate) breaker: BreakerConfig,
}

impl Default for EnricherOptions {
    fn default() -> Self {
        EnricherOptions {
            call_timeout: Duration::from_millis(500),
            depends_on: Vec::new(),
            required: false,
            breaker: BreakerConfig::default(),
        }
    }
}

impl EnricherOptions {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Longest one external call may take (also capped by the batch
    /// deadline).
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Runs this enricher after the async enricher called `name`, seeing its
    /// fields.
    #[must_use]
    pub fn depends_on(mut self, name: impl Into<String>) -> Self {
        self.depends_on.push(name.into());
        self
    }

    /// Makes `init` fail when this enricher cannot start, instead of
    /// retrying it in the background.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The circuit breaker guarding this enricher's external calls.
    #[must_use]
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }
}
