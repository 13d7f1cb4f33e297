//! Helpers shared by the integration tests: sinks that collect, count,
//! stall, fail, panic or log, and a way to run a pipeline under a
//! subscriber of the test's own (so tests in one binary never touch the
//! global subscriber).

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fapilog::{Event, Guard, Sink, SinkError, Value};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

pub mod async_support;
pub mod proxy;

/// Generous upper bound for anything a test waits for; only reached when
/// the behaviour under test is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Starts `builder` and returns a dispatcher that feeds it, for use with
/// `tracing::dispatcher::with_default`, plus the pipeline's guard.
pub fn start(builder: fapilog::Builder) -> (Dispatch, Guard) {
    let (layer, guard) = builder.build().expect("pipeline starts");
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    (dispatch, guard)
}

/// [`start`] with the filter `init` would install (the environment
/// ignored, so a developer's `RUST_LOG` cannot change the outcome).
pub fn start_filtered(builder: fapilog::Builder) -> (Dispatch, Guard) {
    use tracing_subscriber::Layer;
    let builder = builder.ignore_filter_env();
    let filter = builder.env_filter().expect("valid filter");
    let (layer, guard) = builder.build().expect("pipeline starts");
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer.with_filter(filter)));
    (dispatch, guard)
}

/// [`start`] for async code, where `build` must not block the thread.
pub async fn start_async(builder: fapilog::Builder) -> (Dispatch, Guard) {
    let (layer, guard) = builder.build_async().await.expect("pipeline starts");
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    (dispatch, guard)
}

/// Polls `cond` until it holds or `PATIENCE` runs out; returns whether it
/// held. A deadline against hangs, not a timing assertion.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Events written by fapilog itself (the "events dropped" record).
pub fn is_internal(e: &Event) -> bool {
    e.target() == "fapilog"
}

/// An event field as `u64`, panicking with a useful message otherwise.
pub fn u64_field(e: &Event, name: &str) -> u64 {
    e.field(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("event {e:?} has no u64 field `{name}`"))
}

// ---------------------------------------------------------------------------
// Collecting

/// Shared view of everything a [`CollectingSink`] received, in order.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<Event>>>);

impl Collected {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink appending to this collection.
    pub fn sink(&self) -> CollectingSink {
        CollectingSink {
            out: self.clone(),
            name: "collecting",
        }
    }

    /// A copy of every event received so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The events received so far that the application logged (leaving out
    /// fapilog's own records).
    pub fn app_events(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| !is_internal(e))
            .collect()
    }

    /// fapilog's own records received so far.
    pub fn internal_events(&self) -> Vec<Event> {
        self.events().into_iter().filter(is_internal).collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn extend(&self, events: &[Event]) {
        self.0.lock().unwrap().extend_from_slice(events);
    }
}

/// Keeps a copy of every event it is given.
pub struct CollectingSink {
    out: Collected,
    name: &'static str,
}

impl CollectingSink {
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

impl Sink for CollectingSink {
    fn name(&self) -> &str {
        self.name
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.out.extend(events);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Counting

/// Counts application events and remembers the highest `seq` it saw, for
/// volumes too large to keep.
#[derive(Clone, Default)]
pub struct Counter {
    app: Arc<AtomicU64>,
    internal: Arc<AtomicU64>,
}

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sink(&self) -> CountingSink {
        CountingSink(self.clone())
    }

    /// Application events received.
    pub fn app(&self) -> u64 {
        self.app.load(Ordering::SeqCst)
    }

    /// fapilog's own records received.
    pub fn internal(&self) -> u64 {
        self.internal.load(Ordering::SeqCst)
    }
}

pub struct CountingSink(Counter);

impl Sink for CountingSink {
    fn name(&self) -> &str {
        "counting"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let internal = events.iter().filter(|e| is_internal(e)).count() as u64;
        self.0.internal.fetch_add(internal, Ordering::SeqCst);
        self.0
            .app
            .fetch_add(events.len() as u64 - internal, Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Stalling

/// A gate a sink waits at until the test opens it; once open it stays open.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn pass(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts occurrences and lets another thread wait for a number of them.
#[derive(Clone, Default)]
pub struct Signal(Arc<(Mutex<u64>, Condvar)>);

impl Signal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raise(&self) {
        let (n, cv) = &*self.0;
        *n.lock().unwrap() += 1;
        cv.notify_all();
    }

    /// Waits until raised at least `times` times; false if `PATIENCE` ran
    /// out first.
    pub fn wait_for(&self, times: u64) -> bool {
        let (n, cv) = &*self.0;
        let guard = n.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, PATIENCE, |n| *n < times)
            .unwrap();
        *guard >= times
    }
}

/// Collects events like [`CollectingSink`], but every `write_batch` first
/// raises `entered` and then waits for `gate`; with `delay`, each batch also
/// takes that long to write.
pub struct StallingSink {
    pub out: Collected,
    pub gate: Gate,
    pub entered: Signal,
    pub delay: Option<Duration>,
}

impl StallingSink {
    pub fn new(out: &Collected, gate: &Gate, entered: &Signal) -> Self {
        StallingSink {
            out: out.clone(),
            gate: gate.clone(),
            entered: entered.clone(),
            delay: None,
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

impl Sink for StallingSink {
    fn name(&self) -> &str {
        "stalling"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.entered.raise();
        self.gate.pass().await;
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        self.out.extend(events);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Failing

/// Fails every write, counting the attempts.
#[derive(Default)]
pub struct FailingSink {
    pub writes: Arc<AtomicU64>,
}

pub const FAILING_SINK_ERROR: &str = "disk on fire";

impl Sink for FailingSink {
    fn name(&self) -> &str {
        "failing"
    }

    async fn write_batch(&mut self, _events: &[Event]) -> Result<(), SinkError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Err(SinkError::msg(FAILING_SINK_ERROR))
    }
}

/// Panics on every write, counting the attempts.
#[derive(Default)]
pub struct PanickingSink {
    pub writes: Arc<AtomicU64>,
}

impl Sink for PanickingSink {
    fn name(&self) -> &str {
        "panicking"
    }

    async fn write_batch(&mut self, _events: &[Event]) -> Result<(), SinkError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        panic!("panicking sink");
    }
}

// ---------------------------------------------------------------------------
// Logging from inside a sink

/// Collects events and, on every write, logs through `dispatch` (the very
/// subscriber that feeds the pipeline), as a sink whose HTTP client or
/// driver uses `tracing` would.
pub struct LoggingSink {
    pub out: Collected,
    pub dispatch: Arc<OnceLock<Dispatch>>,
    pub logged: Arc<AtomicU64>,
}

pub const SINK_OWN_MESSAGE: &str = "sink's own log line";

impl Sink for LoggingSink {
    fn name(&self) -> &str {
        "logging"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.out.extend(events);
        let dispatch = self.dispatch.get().expect("dispatch set before logging");
        tracing::dispatcher::with_default(dispatch, || {
            tracing::info!(batch = events.len(), "{}", SINK_OWN_MESSAGE);
            tracing::warn!("a second line from the sink");
        });
        self.logged.fetch_add(2, Ordering::SeqCst);
        Ok(())
    }
}
