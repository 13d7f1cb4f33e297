//! Single-flight bookkeeping: which keys some batch is fetching now, so a
//! concurrent miss for the same key waits for that fetch instead of making
//! its own.

use super::{FastMap as HashMap, FastSet as HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::Key;
use crate::event::Value;

/// The outcome of one key, shared with single-flight waiters.
pub(super) type Resolution = Result<Option<Value>, Arc<str>>;

/// What the leader of a key sends its waiters.
pub(super) type Leader = watch::Sender<Option<Resolution>>;

type InFlight = Mutex<HashMap<Key, watch::Receiver<Option<Resolution>>>>;

/// The keys some batch is fetching now.
#[derive(Debug, Default)]
pub(super) struct SingleFlight {
    map: InFlight,
}

/// One call's share of its misses.
pub(super) struct Claim {
    /// Keys this call fetches, with the sender for their waiters.
    pub(super) leaders: Vec<(Key, Leader)>,
    /// Keys another call is fetching.
    pub(super) waiters: Vec<(Key, Waiter)>,
}

/// A miss that waits for another batch's fetch of its key.
pub(super) struct Waiter(watch::Receiver<Option<Resolution>>);

impl SingleFlight {
    /// Splits `missing` into the keys this call leads (nobody is fetching
    /// them: the call must) and those it waits for.
    pub(super) fn claim(&self, missing: Vec<Key>) -> Claim {
        let mut leaders = Vec::new();
        let mut waiters = Vec::new();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for key in missing {
            match map.get(&key) {
                Some(rx) => waiters.push((key, Waiter(rx.clone()))),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx);
                    leaders.push((key, tx));
                }
            }
        }
        Claim { leaders, waiters }
    }

    /// Guards the keys a call leads until each is settled.
    pub(super) fn guard<'k>(&self, leading: impl Iterator<Item = &'k Key>) -> InFlightGuard<'_> {
        InFlightGuard {
            map: &self.map,
            pending: Mutex::new(leading.cloned().collect()),
        }
    }
}

impl Waiter {
    /// The leader's outcome; `cancelled` when the leader went away without
    /// one.
    pub(super) async fn wait(mut self) -> Resolution {
        match self.0.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err(Arc::from("cancelled"))),
            Err(_) => Err(Arc::from("cancelled")),
        }
    }
}

/// Removes this fetch's keys from the in-flight map however the fetch ends
/// (completed, failed, or cancelled by a timeout).
pub(super) struct InFlightGuard<'a> {
    map: &'a InFlight,
    pending: Mutex<HashSet<Key>>,
}

impl InFlightGuard<'_> {
    /// Takes a key out of the in-flight map once its result is known, and
    /// says whether any other batch is waiting for it. From here on a new
    /// miss leads a fetch of its own instead of waiting on this one.
    pub(super) fn settle(&self, key: &Key, tx: &Leader) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        map.remove(key);
        // The map's own receiver is gone: any left belong to waiters.
        tx.receiver_count() > 0
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for k in self
            .pending
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            map.remove(&k);
        }
    }
}
