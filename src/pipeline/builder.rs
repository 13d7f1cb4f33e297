//! Configures and starts a pipeline.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use super::queue::Queue;
use super::worker::Worker;
use super::{Guard, Overflow, Shared, Signal};
use crate::config::{Settings, parse_filter};
use crate::enrich::lifecycle::{EnricherHandle, EnricherOptions, LifecycleConfig};
use crate::enrich::stage::{AsyncSlot, Stage, Step, plan};
use crate::enrich::{AsyncEnricher, Enricher, Hostname, Pid, StaticFields};
use crate::error::InitError;
use crate::event::{FieldName, Value};
use crate::layer::{FapilogLayer, Suppressed, mark_pipeline_thread};
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
/// | [`pipeline_depth`](Builder::pipeline_depth) | 4 batches |
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
    steps: Vec<Step>,
    deferred_error: Option<InitError>,
    enrich_deadline: Duration,
    record_errors: bool,
    lifecycle: LifecycleConfig,
    sinks: Vec<SinkSpec>,
    runtime: Option<tokio::runtime::Handle>,
    bridge_log: bool,
    pipeline_depth: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("filter", &self.filter)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("batch_size", &self.batch_size)
            .field("enrichers", &self.steps.len())
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
            steps: Vec::new(),
            deferred_error: None,
            enrich_deadline: Duration::from_secs(1),
            record_errors: true,
            lifecycle: LifecycleConfig {
                startup_timeout: Duration::from_secs(10),
                health_interval: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(5),
                retry_min: Duration::from_millis(500),
                retry_max: Duration::from_secs(60),
            },
            sinks: Vec::new(),
            runtime: None,
            bridge_log: true,
            pipeline_depth: 4,
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

    /// How many batches may be in the enrichers at once. While one batch
    /// waits on a slow lookup, the next ones are already being enriched
    /// (and served from the cache); sinks still receive every event in the
    /// order it was logged. With 1, each batch is written before the next
    /// is enriched, so enrichers see batches strictly in order too.
    pub fn pipeline_depth(mut self, batches: usize) -> Self {
        self.pipeline_depth = batches.max(1);
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

    /// Adds a sync enricher; enrichers (sync and async) run in the order
    /// added.
    pub fn enricher(mut self, enricher: impl Enricher) -> Self {
        self.steps.push(Step::Sync(Box::new(enricher)));
        self
    }

    /// Adds an async enricher with default [`EnricherOptions`].
    pub fn async_enricher(self, enricher: impl AsyncEnricher) -> Self {
        self.async_enricher_with(enricher, EnricherOptions::default())
    }

    /// Adds an async enricher with its options (timeout, dependencies,
    /// `required`, circuit breaker).
    pub fn async_enricher_with(
        mut self,
        enricher: impl AsyncEnricher,
        options: EnricherOptions,
    ) -> Self {
        match EnricherHandle::new(enricher.name(), options.breaker.clone()) {
            Ok(handle) => self.steps.push(Step::Async(AsyncSlot {
                enricher: Arc::new(enricher),
                opts: options,
                handle: Arc::new(handle),
            })),
            Err(e) => {
                self.deferred_error.get_or_insert(e);
            }
        }
        self
    }

    /// The most one batch may spend in async enrichment, all enrichers
    /// together; past it, unfinished enrichers' events are written with a
    /// `timeout` error entry.
    pub fn enrich_deadline(mut self, deadline: Duration) -> Self {
        self.enrich_deadline = deadline;
        self
    }

    /// Whether failed enrichments add an `enrichment_errors` entry to the
    /// event (the event is written either way).
    pub fn enrichment_errors(mut self, on: bool) -> Self {
        self.record_errors = on;
        self
    }

    /// Longest each async enricher's start-up (and health check) may take.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.startup_timeout = timeout;
        self
    }

    /// How often async enrichers' health checks run.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.lifecycle.health_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Longest each async enricher's shutdown may take.
    pub fn enricher_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.shutdown_timeout = timeout;
        self
    }

    /// The backoff between start-up retries of an enricher that failed to
    /// start: exponential from `min` to `max`, with jitter.
    pub fn startup_retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.lifecycle.retry_min = min;
        self.lifecycle.retry_max = max.max(min);
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

    /// Runs the worker (and the enrichers' lifecycle tasks) as tasks on this
    /// runtime instead of on a thread of its own.
    ///
    /// Events logged while those tasks are polled are not captured. Tasks
    /// that the enrichers' dependencies spawn themselves (hyper's connection
    /// tasks, for example) are ordinary tasks of your runtime, so their
    /// events are captured like any other: keep such targets at `warn`
    /// (`info,hyper=warn,reqwest=warn`). On its own thread (the default)
    /// the pipeline owns the runtime its enrichers run on, and none of
    /// their events are captured (threads a dependency starts itself, like
    /// SQLite's connection workers, are the exception; `SqlLookup` turns
    /// sqlx's statement logging off for that reason). Under
    /// [`Overflow::Block`] with the worker on an application runtime, a log
    /// call made on any current-thread runtime drops instead of waiting,
    /// since it may be the thread the worker needs to make room.
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
    /// subscriber of your own, and its guard. Async enrichers are started
    /// before it returns; in async code prefer [`Builder::build_async`].
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
        let wait = self
            .lifecycle
            .startup_timeout
            .saturating_add(Duration::from_secs(5));
        let (layer, filter, guard, started) = self.launch()?;
        match started.wait_blocking(wait) {
            Some(Ok(())) => Ok((layer.with_filter(filter), guard)),
            Some(Err(e)) => Err(e),
            None => Err(InitError::startup(
                "async enrichers did not report their start-up in time; if the worker runs on this thread's runtime, use `build_async`/`init_async`",
            )),
        }
    }

    /// [`Builder::build`] for async code: waits for the async enrichers'
    /// start-up without blocking the thread.
    pub async fn build_async<S>(
        self,
    ) -> Result<(impl Layer<S> + Send + Sync + 'static, Guard), InitError>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let wait = self
            .lifecycle
            .startup_timeout
            .saturating_add(Duration::from_secs(5));
        let (layer, filter, guard, started) = self.launch()?;
        match started.wait(wait).await {
            Some(Ok(())) => Ok((layer.with_filter(filter), guard)),
            Some(Err(e)) => Err(e),
            None => Err(InitError::startup(
                "async enrichers did not report their start-up in time",
            )),
        }
    }

    /// Starts the pipeline and installs it as the global subscriber (and, by
    /// default, as the `log` crate's logger). In async code with async
    /// enrichers, prefer [`Builder::init_async`].
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
        let (layer, guard) = self.build::<Registry>()?;
        install(layer, guard, bridge_log)
    }

    /// [`Builder::init`] for async code.
    pub async fn init_async(self) -> Result<Guard, InitError> {
        if tracing::dispatcher::has_been_set() {
            return Err(InitError::global_subscriber(
                "set_global_default was called before",
            ));
        }
        let bridge_log = self.bridge_log;
        let (layer, guard) = self.build_async::<Registry>().await?;
        install(layer, guard, bridge_log)
    }

    #[allow(clippy::type_complexity)]
    fn launch(
        self,
    ) -> Result<
        (
            FapilogLayer,
            Targets,
            Guard,
            Arc<Signal<Result<(), InitError>>>,
        ),
        InitError,
    > {
        if let Some(e) = self.deferred_error {
            return Err(e);
        }
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

        let mut steps: Vec<Step> = Vec::new();
        if !self.static_fields.is_empty() {
            steps.push(Step::Sync(Box::new(self.static_fields)));
        }
        if self.hostname {
            steps.push(Step::Sync(Box::new(Hostname::new())));
        }
        if self.pid {
            steps.push(Step::Sync(Box::new(Pid::new())));
        }
        steps.extend(self.steps);
        // Health and stats list enrichers in declared order, whatever order
        // their dependencies make them run in.
        let declared: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Async(slot) => Some(slot.handle.clone()),
                Step::Sync(_) => None,
            })
            .collect();
        let stages = plan(steps)?;
        let async_slots: Vec<Arc<AsyncSlot>> = stages
            .iter()
            .filter_map(|s| match s {
                Stage::Async(levels) => Some(levels.iter().flatten().cloned()),
                Stage::Sync(_) => None,
            })
            .flatten()
            .collect();

        let queue = Arc::new(Queue::new(
            self.capacity,
            self.overflow,
            self.block_timeout,
            self.runtime.is_some(),
        ));
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            emitted: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            enricher_panics: AtomicU64::new(0),
            sinks: sinks.iter().map(|s| SinkCounters::new(s.name())).collect(),
            done: Signal::default(),
            enrichers: declared,
            facade: super::PipelineMetrics::new(),
        });
        let worker = Worker {
            shared: shared.clone(),
            stages,
            async_slots,
            lifecycle: self.lifecycle,
            enrich_deadline: self.enrich_deadline,
            record_errors: self.record_errors,
            sinks,
            batch_size: self.batch_size,
            linger: self.linger,
            drop_report_interval: self.drop_report_interval,
            pipeline_depth: self.pipeline_depth,
        };
        let started: Arc<Signal<Result<(), InitError>>> = Arc::new(Signal::default());
        let started_tx = started.clone();
        let worker_on_app_runtime = self.runtime.is_some();
        match self.runtime {
            Some(handle) => {
                handle.spawn(Suppressed(Box::pin(worker.start_and_run(started_tx))));
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
                        rt.block_on(worker.start_and_run(started_tx));
                    })
                    .map_err(InitError::runtime)?;
            }
        }
        let guard = Guard {
            shared,
            shutdown_timeout: self.shutdown_timeout,
            drop_timeout: self.drop_timeout,
            finished: false,
            worker_on_app_runtime,
        };
        Ok((FapilogLayer::new(queue), filter, guard, started))
    }
}

fn install<L>(layer: L, guard: Guard, bridge_log: bool) -> Result<Guard, InitError>
where
    L: Layer<Registry> + Send + Sync + 'static,
{
    if bridge_log && let Err(e) = tracing_log::LogTracer::init() {
        let _ = guard.shutdown_blocking();
        return Err(InitError::log_bridge(e));
    }
    let subscriber = tracing_subscriber::registry().with(layer);
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        let _ = guard.shutdown_blocking();
        return Err(InitError::global_subscriber(e));
    }
    Ok(guard)
}
