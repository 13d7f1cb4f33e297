//! Configures and starts a pipeline.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, reload};

use super::guard::FilterHandle;
use super::lifecycle::{EnricherHandle, LifecycleConfig};
use super::sinks::SinkPolicy;
use super::stage::{AsyncSlot, Stage, Step, plan};
use super::worker::Worker;
use super::{Guard, Shared, Signal};
use crate::capture::queue::Queue;
use crate::capture::{FapilogLayer, Overflow, Suppressed, filter, mark_pipeline_thread};
use crate::enrich::{
    AsyncEnricher, Enricher, EnricherOptions, Hostname, Pid, Redaction, StaticFields,
};
use crate::error::{ConfigError, InitError};
use crate::event::{FieldName, Value};
use crate::observe::{PipelineMetrics, SinkCounters};
use crate::sink::{DynSink, FileSinkBuilder, Sink, StdoutSink};

/// The largest queue a pipeline accepts: its slots are allocated up front
/// (a few hundred bytes each), so a typo must not become a failed
/// allocation that aborts the process.
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 20;
/// The largest batch.
pub(crate) const MAX_BATCH_SIZE: usize = 1 << 16;
/// The most batches in the enrichers at once.
pub(crate) const MAX_PIPELINE_DEPTH: usize = 256;
/// The most threads [`Builder::worker_threads`] accepts.
pub(crate) const MAX_WORKER_THREADS: usize = 256;

enum SinkSpec {
    Ready(Box<dyn DynSink>),
    File(FileSinkBuilder),
    #[cfg(feature = "otlp")]
    Otlp(Box<crate::sink::OtlpSinkBuilder>),
}

/// Configures a pipeline. Start from [`fapilog::builder()`](crate::builder).
///
/// | setting | default |
/// | --- | --- |
/// | [`filter`](Builder::filter) (used by [`init`](Builder::init)) | `RUST_LOG` when set, else `info` |
/// | [`queue_capacity`](Builder::queue_capacity) | 10 000 events (at most 1 048 576) |
/// | [`overflow`](Builder::overflow) | [`Overflow::Block`] |
/// | [`block_timeout`](Builder::block_timeout) | 5 s |
/// | [`batch_size`](Builder::batch_size) | 1024 events (at most 65 536) |
/// | [`linger`](Builder::linger) | 1 ms |
/// | [`pipeline_depth`](Builder::pipeline_depth) | 4 batches (at most 256) |
/// | [`shutdown_timeout`](Builder::shutdown_timeout) | 30 s |
/// | [`drop_timeout`](Builder::drop_timeout) | 5 s |
/// | [`drop_report_interval`](Builder::drop_report_interval) | 5 s (also for "events undelivered" records) |
/// | [`sink_timeout`](Builder::sink_timeout) | 10 s per write or flush |
/// | [`sink_retries`](Builder::sink_retries) | 3, backoff 100 ms to 2 s |
/// | sinks | JSON lines on stdout if none is added |
/// | worker | its own thread and runtime ([`runtime`](Builder::runtime) to change) |
/// | [`worker_threads`](Builder::worker_threads) | 1 (at most 256) |
/// | `log` bridge | on ([`bridge_log`](Builder::bridge_log)) |
/// | [`pipeline_name`](Builder::pipeline_name) | `fapilog` (then `fapilog-2`, …): the metrics' `pipeline` label |
/// | [`metrics_interval`](Builder::metrics_interval) | 1 s |
/// | [`redaction`](Builder::redaction) | on: fields named like secrets (password, token, api key, authorization, cookie, …) are hidden |
///
/// Enrichers run in this order: static fields (service, version,
/// environment, [`static_field`](Builder::static_field)), hostname, pid, then
/// every [`enricher`](Builder::enricher) in the order added.
pub struct Builder {
    filter: Option<String>,
    filter_env_var: Option<String>,
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
    worker_threads: usize,
    redaction: Redaction,
    sink_policy: SinkPolicy,
    name: Option<String>,
    metrics_interval: Duration,
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
            filter: None,
            filter_env_var: Some("RUST_LOG".to_owned()),
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
            worker_threads: 1,
            redaction: Redaction::default(),
            name: None,
            metrics_interval: Duration::from_secs(1),
            sink_policy: SinkPolicy {
                timeout: Duration::from_secs(10),
                retries: 3,
                retry_min: Duration::from_millis(100),
                retry_max: Duration::from_secs(2),
            },
        }
    }
}

impl Builder {
    /// Which events [`init`](Builder::init) captures: filter directives
    /// in `EnvFilter`'s syntax — a level (`info`), per-target levels
    /// (`info,my_crate=debug,hyper=warn`), span selectors
    /// (`my_crate[request{user_id=42}]=trace`). Checked strictly: a bare
    /// word must be a level, so a typo is an error, not a target.
    ///
    /// **Precedence** for `init`: the `RUST_LOG` environment variable when
    /// it is set and not empty (see [`filter_env_var`](Builder::filter_env_var)),
    /// else these directives, else `info`. Change it at run time with
    /// [`Guard::set_filter`]. With [`build`](Builder::build) the layer has
    /// no filter: add your own, as with any layer (the directives given
    /// here are still checked).
    #[must_use]
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = Some(directives.into());
        self
    }

    /// The old name of [`filter`](Builder::filter), which takes
    /// directives, not only a level.
    #[deprecated(since = "0.2.0", note = "use `filter`, which takes directives")]
    #[must_use]
    pub fn level(self, directives: impl Into<String>) -> Self {
        self.filter(directives)
    }

    /// The environment variable whose directives [`init`](Builder::init)
    /// prefers to [`filter`](Builder::filter)'s (default `RUST_LOG`).
    #[must_use]
    pub fn filter_env_var(mut self, name: impl Into<String>) -> Self {
        self.filter_env_var = Some(name.into());
        self
    }

    /// Makes [`init`](Builder::init) ignore the environment: only
    /// [`filter`](Builder::filter)'s directives (or `info`) apply.
    #[must_use]
    pub fn ignore_filter_env(mut self) -> Self {
        self.filter_env_var = None;
        self
    }

    /// Events the queue holds before the overflow policy applies.
    #[must_use]
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// What a log call does when the queue is full.
    #[must_use]
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// Longest a log call waits for room under [`Overflow::Block`].
    #[must_use]
    pub fn block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }

    /// Most events handed to the sinks at once.
    #[must_use]
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// How long the worker waits for more events to fill a partial batch.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How many batches may be in the enrichers at once. While one batch
    /// waits on a slow lookup, the next ones are already being enriched
    /// (and served from the cache); sinks still receive every event in the
    /// order it was logged. With 1, each batch is written before the next
    /// is enriched, so enrichers see batches strictly in order too.
    #[must_use]
    pub fn pipeline_depth(mut self, batches: usize) -> Self {
        self.pipeline_depth = batches.max(1);
        self
    }

    /// How many threads the pipeline's own runtime has (default 1).
    ///
    /// With 1, the worker is one thread on a current-thread runtime: it
    /// enriches, redacts and hands batches to the sinks, and on a small
    /// machine that is what measures best (no cross-thread wake-ups, the
    /// cache's shard locks never contended). With `n > 1` it is a
    /// multi-thread runtime of `n` threads: the batches in flight (up to
    /// [`pipeline_depth`](Self::pipeline_depth)) are enriched in parallel
    /// and the sinks format on other threads, while sinks still receive
    /// every event in the order it was logged.
    ///
    /// Raise it when the worker is the bottleneck, i.e. the queue stays
    /// full (`queue_depth` near `queue_capacity`, drops under a drop
    /// policy, log calls waiting under `Block`) while the enrichers'
    /// sources are not slow (their `fetch_p99` is low and the breakers are
    /// closed): the worker's CPU is then the limit, and more threads help
    /// as long as there are idle cores. Keep `n` at most the cores left
    /// over by the application, and `pipeline_depth` at least `n`. It
    /// cannot speed up a slow database or sink, and on a machine whose
    /// cores the application already keeps busy it only adds
    /// contention. Has no effect with [`runtime`](Self::runtime): a
    /// value above 1 together with it is an error at build time.
    #[must_use]
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads;
        self
    }

    /// Longest [`Guard::shutdown`] waits for the queue to drain.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Longest dropping the [`Guard`] waits for the queue to drain.
    #[must_use]
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// How often an "events dropped" record (target `fapilog`, fields
    /// `dropped` and `dropped_total`) is written while events are dropped.
    #[must_use]
    pub fn drop_report_interval(mut self, interval: Duration) -> Self {
        self.drop_report_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Adds `service` to every event.
    #[must_use]
    pub fn service(self, name: impl Into<String>) -> Self {
        self.static_field("service", name.into())
    }

    /// Adds `version` to every event.
    #[must_use]
    pub fn version(self, version: impl Into<String>) -> Self {
        self.static_field("version", version.into())
    }

    /// Adds `environment` to every event.
    #[must_use]
    pub fn environment(self, env: impl Into<String>) -> Self {
        self.static_field("environment", env.into())
    }

    /// Adds a fixed field to every event.
    #[must_use]
    pub fn static_field(mut self, name: impl Into<FieldName>, value: impl Into<Value>) -> Self {
        self.static_fields = self.static_fields.field(name, value);
        self
    }

    /// Adds `hostname` to every event.
    #[must_use]
    pub fn with_hostname(mut self) -> Self {
        self.hostname = true;
        self
    }

    /// Adds `pid` to every event.
    #[must_use]
    pub fn with_pid(mut self) -> Self {
        self.pid = true;
        self
    }

    /// Adds a sync enricher; enrichers (sync and async) run in the order
    /// added.
    #[must_use]
    pub fn enricher(mut self, enricher: impl Enricher) -> Self {
        self.steps.push(Step::Sync(Box::new(enricher)));
        self
    }

    /// Adds an async enricher with default [`EnricherOptions`].
    #[must_use]
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
            Ok(handle) => {
                let enricher: Arc<dyn crate::enrich::DynAsyncEnricher> = Arc::new(enricher);
                handle.set_enricher(enricher.clone());
                self.steps.push(Step::Async(AsyncSlot {
                    enricher,
                    opts: options,
                    handle: Arc::new(handle),
                }))
            }
            Err(e) => {
                self.deferred_error.get_or_insert(e);
            }
        }
        self
    }

    /// The most one batch may spend in async enrichment, all enrichers
    /// together; past it, unfinished enrichers' events are written with a
    /// `timeout` error entry.
    #[must_use]
    pub fn enrich_deadline(mut self, deadline: Duration) -> Self {
        self.enrich_deadline = deadline;
        self
    }

    /// Whether failed enrichments add an `enrichment_errors` entry to the
    /// event (the event is written either way).
    #[must_use]
    pub fn enrichment_errors(mut self, on: bool) -> Self {
        self.record_errors = on;
        self
    }

    /// Longest each async enricher's start-up (and health check) may take.
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.startup_timeout = timeout;
        self
    }

    /// How often async enrichers' health checks run.
    #[must_use]
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.lifecycle.health_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Longest each async enricher's shutdown may take.
    #[must_use]
    pub fn enricher_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.shutdown_timeout = timeout;
        self
    }

    /// The backoff between start-up retries of an enricher that failed to
    /// start: exponential from `min` to `max`, with jitter.
    #[must_use]
    pub fn startup_retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.lifecycle.retry_min = min;
        self.lifecycle.retry_max = max.max(min);
        self
    }

    /// Longest one sink write or flush may take, and longest the pipeline
    /// waits for a busy sink to take a batch (default 10 s). A slow sink
    /// holds the pipeline back by up to that much per batch (back-pressure:
    /// its events are not given up while it keeps up at all); one that takes
    /// no batch in that time is *stalled*: the events it misses are counted
    /// as undelivered for it, without waiting again, until it takes a batch
    /// again. Must be more than zero.
    #[must_use]
    pub fn sink_timeout(mut self, timeout: Duration) -> Self {
        self.sink_policy.timeout = timeout;
        self
    }

    /// How many times a failed sink write is retried, with exponential
    /// backoff from `min` to `max`, before its events are counted as
    /// undelivered for that sink (default 3, from 100 ms to 2 s).
    #[must_use]
    pub fn sink_retries(mut self, retries: u32, min: Duration, max: Duration) -> Self {
        self.sink_policy.retries = retries;
        self.sink_policy.retry_min = min;
        self.sink_policy.retry_max = max.max(min);
        self
    }

    /// Adds a sink. Every sink gets every event.
    #[must_use]
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(SinkSpec::Ready(Box::new(sink)));
        self
    }

    /// Adds a file sink, opened when the pipeline starts.
    #[must_use]
    pub fn file(mut self, file: FileSinkBuilder) -> Self {
        self.sinks.push(SinkSpec::File(file));
        self
    }

    /// Adds an OTLP sink (feature `otlp`): records to an OpenTelemetry
    /// Collector over gRPC or HTTP/protobuf, with a retry buffer of its
    /// own. Its resource defaults to this pipeline's
    /// [`service`](Self::service), [`version`](Self::version) and
    /// [`environment`](Self::environment). Its configuration is checked
    /// when the pipeline starts; the collector need not be up then.
    #[cfg(feature = "otlp")]
    #[must_use]
    pub fn otlp(mut self, otlp: crate::sink::OtlpSinkBuilder) -> Self {
        self.sinks.push(SinkSpec::Otlp(Box::new(otlp)));
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
    #[must_use]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// The pipeline's name: the `pipeline` label of its metrics (default
    /// `fapilog` for the first pipeline of the process, `fapilog-2`,
    /// `fapilog-3`… for later ones).
    #[must_use]
    pub fn pipeline_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How often the pipeline's counters are published to the `metrics`
    /// facade (default 1 s), besides after every batch — so they move
    /// while a sink is stuck too.
    #[must_use]
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Which fields and values are hidden before any sink sees an event
    /// (default: [`Redaction::default`], the names in
    /// [`DEFAULT_SECRET_KEYS`](crate::enrich::DEFAULT_SECRET_KEYS));
    /// [`Redaction::none`] turns it off.
    #[must_use]
    pub fn redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Whether `init` routes records of the `log` crate into the pipeline.
    #[must_use]
    pub fn bridge_log(mut self, on: bool) -> Self {
        self.bridge_log = on;
        self
    }

    /// Starts the pipeline and returns its [`FapilogLayer`], to compose
    /// into a subscriber of your own with the filter of your choice, and
    /// its [`Guard`]. Async enrichers are started before it returns; in
    /// async code prefer [`Builder::build_async`].
    ///
    /// ```
    /// use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};
    ///
    /// # fn main() -> Result<(), fapilog::InitError> {
    /// let (layer, guard) = fapilog::builder().build()?;
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(layer.with_filter(EnvFilter::new("info")))
    ///     .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("warn")));
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info!(answer = 42, "composed by hand");
    /// });
    /// let report = guard.shutdown_blocking();
    /// assert_eq!(report.emitted, 1);
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<(FapilogLayer, Guard), InitError> {
        let wait = self.startup_wait();
        let (layer, guard, started) = self.launch()?;
        match started.wait_blocking(wait) {
            Some(Ok(())) => Ok((layer, guard)),
            Some(Err(e)) => Err(e),
            None => Err(InitError::startup(
                "async enrichers did not report their start-up in time; if the worker runs on this thread's runtime, use `build_async`/`init_async`",
            )),
        }
    }

    /// [`Builder::build`] for async code: waits for the async enrichers'
    /// start-up without blocking the thread.
    pub async fn build_async(self) -> Result<(FapilogLayer, Guard), InitError> {
        let wait = self.startup_wait();
        let (layer, guard, started) = self.launch()?;
        match started.wait(wait).await {
            Some(Ok(())) => Ok((layer, guard)),
            Some(Err(e)) => Err(e),
            None => Err(InitError::startup(
                "async enrichers did not report their start-up in time",
            )),
        }
    }

    /// Starts the pipeline and installs it as the global subscriber (and, by
    /// default, as the `log` crate's logger), filtered by `RUST_LOG` when it
    /// is set, else by [`filter`](Builder::filter) (default `info`); the
    /// filter can be changed later with [`Guard::set_filter`]. In async
    /// code with async enrichers, prefer [`Builder::init_async`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), fapilog::InitError> {
    /// let guard = fapilog::builder().service("checkout").init()?;
    /// tracing::info!(order_id = 7, "order placed");
    /// guard.set_filter("debug,sqlx=warn").expect("valid directives");
    /// tracing::debug!("now captured");
    /// guard.shutdown_blocking();
    /// # Ok(()) }
    /// ```
    pub fn init(self) -> Result<Guard, InitError> {
        let (filter, bridge_log) = self.prepare_init()?;
        let (layer, guard) = self.build()?;
        install(layer, filter, guard, bridge_log)
    }

    /// [`Builder::init`] for async code.
    pub async fn init_async(self) -> Result<Guard, InitError> {
        let (filter, bridge_log) = self.prepare_init()?;
        let (layer, guard) = self.build_async().await?;
        install(layer, filter, guard, bridge_log)
    }

    fn startup_wait(&self) -> Duration {
        self.lifecycle
            .startup_timeout
            .saturating_add(Duration::from_secs(5))
    }

    /// What `init` needs before it starts anything: no global subscriber
    /// yet, and a filter that parses.
    fn prepare_init(&self) -> Result<((EnvFilter, String), bool), InitError> {
        if tracing::dispatcher::has_been_set() {
            return Err(InitError::global_subscriber(
                "set_global_default was called before",
            ));
        }
        Ok((self.resolve_filter()?, self.bridge_log))
    }

    /// The filter [`init`](Builder::init) would install: `RUST_LOG` (or
    /// the [`filter_env_var`](Builder::filter_env_var)) when set and not
    /// empty, else [`filter`](Builder::filter)'s directives, else `info`.
    /// For composing by hand with the same precedence:
    ///
    /// ```
    /// use tracing_subscriber::{Layer, layer::SubscriberExt};
    ///
    /// # fn main() -> Result<(), fapilog::InitError> {
    /// let builder = fapilog::builder().filter("info,my_crate=debug");
    /// let filter = builder.env_filter()?;
    /// let (layer, guard) = builder.build()?;
    /// let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
    /// # drop(subscriber); drop(guard); Ok(()) }
    /// ```
    pub fn env_filter(&self) -> Result<EnvFilter, InitError> {
        self.resolve_filter().map(|(filter, _)| filter)
    }

    /// [`env_filter`](Builder::env_filter), and the directives it parsed
    /// as given (`EnvFilter`'s own display reorders them).
    fn resolve_filter(&self) -> Result<(EnvFilter, String), InitError> {
        if let Some(var) = &self.filter_env_var {
            let origin = || format!("the `{var}` environment variable");
            match std::env::var(var) {
                Ok(directives) if !directives.trim().is_empty() => {
                    return match filter::parse(&directives) {
                        Ok(f) => Ok((f, directives)),
                        Err(r) => Err(InitError::filter(origin(), &directives, r)),
                    };
                }
                Ok(_) | Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(raw)) => {
                    return Err(InitError::filter(
                        origin(),
                        &raw.to_string_lossy(),
                        "it is not valid UTF-8",
                    ));
                }
            }
        }
        let directives = self.filter.as_deref().unwrap_or("info");
        filter::parse(directives)
            .map(|f| (f, directives.to_owned()))
            .map_err(|r| InitError::filter("`Builder::filter`", directives, r))
    }

    #[allow(clippy::type_complexity)]
    fn launch(
        self,
    ) -> Result<(FapilogLayer, Guard, Arc<Signal<Result<(), InitError>>>), InitError> {
        if let Some(e) = self.deferred_error {
            return Err(e);
        }
        if self.sink_policy.timeout.is_zero() {
            return Err(ConfigError::at("sink_timeout", "must be more than zero").into());
        }
        for (setting, value, max) in [
            ("queue_capacity", self.capacity, MAX_QUEUE_CAPACITY),
            ("batch_size", self.batch_size, MAX_BATCH_SIZE),
            ("pipeline_depth", self.pipeline_depth, MAX_PIPELINE_DEPTH),
            ("worker_threads", self.worker_threads, MAX_WORKER_THREADS),
        ] {
            if value > max {
                return Err(ConfigError::at(
                    setting,
                    format!("must be at most {max}, got {value}"),
                )
                .into());
            }
        }
        if self.worker_threads == 0 {
            return Err(ConfigError::at("worker_threads", "must be at least 1").into());
        }
        if self.worker_threads > 1 && self.runtime.is_some() {
            return Err(ConfigError::at(
                "worker_threads",
                format!(
                    "{} threads asked for, but the worker runs on the runtime given to \
                     `Builder::runtime`, whose threads are the application's; set one or the other",
                    self.worker_threads
                ),
            )
            .into());
        }
        if let Some(directives) = &self.filter {
            filter::check(directives)
                .map_err(|r| InitError::filter("`Builder::filter`", directives, r))?;
        }

        let redactor = self
            .redaction
            .compile()
            .map_err(|e| InitError::from(ConfigError::at("redaction", e)))?
            .map(Arc::new);

        #[cfg(feature = "otlp")]
        let otlp_defaults = {
            let text = |name| {
                self.static_fields
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            crate::sink::otlp::Defaults {
                service: text("service"),
                version: text("version"),
                environment: text("environment"),
                hostname: self.hostname,
            }
        };
        let mut sinks: Vec<Box<dyn DynSink>> = Vec::new();
        let mut counters: Vec<Arc<SinkCounters>> = Vec::new();
        for spec in self.sinks {
            match spec {
                SinkSpec::Ready(s) => {
                    counters.push(Arc::new(SinkCounters::new(s.name(), false)));
                    sinks.push(s);
                }
                SinkSpec::File(b) => {
                    let path = format!("file ({})", b.path_for_errors());
                    let sink = b.build().map_err(|e| InitError::sink(&path, e))?;
                    counters.push(Arc::new(SinkCounters::new(
                        crate::sink::Sink::name(&sink),
                        false,
                    )));
                    sinks.push(Box::new(sink));
                }
                #[cfg(feature = "otlp")]
                SinkSpec::Otlp(b) => {
                    let mut sink = b.build_with(&otlp_defaults).map_err(InitError::from)?;
                    let c = Arc::new(SinkCounters::new(crate::sink::Sink::name(&sink), true));
                    sink.attach(c.clone(), &otlp_defaults, self.sink_policy.timeout);
                    counters.push(c);
                    sinks.push(Box::new(sink));
                }
            }
        }
        if sinks.is_empty() {
            let sink = StdoutSink::json();
            counters.push(Arc::new(SinkCounters::new(
                crate::sink::Sink::name(&sink),
                false,
            )));
            sinks.push(Box::new(sink));
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
            sinks: counters,
            done: Signal::default(),
            enrichers: declared,
            facade: PipelineMetrics::new(&self.name.clone().unwrap_or_else(default_name)),
            shutdown_timeout: std::sync::Mutex::new(None),
        });
        let worker = Worker {
            shared: shared.clone(),
            stages,
            async_slots,
            lifecycle: self.lifecycle,
            enrich_deadline: self.enrich_deadline,
            record_errors: self.record_errors,
            sinks,
            sink_policy: self.sink_policy,
            metrics_interval: self.metrics_interval,
            batch_size: self.batch_size,
            linger: self.linger,
            drop_report_interval: self.drop_report_interval,
            pipeline_depth: self.pipeline_depth,
            redactor,
        };
        let started: Arc<Signal<Result<(), InitError>>> = Arc::new(Signal::default());
        let started_tx = started.clone();
        let worker_on_app_runtime = self.runtime.is_some();
        match self.runtime {
            Some(handle) => {
                handle.spawn(Suppressed(Box::pin(worker.start_and_run(started_tx))));
            }
            None => {
                let mut rt = if self.worker_threads > 1 {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(self.worker_threads);
                    b
                } else {
                    tokio::runtime::Builder::new_current_thread()
                };
                let rt = rt
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
            filter: None,
        };
        Ok((FapilogLayer::new(queue), guard, started))
    }
}

/// `fapilog`, then `fapilog-2`, `fapilog-3`… for a process's pipelines.
fn default_name() -> String {
    static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    match BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => "fapilog".to_owned(),
        n => format!("fapilog-{}", n + 1),
    }
}

fn install(
    layer: FapilogLayer,
    (filter, directives): (EnvFilter, String),
    mut guard: Guard,
    bridge_log: bool,
) -> Result<Guard, InitError> {
    if bridge_log && let Err(e) = tracing_log::LogTracer::init() {
        let _ = guard.shutdown_blocking();
        return Err(InitError::log_bridge(e));
    }
    let (filter, handle) = reload::Layer::new(filter);
    let subscriber = tracing_subscriber::registry().with(filter).with(layer);
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        let _ = guard.shutdown_blocking();
        return Err(InitError::global_subscriber(e));
    }
    guard.filter = Some(FilterHandle::new(handle, directives));
    Ok(guard)
}
