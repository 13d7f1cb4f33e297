//! The OTLP sink's retry buffer and the task that empties it.
//!
//! Why a buffer of its own: a collector that is down, restarting or
//! shedding load (`UNAVAILABLE`, 429, 503 with `Retry-After`) must not slow
//! the pipeline, let alone the caller. `write_batch` only encodes and
//! queues; the export task sends the queue in requests, oldest first, up
//! to two at a time (so records of different requests may arrive out of
//! order; each has its timestamp), and retries each with backoff for as
//! long as the collector refuses it for now (up to `give_up_after`). While it waits, new records queue behind
//! it up to the buffer's bounds (events and bytes, in flight included);
//! records that find it full are counted as undelivered at once. Every
//! record is, in the end, counted for this sink as written or undelivered.
//!
//! A collector that is up but slower than the application logs is not an
//! outage: then a full buffer makes `write_batch` wait for room (at most
//! half the sink timeout), which slows the pipeline as any slow sink does
//! and lets the queue's overflow policy decide — rather than losing
//! records a healthy collector would have taken. Only while the collector
//! is refusing (the last answer was "retry later" or no answer) does a
//! full buffer count records as undelivered without waiting.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Config;
use super::map::{self, Pending};
use super::transport::{Answer, Prepared, Transport};
use crate::observe::{HealthStatus, SinkCounters};

pub(super) struct Buffer {
    state: Mutex<State>,
    /// Records queued, a flush asked for, or closing: for the task.
    wake: Notify,
    /// Room freed in the buffer: for a `push` waiting for it.
    room: Notify,
    /// The buffer ran empty (or the task ended): for `close`.
    idle: Notify,
    pub(super) counters: Arc<SinkCounters>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Records held, queued or in flight.
    events: usize,
    bytes: usize,
    flush: bool,
    closing: bool,
    running: bool,
    /// The collector's last answer was "not now" (or none came).
    refusing: bool,
}

impl Buffer {
    pub(super) fn new(counters: Arc<SinkCounters>) -> Self {
        Buffer {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            room: Notify::new(),
            idle: Notify::new(),
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the records, in order. When the buffer is full it waits for
    /// room (up to `max_wait`) while the collector is taking requests, and
    /// counts the rest as undelivered at once while it is refusing them.
    pub(super) async fn push(&self, records: Vec<Pending>, config: &Config, max_wait: Duration) {
        let (mut full, mut too_big) = (0u64, 0u64);
        let deadline = Instant::now() + max_wait;
        let mut records = records.into_iter().peekable();
        let mut timed_out = false;
        while records.peek().is_some() {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let wake;
            {
                let mut s = self.lock();
                while let Some(p) = records.peek() {
                    let bytes = p.bytes();
                    if bytes > config.max_request_bytes {
                        too_big += u64::from(p.counted);
                    } else if s.events < config.buffer_events
                        && s.bytes + bytes <= config.buffer_bytes
                    {
                        s.events += 1;
                        s.bytes += bytes;
                        let p = records.next().expect("peeked");
                        s.queue.push_back(p);
                        continue;
                    } else if s.refusing || s.closing || timed_out {
                        full += u64::from(p.counted);
                    } else {
                        // Wait for room; have what is queued sent meanwhile.
                        s.flush = true;
                        break;
                    }
                    records.next();
                }
                self.counters
                    .buffered
                    .store(s.events as u64, Ordering::Relaxed);
                wake = s.queue.len() >= config.max_batch || s.flush;
            }
            if wake {
                self.wake.notify_one();
            }
            if records.peek().is_some() && tokio::time::timeout_at(deadline, room).await.is_err() {
                timed_out = true;
            }
        }
        if too_big > 0 {
            self.undelivered(
                too_big,
                format!(
                    "{too_big} OTLP records larger than the request limit ({} bytes) undelivered",
                    config.max_request_bytes
                ),
            );
        }
        if full > 0 {
            let why = if timed_out {
                format!(
                    "OTLP collector too slow: the retry buffer stayed full for {max_wait:?}; {full} records undelivered"
                )
            } else {
                format!(
                    "OTLP retry buffer full ({} events, {} bytes) while the collector refuses: {full} records undelivered",
                    config.buffer_events, config.buffer_bytes
                )
            };
            self.undelivered(full, why);
        }
    }

    fn undelivered(&self, n: u64, why: String) {
        self.counters.undelivered.fetch_add(n, Ordering::Relaxed);
        self.counters.fail(why);
    }

    /// Asks the task to send what is queued now.
    pub(super) fn flush(&self) {
        self.lock().flush = true;
        self.wake.notify_one();
    }

    /// Whether the task must be started (it is started once, on the
    /// pipeline's runtime, by the first write).
    pub(super) fn needs_task(&self) -> bool {
        let mut s = self.lock();
        !std::mem::replace(&mut s.running, true)
    }

    /// Stops intake and waits until the task has sent (or given up on)
    /// everything held. The pipeline bounds the wait by its deadline.
    pub(super) async fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let s = self.lock();
                if s.events == 0 || !s.running {
                    return;
                }
            }
            idle.await;
        }
    }

    /// The next request's records: up to `max_batch` records and
    /// `max_request_bytes`, once there are that many, a flush was asked
    /// for or the sink is closing; `None` when closing and empty.
    async fn next(&self, config: &Config) -> Option<Vec<Pending>> {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            {
                let mut s = self.lock();
                let ready = s.queue.len() >= config.max_batch || s.flush || s.closing;
                if ready && !s.queue.is_empty() {
                    let mut bytes = 0;
                    let mut n = 0;
                    for p in s.queue.iter().take(config.max_batch) {
                        let b = p.bytes();
                        if n > 0 && bytes + b > config.max_request_bytes {
                            break;
                        }
                        bytes += b;
                        n += 1;
                    }
                    let chunk: Vec<Pending> = s.queue.drain(..n).collect();
                    s.flush = !s.queue.is_empty() && s.flush;
                    return Some(chunk);
                }
                if s.queue.is_empty() {
                    s.flush = false;
                    if s.closing {
                        return None;
                    }
                }
            }
            if tokio::time::timeout(LINGER, wake).await.is_err() {
                self.lock().flush = true;
            }
        }
    }

    /// Releases a request's records from the buffer.
    fn done(&self, events: usize, bytes: usize) {
        let empty;
        {
            let mut s = self.lock();
            s.events -= events;
            s.bytes -= bytes;
            empty = s.events == 0;
            self.counters
                .buffered
                .store(s.events as u64, Ordering::Relaxed);
        }
        self.room.notify_waiters();
        if empty {
            self.idle.notify_waiters();
        }
    }

    fn refusing(&self, refusing: bool) {
        self.lock().refusing = refusing;
        if refusing {
            // Writers waiting for room stop waiting.
            self.room.notify_waiters();
        }
    }

    fn ended(&self) {
        self.lock().running = false;
        self.idle.notify_waiters();
        self.room.notify_waiters();
    }
}

/// Longest records wait for a full request or a flush before they are
/// sent anyway (a safety net: the pipeline flushes whenever its queue
/// runs empty).
const LINGER: Duration = Duration::from_millis(200);

/// Requests in flight at once: while one waits for its answer the next is
/// on its way (a collector's answer takes a round trip and a decode; with
/// one at a time the link would idle for both).
const IN_FLIGHT: usize = 2;

/// The export task: sends the buffer's records until the sink closes.
pub(super) async fn run(buffer: Arc<Buffer>, config: Arc<Config>, prepared: Prepared) {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;

    let transport = prepared.connect();
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            chunk = buffer.next(&config), if in_flight.len() < IN_FLIGHT => match chunk {
                Some(chunk) => in_flight.push(send(&buffer, &config, transport.clone(), chunk)),
                None => break,
            },
        }
    }
    while in_flight.next().await.is_some() {}
    buffer.ended();
}

/// Sends one request, retrying it while the collector says "not now",
/// and accounts for its records.
async fn send(buffer: &Buffer, config: &Config, mut transport: Transport, chunk: Vec<Pending>) {
    let c = &buffer.counters;
    let events = chunk.len();
    let bytes: usize = chunk.iter().map(Pending::bytes).sum();
    let counted = chunk.iter().filter(|p| p.counted).count() as u64;
    let request = Bytes::from(map::request(&config.resource_bytes, &chunk));
    drop(chunk);
    let first = Instant::now();
    let mut backoff = config.retry_min;
    loop {
        // The transport has its own timeout; this one is a backstop.
        let answer = match tokio::time::timeout(
            config.timeout + Duration::from_secs(1),
            transport.send(&request),
        )
        .await
        {
            Ok(a) => a,
            Err(_) => Answer::Retry {
                after: None,
                message: format!("OTLP export took longer than {:?}", config.timeout),
            },
        };
        match answer {
            Answer::Accepted { rejected, message } => {
                let rejected = rejected.min(counted);
                c.written.fetch_add(counted - rejected, Ordering::Relaxed);
                // A message with nothing rejected is a warning, not a
                // failure (the OTLP specification's partial success).
                if rejected > 0 {
                    c.undelivered.fetch_add(rejected, Ordering::Relaxed);
                    c.fail(format!(
                        "OTLP collector rejected {rejected} of {events} records: {message}"
                    ));
                }
                c.set_status(HealthStatus::Up);
                buffer.refusing(false);
                break;
            }
            Answer::Refused { message } => {
                c.undelivered.fetch_add(counted, Ordering::Relaxed);
                c.fail(format!("{message}; {events} records undelivered"));
                c.set_status(HealthStatus::Down);
                break;
            }
            Answer::Retry { after, message } => {
                let spent = first.elapsed();
                if spent >= config.give_up_after {
                    c.undelivered.fetch_add(counted, Ordering::Relaxed);
                    c.fail(format!(
                        "{message}; gave up after {spent:?}: {events} records undelivered"
                    ));
                    c.set_status(HealthStatus::Down);
                    break;
                }
                c.fail(message);
                c.set_status(HealthStatus::Degraded);
                buffer.refusing(true);
                let wait = after
                    .unwrap_or(backoff)
                    .min(config.give_up_after - spent)
                    .max(Duration::from_millis(1));
                tokio::time::sleep(wait).await;
                backoff = backoff.saturating_mul(2).min(config.retry_max);
            }
        }
    }
    buffer.done(events, bytes);
}
