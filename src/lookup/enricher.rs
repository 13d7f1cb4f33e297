//! [`LookupEnricher`]: a [`Lookup`] made into an [`AsyncEnricher`], with
//! the cache, single-flight, batching, guarded calls and metrics described
//! in the [module docs](super).

use super::{FastMap as HashMap, FastSet as HashSet};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cache::{CacheConfig, Cached, LookupCache, value_size};
use super::singleflight::{Claim, InFlightGuard, Resolution, SingleFlight};
use super::{Key, Lookup};
use crate::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use crate::event::{Event, SharedValue, Value};
use crate::observe::Counter;

type KeyFn = Arc<dyn Fn(&Event) -> Option<Key> + Send + Sync>;

/// The slot of an event that has no key.
const NO_KEY: u32 = u32::MAX;

/// Where a lookup's key comes from.
#[derive(Clone)]
enum KeySource {
    /// An event field, else a span field (innermost span first).
    Field(Cow<'static, str>),
    /// A span field only (innermost span first).
    SpanField(Cow<'static, str>),
    /// Computed from the event.
    Fn(KeyFn),
}

impl KeySource {
    fn key(&self, e: &Event) -> Option<Key> {
        match self {
            KeySource::Field(name) => e.field(name).and_then(Key::from_value),
            KeySource::SpanField(name) => e
                .spans()
                .rev()
                .find_map(|s| s.field(name))
                .and_then(Key::from_value),
            KeySource::Fn(f) => f(e),
        }
    }
}

/// How a found value is merged into the event.
#[derive(Debug, Clone)]
enum Merge {
    /// Under one top-level key.
    Under(Cow<'static, str>),
    /// Each field of an object value as `<prefix><field>`.
    Prefix(Cow<'static, str>),
}

/// An [`AsyncEnricher`] built from a [`Lookup`]; see the module docs.
pub struct LookupEnricher<L> {
    core: Arc<Core<L>>,
}

/// What a [`LookupEnricher`] holds, shared with its background refreshes.
pub(crate) struct Core<L> {
    name: String,
    lookup: L,
    key: KeySource,
    merge: Merge,
    cache: LookupCache,
    max_batch: usize,
    max_value_bytes: usize,
    max_key_bytes: usize,
    stale_on_error: bool,
    inflight: SingleFlight,
    /// Keys being refreshed ahead of their expiry.
    refreshing: std::sync::Mutex<HashSet<Key>>,
    /// The shared tier and this enricher's namespace in it.
    #[cfg(feature = "redis")]
    shared: Option<(super::SharedCache, String)>,
}

impl<L> fmt::Debug for LookupEnricher<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupEnricher")
            .field("name", &self.core.name)
            .field("merge", &self.core.merge)
            .field("max_batch", &self.core.max_batch)
            .field("cache", &self.core.cache)
            .finish_non_exhaustive()
    }
}

/// Configures a [`LookupEnricher`].
///
/// | setting | default |
/// | --- | --- |
/// | key | the event or span field named like the enricher plus `_id`… set it with [`key_field`](Self::key_field) |
/// | merge | under the enricher's name |
/// | [`ttl`](Self::ttl) | 5 min |
/// | [`negative_ttl`](Self::negative_ttl) | 30 s |
/// | [`max_entries`](Self::max_entries) | 10 000 |
/// | [`max_bytes`](Self::max_bytes) | 64 MiB of cached values |
/// | [`max_value_bytes`](Self::max_value_bytes) | 1 MiB per value |
/// | [`max_key_bytes`](Self::max_key_bytes) | 1024 bytes per text key |
/// | [`max_batch`](Self::max_batch) | 100 keys per fetch |
/// | [`stale_on_error`](Self::stale_on_error) | off |
pub struct LookupEnricherBuilder<L> {
    name: String,
    lookup: L,
    key: Option<KeySource>,
    merge: Option<Merge>,
    cache: CacheConfig,
    max_batch: usize,
    max_value_bytes: usize,
    max_key_bytes: usize,
    refresh_window: Duration,
    #[cfg(feature = "redis")]
    shared: Option<super::SharedCache>,
}

impl<L> fmt::Debug for LookupEnricherBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupEnricherBuilder")
            .field("name", &self.name)
            .field("cache", &self.cache)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<L: Lookup> LookupEnricher<L> {
    /// Starts configuring an enricher called `name` over `lookup`.
    #[must_use]
    pub fn builder(name: impl Into<String>, lookup: L) -> LookupEnricherBuilder<L> {
        LookupEnricherBuilder {
            name: name.into(),
            lookup,
            key: None,
            merge: None,
            cache: CacheConfig {
                ttl: Duration::from_secs(300),
                negative_ttl: Duration::from_secs(30),
                max_entries: 10_000,
                max_bytes: 64 << 20,
                max_stale: None,
            },
            max_batch: 100,
            max_value_bytes: 1 << 20,
            max_key_bytes: 1024,
            refresh_window: Duration::ZERO,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// The wrapped lookup.
    pub fn lookup(&self) -> &L {
        &self.core.lookup
    }

    /// Keys held in the cache now.
    pub async fn cached_entries(&self) -> u64 {
        self.core.cache.entry_count()
    }
}

impl<L: Lookup> LookupEnricherBuilder<L> {
    /// The key is this field of the event, or else of the innermost span
    /// that has it (so a `user_id` recorded on a request span keys every
    /// event logged inside it).
    #[must_use]
    pub fn key_field(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.key = Some(KeySource::Field(name.into()));
        self
    }

    /// The key is this field of the innermost span that has it (event
    /// fields are ignored).
    #[must_use]
    pub fn key_span_field(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.key = Some(KeySource::SpanField(name.into()));
        self
    }

    /// The key is computed from the event; `None` skips the event.
    pub fn key_fn(mut self, f: impl Fn(&Event) -> Option<Key> + Send + Sync + 'static) -> Self {
        self.key = Some(KeySource::Fn(Arc::new(f)));
        self
    }

    /// Writes the found value under this top-level key (default: the
    /// enricher's name).
    #[must_use]
    pub fn merge_under(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.merge = Some(Merge::Under(name.into()));
        self
    }

    /// Writes each field of an object value as `<prefix><field>` at the top
    /// level (a non-object value goes under the prefix without its trailing
    /// `_` or `.`).
    #[must_use]
    pub fn merge_prefix(mut self, prefix: impl Into<Cow<'static, str>>) -> Self {
        self.merge = Some(Merge::Prefix(prefix.into()));
        self
    }

    /// How long a found value is served from the cache.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// How long "not found" is served from the cache (zero: not cached).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.cache.negative_ttl = ttl;
        self
    }

    /// The most keys the cache holds. Keys read once are the first to go;
    /// while the cache is full, a fetched key is kept only when it is
    /// fetched a second time (a stream of one-off keys pushes nothing out).
    #[must_use]
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.cache.max_entries = entries;
        self
    }

    /// The most bytes of values the cache holds (an estimate of their size
    /// in memory): each entry weighs its size, so a few large values take
    /// the room of many small ones.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.cache.max_bytes = bytes.max(1);
        self
    }

    /// The largest value accepted from the lookup (estimated size in
    /// memory). A larger one is an error for its key alone — written in
    /// `enrichment_errors`, not cached, not held against the breaker.
    #[must_use]
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes.max(1);
        self
    }

    /// The longest text key looked up; a longer one (or an empty one) is
    /// not found, without asking the source.
    #[must_use]
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// The most keys per [`Lookup::fetch`] call.
    #[must_use]
    pub fn max_batch(mut self, keys: usize) -> Self {
        self.max_batch = keys.max(1);
        self
    }

    /// When a refresh fails, serve the expired value for up to `max_stale`
    /// past its TTL.
    #[must_use]
    pub fn stale_on_error(mut self, max_stale: Duration) -> Self {
        self.cache.max_stale = Some(max_stale);
        self
    }

    /// Refresh-ahead: a key read within `window` before its TTL ends is
    /// fetched again in the background (batched with the other such keys
    /// of its batch), so a hot key is never served as a miss and never
    /// makes a batch wait. The batch is served the current value; if the
    /// refresh fails, the current value is kept until it expires (and
    /// [`stale_on_error`](Self::stale_on_error) applies as before). Off by
    /// default; a window at least the TTL refreshes on every read.
    #[must_use]
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.refresh_window = window;
        self
    }

    /// A second cache tier shared by every instance (feature `redis`): a
    /// batch's local misses are read from it in one round trip, its misses
    /// fetched from the source in one batch and written back with the TTL
    /// (not-found entries with the not-found TTL). See
    /// [`SharedCache`](super::SharedCache).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared(mut self, tier: super::SharedCache) -> Self {
        self.shared = Some(tier);
        self
    }

    /// Builds the enricher.
    #[must_use]
    pub fn build(self) -> LookupEnricher<L> {
        let key = self
            .key
            .unwrap_or_else(|| KeySource::Field(Cow::Owned(format!("{}_id", self.name))));
        let merge = match self.merge {
            // Borrowed when it can be: every event merged into gets a copy
            // of the name.
            Some(Merge::Under(Cow::Owned(name))) => {
                Merge::Under(crate::event::intern(&name).map_or(Cow::Owned(name), Cow::Borrowed))
            }
            Some(merge) => merge,
            None => Merge::Under(
                crate::event::intern(&self.name)
                    .map_or_else(|| Cow::Owned(self.name.clone()), Cow::Borrowed),
            ),
        };
        #[cfg(feature = "redis")]
        let shared = self.shared.map(|t| {
            let ns = t.namespace(&self.name);
            (t, ns)
        });
        let refresh_window = self.refresh_window;
        LookupEnricher {
            core: Arc::new(Core {
                refreshing: std::sync::Mutex::new(HashSet::default()),
                #[cfg(feature = "redis")]
                shared,
                stale_on_error: self.cache.max_stale.is_some(),
                cache: LookupCache::new(self.cache, refresh_window, self.max_value_bytes),
                name: self.name,
                lookup: self.lookup,
                key,
                merge,
                max_batch: self.max_batch,
                max_value_bytes: self.max_value_bytes,
                max_key_bytes: self.max_key_bytes,
                inflight: SingleFlight::default(),
            }),
        }
    }
}

impl<L: Lookup> Core<L> {
    /// Fetches `keys` (this enricher leads them) in chunks of `max_batch`,
    /// publishing each key's result to its waiters and the cache.
    async fn fetch_leading(
        &self,
        leaders: Vec<Key>,
        context: &HashMap<Key, Vec<Option<Value>>>,
        ctx: &EnrichContext,
        guard: &InFlightGuard<'_>,
    ) -> Vec<(Key, Resolution)> {
        let mut chunks: Vec<Vec<Key>> = Vec::new();
        let mut it = leaders.into_iter().peekable();
        while it.peek().is_some() {
            chunks.push(it.by_ref().take(self.max_batch).collect());
        }
        if chunks.len() == 1 {
            let chunk = chunks.pop().unwrap_or_default();
            return self.fetch_chunk(chunk, context, ctx, guard).await;
        }
        let calls = chunks
            .into_iter()
            .map(|chunk| self.fetch_chunk(chunk, context, ctx, guard));
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One chunk, through the shared tier if there is one.
    async fn fetch_chunk(
        &self,
        chunk: Vec<Key>,
        context: &HashMap<Key, Vec<Option<Value>>>,
        ctx: &EnrichContext,
        guard: &InFlightGuard<'_>,
    ) -> Vec<(Key, Resolution)> {
        #[cfg(feature = "redis")]
        if let Some((tier, ns)) = &self.shared {
            return self
                .fetch_via_tier(tier, ns, chunk, context, ctx, guard)
                .await;
        }
        self.fetch_source(chunk, context, ctx, guard, false).await
    }

    /// Fetches a chunk's keys from the source in one call, caches and
    /// publishes each answer; with `share`, writes the answers to the
    /// shared tier and releases this instance's leases of them.
    async fn fetch_source(
        &self,
        keys: Vec<Key>,
        context: &HashMap<Key, Vec<Option<Value>>>,
        ctx: &EnrichContext,
        guard: &InFlightGuard<'_>,
        share: bool,
    ) -> Vec<(Key, Resolution)> {
        let mut out = Vec::with_capacity(keys.len());
        if keys.is_empty() {
            return out;
        }
        #[cfg(not(feature = "redis"))]
        let _ = share;
        // One entry per key, empty ones (no allocation) without context.
        let key_context: Vec<Vec<Option<Value>>> = if context.is_empty() {
            vec![Vec::new(); keys.len()]
        } else {
            keys.iter()
                .map(|k| context.get(k).cloned().unwrap_or_default())
                .collect()
        };
        let (keys_ref, key_context) = (&keys, &key_context);
        // Counted only when the call is made (not when short-circuited).
        let result = ctx
            .call(async move {
                ctx.metrics().record_fetch(keys_ref.len());
                self.lookup.fetch_with_context(keys_ref, key_context).await
            })
            .await;
        match result {
            Ok(mut found) => {
                #[cfg(feature = "redis")]
                let mut answered: Vec<(Key, Option<SharedValue>)> = Vec::new();
                for key in keys.iter() {
                    let value = found.remove(key);
                    let size = value.as_ref().map_or(0, value_size);
                    let resolution = match value {
                        Some(_) if size > self.max_value_bytes => {
                            // This key's answer only: not cached, and the
                            // fetch itself succeeded.
                            Err(Arc::from(format!(
                                "value larger than the {}-byte limit (max_value_bytes)",
                                self.max_value_bytes
                            )))
                        }
                        value => {
                            let value = value.map(SharedValue::new);
                            self.cache.insert_sized(key.clone(), value.clone(), size);
                            #[cfg(feature = "redis")]
                            if share {
                                answered.push((key.clone(), value.clone()));
                            }
                            Ok(value)
                        }
                    };
                    out.push((key.clone(), resolution));
                }
                guard.settle(&out);
                #[cfg(feature = "redis")]
                if let Some((tier, ns)) = self.shared.as_ref().filter(|_| share) {
                    let (ttl, negative_ttl) = self.cache.ttls();
                    tier.put_many(ns, &answered, &keys, ttl, negative_ttl).await;
                }
            }
            Err(e) => {
                let reason: Arc<str> = Arc::from(e.reason().as_ref());
                out.extend(keys.iter().map(|k| (k.clone(), Err(reason.clone()))));
                guard.settle(&out);
                // Nothing to share, but the leases go: the others fetch.
                #[cfg(feature = "redis")]
                if let Some((tier, ns)) = self.shared.as_ref().filter(|_| share) {
                    tier.put_many(ns, &[], &keys, Duration::ZERO, Duration::ZERO)
                        .await;
                }
            }
        }
        out
    }

    /// A chunk through the shared tier: what it holds is served; of the
    /// rest, the keys this instance leases are fetched while it waits for
    /// those another instance is fetching; what does not appear in time is
    /// fetched here too. A tier that does not answer costs one timeout:
    /// the chunk then goes to the source and nothing is shared.
    #[cfg(feature = "redis")]
    async fn fetch_via_tier(
        &self,
        tier: &super::SharedCache,
        ns: &str,
        chunk: Vec<Key>,
        context: &HashMap<Key, Vec<Option<Value>>>,
        ctx: &EnrichContext,
        guard: &InFlightGuard<'_>,
    ) -> Vec<(Key, Resolution)> {
        use super::shared::Claim;
        let Some(claims) = tier.claim(ns, &chunk).await else {
            return self.fetch_source(chunk, context, ctx, guard, false).await;
        };
        let mut out = Vec::with_capacity(chunk.len());
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for (key, claim) in chunk.into_iter().zip(claims) {
            match claim {
                Claim::Hit(value, left) => {
                    if let Some(back) = self.settle_from_tier(key, Some((value, left)), &mut out) {
                        mine.push(back);
                    }
                }
                Claim::Mine => mine.push(key),
                Claim::Theirs => theirs.push(key),
            }
        }
        guard.settle(&out);
        if theirs.is_empty() {
            out.extend(self.fetch_source(mine, context, ctx, guard, true).await);
            return out;
        }
        let (fetched, appeared) = futures_util::future::join(
            self.fetch_source(mine, context, ctx, guard, true),
            tier.wait_for(ns, &theirs),
        )
        .await;
        out.extend(fetched);
        let from = out.len();
        let mut rest = Vec::new();
        for (key, hit) in theirs.into_iter().zip(appeared) {
            if let Some(back) = self.settle_from_tier(key, hit, &mut out) {
                rest.push(back);
            }
        }
        guard.settle(&out[from..]);
        out.extend(self.fetch_source(rest, context, ctx, guard, true).await);
        out
    }

    /// Resolves `key` with what the shared tier held for it (cached locally
    /// for what is left of its TTL there) into `out`; gives the key back
    /// when the tier had nothing usable.
    #[cfg(feature = "redis")]
    fn settle_from_tier(
        &self,
        key: Key,
        hit: Option<(Option<Value>, Duration)>,
        out: &mut Vec<(Key, Resolution)>,
    ) -> Option<Key> {
        let (value, left) = match hit {
            Some((value, left))
                if value
                    .as_ref()
                    .is_none_or(|v| value_size(v) <= self.max_value_bytes) =>
            {
                (value, left)
            }
            _ => return Some(key),
        };
        let (ttl, negative_ttl) = self.cache.ttls();
        let full = if value.is_some() { ttl } else { negative_ttl };
        let value = value.map(SharedValue::new);
        self.cache
            .insert_aged(key.clone(), value.clone(), full.saturating_sub(left));
        out.push((key, Ok(value)));
        None
    }

    /// Fetches `keys` again on a task of their own, ahead of their expiry;
    /// keys already being refreshed are left to that refresh.
    fn refresh_in_background(core: &Arc<Self>, keys: Vec<Key>, ctx: &EnrichContext) {
        let keys: Vec<Key> = {
            let mut busy = core.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            keys.into_iter()
                .filter(|k| busy.insert(k.clone()))
                .collect()
        };
        if keys.is_empty() {
            return;
        }
        // The batch's deadline is not the refresh's: a call of its own.
        let mut ctx = ctx.clone();
        ctx.deadline =
            crate::resilience::deadline::after(tokio::time::Instant::now(), ctx.call_timeout);
        let core = core.clone();
        crate::capture::spawn_suppressed(async move {
            for chunk in keys.chunks(core.max_batch) {
                let result = ctx
                    .call(async {
                        ctx.metrics().record_fetch(chunk.len());
                        core.lookup.fetch(chunk).await
                    })
                    .await;
                // On an error the current values stay until they expire.
                if let Ok(mut found) = result {
                    ctx.metrics().count(Counter::Refresh, chunk.len() as u64);
                    #[cfg(feature = "redis")]
                    let mut answered: Vec<(Key, Option<SharedValue>)> = Vec::new();
                    for key in chunk {
                        let value = found.remove(key);
                        if value
                            .as_ref()
                            .is_some_and(|v| value_size(v) > core.max_value_bytes)
                        {
                            continue;
                        }
                        let value = value.map(SharedValue::new);
                        core.cache.insert(key.clone(), value.clone());
                        #[cfg(feature = "redis")]
                        answered.push((key.clone(), value));
                    }
                    #[cfg(feature = "redis")]
                    if let Some((tier, ns)) = &core.shared {
                        let (ttl, negative_ttl) = core.cache.ttls();
                        tier.put_many(ns, &answered, &[], ttl, negative_ttl).await;
                    }
                }
            }
            let mut busy = core.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            for key in &keys {
                busy.remove(key);
            }
        });
    }

    /// Merges `value`: shared with the cache under one key, or copied
    /// field by field under a prefix.
    fn merge_into(&self, patch: &mut Patch, value: &SharedValue) {
        match &self.merge {
            Merge::Under(name) => patch.insert_shared(name.clone(), value.clone()),
            Merge::Prefix(prefix) => match &**value {
                Value::Object(map) => {
                    for (k, v) in map {
                        patch.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
                other => {
                    let bare = prefix.trim_end_matches(['_', '.']).to_owned();
                    patch.insert(bare, other.clone());
                }
            },
        }
    }
}

impl<L: Lookup> AsyncEnricher for LookupEnricher<L> {
    fn name(&self) -> &str {
        &self.core.name
    }

    async fn startup(&self) -> Result<(), EnrichError> {
        self.core.lookup.startup().await
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        self.core.lookup.shutdown().await
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        self.core.lookup.health_check().await
    }

    fn guards_own_calls(&self) -> bool {
        true
    }

    fn shared_cache_stats(&self) -> Option<crate::observe::SharedCacheStats> {
        #[cfg(feature = "redis")]
        if let Some((tier, _)) = &self.core.shared {
            return Some(tier.stats());
        }
        None
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        // An empty or overlong text key can name nothing worth fetching: it
        // is not found, for itself alone, without asking the source.
        let max_key = self.core.max_key_bytes;
        let keys: Vec<Option<Key>> = events
            .iter()
            .map(|e| {
                self.core.key.key(e).filter(|k| match k {
                    Key::Str(s) => !s.is_empty() && s.len() <= max_key,
                    _ => true,
                })
            })
            .collect();
        // One slot per distinct key, in order of first sight; each event
        // points at its key's slot, so an event costs one hash probe here
        // and none when its answer is merged. Sized for a batch of
        // distinct keys (a cold stream), so nothing grows while filled.
        let distinct = keys.len().min(4096);
        let now = tokio::time::Instant::now();
        let mut index: HashMap<&Key, u32> =
            HashMap::with_capacity_and_hasher(distinct, Default::default());
        let mut slot_of: Vec<u32> = Vec::with_capacity(keys.len());
        let mut resolved: Vec<Option<Resolution>> = Vec::with_capacity(distinct);
        let mut stale: HashMap<u32, SharedValue> = HashMap::default();
        let mut missing: Vec<Key> = Vec::new();
        let mut refresh: Vec<Key> = Vec::new();
        for key in &keys {
            let Some(key) = key else {
                slot_of.push(NO_KEY);
                continue;
            };
            let slot = resolved.len() as u32;
            match index.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    slot_of.push(*e.get());
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(slot);
                    slot_of.push(slot);
                }
            }
            resolved.push(match self.core.cache.get(key, now) {
                Cached::Found(v) => {
                    ctx.metrics().count(Counter::CacheHit, 1);
                    Some(Ok(Some(v)))
                }
                Cached::Refresh(v) => {
                    ctx.metrics().count(Counter::CacheHit, 1);
                    refresh.push(key.clone());
                    Some(Ok(Some(v)))
                }
                Cached::NotFound => {
                    ctx.metrics().count(Counter::NegativeHit, 1);
                    Some(Ok(None))
                }
                Cached::Stale(v) => {
                    ctx.metrics().count(Counter::CacheMiss, 1);
                    stale.insert(slot, v);
                    missing.push(key.clone());
                    None
                }
                Cached::Miss => {
                    ctx.metrics().count(Counter::CacheMiss, 1);
                    missing.push(key.clone());
                    None
                }
            });
        }

        if !refresh.is_empty() {
            Core::refresh_in_background(&self.core, refresh, ctx);
        }

        // Single-flight: lead the keys nobody is fetching, wait for the rest.
        let Claim {
            leaders,
            guard,
            waiters,
        } = self.core.inflight.claim(missing);
        // Context for the keys this call fetches: the first event carrying each.
        let mut context: HashMap<Key, Vec<Option<Value>>> = HashMap::default();
        let fields = self.core.lookup.context_fields();
        if !fields.is_empty() && !leaders.is_empty() {
            let leading: HashSet<&Key> = leaders.iter().collect();
            for (event, key) in events.iter().zip(&keys) {
                if let Some(key) = key.as_ref().filter(|k| leading.contains(k)) {
                    context.entry(key.clone()).or_insert_with(|| {
                        fields.iter().map(|f| event.field(f).cloned()).collect()
                    });
                }
            }
        }
        if !waiters.is_empty() {
            ctx.metrics()
                .count(Counter::SingleflightWait, waiters.len() as u64);
        }
        let wait_all =
            futures_util::future::join_all(waiters.into_iter().map(|(key, waiter)| async move {
                let r = waiter.wait(&key).await;
                (key, r)
            }));
        let (led, waited) = futures_util::future::join(
            self.core.fetch_leading(leaders, &context, ctx, &guard),
            wait_all,
        )
        .await;
        drop(guard);
        for (key, r) in led.into_iter().chain(waited) {
            if let Some(&slot) = index.get(&key) {
                resolved[slot as usize] = Some(r);
            }
        }

        for (&slot, patch) in slot_of.iter().zip(out.iter_mut()) {
            if slot == NO_KEY {
                continue;
            }
            match &resolved[slot as usize] {
                Some(Ok(Some(v))) => self.core.merge_into(patch, v),
                Some(Ok(None)) => {}
                Some(Err(reason)) => match stale.get(&slot) {
                    Some(v) if self.core.stale_on_error => {
                        ctx.metrics().count(Counter::StaleServed, 1);
                        self.core.merge_into(patch, v);
                    }
                    _ => patch.fail(reason.to_string()),
                },
                None => patch.fail("unresolved"),
            }
        }
        Ok(())
    }
}
