//! The lookup cache: TTL, a separate TTL for not-found, bounds in entries
//! *and* bytes, and optional stale values for when a fetch fails.
//!
//! Both bounds with one weighted cache: each entry weighs its estimated
//! size in bytes, but never less than `max_bytes / max_entries`, and the
//! cache holds at most `max_bytes` of weight. Small values are then bounded
//! by the entry count, large ones by their bytes.
//!
//! Storage and eviction are `quick_cache`'s: a sharded, lock-based map with
//! CLOCK-Pro/S3-FIFO style eviction. A key seen once enters a small "cold"
//! section and is the first to go, so a stream of one-hit keys (a cold
//! start, a scan) costs a map insert and an O(1) eviction each and does not
//! push out the hot keys; a key evicted from there and seen again is
//! admitted as hot (it is remembered as a "ghost" hash). While the cache
//! is full, a fetched key is not even inserted at its first sighting, only
//! at its second (a doorkeeper of two bits per key): a cold stream then
//! costs neither an insert nor an eviction per key, for one more fetch of
//! a key that turns out to be hot. It replaced
//! `moka`, whose insert path (concurrent table rehashes, a housekeeping
//! pass, a frequency sketch) was 35–40% of the worker's CPU per cold event.
//!
//! Values are held as [`SharedValue`]s: a hit shares the cached value rather
//! than copying it, and the one copy made per event is the one merged into
//! it. Freshness is decided here, against `tokio::time::Instant`, so expiry
//! follows tokio's clock (and tests can drive it with a paused clock). An
//! entry past any use (beyond its TTL and `max_stale`) is removed when it
//! is read; otherwise expired entries are the first evicted, like any
//! entry not read again, and never hold more than the bounds. Errors are
//! never cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Key;
use crate::event::{SharedValue, Value};

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: the lookup said the key does not exist.
    value: Option<SharedValue>,
    at: Instant,
    /// Computed once at insert: the cache asks for it when it evicts.
    weight: u32,
}

#[derive(Clone)]
struct EntryWeight;

impl quick_cache::Weighter<Key, Entry> for EntryWeight {
    fn weight(&self, _key: &Key, entry: &Entry) -> u64 {
        u64::from(entry.weight)
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
    Found(SharedValue),
    /// A fresh value within the refresh-ahead window before its TTL ends.
    Refresh(SharedValue),
    /// Freshly known not to exist.
    NotFound,
    /// Expired, but within `max_stale`: usable if a fetch fails.
    Stale(SharedValue),
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

type Inner = quick_cache::sync::Cache<
    Key,
    Entry,
    EntryWeight,
    foldhash::fast::RandomState,
    quick_cache::sync::DefaultLifecycle<Key, Entry>,
>;

pub(crate) struct LookupCache {
    inner: Inner,
    /// The inner cache's weight capacity and shard count.
    capacity: u64,
    shards: u64,
    doorkeeper: Doorkeeper,
    cfg: CacheConfig,
    /// The least weight of an entry: `max_bytes / max_entries`.
    floor: u64,
    /// Values read this long before their TTL ends are `Refresh`.
    refresh_window: Duration,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache")
            .field("entries", &self.inner.len())
            .field("config", &self.cfg)
            .finish()
    }
}

impl LookupCache {
    /// `max_value_bytes`: the largest value the enricher accepts; the cache
    /// is split in shards (each bounded by its share of `max_bytes`) only
    /// as far as such a value still fits in one.
    pub(crate) fn new(cfg: CacheConfig, refresh_window: Duration, max_value_bytes: usize) -> Self {
        let max_entries = cfg.max_entries.max(1);
        let floor = (cfg.max_bytes / max_entries).clamp(1, u64::from(u32::MAX));
        // A few shards: the worker runs on one thread unless told
        // otherwise, and each shard is bounded by its share of the weight.
        let largest = (max_value_bytes as u64).saturating_add(256).max(floor);
        let shards = (cfg.max_bytes / largest).clamp(1, 4) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(max_entries).unwrap_or(usize::MAX))
            .weight_capacity(cfg.max_bytes.max(1))
            .shards(shards)
            .build()
            .expect("weight capacity and estimated items are set");
        let inner = Inner::with_options(
            options,
            EntryWeight,
            foldhash::fast::RandomState::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        );
        LookupCache {
            capacity: inner.capacity(),
            shards: inner.num_shards() as u64,
            inner,
            doorkeeper: Doorkeeper::new(max_entries),
            cfg,
            floor,
            refresh_window,
        }
    }

    /// What the cache knows about `key` at `now` (read once per batch).
    pub(crate) fn get(&self, key: &Key, now: Instant) -> Cached {
        let Some(entry) = self.inner.get(key) else {
            return Cached::Miss;
        };
        let age = now.saturating_duration_since(entry.at);
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
                _ => self.expired(key),
            },
            None if age < self.cfg.negative_ttl => Cached::NotFound,
            None => self.expired(key),
        }
    }

    /// Drops an entry past any use, so it holds no memory until evicted.
    fn expired(&self, key: &Key) -> Cached {
        let (ttl, max_stale, negative_ttl) = (
            self.cfg.ttl,
            self.cfg.max_stale.unwrap_or(Duration::ZERO),
            self.cfg.negative_ttl,
        );
        // Only if no fresher entry replaced it meanwhile.
        self.inner.remove_if(key, |e: &Entry| match e.value {
            Some(_) => e.at.elapsed() >= ttl.saturating_add(max_stale),
            None => e.at.elapsed() >= negative_ttl,
        });
        Cached::Miss
    }

    pub(crate) fn insert(&self, key: Key, value: Option<SharedValue>) {
        self.insert_aged(key, value, Duration::ZERO);
    }

    /// [`insert`](Self::insert) of a fetched miss whose [`value_size`] is
    /// known. While the cache is full, a key is admitted at its second
    /// sighting only (see [`Doorkeeper`]): a stream of keys seen once (a
    /// cold start, a scan) then pays neither an insert nor an eviction
    /// each, and pushes nothing out.
    pub(crate) fn insert_sized(&self, key: Key, value: Option<SharedValue>, size: usize) {
        // Full when some shard may have no room left for this entry (each
        // is bounded by its share of the weight).
        let weight = ((key_size(&key) + size) as u64).max(self.floor);
        let full = self
            .inner
            .weight()
            .saturating_add(weight.saturating_mul(self.shards))
            > self.capacity;
        if full && !self.doorkeeper.seen_before(&key) && !self.inner.contains_key(&key) {
            return;
        }
        self.put(key, value, Duration::ZERO, size);
    }

    /// Inserts an entry already `age` old (read from a shared tier, where
    /// it has less than a full TTL left): it expires as it would have, had
    /// it been fetched here.
    pub(crate) fn insert_aged(&self, key: Key, value: Option<SharedValue>, age: Duration) {
        let size = value.as_deref().map_or(0, value_size);
        self.put(key, value, age, size);
    }

    fn put(&self, key: Key, value: Option<SharedValue>, age: Duration, size: usize) {
        let ttl = if value.is_some() {
            self.cfg.ttl
        } else {
            self.cfg.negative_ttl
        };
        if ttl.is_zero() || age >= ttl {
            return;
        }
        let bytes = key_size(&key) + size;
        let weight = u32::try_from((bytes as u64).max(self.floor)).unwrap_or(u32::MAX);
        let now = Instant::now();
        self.inner.insert(
            key,
            Entry {
                value,
                at: now.checked_sub(age).unwrap_or(now),
                weight,
            },
        );
    }

    /// The TTLs of found and of not-found entries.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ttls(&self) -> (Duration, Duration) {
        (self.cfg.ttl, self.cfg.negative_ttl)
    }

    /// Entries held.
    pub(crate) fn entry_count(&self) -> u64 {
        self.inner.len() as u64
    }
}

/// Keys seen while the cache was full, as two bits set per key: a key
/// whose bits are both set was (very likely) seen before. It forgets by
/// being cleared after as many sightings as a quarter of its bits, so a key
/// seen twice far apart is not admitted for it. A false "seen" admits a key
/// early, which costs what admitting every key costs; it is never wrong.
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    /// Bit index mask (the bit count is a power of two).
    mask: u64,
    sightings: AtomicU64,
    forget_after: u64,
    hasher: foldhash::fast::RandomState,
}

impl Doorkeeper {
    fn new(max_entries: u64) -> Self {
        // Eight bits a key the cache can hold: two set per key, cleared
        // when a quarter are, about.
        let bits = max_entries
            .saturating_mul(8)
            .clamp(1 << 12, 1 << 24)
            .next_power_of_two();
        Doorkeeper {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits - 1,
            sightings: AtomicU64::new(0),
            forget_after: bits / 8,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Whether `key` was seen since the last clearing; marks it seen.
    fn seen_before(&self, key: &Key) -> bool {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        let set = |bit: u64| {
            let mask = 1u64 << (bit % 64);
            self.bits[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask != 0
        };
        let (a, b) = (set(h & self.mask), set((h >> 32) & self.mask));
        if self.sightings.fetch_add(1, Ordering::Relaxed) + 1 >= self.forget_after {
            self.sightings.store(0, Ordering::Relaxed);
            for word in &self.bits {
                word.store(0, Ordering::Relaxed);
            }
        }
        a && b
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
        let c = LookupCache::new(cfg(), Duration::ZERO, 1 << 20);
        let k = Key::from(7i64);
        c.insert(k.clone(), Some(SharedValue::new(Value::from("a"))));
        assert_eq!(
            c.get(&k, Instant::now()),
            Cached::Found(SharedValue::new(Value::from("a")))
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            c.get(&k, Instant::now()),
            Cached::Stale(SharedValue::new(Value::from("a")))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.get(&k, Instant::now()), Cached::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_has_its_own_ttl() {
        let c = LookupCache::new(cfg(), Duration::ZERO, 1 << 20);
        let k = Key::from("ghost");
        c.insert(k.clone(), None);
        assert_eq!(c.get(&k, Instant::now()), Cached::NotFound);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(c.get(&k, Instant::now()), Cached::NotFound);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.get(&k, Instant::now()), Cached::Miss);
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
            1 << 20,
        );
        let big = SharedValue::new(Value::String("x".repeat(1 << 20)));
        for i in 0..64i64 {
            c.insert(Key::from(i), Some(big.clone()));
        }
        let n = c.entry_count();
        assert!(
            (1..=8).contains(&n),
            "cache holds {n} entries of 1 MiB, bound is 8 MiB"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_admits_a_fetched_key_at_its_second_sighting() {
        let c = LookupCache::new(
            CacheConfig {
                max_entries: 100,
                max_bytes: 100 * 64,
                ..cfg()
            },
            Duration::ZERO,
            1 << 10,
        );
        let v = |i: i64| Some(SharedValue::new(Value::from(i)));
        let size = value_size(&Value::from(0));
        // Not full: every fetched key is kept.
        for i in 0..50i64 {
            c.insert_sized(Key::from(i), v(i), size);
        }
        assert!((0..50i64).all(|i| c.get(&Key::from(i), Instant::now()) != Cached::Miss));
        for i in 50..200i64 {
            c.insert_sized(Key::from(i), v(i), size);
        }
        // Full now: a key seen once is not kept, and pushes nothing out...
        let before = c.entry_count();
        c.insert_sized(Key::from(1_000i64), v(1_000), size);
        assert_eq!(c.get(&Key::from(1_000i64), Instant::now()), Cached::Miss);
        assert_eq!(c.entry_count(), before);
        // ...seen again, it is.
        c.insert_sized(Key::from(1_000i64), v(1_000), size);
        assert_eq!(
            c.get(&Key::from(1_000i64), Instant::now()),
            Cached::Found(SharedValue::new(Value::from(1_000)))
        );
        // A key the cache holds (stale, say) is replaced at once.
        let held = (0..200i64)
            .map(Key::from)
            .find(|k| c.get(k, Instant::now()) != Cached::Miss)
            .expect("the cache holds some key");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(c.get(&held, Instant::now()), Cached::Stale(_)));
        c.insert_sized(held.clone(), v(-1), size);
        assert_eq!(
            c.get(&held, Instant::now()),
            Cached::Found(SharedValue::new(Value::from(-1)))
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
    async fn hot_keys_survive_a_stream_of_one_hit_keys() {
        let c = LookupCache::new(
            CacheConfig {
                max_entries: 1000,
                ..cfg()
            },
            Duration::ZERO,
            1 << 20,
        );
        let hot: Vec<Key> = (0..100i64).map(|i| Key::from(-i - 1)).collect();
        for k in &hot {
            c.insert(k.clone(), Some(SharedValue::new(Value::from(1))));
        }
        // Read again (what makes them hot), then a cold scan ten times the
        // cache's size, with the hot keys read now and then as in a log
        // stream.
        for i in 0..10_000i64 {
            if i % 100 == 0 {
                for k in &hot {
                    assert_ne!(
                        c.get(k, Instant::now()),
                        Cached::Miss,
                        "hot key {k} evicted"
                    );
                }
            }
            c.insert(Key::from(i), Some(SharedValue::new(Value::from(i))));
        }
        let kept = hot
            .iter()
            .filter(|k| c.get(k, Instant::now()) != Cached::Miss)
            .count();
        assert_eq!(kept, hot.len());
        assert!(c.entry_count() <= 1000, "{}", c.entry_count());
    }

    #[tokio::test]
    async fn size_bound_evicts() {
        let c = LookupCache::new(
            CacheConfig {
                max_entries: 50,
                ..cfg()
            },
            Duration::ZERO,
            1 << 20,
        );
        for i in 0..500i64 {
            c.insert(Key::from(i), Some(SharedValue::new(Value::from(i))));
        }
        let n = c.entry_count();
        assert!(n <= 50, "cache holds {n} entries, bound is 50");
    }
}
