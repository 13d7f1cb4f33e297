//! Single-flight bookkeeping: which keys some batch is fetching now, so a
//! concurrent miss for the same key waits for that fetch instead of making
//! its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::Key;
use crate::event::Value;

/// The outcome of one key, shared with single-flight waiters.
pub(super) type Resolution = Result<Option<Value>, Arc<str>>;
pub(super) type InFlight = Mutex<HashMap<Key, watch::Receiver<Option<Resolution>>>>;

/// Removes this fetch's keys from the in-flight map however the fetch ends
/// (completed, failed, or cancelled by a timeout).
pub(super) struct InFlightGuard<'a> {
    pub(super) map: &'a InFlight,
    pub(super) pending: Mutex<HashSet<Key>>,
}

impl InFlightGuard<'_> {
    /// Takes a key out of the in-flight map once its result is known, and
    /// says whether any other batch is waiting for it. From here on a new
    /// miss leads a fetch of its own instead of waiting on this one.
    pub(super) fn settle(&self, key: &Key, tx: &watch::Sender<Option<Resolution>>) -> bool {
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
