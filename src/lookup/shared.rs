//! [`SharedCache`]: a second cache tier in Redis, shared by every instance
//! of a service, so that the source is asked for a key once per TTL by the
//! whole fleet instead of once per instance.
//!
//! A batch's local misses are read from Redis in one round trip, with the
//! time each has left there (`PTTL`, so that a value read from the tier
//! expires locally when it expires there — by Redis's clock, not by the
//! instances', which may disagree); the tier's misses go to the source in
//! one batched fetch, and what it returns is written back in one pipeline
//! (`SET … PX` with the TTL, not-found entries with the not-found TTL).
//!
//! With leases (the default) that read is a script that also takes the
//! lease (`SET … NX PX`) of each key it finds missing, atomically: a value
//! written (and its lease released) by another instance between a read and
//! a lease would otherwise be fetched again. The keys this instance leased
//! are fetched while it waits for those others hold (polling the same
//! script: a lease that comes free is taken, and the key fetched at once);
//! what does not appear within the wait is fetched here too. The holder
//! releases its leases once it has fetched. (Scripts touch several keys:
//! a single Redis, or a cluster with the tier on one slot, is assumed.)
//!
//! Keys are `<prefix>:<enricher>:<schema version>:<key>`, every part
//! percent-encoded (all but `A-Z a-z 0-9 - . _`) and the key tagged with
//! its type (`i42`, `u…`, `b1`, `s…`), so no key value can collide with
//! another or reach outside its namespace. Values carry a format byte; one
//! that does not decode (or is larger than the limit) is a miss, counted.
//!
//! The tier has its own timeout and circuit breaker: Redis down or
//! unresponsive costs a batch at most one timeout (the read; the lease and
//! the write-back are then skipped) until the breaker opens, and then
//! nothing — lookups go straight to the source, counted — until a probe
//! finds Redis back. No restart is needed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Key;
use crate::enrich::redact::redact_url;
use crate::error::ConfigError;
use crate::event::{SharedValue, Value};
use crate::observe::{HealthStatus, SharedCacheStats};
use crate::resilience::BreakerConfig;
use crate::resilience::BreakerState;
use crate::resilience::breaker::CircuitBreaker;

/// A found value: `F` then its JSON.
const FOUND: u8 = b'F';
/// A key the source said does not exist.
const NOT_FOUND: u8 = b'N';
/// Tag of a lease key (value keys are tagged `i`, `u`, `b` or `s`).
const LEASE: char = 'l';
/// Per key (value key, lease key): the value and its time left, else the
/// lease taken for the caller, else "someone else holds it". One script, so
/// that no instance can miss a value written between its read and its
/// lease (a value written and its lease released in between would
/// otherwise be fetched again). `pcall`: a key of another type is a miss.
const CLAIM: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local v = redis.pcall('GET', KEYS[i])
  if type(v) == 'table' then v = false end
  local t = -2
  if v then t = redis.call('PTTL', KEYS[i]) end
  if v and t > 0 then
    out[#out + 1] = {1, v, t}
  elseif redis.call('SET', KEYS[i + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[#out + 1] = {2}
  else
    out[#out + 1] = {0}
  end
end
return out
"#;

/// What the tier said of one key of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Claim {
    /// It holds this (a value, or `None`: not found) for `Duration` more.
    Hit(Option<Value>, Duration),
    /// Fetch it here (this instance holds its lease, or leases are off).
    Mine,
    /// Another instance is fetching it: wait for its value.
    Theirs,
}

/// Deletes the leases that are still the caller's.
const RELEASE: &str = r#"
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then n = n + redis.call('DEL', KEYS[i]) end
end
return n
"#;

/// A second cache tier in Redis; add it with
/// [`LookupEnricherBuilder::shared`](super::LookupEnricherBuilder::shared).
/// Clones share one connection, breaker and counters.
#[derive(Clone)]
pub struct SharedCache {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    prefix: String,
    schema_version: u32,
    timeout: Duration,
    max_value_bytes: usize,
    /// How long a lease holds, and how long others wait for its value.
    lease: Option<(Duration, Duration)>,
    /// Written into the leases this instance takes.
    token: String,
    breaker: CircuitBreaker,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    last_error: Mutex<Option<String>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    undecodable: AtomicU64,
    bypassed: AtomicU64,
    lease_waits: AtomicU64,
    lease_takeovers: AtomicU64,
}

impl fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCache")
            .field("url", &redact_url(&self.inner.url))
            .field("prefix", &self.inner.prefix)
            .field("schema_version", &self.inner.schema_version)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`SharedCache`].
///
/// | setting | default |
/// | --- | --- |
/// | [`prefix`](Self::prefix) | `fapilog` |
/// | [`schema_version`](Self::schema_version) | 1 |
/// | [`timeout`](Self::timeout) | 250 ms per round trip (connecting included) |
/// | [`breaker`](Self::breaker) | `BreakerConfig::default()` |
/// | [`max_value_bytes`](Self::max_value_bytes) | 64 KiB |
/// | [`lease`](Self::lease) | on: held 2 s, waited for up to 400 ms (below the default 500 ms call timeout) |
#[derive(Clone)]
pub struct SharedCacheBuilder {
    url: String,
    prefix: String,
    schema_version: u32,
    timeout: Duration,
    breaker: BreakerConfig,
    max_value_bytes: usize,
    lease: Option<(Duration, Duration)>,
}

impl fmt::Debug for SharedCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCacheBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("schema_version", &self.schema_version)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl SharedCache {
    /// A tier on the Redis server at `url` (`redis://[user][:password@]host[:port][/db]`).
    pub fn redis(url: impl Into<String>) -> SharedCacheBuilder {
        SharedCacheBuilder {
            url: url.into(),
            prefix: "fapilog".to_owned(),
            schema_version: 1,
            timeout: Duration::from_millis(250),
            breaker: BreakerConfig::default(),
            max_value_bytes: 64 * 1024,
            lease: Some((Duration::from_secs(2), Duration::from_millis(400))),
        }
    }

    /// The tier's counters and state.
    pub fn stats(&self) -> SharedCacheStats {
        let c = &self.inner.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let breaker = self.inner.breaker.state();
        let last_error = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SharedCacheStats {
            hits: ld(&c.hits),
            misses: ld(&c.misses),
            writes: ld(&c.writes),
            errors: ld(&c.errors),
            undecodable: ld(&c.undecodable),
            bypassed: ld(&c.bypassed),
            lease_waits: ld(&c.lease_waits),
            lease_takeovers: ld(&c.lease_takeovers),
            breaker,
            status: match breaker {
                BreakerState::Closed if last_error.is_none() => HealthStatus::Up,
                BreakerState::Closed => HealthStatus::Degraded,
                BreakerState::HalfOpen => HealthStatus::Degraded,
                _ => HealthStatus::Down,
            },
            last_error,
        }
    }

    /// The Redis key prefix of the enricher `name`'s entries.
    pub(crate) fn namespace(&self, name: &str) -> String {
        let mut ns = String::new();
        encode_part(&mut ns, &self.inner.prefix);
        ns.push(':');
        encode_part(&mut ns, name);
        ns.push(':');
        ns.push_str(&self.inner.schema_version.to_string());
        ns.push(':');
        ns
    }

    /// Reads `keys` (of the namespace `ns`) with `MGET` and `PTTL` in one
    /// pipeline: per key, what the tier holds and for how long, or `None`
    /// (a miss or an undecodable value); `None` for all when the tier did
    /// not answer. Misses are counted or not (a wait's polls are not).
    async fn read(
        &self,
        ns: &str,
        keys: &[Key],
        count_misses: bool,
    ) -> Option<Vec<Option<(Option<Value>, Duration)>>> {
        let miss = |n: usize| {
            if count_misses {
                self.inner
                    .counters
                    .misses
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        };
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return Some(out);
        }
        let names: Vec<String> = keys.iter().map(|k| redis_key(ns, k)).collect();
        let mut pipe = ::redis::pipe();
        pipe.cmd("MGET").arg(&names);
        for name in &names {
            pipe.cmd("PTTL").arg(name);
        }
        let replies: Vec<::redis::Value> = match self.run(&pipe).await {
            Some(r) => r,
            None => {
                miss(keys.len());
                return None;
            }
        };
        let mut replies = replies.into_iter();
        let values = match replies.next() {
            Some(::redis::Value::Array(v)) if v.len() == keys.len() => v,
            _ => {
                miss(keys.len());
                self.error("redis MGET answered something else than one value per key".into());
                return None;
            }
        };
        let c = &self.inner.counters;
        for ((slot, value), ttl) in out.iter_mut().zip(values).zip(replies) {
            let bytes = match value {
                ::redis::Value::Nil => {
                    miss(1);
                    continue;
                }
                ::redis::Value::BulkString(b) => b,
                _ => {
                    c.undecodable.fetch_add(1, Ordering::Relaxed);
                    miss(1);
                    continue;
                }
            };
            let left = match ttl {
                ::redis::Value::Int(ms) if ms > 0 => Duration::from_millis(ms as u64),
                // No expiry (someone else wrote it) or just expired: a miss.
                _ => {
                    miss(1);
                    continue;
                }
            };
            match self.decode(&bytes) {
                Some(v) => {
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    *slot = Some((v, left));
                }
                None => {
                    c.undecodable.fetch_add(1, Ordering::Relaxed);
                    miss(1);
                }
            }
        }
        Some(out)
    }

    /// Writes what the source answered, in one pipeline: found values for
    /// `ttl`, not-found entries for `negative_ttl` (a zero TTL writes
    /// nothing; values over the size limit are not written), and releases
    /// this instance's leases of `fetched` (written or not: waiters then
    /// fetch at once instead of waiting the lease out).
    pub(crate) async fn put_many(
        &self,
        ns: &str,
        entries: &[(Key, Option<SharedValue>)],
        fetched: &[Key],
        ttl: Duration,
        negative_ttl: Duration,
    ) {
        let mut pipe = ::redis::pipe();
        let mut n = 0u64;
        let mut commands = 0usize;
        for (key, value) in entries {
            let ttl = if value.is_some() { ttl } else { negative_ttl };
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                continue;
            }
            let mut bytes = Vec::with_capacity(64);
            match value {
                Some(v) => {
                    bytes.push(FOUND);
                    if serde_json::to_writer(&mut bytes, v.value()).is_err()
                        || bytes.len() > self.inner.max_value_bytes
                    {
                        continue;
                    }
                }
                None => bytes.push(NOT_FOUND),
            }
            pipe.cmd("SET")
                .arg(redis_key(ns, key))
                .arg(bytes)
                .arg("PX")
                .arg(ms)
                .ignore();
            n += 1;
            commands += 1;
        }
        if self.inner.lease.is_some() && !fetched.is_empty() {
            // Only leases this instance holds: one taken over after a wait
            // belongs to another.
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(fetched.len());
            for key in fetched {
                cmd.arg(lease_key(ns, key));
            }
            cmd.arg(&self.inner.token);
            pipe.add_command(cmd).ignore();
            commands += 1;
        }
        if commands == 0 {
            return;
        }
        if self.run::<()>(&pipe).await.is_some() {
            self.inner.counters.writes.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a batch's keys and, with leases on, takes the lease of each
    /// one missing, in one round trip; `None` when the tier did not answer.
    pub(crate) async fn claim(&self, ns: &str, keys: &[Key]) -> Option<Vec<Claim>> {
        self.claim_counted(ns, keys, true).await
    }

    async fn claim_counted(
        &self,
        ns: &str,
        keys: &[Key],
        count_misses: bool,
    ) -> Option<Vec<Claim>> {
        let Some((hold, _)) = self.inner.lease else {
            let held = self.read(ns, keys, count_misses).await?;
            return Some(
                held.into_iter()
                    .map(|h| match h {
                        Some((v, left)) => Claim::Hit(v, left),
                        None => Claim::Mine,
                    })
                    .collect(),
            );
        };
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(CLAIM).arg(keys.len() * 2);
        for key in keys {
            cmd.arg(redis_key(ns, key)).arg(lease_key(ns, key));
        }
        cmd.arg(&self.inner.token).arg(ms);
        let mut pipe = ::redis::pipe();
        pipe.add_command(cmd);
        let replies: Vec<::redis::Value> = self.run(&pipe).await?;
        let c = &self.inner.counters;
        let miss = |n: u64| {
            if count_misses {
                c.misses.fetch_add(n, Ordering::Relaxed);
            }
        };
        let answers = match replies.into_iter().next() {
            Some(::redis::Value::Array(a)) if a.len() == keys.len() => a,
            _ => {
                miss(keys.len() as u64);
                self.error("the shared cache's claim script answered something unexpected".into());
                return None;
            }
        };
        let claims = answers
            .into_iter()
            .map(|answer| {
                let ::redis::Value::Array(parts) = answer else {
                    miss(1);
                    return Claim::Mine;
                };
                let mut parts = parts.into_iter();
                match (parts.next(), parts.next(), parts.next()) {
                    (
                        Some(::redis::Value::Int(1)),
                        Some(::redis::Value::BulkString(b)),
                        Some(::redis::Value::Int(ms)),
                    ) if ms > 0 => match self.decode(&b) {
                        Some(v) => {
                            c.hits.fetch_add(1, Ordering::Relaxed);
                            Claim::Hit(v, Duration::from_millis(ms as u64))
                        }
                        None => {
                            c.undecodable.fetch_add(1, Ordering::Relaxed);
                            miss(1);
                            Claim::Mine
                        }
                    },
                    (Some(::redis::Value::Int(0)), ..) => {
                        miss(1);
                        Claim::Theirs
                    }
                    _ => {
                        miss(1);
                        Claim::Mine
                    }
                }
            })
            .collect();
        Some(claims)
    }

    /// Waits for the values of `keys`, whose leases other instances hold,
    /// polling up to the lease wait. Per key: the value that appeared, or
    /// `None` to fetch here — the lease came free (its holder failed or
    /// wrote nothing, and this instance took it) or the wait ran out.
    pub(crate) async fn wait_for(
        &self,
        ns: &str,
        keys: &[Key],
    ) -> Vec<Option<(Option<Value>, Duration)>> {
        let c = &self.inner.counters;
        c.lease_waits
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let wait = self.inner.lease.map_or(Duration::ZERO, |(_, w)| w);
        let deadline = tokio::time::Instant::now() + wait;
        let mut out: Vec<Option<(Option<Value>, Duration)>> = vec![None; keys.len()];
        let mut open: Vec<usize> = (0..keys.len()).collect();
        let mut pause = Duration::from_millis(2);
        while !open.is_empty() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                c.lease_takeovers
                    .fetch_add(open.len() as u64, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            let asked: Vec<Key> = open.iter().map(|&i| keys[i].clone()).collect();
            let Some(claims) = self.claim_counted(ns, &asked, false).await else {
                // The tier stopped answering: fetch the rest here.
                c.lease_takeovers
                    .fetch_add(open.len() as u64, Ordering::Relaxed);
                break;
            };
            let mut still = Vec::new();
            for (&i, claim) in open.iter().zip(claims) {
                match claim {
                    Claim::Hit(v, left) => out[i] = Some((v, left)),
                    // Free now, and taken: fetch it here, at once.
                    Claim::Mine => {}
                    Claim::Theirs => still.push(i),
                }
            }
            open = still;
        }
        out
    }

    fn decode(&self, bytes: &[u8]) -> Option<Option<Value>> {
        if bytes.len() > self.inner.max_value_bytes.saturating_add(1) {
            return None;
        }
        match bytes.split_first() {
            Some((&FOUND, json)) => serde_json::from_slice(json).ok().map(Some),
            Some((&NOT_FOUND, [])) => Some(None),
            _ => None,
        }
    }

    /// Runs a pipeline under the tier's breaker and timeout; `None` when
    /// it was not run or failed (counted).
    async fn run<T: ::redis::FromRedisValue>(&self, pipe: &::redis::Pipeline) -> Option<T> {
        let Ok(permit) = self.inner.breaker.try_acquire() else {
            self.inner.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let outcome = tokio::time::timeout(self.inner.timeout, async {
            let mut conn = self.connection().await?;
            pipe.query_async::<T>(&mut conn)
                .await
                .map_err(|e| format!("redis shared cache: {e}"))
        })
        .await;
        match outcome {
            Ok(Ok(v)) => {
                permit.success();
                self.inner
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                Some(v)
            }
            Ok(Err(e)) => {
                permit.failure();
                self.error(e);
                None
            }
            Err(_) => {
                permit.failure();
                self.error(format!(
                    "redis shared cache took longer than {:?}",
                    self.inner.timeout
                ));
                None
            }
        }
    }

    fn error(&self, message: String) {
        self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// The connection, made on first use (Redis need not be up when the
    /// pipeline starts); it reconnects by itself afterwards.
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut conn = self.inner.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = ConnectionManager::new_with_config(
            self.inner.client.clone(),
            self.inner.config.clone(),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the shared cache at {}: {e}",
                redact_url(&self.inner.url)
            )
        })?;
        *conn = Some(c.clone());
        Ok(c)
    }
}

impl SharedCacheBuilder {
    /// The first part of every key (default `fapilog`), to keep apart the
    /// entries of services that share a Redis.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Part of every key: bump it when what a lookup returns changes shape,
    /// so instances of the new version never read the old entries.
    #[must_use]
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// Longest one round trip to Redis may take, connecting included
    /// (default 250 ms: a loaded Redis is still faster than a database,
    /// and a tier that times out too eagerly opens its breaker and stops
    /// sharing). Past it the batch goes to the source.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The tier's own circuit breaker (failures are Redis errors and
    /// timeouts).
    #[must_use]
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Largest value written to or read from the tier (default 64 KiB);
    /// larger ones stay local.
    #[must_use]
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Fleet-wide single-flight: for keys missing in the tier, one
    /// instance takes a lease per key (`SET … NX PX hold`) and fetches;
    /// the others wait for the value to appear, up to `wait`, then fetch
    /// themselves (a holder that crashed costs one wait, not an outage).
    /// Keep `wait` below the enricher's call timeout.
    #[must_use]
    pub fn lease(mut self, hold: Duration, wait: Duration) -> Self {
        self.lease = Some((hold.max(Duration::from_millis(1)), wait.min(hold)));
        self
    }

    /// No leases: every instance that misses fetches.
    #[must_use]
    pub fn no_lease(mut self) -> Self {
        self.lease = None;
        self
    }

    /// Checks the settings; connecting happens on first use.
    pub fn build(self) -> Result<SharedCache, ConfigError> {
        let client = ::redis::Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::at(
                "shared_cache.url",
                format!(
                    "bad redis url {}: {e} (expected redis://[user][:password@]host[:port][/db])",
                    redact_url(&self.url)
                ),
            )
        })?;
        if self.timeout.is_zero() {
            return Err(ConfigError::at(
                "shared_cache.timeout",
                "the shared cache timeout must be more than zero",
            ));
        }
        let breaker = CircuitBreaker::new(self.breaker)
            .map_err(|e| ConfigError::at("shared_cache.breaker", e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        Ok(SharedCache {
            inner: Arc::new(Inner {
                url: self.url,
                client,
                config,
                prefix: self.prefix,
                schema_version: self.schema_version,
                timeout: self.timeout,
                max_value_bytes: self.max_value_bytes,
                lease: self.lease,
                token: instance_token(),
                breaker,
                conn: tokio::sync::Mutex::new(None),
                last_error: Mutex::new(None),
                counters: Counters::default(),
            }),
        })
    }
}

/// `<ns><type tag><encoded key>`.
fn redis_key(ns: &str, key: &Key) -> String {
    let mut s = String::with_capacity(ns.len() + 24);
    s.push_str(ns);
    match key {
        Key::Int(i) => {
            s.push('i');
            s.push_str(&i.to_string());
        }
        Key::UInt(u) => {
            s.push('u');
            s.push_str(&u.to_string());
        }
        Key::Bool(b) => s.push_str(if *b { "b1" } else { "b0" }),
        Key::Str(text) => {
            s.push('s');
            encode_part(&mut s, text);
        }
    }
    s
}

/// `<ns>l<typed key>`: the lease of a key, beside its value.
fn lease_key(ns: &str, key: &Key) -> String {
    let value = redis_key(ns, key);
    let mut s = String::with_capacity(value.len() + 1);
    s.push_str(ns);
    s.push(LEASE);
    s.push_str(&value[ns.len()..]);
    s
}

/// Tells this instance's leases apart from others'.
fn instance_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// Percent-encodes all but `A-Z a-z 0-9 - . _`: injective, and free of
/// `:` and of anything Redis patterns treat specially.
fn encode_part(out: &mut String, part: &str) {
    use std::fmt::Write;
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_typed_encoded_and_cannot_leave_their_namespace() {
        let tier = SharedCache::redis("redis://127.0.0.1:6379")
            .prefix("svc:a")
            .build()
            .unwrap();
        let ns = tier.namespace("users:v2");
        assert_eq!(ns, "svc%3Aa:users%3Av2:1:");
        assert_eq!(redis_key(&ns, &Key::Int(42)), "svc%3Aa:users%3Av2:1:i42");
        assert_ne!(
            redis_key(&ns, &Key::Int(42)),
            redis_key(&ns, &Key::Str("42".into()))
        );
        let hostile = redis_key(&ns, &Key::Str("x:1:other:i7 *?[\n]%".into()));
        assert_eq!(
            hostile,
            "svc%3Aa:users%3Av2:1:sx%3A1%3Aother%3Ai7%20%2A%3F%5B%0A%5D%25"
        );
        assert_eq!(hostile.matches(':').count(), 3);
        // Different strings, different keys (encoding is injective).
        assert_ne!(
            redis_key(&ns, &Key::Str("a%3A".into())),
            redis_key(&ns, &Key::Str("a:".into()))
        );
    }

    #[test]
    fn only_well_formed_entries_decode() {
        let tier = SharedCache::redis("redis://127.0.0.1:6379")
            .max_value_bytes(16)
            .build()
            .unwrap();
        assert_eq!(
            tier.decode(b"F{\"a\":1}"),
            Some(Some(serde_json::json!({"a": 1})))
        );
        assert_eq!(tier.decode(b"N"), Some(None));
        for bad in [&b""[..], b"Nx", b"F{", b"X1", b"F\"0123456789abcdefghij\""] {
            assert_eq!(tier.decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_settings_are_errors_without_the_password() {
        let e = SharedCache::redis("redis://:hunter2@[::1")
            .build()
            .expect_err("a bad url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = SharedCache::redis("redis://127.0.0.1")
            .timeout(Duration::ZERO)
            .build()
            .expect_err("a zero timeout");
        assert_eq!(e.key(), Some("shared_cache.timeout"));
    }
}
