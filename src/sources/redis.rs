//! `RedisLookup`: values from Redis, one round trip per batch of keys.
//!
//! Redis is where services keep the small per-user, per-tenant or
//! per-session records a log line wants next to it (tier, plan, region,
//! feature flags). It answers many keys in one command, so a batch's cold
//! keys cost one round trip however many there are:
//!
//! | mode | one batch of keys is | each value becomes |
//! | --- | --- | --- |
//! | [`get`](RedisLookupBuilder::get) (default) | one `MGET k1 k2 …` | the string value, read as the [`ValueFormat`] says |
//! | [`hgetall`](RedisLookupBuilder::hgetall) | one pipeline of `HGETALL k1`, `HGETALL k2`, … (one write, one read) | an object of the hash's fields, values as strings |
//!
//! **Key names.** A lookup [`Key`] becomes a Redis key through the key
//! template: `"user:{key}"` reads `user:42` for key `42`. Key names are sent
//! as arguments of the command (length-prefixed binary strings in the Redis
//! protocol), never as command text: a key holding spaces, quotes, `*`,
//! `\r\n`, `'; DROP …` or any Unicode is only the name of the key to read.
//! `MGET` does not glob, so `*` reads the key literally named `…*`.
//!
//! **Not found.** A missing key (`nil` from `MGET`, an empty hash from
//! `HGETALL`) is left out of the result, so the
//! [`LookupEnricher`](super::LookupEnricher) caches it as not found for its
//! negative TTL. `MGET` also answers `nil` for a key that holds a hash, a
//! list or a set: in `get` mode such keys are not found.
//!
//! **Unreadable values are skipped, not errors.** A value that is not JSON
//! in [`ValueFormat::Json`] mode, or a key that is not a hash in `hgetall`
//! mode (`WRONGTYPE`), is treated as not found and counted in
//! [`RedisLookup::invalid_values`]. A fetch has a single outcome for all its
//! keys: failing it over one bad value would fail every key of the batch,
//! cache nothing, count against the circuit breaker, and be repeated by
//! every later batch that sees the same hot key — until the breaker opens
//! for all keys. As "not found" it is cached like a missing key, the other
//! keys are served, and the value is read again after the negative TTL, so
//! correcting it in Redis corrects the logs. To keep such values as plain
//! strings instead, use [`ValueFormat::JsonOrString`]. Other server errors
//! (`NOAUTH`, `LOADING`, `OOM`…) fail the fetch.
//!
//! **Connection.** One multiplexed connection, kept by the redis crate's
//! `ConnectionManager`, opened at the enricher's start-up; it carries every
//! fetch concurrently. When a command finds the connection broken, the
//! manager reconnects in the background with exponential backoff; while
//! Redis stays down, later fetches and health checks keep starting new
//! attempts. Meanwhile fetches fail or time out (the circuit breaker counts
//! them; cached values are still served), and enrichment resumes when Redis
//! is back, without a restart. Start-up fails when Redis cannot be reached
//! after the reconnect retries; the pipeline then reports the enricher down
//! and retries its start-up in the background. Health checks send `PING`.
//!
//! The URL is never written to an error message or a `Debug` output with its
//! password.
//!
//! Not supported: Redis Cluster (an `MGET` of keys in different hash slots
//! fails there) and TLS (`rediss://`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, RedisResult};
use serde_json::Map;

use crate::enrich::EnrichError;
use crate::error::ConfigError;
use crate::event::Value;
use crate::lookup::{Found, Key, Lookup};

/// How a `GET`-mode value (a Redis string) becomes the enriched value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ValueFormat {
    /// The value is JSON (an object, usually) and is merged as such. A value
    /// that is not valid JSON is skipped: treated as not found and counted
    /// in [`RedisLookup::invalid_values`] (see the module docs for why).
    #[default]
    Json,
    /// The value is merged as a JSON string, whatever it holds (`{"a":1}`
    /// stays the text `{"a":1}`). Bytes that are not UTF-8 are replaced
    /// with `U+FFFD`.
    String,
    /// JSON when the value parses as JSON, else a string. Note that `42`,
    /// `true` and `"quoted"` parse as JSON: they become a number, a boolean
    /// and the unquoted string.
    JsonOrString,
}

/// Which command reads the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Get(ValueFormat),
    HGetAll,
}

/// Configures a [`RedisLookup`].
///
/// | setting | default |
/// | --- | --- |
/// | [`key_template`](Self::key_template) | `{key}` (the key itself) |
/// | mode | [`get`](Self::get) with [`ValueFormat::Json`] |
/// | [`connection_timeout`](Self::connection_timeout) | 1 s per connection attempt |
/// | [`response_timeout`](Self::response_timeout) | 1 s per command |
/// | [`reconnect_retries`](Self::reconnect_retries) | 3 (so 4 attempts per connect or reconnect) |
/// | [`reconnect_backoff`](Self::reconnect_backoff) | exponential from 100 ms to 2 s, with jitter |
///
/// The enricher's call timeout (`EnricherOptions::call_timeout`, 500 ms by
/// default) bounds each fetch as a whole, including time spent waiting for a
/// reconnection; the response timeout matters for health checks and for
/// longer call timeouts.
#[derive(Clone)]
pub struct RedisLookupBuilder {
    url: String,
    template: String,
    mode: Mode,
    connection_timeout: Duration,
    response_timeout: Duration,
    reconnect_retries: usize,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl fmt::Debug for RedisLookupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLookupBuilder")
            .field("url", &redact_url(&self.url))
            .field("key_template", &self.template)
            .field("mode", &self.mode)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_retries", &self.reconnect_retries)
            .field("reconnect_backoff", &(self.backoff_min, self.backoff_max))
            .finish()
    }
}

/// A [`Lookup`] that reads a batch of keys from Redis in one round trip;
/// see the module docs for the modes, key names and failure handling.
///
/// Clones share the connection and the counters (keep one to read
/// [`invalid_values`](Self::invalid_values) after handing the lookup to a
/// pipeline).
///
/// ```no_run
/// use fapilog::lookup::LookupEnricher;
/// use fapilog::sources::{RedisLookup, ValueFormat};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // `SET user:42 '{"name":"Ada","tier":"gold"}'` in Redis.
/// let users = RedisLookup::builder("redis://127.0.0.1:6379/0")
///     .key_template("user:{key}")
///     .get(ValueFormat::Json)
///     .build()?;
/// let enricher = LookupEnricher::builder("user", users)
///     .key_field("user_id")
///     .build();
/// let guard = fapilog::builder().async_enricher(enricher).init()?;
///
/// // Written with `"user": {"name": "Ada", "tier": "gold"}`.
/// tracing::info!(user_id = 42, "checkout started");
/// # drop(guard); Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLookup {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: ::redis::Client,
    /// The key template split at each `{key}` (at least two parts).
    template: Vec<String>,
    mode: Mode,
    manager_config: ConnectionManagerConfig,
    conn: Mutex<Option<ConnectionManager>>,
    invalid: AtomicU64,
}

impl fmt::Debug for RedisLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RedisLookup")
            .field("url", &redact_url(&i.url))
            .field("key_template", &i.template.join("{key}"))
            .field("mode", &i.mode)
            .field("connected", &i.lock().is_some())
            .field("invalid_values", &self.invalid_values())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RedisLookup {
    /// Starts configuring a lookup on the Redis server at `url`
    /// (`redis://[user][:password@]host[:port][/db]`, or
    /// `redis+unix:///path/to/redis.sock`).
    #[must_use]
    pub fn builder(url: impl Into<String>) -> RedisLookupBuilder {
        RedisLookupBuilder {
            url: url.into(),
            template: "{key}".to_owned(),
            mode: Mode::Get(ValueFormat::Json),
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            reconnect_retries: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// The Redis key a lookup key is read from (the key template filled
    /// in).
    pub fn key_name(&self, key: &Key) -> String {
        self.inner.template.join(&key.to_string())
    }

    /// Values skipped so far because they could not be read as configured:
    /// not JSON in [`ValueFormat::Json`] mode, or not a hash in `hgetall`
    /// mode. Such keys are treated as not found.
    pub fn invalid_values(&self) -> u64 {
        self.inner.invalid.load(Ordering::Relaxed)
    }

    /// The connection, once started: clone it to send commands of your own
    /// on the same multiplexed connection. `None` before start-up and after
    /// shutdown.
    pub fn connection_manager(&self) -> Option<ConnectionManager> {
        self.inner.lock().clone()
    }

    fn connection(&self) -> Result<ConnectionManager, EnrichError> {
        self.connection_manager()
            .ok_or_else(|| EnrichError::msg("redis lookup is not started (or was shut down)"))
    }

    fn skip(&self) {
        self.inner.invalid.fetch_add(1, Ordering::Relaxed);
    }
}

impl RedisLookupBuilder {
    /// The Redis key for a lookup key: `{key}` is replaced with the key
    /// (`"user:{key}"` reads `user:42`; `"tenant:{key}:profile"` works too).
    /// Must contain `{key}`.
    #[must_use]
    pub fn key_template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// Reads string values with `GET` (one `MGET` per batch), converted as
    /// `format` says. This is the default, with [`ValueFormat::Json`].
    #[must_use]
    pub fn get(mut self, format: ValueFormat) -> Self {
        self.mode = Mode::Get(format);
        self
    }

    /// Reads hashes with `HGETALL` (one pipeline per batch): each hash
    /// becomes a JSON object of its fields, every value a string. An empty
    /// or missing hash is not found.
    #[must_use]
    pub fn hgetall(mut self) -> Self {
        self.mode = Mode::HGetAll;
        self
    }

    /// Longest one connection attempt may take.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Longest Redis may take to answer one command.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many times a failed connection attempt is retried, at start-up
    /// and on each reconnection, before the attempt is reported as failed
    /// (the next command then starts a new reconnection).
    #[must_use]
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// The delay between connection retries: exponential from `min`,
    /// doubling, up to `max`, with jitter.
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Checks the settings. Connecting happens at the enricher's start-up.
    pub fn build(self) -> Result<RedisLookup, ConfigError> {
        // Parses the URL without connecting. The crate's parse errors do not
        // repeat the URL; the one we add is redacted.
        let client = ::redis::Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::msg(format!(
                "bad redis url {}: {e} (expected redis://[user][:password@]host[:port][/db] or redis+unix:///path)",
                redact_url(&self.url)
            ))
        })?;
        if !self.template.contains("{key}") {
            return Err(ConfigError::msg(format!(
                "redis key template must contain `{{key}}`, which becomes the lookup key (e.g. \"user:{{key}}\"); got {:?}",
                self.template
            )));
        }
        for (name, d) in [
            ("connection_timeout", self.connection_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::msg(format!("redis {name} must not be zero")));
            }
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(self.reconnect_retries)
            .set_min_delay(self.backoff_min)
            .set_max_delay(self.backoff_max)
            .set_exponent_base(2.0);
        Ok(RedisLookup {
            inner: Arc::new(Inner {
                client,
                template: self.template.split("{key}").map(str::to_owned).collect(),
                url: self.url,
                mode: self.mode,
                manager_config,
                conn: Mutex::new(None),
                invalid: AtomicU64::new(0),
            }),
        })
    }
}

/// Hides passwords: `scheme://user:password@host` → `scheme://user:***@host`,
/// and `pass=…`/`password=…` query parameters (unix-socket URLs).
fn redact_url(url: &str) -> String {
    crate::enrich::redact::url(url, crate::enrich::redact::Query::HidePasswords)
}

fn connect_error(url: &str, e: RedisError) -> EnrichError {
    // Redis errors do not carry the password; the URL we add is redacted.
    EnrichError::new(
        format!("could not connect to redis at {}", redact_url(url)),
        e,
    )
}

fn command_error(command: &'static str, e: RedisError) -> EnrichError {
    EnrichError::new(format!("redis {command} failed"), e)
}

/// A Redis string → the enriched value, or `None` when it cannot be read
/// in `format`.
fn decode(format: ValueFormat, bytes: Vec<u8>) -> Option<Value> {
    match format {
        ValueFormat::Json => serde_json::from_slice(&bytes).ok(),
        ValueFormat::String => Some(Value::String(lossy(bytes))),
        ValueFormat::JsonOrString => {
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(lossy(bytes))))
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A reply's text, for hash fields and values.
fn text(v: ::redis::Value) -> Option<String> {
    match v {
        ::redis::Value::BulkString(b) => Some(lossy(b)),
        ::redis::Value::SimpleString(s) => Some(s),
        ::redis::Value::VerbatimString { text, .. } => Some(text),
        ::redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An `HGETALL` reply (a flat array of field, value pairs in RESP2, a map in
/// RESP3) → an object of strings.
fn hash_to_object(v: ::redis::Value) -> Option<Map<String, Value>> {
    let pairs: Vec<(::redis::Value, ::redis::Value)> = match v {
        ::redis::Value::Map(pairs) => pairs,
        ::redis::Value::Array(items) => {
            if items.len() % 2 != 0 {
                return None;
            }
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        ::redis::Value::Nil => Vec::new(),
        _ => return None,
    };
    let mut obj = Map::with_capacity(pairs.len());
    for (k, v) in pairs {
        obj.insert(text(k)?, Value::String(text(v)?));
    }
    Some(obj)
}

impl Lookup for RedisLookup {
    async fn startup(&self) -> Result<(), EnrichError> {
        if self.inner.lock().is_some() {
            return Ok(());
        }
        let url = self.inner.url.as_str();
        // Connects (with the configured retries), authenticates and selects
        // the database; fails if Redis cannot be reached.
        let mut manager = ConnectionManager::new_with_config(
            self.inner.client.clone(),
            self.inner.manager_config.clone(),
        )
        .await
        .map_err(|e| connect_error(url, e))?;
        ::redis::cmd("PING")
            .query_async::<()>(&mut manager)
            .await
            .map_err(|e| connect_error(url, e))?;
        // Start-up runs once at a time; keep the first manager if one exists.
        self.inner.lock().get_or_insert(manager);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        // Dropping the last handle closes the connection and stops the
        // manager's background reconnection.
        self.inner.lock().take();
        Ok(())
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        let mut conn = self.connection()?;
        ::redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| command_error("PING", e))
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        if keys.is_empty() {
            return Ok(Found::new());
        }
        let mut conn = self.connection()?;
        let names: Vec<Vec<u8>> = keys.iter().map(|k| self.key_name(k).into_bytes()).collect();
        let mut found = Found::with_capacity(keys.len());
        match self.inner.mode {
            Mode::Get(format) => {
                let mut cmd = ::redis::cmd("MGET");
                for name in &names {
                    cmd.arg(name.as_slice());
                }
                let values: Vec<::redis::Value> = cmd
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| command_error("MGET", e))?;
                if values.len() != keys.len() {
                    return Err(EnrichError::msg(format!(
                        "redis MGET answered {} values for {} keys",
                        values.len(),
                        keys.len()
                    )));
                }
                for (key, value) in keys.iter().zip(values) {
                    let bytes = match value {
                        ::redis::Value::Nil => continue,
                        ::redis::Value::BulkString(b) => b,
                        ::redis::Value::SimpleString(s) => s.into_bytes(),
                        ::redis::Value::VerbatimString { text, .. } => text.into_bytes(),
                        _ => {
                            self.skip();
                            continue;
                        }
                    };
                    match decode(format, bytes) {
                        Some(v) => {
                            found.insert(key.clone(), v);
                        }
                        None => self.skip(),
                    }
                }
            }
            Mode::HGetAll => {
                let mut pipe = ::redis::pipe();
                for name in &names {
                    pipe.cmd("HGETALL").arg(name.as_slice());
                }
                // Per-command results, so one key of the wrong type does not
                // fail the others.
                pipe.ignore_errors();
                let replies: Vec<RedisResult<::redis::Value>> =
                    pipe.query_async(&mut conn)
                        .await
                        .map_err(|e| command_error("HGETALL", e))?;
                if replies.len() != keys.len() {
                    return Err(EnrichError::msg(format!(
                        "redis pipeline answered {} replies for {} HGETALLs",
                        replies.len(),
                        keys.len()
                    )));
                }
                for (key, reply) in keys.iter().zip(replies) {
                    match reply {
                        Ok(v) => match hash_to_object(v) {
                            Some(obj) if obj.is_empty() => {}
                            Some(obj) => {
                                found.insert(key.clone(), Value::Object(obj));
                            }
                            None => self.skip(),
                        },
                        Err(e) if e.code() == Some("WRONGTYPE") => self.skip(),
                        Err(e) => return Err(command_error("HGETALL", e)),
                    }
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://app:s3cret@cache:6379/0"),
            "redis://app:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@cache"), "redis://:***@cache");
        assert_eq!(redact_url("redis://cache:6379/2"), "redis://cache:6379/2");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        let b = RedisLookup::builder("redis://app:s3cret@cache/0");
        assert!(!format!("{b:?}").contains("s3cret"));
        let l = b.build().unwrap();
        assert!(!format!("{l:?}").contains("s3cret"));
        assert!(format!("{l:?}").contains("app:***@cache"));
    }

    #[test]
    fn bad_settings_are_named_without_the_password() {
        let e = RedisLookup::builder("http://app:s3cret@cache")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("bad redis url"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = RedisLookup::builder("redis://cache")
            .key_template("user:")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("{key}"), "{e}");
        let e = RedisLookup::builder("redis://cache")
            .response_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("response_timeout"), "{e}");
    }

    #[test]
    fn template_fills_every_placeholder_once() {
        let l = RedisLookup::builder("redis://cache")
            .key_template("t:{key}:p:{key}")
            .build()
            .unwrap();
        assert_eq!(l.key_name(&Key::from(42i64)), "t:42:p:42");
        // A key that looks like the placeholder is not expanded again.
        assert_eq!(l.key_name(&Key::from("{key}")), "t:{key}:p:{key}");
        let plain = RedisLookup::builder("redis://cache").build().unwrap();
        assert_eq!(plain.key_name(&Key::from("a b")), "a b");
    }

    #[test]
    fn values_decode_per_format() {
        let obj = serde_json::json!({"name": "Ada"});
        let raw = br#"{"name":"Ada"}"#.to_vec();
        assert_eq!(decode(ValueFormat::Json, raw.clone()), Some(obj.clone()));
        assert_eq!(decode(ValueFormat::Json, b"Ada".to_vec()), None);
        assert_eq!(
            decode(ValueFormat::String, raw.clone()),
            Some(Value::from(r#"{"name":"Ada"}"#))
        );
        assert_eq!(decode(ValueFormat::JsonOrString, raw), Some(obj));
        assert_eq!(
            decode(ValueFormat::JsonOrString, b"Ada".to_vec()),
            Some(Value::from("Ada"))
        );
        assert_eq!(
            decode(ValueFormat::String, vec![0x41, 0xff]),
            Some(Value::from("A\u{fffd}"))
        );
    }

    #[test]
    fn hash_replies_become_objects() {
        use ::redis::Value as R;
        let flat = R::Array(vec![
            R::BulkString(b"name".to_vec()),
            R::BulkString(b"Ada".to_vec()),
            R::BulkString(b"tier".to_vec()),
            R::BulkString(b"gold".to_vec()),
        ]);
        let obj = hash_to_object(flat).unwrap();
        assert_eq!(
            Value::Object(obj),
            serde_json::json!({"name": "Ada", "tier": "gold"})
        );
        let map = R::Map(vec![(R::BulkString(b"a".to_vec()), R::Int(1))]);
        assert_eq!(
            Value::Object(hash_to_object(map).unwrap()),
            serde_json::json!({"a": "1"})
        );
        assert!(hash_to_object(R::Array(vec![])).unwrap().is_empty());
        assert!(hash_to_object(R::Array(vec![R::Nil])).is_none());
    }
}
