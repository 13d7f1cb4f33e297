//! Helpers for the async-enricher tests: an in-process [`Lookup`] and an
//! [`AsyncEnricher`] whose latency, failures, start-up and health checks
//! the test controls; a sink the test can wait on without blocking the
//! runtime; and a pipeline that runs on the test's own (paused-clock)
//! runtime.
//!
//! Every simulated delay is a `tokio::time::sleep`, so a test with
//! `start_paused = true` drives it with the paused clock and never waits
//! for real.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::observe::EnricherStats;
use fapilog::resilience::{BreakerConfig, BreakerState};
use fapilog::{Event, Guard, ShutdownReport, Sink, SinkError, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt;

/// Longest (on the paused clock) a test waits for something that should
/// happen; reached only when the behaviour under test is broken.
pub const VIRTUAL_PATIENCE: Duration = Duration::from_secs(3600);

/// How a simulated dependency answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers after its latency.
    Ok,
    /// Fails after its latency.
    Fail,
    /// Never answers.
    Hang,
}

/// The message of every simulated failure.
pub const BACKEND_DOWN: &str = "backend down";

async fn behave(behaviour: Behaviour, latency: Duration) -> Result<(), EnrichError> {
    if behaviour == Behaviour::Hang {
        std::future::pending::<()>().await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match behaviour {
        Behaviour::Fail => Err(EnrichError::msg(BACKEND_DOWN)),
        _ => Ok(()),
    }
}

/// Start-up, health-check and shutdown behaviour shared by the test
/// lookup and the test enricher.
#[derive(Debug, Default)]
pub struct Lifecycle {
    startup_failures_left: AtomicUsize,
    startup_hangs: AtomicBool,
    shutdown_hangs: AtomicBool,
    startup_latency: Mutex<Duration>,
    startups: AtomicUsize,
    unhealthy: AtomicBool,
    health_checks: AtomicUsize,
    shutdowns: AtomicUsize,
}

impl Lifecycle {
    async fn startup(&self) -> Result<(), EnrichError> {
        let n = self.startups.fetch_add(1, Ordering::SeqCst) + 1;
        if self.startup_hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let latency = *self.startup_latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let failing = self
            .startup_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            Err(EnrichError::msg(format!(
                "connection refused (attempt {n})"
            )))
        } else {
            Ok(())
        }
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        self.health_checks.fetch_add(1, Ordering::SeqCst);
        if self.unhealthy.load(Ordering::SeqCst) {
            Err(EnrichError::msg("ping failed"))
        } else {
            Ok(())
        }
    }

    async fn shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        if self.shutdown_hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    /// The next `n` start-ups fail.
    pub fn fail_startups(&self, n: usize) {
        self.startup_failures_left.store(n, Ordering::SeqCst);
    }

    /// Every start-up from now on hangs.
    pub fn hang_startup(&self) {
        self.startup_hangs.store(true, Ordering::SeqCst);
    }

    /// Every shutdown from now on hangs.
    pub fn hang_shutdown(&self) {
        self.shutdown_hangs.store(true, Ordering::SeqCst);
    }

    /// Each start-up takes this long.
    pub fn startup_latency(&self, d: Duration) {
        *self.startup_latency.lock().unwrap() = d;
    }

    /// Health checks fail (`false`) or pass (`true`) from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    pub fn startups(&self) -> usize {
        self.startups.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }

    pub fn shutdowns(&self) -> usize {
        self.shutdowns.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------
// Lookup

#[derive(Debug)]
struct LookupState {
    data: Mutex<HashMap<Key, Value>>,
    latency: Mutex<Duration>,
    behaviour: Mutex<Behaviour>,
    fetches: AtomicUsize,
    key_sets: Mutex<Vec<Vec<Key>>>,
    lifecycle: Lifecycle,
}

/// An in-process [`Lookup`] over a map the test fills. It counts its
/// fetches and keeps the key set of each; its latency and failure mode can
/// be changed at any time. Clones share everything.
#[derive(Debug, Clone)]
pub struct TestLookup(Arc<LookupState>);

impl Default for TestLookup {
    fn default() -> Self {
        Self::new()
    }
}

impl TestLookup {
    /// An empty lookup that answers at once.
    pub fn new() -> Self {
        TestLookup(Arc::new(LookupState {
            data: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
            behaviour: Mutex::new(Behaviour::Ok),
            fetches: AtomicUsize::new(0),
            key_sets: Mutex::new(Vec::new()),
            lifecycle: Lifecycle::default(),
        }))
    }

    /// Holds `value` under `key` (replacing what was there).
    pub fn set(&self, key: impl Into<Key>, value: impl Into<Value>) -> &Self {
        self.0.data.lock().unwrap().insert(key.into(), value.into());
        self
    }

    /// Each fetch takes this long.
    pub fn latency(&self, d: Duration) -> &Self {
        *self.0.latency.lock().unwrap() = d;
        self
    }

    /// How fetches answer from now on.
    pub fn behave(&self, b: Behaviour) -> &Self {
        *self.0.behaviour.lock().unwrap() = b;
        self
    }

    /// `fetch` calls made so far.
    pub fn fetches(&self) -> usize {
        self.0.fetches.load(Ordering::SeqCst)
    }

    /// The keys of each `fetch` call, in call order.
    pub fn key_sets(&self) -> Vec<Vec<Key>> {
        self.0.key_sets.lock().unwrap().clone()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }
}

impl Lookup for TestLookup {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        self.0.key_sets.lock().unwrap().push(keys.to_vec());
        let behaviour = *self.0.behaviour.lock().unwrap();
        let latency = *self.0.latency.lock().unwrap();
        behave(behaviour, latency).await?;
        let data = self.0.data.lock().unwrap();
        Ok(keys
            .iter()
            .filter_map(|k| data.get(k).map(|v| (k.clone(), v.clone())))
            .collect())
    }

    async fn startup(&self) -> Result<(), EnrichError> {
        self.0.lifecycle.startup().await
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        self.0.lifecycle.shutdown().await;
        Ok(())
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        self.0.lifecycle.health_check().await
    }
}

// ---------------------------------------------------------------------------
// Async enricher

#[derive(Debug)]
struct EnricherState {
    behaviour: Mutex<Behaviour>,
    latency: Mutex<Duration>,
    calls: AtomicUsize,
    events_enriched: AtomicU64,
    events_at_shutdown: Mutex<Option<u64>>,
    lifecycle: Lifecycle,
}

/// An [`AsyncEnricher`] that adds one field to every event, after a
/// latency, unless told to fail or hang. It does not guard its own calls,
/// so the pipeline wraps each batch call in its breaker and timeout.
/// Clones share everything.
#[derive(Debug, Clone)]
pub struct TestEnricher {
    name: String,
    field: String,
    value: Value,
    state: Arc<EnricherState>,
}

impl TestEnricher {
    /// Adds `field: value` to every event.
    pub fn new(name: &str, field: &str, value: impl Into<Value>) -> Self {
        TestEnricher {
            name: name.to_owned(),
            field: field.to_owned(),
            value: value.into(),
            state: Arc::new(EnricherState {
                behaviour: Mutex::new(Behaviour::Ok),
                latency: Mutex::new(Duration::ZERO),
                calls: AtomicUsize::new(0),
                events_enriched: AtomicU64::new(0),
                events_at_shutdown: Mutex::new(None),
                lifecycle: Lifecycle::default(),
            }),
        }
    }

    /// How batch calls answer from now on.
    pub fn behave(&self, b: Behaviour) -> &Self {
        *self.state.behaviour.lock().unwrap() = b;
        self
    }

    /// Each batch call takes this long.
    pub fn latency(&self, d: Duration) -> &Self {
        *self.state.latency.lock().unwrap() = d;
        self
    }

    /// Batch calls made so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Events of successful batch calls so far.
    pub fn events_enriched(&self) -> u64 {
        self.state.events_enriched.load(Ordering::SeqCst)
    }

    /// [`events_enriched`](Self::events_enriched) when `shutdown` ran.
    pub fn events_at_shutdown(&self) -> Option<u64> {
        *self.state.events_at_shutdown.lock().unwrap()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.state.lifecycle
    }
}

impl AsyncEnricher for TestEnricher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn startup(&self) -> Result<(), EnrichError> {
        self.state.lifecycle.startup().await
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        *self.state.events_at_shutdown.lock().unwrap() = Some(self.events_enriched());
        self.state.lifecycle.shutdown().await;
        Ok(())
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        self.state.lifecycle.health_check().await
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let behaviour = *self.state.behaviour.lock().unwrap();
        let latency = *self.state.latency.lock().unwrap();
        behave(behaviour, latency).await?;
        for patch in out.iter_mut() {
            patch.insert(self.field.clone(), self.value.clone());
        }
        self.state
            .events_enriched
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Driving an enricher directly

/// What the pipeline would hand an enricher, for calling
/// [`AsyncEnricher::enrich`] outside a pipeline: one set of counters and one
/// breaker for the test, a call timeout, and a fresh deadline per batch.
pub struct Harness {
    base: EnrichContext,
    pub budget: Duration,
}

impl Harness {
    /// Default breaker, 500 ms call timeout, 10 s per batch.
    pub fn new(name: &str) -> Self {
        Self::with_breaker(name, BreakerConfig::default())
    }

    pub fn with_breaker(name: &str, breaker: BreakerConfig) -> Self {
        Harness {
            base: EnrichContext::detached(name)
                .with_breaker(breaker)
                .expect("valid breaker settings"),
            budget: Duration::from_secs(10),
        }
    }

    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.base = self.base.with_call_timeout(d);
        self
    }

    /// A context whose deadline is `budget` from now.
    pub fn ctx(&self) -> EnrichContext {
        self.base.clone().with_budget(self.budget)
    }

    /// The enricher's counters so far.
    pub fn stats(&self) -> EnricherStats {
        self.base.stats()
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.base.breaker_state()
    }

    /// Enriches `events` as one batch and returns the patches; the call
    /// itself must succeed (per-event failures are in the patches).
    pub async fn run<E: AsyncEnricher>(&self, enricher: &E, events: &[Event]) -> Vec<Patch> {
        let ctx = self.ctx();
        let mut out = vec![Patch::default(); events.len()];
        enricher
            .enrich(events, &mut out, &ctx)
            .await
            .expect("a lookup enricher reports failures per event, not for the batch");
        out
    }

    /// [`run`](Self::run) for events keyed by `field`, one per key.
    pub async fn run_keys<L: Lookup>(
        &self,
        enricher: &LookupEnricher<L>,
        field: &'static str,
        keys: &[i64],
    ) -> Vec<Patch> {
        let events: Vec<Event> = keys.iter().map(|k| event_with(field, *k)).collect();
        self.run(enricher, &events).await
    }
}

/// An INFO event with one field, as a log call would make it.
pub fn event_with(field: &'static str, value: impl Into<Value>) -> Event {
    Event::new(tracing::Level::INFO, "test", "hello").with_field(field, value)
}

/// The value a patch adds under `name`.
pub fn patch_field(patch: &Patch, name: &str) -> Option<Value> {
    patch
        .fields()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
}

/// The value an enricher added to `event` under `name`.
pub fn inserted(event: &Event, name: &str) -> Option<Value> {
    event
        .inserted()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
}

/// The event's `enrichment_errors`, as owned pairs.
pub fn errors(event: &Event) -> Vec<(String, String)> {
    event
        .enrichment_errors()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// A sink to wait on

#[derive(Default)]
struct Written {
    events: Mutex<Vec<(Instant, Event)>>,
    notify: Notify,
}

/// What an [`EmittedSink`] received, with the (tokio) time each event was
/// written. Clones share everything.
#[derive(Clone, Default)]
pub struct Emitted(Arc<Written>);

impl Emitted {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink recording into this.
    pub fn sink(&self) -> EmittedSink {
        EmittedSink(self.clone())
    }

    /// The application's events written so far, in order (fapilog's own
    /// "events dropped" records left out).
    pub fn events(&self) -> Vec<Event> {
        self.written().into_iter().map(|(_, e)| e).collect()
    }

    /// Like [`events`](Self::events), with the time each was written.
    pub fn written(&self) -> Vec<(Instant, Event)> {
        self.0
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.target() != "fapilog")
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.written().len()
    }

    /// Waits (letting the pipeline run, and the paused clock advance as its
    /// timers need) until at least `n` application events were written;
    /// returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Event> {
        let wait = async {
            loop {
                let notified = self.0.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.len() >= n {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(VIRTUAL_PATIENCE, wait).await.is_err() {
            panic!(
                "expected {n} events to be written, got {}: {:?}",
                self.len(),
                self.events()
            );
        }
        self.events()
    }
}

/// A sink that records every event and wakes [`Emitted::wait_for`].
pub struct EmittedSink(Emitted);

impl Sink for EmittedSink {
    fn name(&self) -> &str {
        "emitted"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let now = Instant::now();
        self.0
            .0
            .events
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| (now, e.clone())));
        self.0.0.notify.notify_waiters();
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// A pipeline on the test's runtime

/// A builder whose worker runs on the current (test) runtime and writes to
/// `sink`, with a queue large enough that nothing is dropped (on a
/// current-thread runtime, a full queue drops instead of blocking) and a
/// zero drop timeout (so a failing test never blocks on the guard).
pub fn pipeline(sink: EmittedSink) -> fapilog::Builder {
    fapilog::builder()
        .runtime(tokio::runtime::Handle::current())
        .sink(sink)
        .queue_capacity(100_000)
        .drop_timeout(Duration::ZERO)
        .bridge_log(false)
}

/// A started pipeline whose layer feeds this thread's log calls.
pub struct Running {
    pub guard: Guard,
    _default: tracing::subscriber::DefaultGuard,
}

impl Running {
    /// Starts `builder` (waiting for the async enrichers' start-up) and
    /// routes this thread's log calls into it.
    pub async fn start(builder: fapilog::Builder) -> Running {
        match Self::try_start(builder).await {
            Ok(r) => r,
            Err(e) => panic!("pipeline did not start: {e}"),
        }
    }

    pub async fn try_start(builder: fapilog::Builder) -> Result<Running, fapilog::InitError> {
        let (layer, guard) = builder.build_async().await?;
        let default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        Ok(Running {
            guard,
            _default: default,
        })
    }

    /// Drains and stops the pipeline.
    pub async fn shutdown(self) -> ShutdownReport {
        let Running { guard, _default } = self;
        let report = guard.shutdown().await;
        drop(_default);
        report
    }
}

/// Lets `d` pass on the paused clock, running every task whose timer comes
/// due in the meantime (one timer after another, in order). Unlike a single
/// `tokio::time::advance`, chains of timers (a backoff that sleeps again
/// after each failure) are followed through.
pub async fn let_time_pass(d: Duration) {
    tokio::time::sleep(d).await;
}
