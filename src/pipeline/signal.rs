//! A value published once by one side and taken by the other, by async and
//! blocking callers alike: the worker's start-up result (awaited by
//! `build_async`, waited for by `build`) and its final report (awaited by
//! `Guard::shutdown`, waited for by `shutdown_blocking` and `Drop`).
//!
//! Why not a tokio channel: tokio's blocking receivers
//! (`oneshot::Receiver::blocking_recv`, `mpsc::Receiver::blocking_recv`)
//! take no timeout and panic on a runtime thread — and `Guard::drop` and
//! `build()` must wait, bounded, from exactly such threads. A condvar for
//! the blocking side and a `Notify` for the async side do both.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::resilience::deadline::after;

/// A value published once by one side and taken by the other, by async and
/// blocking callers alike (the worker's start-up result, its final report).
#[derive(Debug)]
pub(crate) struct Signal<T> {
    value: Mutex<Option<T>>,
    cv: Condvar,
    notify: Notify,
}

impl<T> Default for Signal<T> {
    fn default() -> Self {
        Signal {
            value: Mutex::new(None),
            cv: Condvar::new(),
            notify: Notify::new(),
        }
    }
}

impl<T> Signal<T> {
    pub(crate) fn publish(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    fn take(&self) -> Option<T> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(crate) fn wait_blocking(&self, timeout: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.take()
    }

    pub(crate) async fn wait(&self, timeout: Duration) -> Option<T> {
        let deadline = after(tokio::time::Instant::now(), timeout);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.take() {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take();
            }
        }
    }
}
