//! Configures and starts a pipeline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

use super::queue::Queue;
use super::worker::Worker;
use super::{Done, Guard, Overflow, Shared};
use crate::config::{Settings, parse_filter};
use crate::enrich::{Enricher, Hostname, Pid, StaticFields};
use crate::error::InitError;
use crate::event::{FieldName, Value};
use crate::layer::{FapilogLayer, mark_pipeline_thread, suppressed};
use crate::sink::{DynSink, FileSinkBuilder, Sink, StdoutSink};
use crate::stats::SinkCounters;

enum SinkSpec {
    Ready(Box<dyn DynSink>),
    File(FileSinkBuilder),
}

/// Configures a pipeline. Start from [`fapilog::builder()`](crate::builder).
///
/// | setting | default |
/// | --- | --- |
/// | [`level`](Builder::level) | `info` |
/// | [`queue_capacity`](Builder::queue_capacity) | 10 000 events |
/// | [`overflow`](Builder::overflow) | [`Overflow::Block`] |
/// | [`block_timeout`](Builder::block_timeout) | 5 s |
/// | [`batch_size`](Builder::batch_size) | 1024 events |
/// | [`linger`](Builder::linger) | 1 ms |
/// | [`shutdown_timeout`](Builder::shutdown_timeout) | 30 s |
/// | [`drop_timeout`](Builder::drop_timeout) | 5 s |
/// | [`drop_report_interval`](Builder::drop_report_interval) | 5 s |
/// | sinks | JSON lines on stdout if none is added |
/// | worker | its own thread and runtime ([`runtime`](Builder::runtime) to change) |
/// | `log` bridge | on ([`bridge_log`](Builder::bridge_log)) |
///
/// Enrichers run in this order: static fields (service, version,
/// environment, [`static_field`](Builder::static_field)), hostname, pid, then
/// every [`enricher`](Builder::enricher) in the order added.
pub struct Builder {
    filter: String,
    capacity: usize,
    overflow: Overflow,
    block_timeout: Duration,
    batch_size: usize,
    linger: Duration,
    shutdown_timeout: Duration,
    drop_timeout: Duration,
    drop_report_interval: Duration,
    static_fields: StaticFields,
    hostname: bool,
    pid: bool,
    enrichers: Vec<Box<dyn Enricher>>,
    sinks: Vec<SinkSpec>,
    runtime: Option<tokio::runtime::Handle>,
    bridge_log: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("filter", &self.filter)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("batch_size", &self.batch_size)
            .field("enrichers", &self.enrichers.len())
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            filter: "info".to_owned(),
            capacity: 10_000,
            overflow: Overflow::Block,
            block_timeout: Duration::from_secs(5),
            batch_size: 1024,
            linger: Duration::from_millis(1),
            shutdown_timeout: Duration::from_secs(30),
            drop_timeout: Duration::from_secs(5),
            drop_report_interval: Duration::from_secs(5),
            static_fields: StaticFields::new(),
            hostname: false,
            pid: false,
            enrichers: Vec::new(),
            sinks: Vec::new(),
            runtime: None,
            bridge_log: true,
        }
    }
}

impl Builder {
    /// Which events to capture: a level (`info`) or directives
    /// (`info,my_crate=debug,hyper=warn`). Checked by `build`/`init`.
    pub fn level(mut self, filter: impl Into<String>) -> Self {
        self.filter = filter.into();
        self
    }

    /// Events the queue holds before the overflow policy applies.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// What a log call does when the queue is full.
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// Longest a log call waits for room under [`Overflow::Block`].
    pub fn block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }

    /// Most events handed to the sinks at once.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// How long the worker waits for more events to fill a partial batch.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Longest [`Guard::shutdown`] waits for the queue to drain.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Longest dropping the [`Guard`] waits for the queue to drain.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// How often an "events dropped" record (target `fapilog`, fields
    /// `dropped` and `dropped_total`) is written while events are dropped.
    pub fn drop_report_interval(mut self, interval: Duration) -> Self {
        self.drop_report_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Adds `service` to every event.
    pub fn service(self, name: impl Into<String>) -> Self {
        self.static_field("service", name.into())
    }

    /// Adds `version` to every event.
    pub fn version(self, version: impl Into<String>) -> Self {
        self.static_field("version", version.into())
    }

    /// Adds `environment` to every event.
    pub fn environment(self, env: impl Into<String>) -> Self {
        self.static_field("environment", env.into())
    }

    /// Adds a fixed field to every event.
    pub fn static_field(mut self, name: impl Into<FieldName>, value: impl Into<Value>) -> Self {
        self.static_fields = self.static_fields.field(name, value);
        self
    }

    /// Adds `hostname` to every event.
    pub fn with_hostname(mut self) -> Self {
        self.hostname = true;
        self
    }

    /// Adds `pid` to every event.
    pub fn with_pid(mut self) -> Self {
        self.pid = true;
        self
    }

    /// Adds a sync enricher; enrichers run in the order added.
    pub fn enricher(mut self, enricher: impl Enricher) -> Self {
        self.enrichers.push(Box::new(enricher));
        self
    }

    /// Adds a sink. Every sink gets every event.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(SinkSpec::Ready(Box::new(sink)));
        self
    }

    /// Adds a file sink, opened when the pipeline starts.
    pub fn file(mut self, file: FileSinkBuilder) -> Self {
        self.sinks.push(SinkSpec::File(file));
        self
    }

    /// Runs the worker as a task on this runtime instead of on a thread of
    /// its own. Events logged by other tasks of the worker's runtime while it
    /// is being polled are not captured.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Whether `init` routes records of the `log` crate into the pipeline.
    pub fn bridge_log(mut self, on: bool) -> Self {
        self.bridge_log = on;
        self
    }

    /// Applies settings read from a file or the environment; sinks in the
    /// settings are added to those already configured.
    pub fn settings(mut self, s: &Settings) -> Self {
        self.filter = s.level.clone();
        self.capacity = s.queue.capacity.max(1);
        self.overflow = s.queue.overflow.into();
        self.block_timeout = s.queue.block_timeout;
        self.batch_size = s.batch.size.max(1);
        self.linger = s.batch.linger;
        self.shutdown_timeout = s.shutdown.timeout;
        self.drop_timeout = s.shutdown.drop_timeout;
        self.drop_report_interval = s
            .shutdown
            .drop_report_interval
            .max(Duration::from_millis(1));
        for (k, v) in [
            ("service", &s.service),
            ("version", &s.version),
            ("environment", &s.environment),
        ] {
            if let Some(v) = v {
                self = self.static_field(k, v.clone());
            }
        }
        for (k, v) in &s.static_fields {
            self = self.static_field(k.clone(), v.clone());
        }
        self.hostname |= s.hostname;
        self.pid |= s.pid;
        if let Some(out) = &s.sinks.stdout {
            self = self.sink(StdoutSink::new(out.format.into()));
        }
        if let Some(f) = &s.sinks.file {
            let mut b = crate::sink::FileSink::builder(&f.path)
                .rotation(f.rotation.into())
                .keep(f.keep);
            if let Some(max) = f.max_bytes {
                b = b.max_bytes(max);
            }
            self = self.file(b);
        }
        self
    }

    /// Starts the pipeline and returns its layer, to compose into a
    /// subscriber of your own, and its guard.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// # fn main() -> Result<(), fapilog::InitError> {
    /// let (layer, guard) = fapilog::builder().build()?;
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info!(answer = 42, "composed by hand");
    /// });
    /// let report = guard.shutdown_blocking();
    /// assert_eq!(report.emitted, 1);
    /// # Ok(()) }
    /// ```
    pub fn build<S>(self) -> Result<(impl Layer<S> + Send + Sync + 'static, Guard), InitError>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let (layer, filter, guard) = self.start()?;
        Ok((layer.with_filter(filter), guard))
    }

    /// Starts the pipeline and installs it as the global subscriber (and, by
    /// default, as the `log` crate's logger).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), fapilog::InitError> {
    /// let guard = fapilog::builder().service("checkout").init()?;
    /// tracing::info!(order_id = 7, "order placed");
    /// guard.shutdown_blocking();
    /// # Ok(()) }
    /// ```
    pub fn init(self) -> Result<Guard, InitError> {
        if tracing::dispatcher::has_been_set() {
            return Err(InitError::global_subscriber(
                "set_global_default was called before",
            ));
        }
        let bridge_log = self.bridge_log;
        let (layer, filter, guard) = self.start()?;
        if bridge_log {
            if let Err(e) = tracing_log::LogTracer::init() {
                let _ = guard.shutdown_blocking();
                return Err(InitError::log_bridge(e));
            }
        }
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
        if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
            let _ = guard.shutdown_blocking();
            return Err(InitError::global_subscriber(e));
        }
        Ok(guard)
    }

    fn start(self) -> Result<(FapilogLayer, Targets, Guard), InitError> {
        let filter = parse_filter(&self.filter).map_err(|r| InitError::filter(&self.filter, r))?;

        let mut sinks: Vec<Box<dyn DynSink>> = Vec::new();
        for spec in self.sinks {
            match spec {
                SinkSpec::Ready(s) => sinks.push(s),
                SinkSpec::File(b) => {
                    let path = format!("file ({})", b.path_for_errors());
                    sinks.push(Box::new(b.build().map_err(|e| InitError::sink(&path, e))?));
                }
            }
        }
        if sinks.is_empty() {
            sinks.push(Box::new(StdoutSink::json()));
        }

        let mut enrichers: Vec<Box<dyn Enricher>> = Vec::new();
        if !self.static_fields.is_empty() {
            enrichers.push(Box::new(self.static_fields));
        }
        if self.hostname {
            enrichers.push(Box::new(Hostname::new()));
        }
        if self.pid {
            enrichers.push(Box::new(Pid::new()));
        }
        enrichers.extend(self.enrichers);

        let queue = Arc::new(Queue::new(
            self.capacity,
            self.overflow,
            self.block_timeout,
            self.runtime.is_some(),
        ));
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            emitted: AtomicU64::new(0),
            enricher_panics: AtomicU64::new(0),
            sinks: sinks.iter().map(|s| SinkCounters::new(s.name())).collect(),
            done: Done::default(),
        });
        let worker = Worker {
            shared: shared.clone(),
            enrichers,
            sinks,
            batch_size: self.batch_size,
            linger: self.linger,
            drop_report_interval: self.drop_report_interval,
        };
        match self.runtime {
            Some(handle) => {
                handle.spawn(Suppressed(Box::pin(worker.run())));
            }
            None => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("fapilog-worker")
                    .on_thread_start(mark_pipeline_thread)
                    .build()
                    .map_err(InitError::runtime)?;
                std::thread::Builder::new()
                    .name("fapilog-worker".to_owned())
                    .spawn(move || {
                        mark_pipeline_thread();
                        rt.block_on(worker.run());
                    })
                    .map_err(InitError::runtime)?;
            }
        }
        let guard = Guard {
            shared,
            shutdown_timeout: self.shutdown_timeout,
            drop_timeout: self.drop_timeout,
            finished: false,
        };
        Ok((FapilogLayer::new(queue), filter, guard))
    }
}

/// Polls the worker with capture suppressed on the polling thread.
struct Suppressed<F>(Pin<Box<F>>);

impl<F: Future> Future for Suppressed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        suppressed(|| inner.poll(cx))
    }
}
