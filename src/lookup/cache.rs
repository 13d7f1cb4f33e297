//! The lookup cache: TTL, a separate TTL for not-found, bounds in entries
//! *and* bytes, and optional stale values for when a fetch fails.
//!
//! Both bounds with one moka cache: each entry weighs its estimated size
//! in bytes, but never less than `max_bytes / max_entries`, and the cache
//! holds at most `max_bytes` of weight. Small values are then bounded by
//! the entry count, large ones by their bytes.
//!
//! Storage and eviction are `moka`'s (size-bounded, TinyLFU admission, an
//! O(1) policy — no hand-written LRU). Freshness is decided here, against
//! `tokio::time::Instant`, so expiry follows tokio's clock (and tests can
//! drive it with a paused clock); moka's own per-entry expiry only bounds
//! how long memory is held: `ttl + max_stale` for values, the negative TTL
//! for not-found. Errors are never cached.

use std::time::Duration;

use moka::Expiry;
use tokio::time::Instant;

use super::Key;
use crate::event::Value;

/// Longer than any process lives; keeps moka's clock arithmetic in range.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: the lookup said the key does not exist.
    value: Option<Value>,
    at: Instant,
}

struct Expire {
    ttl_found: Duration,
    ttl_not_found: Duration,
}

impl Expiry<Key, Entry> for Expire {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.value.is_some() {
            self.ttl_found
        } else {
            self.ttl_not_found
        })
    }

    fn expire_after_update(
        &self,
        key: &Key,
        value: &Entry,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

/// About how many bytes a key takes in the cache.
fn key_size(key: &Key) -> usize {
    std::mem::size_of::<Key>()
        + match key {
            Key::Str(s) => s.len(),
            _ => 0,
        }
}

/// About how many bytes a JSON value takes in memory: its text plus the
/// containers' overhead. An estimate, but one that grows with the value.
pub(crate) fn value_size(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| 24 + k.len() + value_size(v)).sum(),
        _ => 0,
    }
}

/// What the cache knows about a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cached {
    /// A fresh value.
    Found(Value),
    /// A fresh value within the refresh-ahead window before its TTL ends.
    Refresh(Value),
    /// Freshly known not to exist.
    NotFound,
    /// Expired, but within `max_stale`: usable if a fetch fails.
    Stale(Value),
    /// Nothing usable.
    Miss,
}

/// Cache settings; see [`LookupEnricherBuilder`](super::LookupEnricherBuilder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheConfig {
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_stale: Option<Duration>,
}

pub(crate) struct LookupCache {
    inner: moka::future::Cache<Key, Entry, foldhash::fast::RandomState>,
    cfg: CacheConfig,
    /// Values read this long before their TTL ends are `Refresh`.
    refresh_window: Duration,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache")
            .field("entries", &self.inner.entry_count())
            .field("config", &self.cfg)
            .finish()
    }
}

impl LookupCache {
    pub(crate) fn new(cfg: CacheConfig, refresh_window: Duration) -> Self {
        let floor = (cfg.max_bytes / cfg.max_entries.max(1)).clamp(1, u64::from(u32::MAX));
        let inner = moka::future::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(move |key: &Key, entry: &Entry| -> u32 {
                let bytes = key_size(key) + entry.value.as_ref().map_or(0, value_size);
                u32::try_from((bytes as u64).max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(Expire {
                ttl_found: cfg
                    .ttl
                    .saturating_add(cfg.max_stale.unwrap_or(Duration::ZERO))
                    .min(FOREVER),
                ttl_not_found: cfg.negative_ttl.min(FOREVER),
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        LookupCache {
            inner,
            cfg,
            refresh_window,
        }
    }

    pub(crate) async fn get(&self, key: &Key) -> Cached {
        let Some(entry) = self.inner.get(key).await else {
            return Cached::Miss;
        };
        let age = entry.at.elapsed();
        match entry.value {
            Some(v) if age < self.cfg.ttl => {
                if !self.refresh_window.is_zero()
                    && age >= self.cfg.ttl.saturating_sub(self.refresh_window)
                {
                    Cached::Refresh(v)
                } else {
                    Cached::Found(v)
                }
            }
            Some(v) => match self.cfg.max_stale {
                Some(max) if age < self.cfg.ttl.saturating_add(max) => Cached::Stale(v),
                _ => Cached::Miss,
            },
            None if age < self.cfg.negative_ttl => Cached::NotFound,
            None => Cached::Miss,
        }
    }

    pub(crate) async fn insert(&self, key: Key, value: Option<Value>) {
        self.insert_aged(key, value, Duration::ZERO).await;
    }

    /// Inserts an entry already `age` old (read from a shared tier, where
    /// it has less than a full TTL left): it expires as it would have, had
    /// it been fetched here.
    pub(crate) async fn insert_aged(&self, key: Key, value: Option<Value>, age: Duration) {
        let ttl = if value.is_some() {
            self.cfg.ttl
        } else {
            self.cfg.negative_ttl
        };
        if ttl.is_zero() || age >= ttl {
            return;
        }
        let now = Instant::now();
        self.inner
            .insert(
                key,
                Entry {
                    value,
                    at: now.checked_sub(age).unwrap_or(now),
                },
            )
            .await;
    }

    /// The TTLs of found and of not-found entries.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ttls(&self) -> (Duration, Duration) {
        (self.cfg.ttl, self.cfg.negative_ttl)
    }

    /// Entries held (after pending evictions are applied).
    pub(crate) async fn entry_count(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100,
            max_bytes: 64 << 20,
            max_stale: Some(Duration::from_secs(30)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn value_expires_then_is_stale_then_gone() {
        let c = LookupCache::new(cfg(), Duration::ZERO);
        let k = Key::from(7i64);
        c.insert(k.clone(), Some(Value::from("a"))).await;
        assert_eq!(c.get(&k).await, Cached::Found(Value::from("a")));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(c.get(&k).await, Cached::Stale(Value::from("a")));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.get(&k).await, Cached::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_has_its_own_ttl() {
        let c = LookupCache::new(cfg(), Duration::ZERO);
        let k = Key::from("ghost");
        c.insert(k.clone(), None).await;
        assert_eq!(c.get(&k).await, Cached::NotFound);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(c.get(&k).await, Cached::NotFound);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.get(&k).await, Cached::Miss);
    }

    #[tokio::test]
    async fn byte_bound_evicts_large_values() {
        // 1 MiB values, 8 MiB of cache: at most 8 of them, whatever the
        // entry bound says.
        let c = LookupCache::new(
            CacheConfig {
                max_entries: 10_000,
                max_bytes: 8 << 20,
                ..cfg()
            },
            Duration::ZERO,
        );
        let big = Value::String("x".repeat(1 << 20));
        for i in 0..64i64 {
            c.insert(Key::from(i), Some(big.clone())).await;
        }
        let n = c.entry_count().await;
        assert!(
            (1..=8).contains(&n),
            "cache holds {n} entries of 1 MiB, bound is 8 MiB"
        );
    }

    #[test]
    fn value_size_grows_with_the_value() {
        let small = value_size(&serde_json::json!({"id": 1}));
        let big = value_size(&serde_json::json!({"id": 1, "bio": "x".repeat(10_000)}));
        assert!(small < 200, "{small}");
        assert!(big > 10_000, "{big}");
    }

    #[tokio::test]
    async fn size_bound_evicts() {
        let c = LookupCache::new(
            CacheConfig {
                max_entries: 50,
                ..cfg()
            },
            Duration::ZERO,
        );
        for i in 0..500i64 {
            c.insert(Key::from(i), Some(Value::from(i))).await;
        }
        let n = c.entry_count().await;
        assert!(n <= 50, "cache holds {n} entries, bound is 50");
    }
}
