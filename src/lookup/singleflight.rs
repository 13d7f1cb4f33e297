//! Single-flight bookkeeping: which keys some batch is fetching now, so a
//! concurrent miss for the same key waits for that fetch instead of making
//! its own.
//!
//! Kept per batch, not per key: a batch that leads keys opens one
//! [`Flight`] for all of them, and the in-flight map points each key at it
//! (an `Arc` clone, no channel per key). A chunk's answers are settled
//! under one lock; they are copied into the flight only when some other
//! batch is waiting on it, which on a stream of distinct keys is never.

use super::FastMap as HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::Key;
use crate::event::SharedValue;

/// The outcome of one key, shared with single-flight waiters.
pub(super) type Resolution = Result<Option<SharedValue>, Arc<str>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One batch's fetch of the keys it leads.
#[derive(Debug)]
struct Flight {
    /// Waiters that joined; answers are kept for them only if any did.
    waiters: AtomicUsize,
    /// Answers kept for waiters.
    answers: Mutex<HashMap<Key, Resolution>>,
    /// Bumped when answers are added, closed when the fetch ends (its
    /// sender is the guard's).
    changed: watch::Receiver<()>,
}

/// The keys some batch is fetching now.
#[derive(Debug, Default)]
pub(super) struct SingleFlight {
    map: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// One call's share of its misses.
pub(super) struct Claim<'a> {
    /// Keys this call fetches, and the guard that settles them.
    pub(super) leaders: Vec<Key>,
    pub(super) guard: InFlightGuard<'a>,
    /// Keys another call is fetching.
    pub(super) waiters: Vec<(Key, Waiter)>,
}

/// A miss that waits for another batch's fetch of its key.
pub(super) struct Waiter {
    flight: Arc<Flight>,
    changed: watch::Receiver<()>,
}

impl SingleFlight {
    /// Splits `missing` into the keys this call leads (nobody is fetching
    /// them: the call must) and those it waits for.
    pub(super) fn claim(&self, missing: Vec<Key>) -> Claim<'_> {
        let (changed, rx) = watch::channel(());
        let flight = Arc::new(Flight {
            waiters: AtomicUsize::new(0),
            answers: Mutex::new(HashMap::default()),
            changed: rx,
        });
        let mut leaders = Vec::with_capacity(missing.len());
        let mut waiters = Vec::new();
        {
            let mut map = lock(&self.map);
            for key in missing {
                // One probe per key: the entry is looked up once, whether
                // it is joined or claimed.
                match map.entry(key) {
                    Entry::Occupied(other) => {
                        let other_flight = other.get();
                        other_flight.waiters.fetch_add(1, Ordering::Relaxed);
                        let waiter = Waiter {
                            flight: other_flight.clone(),
                            changed: other_flight.changed.clone(),
                        };
                        waiters.push((other.key().clone(), waiter));
                    }
                    Entry::Vacant(slot) => {
                        leaders.push(slot.key().clone());
                        slot.insert(flight.clone());
                    }
                }
            }
        }
        Claim {
            guard: InFlightGuard {
                map: &self.map,
                pending: AtomicUsize::new(leaders.len()),
                keys: leaders.clone(),
                flight,
                changed,
            },
            leaders,
            waiters,
        }
    }
}

impl Waiter {
    /// The leader's outcome; `cancelled` when the leader went away without
    /// one.
    pub(super) async fn wait(mut self, key: &Key) -> Resolution {
        loop {
            // Marks the current version seen before looking, so an answer
            // added after the look wakes the loop.
            self.changed.borrow_and_update();
            if let Some(r) = lock(&self.flight.answers).get(key) {
                return r.clone();
            }
            if self.changed.changed().await.is_err() {
                // The fetch ended: what it answered is in by now.
                return lock(&self.flight.answers)
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| Err(Arc::from("cancelled")));
            }
        }
    }
}

/// Settles a batch's keys, and removes from the in-flight map those it
/// did not settle however the fetch ends (completed, failed, or cancelled
/// by a timeout), so later misses fetch them anew.
pub(super) struct InFlightGuard<'a> {
    map: &'a Mutex<HashMap<Key, Arc<Flight>>>,
    flight: Arc<Flight>,
    keys: Vec<Key>,
    /// Keys not settled yet.
    pending: AtomicUsize,
    /// Dropped with the guard: waiters then know the fetch has ended.
    changed: watch::Sender<()>,
}

impl InFlightGuard<'_> {
    /// Takes answered keys out of the in-flight map (from here on a new
    /// miss leads a fetch of its own instead of waiting on this one) and
    /// hands their answers to the batches waiting for them.
    pub(super) fn settle(&self, answered: &[(Key, Resolution)]) {
        if answered.is_empty() {
            return;
        }
        {
            let mut map = lock(self.map);
            for (key, _) in answered {
                if map.get(key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                    map.remove(key);
                }
            }
        }
        self.pending.fetch_sub(
            answered.len().min(self.pending.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        // Waiters join under the map's lock, which was taken above: one
        // that joined is counted now.
        if self.flight.waiters.load(Ordering::Relaxed) > 0 {
            lock(&self.flight.answers).extend(answered.iter().cloned());
            self.changed.send_replace(());
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if *self.pending.get_mut() > 0 {
            let mut map = lock(self.map);
            for key in &self.keys {
                if map.get(key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                    map.remove(key);
                }
            }
        }
        // `changed` goes with the guard: waiting batches wake and take
        // their answers, or "cancelled" for the keys never answered.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(v: i64) -> Resolution {
        Ok(Some(SharedValue::new(crate::Value::from(v))))
    }

    #[tokio::test]
    async fn a_waiter_gets_its_keys_answer_as_soon_as_its_chunk_settles() {
        let sf = SingleFlight::default();
        let lead = sf.claim(vec![Key::from(1i64), Key::from(2i64)]);
        assert_eq!(lead.leaders.len(), 2);
        let mut wait = sf.claim(vec![Key::from(2i64), Key::from(3i64)]);
        assert_eq!(wait.leaders, vec![Key::from(3i64)]);
        let (key, waiter) = wait.waiters.pop().expect("one waiter");
        assert_eq!(key, Key::from(2i64));
        let task = tokio::spawn(async move { waiter.wait(&key).await });
        tokio::task::yield_now().await;
        lead.guard.settle(&[(Key::from(2i64), found(20))]);
        let got = task.await.expect("waiter");
        assert_eq!(got, found(20));
        // Settled: a new miss for 2 leads its own fetch; 1 is still in flight.
        let again = sf.claim(vec![Key::from(1i64), Key::from(2i64)]);
        assert_eq!(again.leaders, vec![Key::from(2i64)]);
        assert_eq!(again.waiters.len(), 1);
    }

    #[tokio::test]
    async fn waiters_of_keys_never_answered_are_cancelled_when_the_fetch_ends() {
        let sf = SingleFlight::default();
        let lead = sf.claim(vec![Key::from(1i64), Key::from(2i64)]);
        let mut wait = sf.claim(vec![Key::from(1i64), Key::from(2i64)]);
        let (k2, w2) = wait.waiters.pop().expect("waiter");
        let (k1, w1) = wait.waiters.pop().expect("waiter");
        let t1 = tokio::spawn(async move { w1.wait(&k1).await });
        let t2 = tokio::spawn(async move { w2.wait(&k2).await });
        lead.guard.settle(&[(Key::from(1i64), found(10))]);
        drop(lead);
        assert_eq!(t1.await.expect("waiter"), found(10));
        assert_eq!(t2.await.expect("waiter").unwrap_err().as_ref(), "cancelled");
        // Nothing left in flight.
        assert_eq!(sf.claim(vec![Key::from(2i64)]).leaders.len(), 1);
    }

    #[test]
    fn an_ended_fetch_leaves_a_later_fetch_of_the_same_key_in_flight() {
        let sf = SingleFlight::default();
        let first = sf.claim(vec![Key::from(1i64), Key::from(2i64)]);
        first.guard.settle(&[(Key::from(1i64), found(1))]);
        let second = sf.claim(vec![Key::from(1i64)]);
        assert_eq!(second.leaders.len(), 1);
        drop(first);
        // 1 is the second fetch's: still in flight.
        let third = sf.claim(vec![Key::from(1i64)]);
        assert!(third.leaders.is_empty());
        assert_eq!(third.waiters.len(), 1);
    }
}
