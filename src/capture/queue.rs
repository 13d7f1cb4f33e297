//! The bounded queue between the log call and the worker.
//!
//! A lock-free `crossbeam` array queue holds the events: its `push` never
//! blocks and its `force_push` gives drop-oldest for free, which a
//! `tokio::sync::mpsc` channel cannot. The worker sleeps on a `Notify` that
//! producers only touch when the worker has said it is about to sleep, so the
//! common log call costs one queue push and one relaxed-cost flag read.
//! Producers that must wait for room (the `Block` policy) sleep on a condvar
//! with a deadline, so a log call can stall but never hang.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use tokio::sync::Notify;

use crate::event::Event;
use crate::resilience::deadline::after_std;

/// What a log call does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for room, then drop (counted) if none came. How long a log call
    /// may wait, by the thread it is made on:
    ///
    /// | thread | longest wait |
    /// | --- | --- |
    /// | not a tokio runtime's | the block timeout (default 5 s) |
    /// | a task on a multi-thread runtime | the block timeout, inside `block_in_place`, so the runtime's other tasks move to its other threads |
    /// | a multi-thread runtime's `block_on` (the `main` of `#[tokio::main]`) | the block timeout (that thread runs no other task) |
    /// | a current-thread runtime's | 2 ms (or the block timeout if shorter): longer would freeze every task of that runtime |
    /// | a current-thread runtime's that also runs the pipeline's worker | none: it drops at once, since waiting would stop the very task that makes room |
    ///
    /// Once a wait has timed out, later calls drop at once until the worker
    /// makes progress again, so a stuck pipeline costs one timeout, not one
    /// per call.
    #[default]
    Block,
    /// Drop the event being logged (counted).
    DropNewest,
    /// Make room by dropping the oldest queued event (counted).
    DropOldest,
}

/// The longest a log call made on a current-thread tokio runtime waits for
/// room under [`Overflow::Block`] before it drops.
pub(crate) const CURRENT_THREAD_WAIT: Duration = Duration::from_millis(2);

pub(crate) struct Queue {
    q: ArrayQueue<Event>,
    policy: Overflow,
    block_timeout: Duration,
    /// The worker runs on the application's runtime: a log call made on a
    /// current-thread runtime must not block for room, since the worker may
    /// need that very thread to make room.
    worker_on_app_runtime: bool,
    closed: AtomicBool,
    dropped: AtomicU64,
    displaced: AtomicU64,
    popped: AtomicU64,
    /// `traceparent` fields that did not parse.
    malformed_traces: AtomicU64,
    /// `popped` when a producer last gave up waiting; while the worker has
    /// made no progress since, producers drop at once instead of waiting.
    stalled_at: AtomicU64,
    consumer_sleeping: AtomicBool,
    consumer: Notify,
    producers_waiting: AtomicUsize,
    space_lock: Mutex<()>,
    space: Condvar,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub(crate) fn new(
        capacity: usize,
        policy: Overflow,
        block_timeout: Duration,
        worker_on_app_runtime: bool,
    ) -> Self {
        Queue {
            q: ArrayQueue::new(capacity.max(1)),
            policy,
            block_timeout,
            worker_on_app_runtime,
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            displaced: AtomicU64::new(0),
            popped: AtomicU64::new(0),
            malformed_traces: AtomicU64::new(0),
            stalled_at: AtomicU64::new(u64::MAX),
            consumer_sleeping: AtomicBool::new(false),
            consumer: Notify::new(),
            producers_waiting: AtomicUsize::new(0),
            space_lock: Mutex::new(()),
            space: Condvar::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.q.capacity()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Events pushed out of the queue by newer ones (`DropOldest`).
    pub(crate) fn displaced(&self) -> u64 {
        self.displaced.load(Ordering::Relaxed)
    }

    pub(crate) fn count_malformed_trace(&self) {
        self.malformed_traces.fetch_add(1, Ordering::Relaxed);
    }

    /// `traceparent` fields seen that did not parse.
    pub(crate) fn malformed_traces(&self) -> u64 {
        self.malformed_traces.load(Ordering::Relaxed)
    }

    /// Events taken off the queue by the worker so far.
    pub(crate) fn popped(&self) -> u64 {
        self.popped.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops intake: every later push is counted as dropped.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_consumer_always();
        // Producers waiting for room give up promptly.
        let _g = self.space_lock.lock();
        self.space.notify_all();
    }

    /// Enqueues one event according to the overflow policy. Never panics and
    /// never waits longer than the block timeout.
    pub(crate) fn push(&self, event: Event) {
        if self.is_closed() {
            self.count_dropped(1);
            return;
        }
        match self.policy {
            Overflow::DropNewest => {
                if self.q.push(event).is_err() {
                    self.count_dropped(1);
                }
            }
            Overflow::DropOldest => {
                if self.q.force_push(event).is_some() {
                    self.displaced.fetch_add(1, Ordering::Relaxed);
                    self.count_dropped(1);
                }
            }
            Overflow::Block => {
                if let Err(event) = self.q.push(event) {
                    self.push_slow(event);
                }
            }
        }
        self.wake_consumer();
    }

    fn push_slow(&self, event: Event) {
        // Make sure the worker knows there is work before we wait on it.
        self.wake_consumer_always();
        if self.stalled_at.load(Ordering::Relaxed) == self.popped() {
            self.count_dropped(1);
            return;
        }
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            // A current-thread runtime runs all its tasks on this thread:
            // waiting would freeze every one of them (and, when the worker
            // runs there, the very task that makes room). Wait a moment at
            // most, or not at all.
            Ok(RuntimeFlavor::CurrentThread) => {
                if self.worker_on_app_runtime {
                    self.count_dropped(1);
                } else {
                    self.wait_for_room(event, self.block_timeout.min(CURRENT_THREAD_WAIT));
                }
            }
            // A task on a multi-thread runtime: hand this thread's other
            // tasks (possibly the worker) to the runtime's other threads
            // while we wait.
            Ok(_) if tokio::task::try_id().is_some() => {
                tokio::task::block_in_place(|| self.wait_for_room(event, self.block_timeout))
            }
            // `block_on`'s own thread (it runs no other task), or a handle
            // merely entered: a plain wait.
            Ok(_) => self.wait_for_room(event, self.block_timeout),
            Err(_) => self.wait_for_room(event, self.block_timeout),
        }
    }

    fn wait_for_room(&self, mut event: Event, timeout: Duration) {
        let deadline = after_std(Instant::now(), timeout);
        let backoff = Backoff::new();
        loop {
            // Closed while we waited: the worker may already be gone.
            if self.is_closed() {
                self.count_dropped(1);
                return;
            }
            match self.q.push(event) {
                Ok(()) => return,
                Err(e) => event = e,
            }
            let now = Instant::now();
            if now >= deadline {
                // Only a full wait says the worker is stuck: a short one (on
                // a current-thread runtime) must not make every other
                // caller drop at once.
                if timeout >= self.block_timeout {
                    self.stalled_at.store(self.popped(), Ordering::Relaxed);
                }
                self.count_dropped(1);
                return;
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            let guard = self.space_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.producers_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.q.is_full() && !self.is_closed() {
                let wait = (deadline - now).min(Duration::from_millis(10));
                let _unused = self.space.wait_timeout(guard, wait);
            } else {
                drop(guard);
            }
            self.producers_waiting.fetch_sub(1, Ordering::SeqCst);
            self.wake_consumer_always();
        }
    }

    fn wake_consumer(&self) {
        fence(Ordering::SeqCst);
        if self.consumer_sleeping.load(Ordering::Relaxed) {
            self.wake_consumer_always();
        }
    }

    fn wake_consumer_always(&self) {
        if self.consumer_sleeping.swap(false, Ordering::SeqCst) {
            self.consumer.notify_one();
        }
    }

    /// Takes up to `max` events, in order, into `out`. Returns how many.
    pub(crate) fn pop_into(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.q.pop() {
                Some(e) => {
                    out.push(e);
                    n += 1;
                }
                None => break,
            }
        }
        if n > 0 {
            self.popped.fetch_add(n as u64, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.producers_waiting.load(Ordering::SeqCst) > 0 {
                let _g = self.space_lock.lock();
                self.space.notify_all();
            }
        }
        n
    }

    /// Waits until the queue may hold something, the queue is closed, or
    /// `timeout` passes. Spurious returns are fine: the caller re-checks.
    pub(crate) async fn wait(&self, timeout: Option<Duration>) {
        let notified = self.consumer.notified();
        self.consumer_sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.q.is_empty() || self.is_closed() {
            self.consumer_sleeping.store(false, Ordering::SeqCst);
            return;
        }
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, notified).await;
            }
            None => notified.await,
        }
        self.consumer_sleeping.store(false, Ordering::SeqCst);
    }
}
