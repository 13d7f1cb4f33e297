//! The handle that keeps the pipeline alive and shuts it down.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::{EnvFilter, Registry, reload};

use super::Shared;
use crate::capture::filter;
use crate::error::ConfigError;
use crate::observe::{EnricherHealth, ShutdownReport, Stats};

/// The reload handle of the filter `init` installed, and its directives as
/// given.
pub(crate) struct FilterHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    directives: Mutex<String>,
}

impl FilterHandle {
    pub(crate) fn new(handle: reload::Handle<EnvFilter, Registry>, directives: String) -> Self {
        FilterHandle {
            handle,
            directives: Mutex::new(directives),
        }
    }
}

/// Keeps the pipeline running; shut it down with [`Guard::shutdown`] (or
/// [`Guard::shutdown_blocking`] from synchronous code) to drain every queued
/// event, flush the sinks and get a report.
///
/// Dropping the guard does the same, waiting at most the drop timeout
/// (default 5 s). In async code prefer `shutdown().await`: a drop blocks the
/// current thread while it waits.
#[must_use = "dropping the guard shuts the pipeline down"]
pub struct Guard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) drop_timeout: Duration,
    pub(crate) finished: bool,
    pub(crate) worker_on_app_runtime: bool,
    /// Set by `init`, which owns the subscriber; `None` after `build`.
    pub(crate) filter: Option<FilterHandle>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A snapshot of the pipeline's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Each async enricher's health: up / degraded / down, circuit breaker
    /// state, last error and time of the last check, in declared order.
    pub fn health(&self) -> Vec<EnricherHealth> {
        self.shared.enrichers.iter().map(|h| h.health()).collect()
    }

    /// Replaces the filter [`Builder::init`](crate::Builder::init)
    /// installed, from the next event on: `guard.set_filter("debug,sqlx=warn")`.
    /// Directives are checked as [`Builder::filter`](crate::Builder::filter)
    /// checks them; on an error (which names the bad directive) the filter
    /// in force stays. A pipeline whose layer you composed yourself (with
    /// [`Builder::build`](crate::Builder::build)) has no filter of fapilog's
    /// to change: wrap yours in `tracing_subscriber::reload` instead.
    pub fn set_filter(&self, directives: &str) -> Result<(), ConfigError> {
        let Some(filter) = &self.filter else {
            return Err(ConfigError::at(
                "filter",
                "this pipeline's layer was composed by hand with `build()`, so its filter is yours: reload it with `tracing_subscriber::reload`",
            ));
        };
        let parsed = filter::parse(directives).map_err(|reason| {
            ConfigError::at(
                "filter",
                format!("invalid filter directives {directives:?}: {reason}"),
            )
        })?;
        // Reload and record under one lock, so two callers cannot leave the
        // recorded directives disagreeing with the filter in force.
        let mut current = filter.directives.lock().unwrap_or_else(|e| e.into_inner());
        filter
            .handle
            .reload(parsed)
            .map_err(|e| ConfigError::at("filter", format!("could not change the filter: {e}")))?;
        *current = directives.to_owned();
        Ok(())
    }

    /// The directives in force, as given to `init` (from `RUST_LOG` or
    /// [`Builder::filter`](crate::Builder::filter)) or to the last
    /// successful [`set_filter`](Guard::set_filter); `None` when the
    /// filter is not fapilog's.
    pub fn filter(&self) -> Option<String> {
        let filter = self.filter.as_ref()?;
        Some(
            filter
                .directives
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Stops intake (later log calls are counted as dropped), drains every
    /// event queued before the call through enrichers and sinks, flushes the
    /// sinks and reports. Waits at most the shutdown timeout (default 30 s);
    /// past it the report says `timed_out` and counts what was left as
    /// dropped.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.finished = true;
        self.shared.close_for_shutdown(self.shutdown_timeout);
        match self.shared.done.wait(self.shutdown_timeout).await {
            Some(r) => r,
            None => self.shared.report(true),
        }
    }

    /// [`Guard::shutdown`] for synchronous code. Inside a multi-thread tokio
    /// runtime it waits with `block_in_place`, so a worker on that runtime
    /// keeps running. On a current-thread runtime that also runs the worker
    /// it cannot wait: it closes intake and returns at once with
    /// `timed_out` set, and the worker drains the queue when the thread is
    /// free; use `shutdown().await` there.
    pub fn shutdown_blocking(mut self) -> ShutdownReport {
        self.finished = true;
        self.close_and_wait(self.shutdown_timeout)
    }

    fn close_and_wait(&self, timeout: Duration) -> ShutdownReport {
        self.shared.close_for_shutdown(timeout);
        let wait = || match self.shared.done.wait_blocking(timeout) {
            Some(r) => r,
            None => self.shared.report(true),
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // Hand this thread's other tasks (the worker may be one of them)
            // to the runtime's other threads while we block.
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            // Blocking this thread would stop a worker that runs on it: the
            // queue is closed and the worker drains it once this thread is
            // free again; the report says it was not waited for.
            Ok(_) if self.worker_on_app_runtime => self.shared.report(true),
            _ => wait(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.close_and_wait(self.drop_timeout);
        }
    }
}
