//! `HttpLookup`: values from a JSON API over HTTP(S), through one pooled
//! `reqwest` client per lookup.
//!
//! Why a lookup of its own rather than an enricher calling `reqwest`: an API
//! answering "who is user 42" is exactly the shape
//! [`LookupEnricher`](crate::lookup::LookupEnricher) already optimises — a
//! few hot keys, cold ones trickling in — so the cache, the negative cache,
//! single-flight, batching, the call timeout and the circuit breaker all
//! apply unchanged; this module only has to turn keys into requests and
//! responses into values, safely.
//!
//! Two ways to ask:
//!
//! | endpoint | request | response |
//! | --- | --- | --- |
//! | per key (the URL template) | `GET`, the key percent-encoded into `{key}`; a fetch's keys are requested concurrently (bounded by [`concurrency`](HttpLookupBuilder::concurrency)) | the key's JSON value |
//! | batch ([`batch_url`](HttpLookupBuilder::batch_url)) | one `POST` per fetch with the body `{"keys": [...]}` (integer keys stay numbers) | a JSON object `{"<key>": value, ...}`; keys left out were not found |
//!
//! The JSON value is what the
//! [`LookupEnricher`](crate::lookup::LookupEnricher) merges under its name.
//!
//! ## Outcomes
//!
//! | response | result | circuit breaker |
//! | --- | --- | --- |
//! | 2xx with a JSON value | found | success |
//! | 2xx with `null` or an empty body, 204 (per key); a key absent or `null` (batch) | not found (negatively cached) | success |
//! | 404, 410 (per key) | not found (negatively cached) | success |
//! | 400, 422, 414 (per key: the server says *this key* is malformed) | not found (negatively cached) | success |
//! | 5xx | error naming the status | failure |
//! | any other status: 3xx (redirects are not followed), 401, 403, 429, a 404 from the batch endpoint… | error naming the status | failure |
//! | body that is not JSON, or a batch body that is not an object | error saying so | failure |
//! | body larger than [`max_response_bytes`](HttpLookupBuilder::max_response_bytes) | error naming the limit | failure |
//! | timeout, connection refused or reset, DNS failure | error saying which | failure |
//!
//! Every error counts against the circuit breaker, client errors and bad
//! bodies included, because [`Lookup::fetch`] can only fail as a whole: a
//! 401 after a token rotation, a 400 on every request or an endpoint that
//! answers HTML all fail every call the same way, and opening the breaker
//! stops sending requests that cannot succeed until a probe shows the API
//! answering again. Errors are never cached. The exception is a per-key
//! request the server rejects as malformed (400, 422, 414): that is about
//! the key, not the API, so one hostile key is not found and never opens
//! the breaker for everyone.
//!
//! In per-key mode the first failing request fails the whole fetch (and
//! every key in it, with that request's error): [`Found`] cannot say "this
//! key failed". Where one key's failure must not affect the others, set
//! [`max_batch(1)`](crate::lookup::LookupEnricherBuilder::max_batch) on the
//! enricher so each key is a fetch (and a breaker call) of its own.
//!
//! Keys are percent-encoded (every byte but `A-Z a-z 0-9 - . _ ~`), so a key
//! holding `/`, `?`, `#`, quotes, spaces or non-ASCII text stays one path
//! segment and reaches the server as it was logged. A key that cannot name a
//! path segment — empty, `.` or `..` — is not found without a request when
//! `{key}` is in the URL's path.
//!
//! ## Context propagation
//!
//! The lookup asks the enricher for some event fields
//! ([`Lookup::context_fields`]) and sends each as a request header, so the
//! API's own logs and traces join the request that logged the event. By
//! default `traceparent` and `tracestate` are sent under their own names
//! and `request_id` as `x-request-id`; fields are found like keys are (the
//! event, then its spans from the innermost out), so a `traceparent`
//! recorded on a request span is forwarded for every event inside it. Each
//! key's headers come from the first event of the batch that carried it; a
//! batch `POST` carries, for each header, the first key's value that has
//! one. A value that is not a valid header value is left out. The headers
//! are for correlation only: answers are cached by key, so an event served
//! from the cache makes no request and forwards nothing.
//!
//! ## Secrets
//!
//! Header values set with [`header`](HttpLookupBuilder::header) and
//! [`bearer_token`](HttpLookupBuilder::bearer_token) are marked sensitive
//! and appear in no `Debug` output, error message or log record. URLs are
//! shown without the password of their user info and without their query
//! string. Redirects are not followed, so credentials never go to another
//! host.

use std::borrow::Cow;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Response, StatusCode, Url};

mod template;

use template::{UrlTemplate, check_url};

use crate::enrich::EnrichError;
use crate::error::ConfigError;
use crate::event::Value;
use crate::lookup::{Found, Key, Lookup};

/// Client settings of an [`HttpLookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientSettings {
    connect_timeout: Duration,
    timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    concurrency: usize,
    max_response_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            pool_max_idle_per_host: 8,
            pool_idle_timeout: Duration::from_secs(90),
            concurrency: 8,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// Configures an [`HttpLookup`]. Start from [`HttpLookup::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | [`batch_url`](Self::batch_url) | none: one `GET` per key |
/// | [`health_url`](Self::health_url) | none: healthy once the client is built |
/// | [`header`](Self::header), [`bearer_token`](Self::bearer_token) | none |
/// | [`connect_timeout`](Self::connect_timeout) | 1 s |
/// | [`timeout`](Self::timeout) (one whole request, body included) | 2 s |
/// | [`pool_max_idle_per_host`](Self::pool_max_idle_per_host) | 8 connections |
/// | [`pool_idle_timeout`](Self::pool_idle_timeout) | 90 s |
/// | [`concurrency`](Self::concurrency) (per-key requests in flight per fetch) | 8 |
/// | [`max_response_bytes`](Self::max_response_bytes) | 1 MiB |
/// | [`forward_field`](Self::forward_field) | `traceparent` → `traceparent`, `tracestate` → `tracestate`, `request_id` → `x-request-id` |
///
/// The enricher's call timeout (500 ms by default) bounds a whole fetch as
/// well; whichever passes first fails it.
#[derive(Clone)]
pub struct HttpLookupBuilder {
    template: String,
    batch_url: Option<String>,
    health_url: Option<String>,
    headers: HeaderMap,
    settings: ClientSettings,
    forward: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    errors: Vec<String>,
}

impl fmt::Debug for HttpLookupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLookupBuilder")
            .field("url", &redact_url(&self.template))
            .field("batch_url", &self.batch_url.as_deref().map(redact_url))
            .field("health_url", &self.health_url.as_deref().map(redact_url))
            .field("headers", &RedactedHeaders(&self.headers))
            .field("settings", &self.settings)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

/// A [`Lookup`] that asks a JSON API over HTTP(S); see the module docs for
/// the endpoints, outcomes and error semantics.
///
/// One `reqwest` client (one connection pool) serves every request of the
/// lookup. It is built at the enricher's start-up (or on first use, when the
/// lookup is used directly) and dropped at shutdown. Start-up makes no
/// request: an API that is down shows in the health check and the circuit
/// breaker, not as a failed start.
///
/// ```no_run
/// use std::time::Duration;
/// use fapilog::lookup::LookupEnricher;
/// use fapilog::sources::HttpLookup;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let users = HttpLookup::builder("https://users.internal/v1/users/{key}")
///     .batch_url("https://users.internal/v1/users:batchGet")
///     .health_url("https://users.internal/healthz")
///     .bearer_token(std::env::var("USERS_API_TOKEN")?)
///     .timeout(Duration::from_millis(300))
///     .build()?;
/// let enricher = LookupEnricher::builder("user", users)
///     .key_field("user_id")
///     .build();
/// let guard = fapilog::builder().async_enricher(enricher).init()?;
/// # drop(guard); Ok(()) }
/// ```
pub struct HttpLookup {
    template: UrlTemplate,
    batch_url: Option<Url>,
    health_url: Option<Url>,
    headers: HeaderMap,
    settings: ClientSettings,
    forward_headers: Vec<HeaderName>,
    forward_fields: Vec<Cow<'static, str>>,
    client: Mutex<Option<Client>>,
}

impl fmt::Debug for HttpLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLookup")
            .field("url", &self.template.shown)
            .field(
                "batch_url",
                &self.batch_url.as_ref().map(|u| redact_url(u.as_str())),
            )
            .field(
                "health_url",
                &self.health_url.as_ref().map(|u| redact_url(u.as_str())),
            )
            .field("headers", &RedactedHeaders(&self.headers))
            .field("settings", &self.settings)
            .field("forward_fields", &self.forward_fields)
            .finish_non_exhaustive()
    }
}

/// Header names with their values hidden.
struct RedactedHeaders<'a>(&'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k.as_str(), "***")))
            .finish()
    }
}

/// `scheme://user:password@host/path?query` → `scheme://user:***@host/path?…`.
fn redact_url(url: &str) -> String {
    crate::enrich::redact::url(url, crate::enrich::redact::Query::Hide)
}

impl HttpLookup {
    /// Starts configuring a lookup whose per-key URL is `url_template`, with
    /// `{key}` where the (percent-encoded) key goes:
    /// `"https://api.example/users/{key}"`.
    #[must_use]
    pub fn builder(url_template: impl Into<String>) -> HttpLookupBuilder {
        HttpLookupBuilder {
            template: url_template.into(),
            batch_url: None,
            health_url: None,
            headers: HeaderMap::new(),
            settings: ClientSettings::default(),
            forward: vec![
                (Cow::Borrowed("traceparent"), Cow::Borrowed("traceparent")),
                (Cow::Borrowed("tracestate"), Cow::Borrowed("tracestate")),
                (Cow::Borrowed("request_id"), Cow::Borrowed("x-request-id")),
            ],
            errors: Vec::new(),
        }
    }

    fn build_client(&self) -> Result<Client, EnrichError> {
        let s = &self.settings;
        Client::builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.timeout)
            .pool_max_idle_per_host(s.pool_max_idle_per_host)
            .pool_idle_timeout(s.pool_idle_timeout)
            .default_headers(self.headers.clone())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fapilog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                EnrichError::msg(format!(
                    "http lookup: could not build the http client: {}",
                    root_cause(e)
                ))
            })
    }

    /// The shared client, built now if start-up has not built it.
    fn client(&self) -> Result<Client, EnrichError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.build_client()?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forwarded headers for one request: for each, the first of `contexts`
    /// that has a usable value.
    fn context_headers<'a>(
        &self,
        contexts: impl Iterator<Item = &'a Vec<Option<Value>>> + Clone,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (i, name) in self.forward_headers.iter().enumerate() {
            if headers.contains_key(name) {
                continue;
            }
            let value = contexts.clone().find_map(|c| {
                let text = match c.get(i)?.as_ref()? {
                    Value::String(s) => s.clone(),
                    v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                    _ => return None,
                };
                HeaderValue::from_str(&text).ok()
            });
            if let Some(v) = value {
                headers.insert(name.clone(), v);
            }
        }
        headers
    }

    /// One `GET` for one key.
    async fn get_one(
        &self,
        client: &Client,
        key: &Key,
        context: Option<&Vec<Option<Value>>>,
    ) -> Result<Option<(Key, Value)>, EnrichError> {
        let Some(url) = self.template.url_for(key) else {
            return Ok(None);
        };
        let endpoint = Endpoint {
            method: "GET",
            url: &self.template.shown,
        };
        let resp = client
            .get(url?)
            .headers(self.context_headers(context.into_iter()))
            .send()
            .await
            .map_err(|e| endpoint.transport_error(e, &self.settings))?;
        match resp.status() {
            // No such key, or the server says this key is malformed: not
            // found for this key alone, not an outage.
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::URI_TOO_LONG => {
                // Read the (small) body so the connection goes back to the pool.
                let _ = self.read_body(resp, &endpoint).await;
                Ok(None)
            }
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => {
                let body = self.read_body(resp, &endpoint).await?;
                match endpoint.parse_json(&body)? {
                    Value::Null => Ok(None),
                    v => Ok(Some((key.clone(), v))),
                }
            }
            s => Err(endpoint.status_error(s)),
        }
    }

    /// One `POST` for all keys.
    async fn post_batch(
        &self,
        client: &Client,
        url: &Url,
        keys: &[Key],
        context: &[Vec<Option<Value>>],
    ) -> Result<Found, EnrichError> {
        let shown = redact_url(url.as_str());
        let endpoint = Endpoint {
            method: "POST",
            url: &shown,
        };
        let body =
            serde_json::json!({ "keys": keys.iter().map(Key::to_value).collect::<Vec<_>>() });
        let resp = client
            .post(url.clone())
            .headers(self.context_headers(context.iter()))
            .json(&body)
            .send()
            .await
            .map_err(|e| endpoint.transport_error(e, &self.settings))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(endpoint.status_error(status));
        }
        let body = self.read_body(resp, &endpoint).await?;
        let Value::Object(map) = endpoint.parse_json(&body)? else {
            return Err(EnrichError::msg(format!(
                "http lookup: POST {shown} must answer a JSON object keyed by key, {{\"<key>\": value}}; got another JSON value"
            )));
        };
        Ok(keys
            .iter()
            .filter_map(|k| match map.get(&k.to_string()) {
                None | Some(Value::Null) => None,
                Some(v) => Some((k.clone(), v.clone())),
            })
            .collect())
    }

    /// Reads a body, failing as soon as it passes the size limit (whatever
    /// `Content-Length` says).
    async fn read_body(
        &self,
        mut resp: Response,
        endpoint: &Endpoint<'_>,
    ) -> Result<Vec<u8>, EnrichError> {
        let limit = self.settings.max_response_bytes;
        let declared = resp.content_length();
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(endpoint.too_large(limit));
        }
        let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize).min(limit));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| endpoint.transport_error(e, &self.settings))?
        {
            if body.len() + chunk.len() > limit {
                return Err(endpoint.too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The request an error is about, as shown in messages (no key, no
/// secrets).
struct Endpoint<'a> {
    method: &'static str,
    url: &'a str,
}

impl Endpoint<'_> {
    fn status_error(&self, status: StatusCode) -> EnrichError {
        EnrichError::msg(format!(
            "http lookup: {} {} answered {status}",
            self.method, self.url
        ))
    }

    fn too_large(&self, limit: usize) -> EnrichError {
        EnrichError::msg(format!(
            "http lookup: response to {} {} is larger than the {limit}-byte limit (max_response_bytes)",
            self.method, self.url
        ))
    }

    fn parse_json(&self, body: &[u8]) -> Result<Value, EnrichError> {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(body).map_err(|e| {
            EnrichError::msg(format!(
                "http lookup: response to {} {} is not valid JSON: {e}",
                self.method, self.url
            ))
        })
    }

    fn transport_error(&self, e: reqwest::Error, s: &ClientSettings) -> EnrichError {
        let what = if e.is_connect() && e.is_timeout() {
            format!(
                "could not connect within {}",
                humantime::format_duration(s.connect_timeout)
            )
        } else if e.is_timeout() {
            format!("timed out after {}", humantime::format_duration(s.timeout))
        } else if e.is_connect() {
            format!("could not connect: {}", root_cause(e))
        } else if e.is_body() || e.is_decode() {
            format!("failed while reading the response: {}", root_cause(e))
        } else {
            format!("failed: {}", root_cause(e))
        };
        EnrichError::msg(format!("http lookup: {} {} {what}", self.method, self.url))
    }
}

/// The innermost cause of a `reqwest` error (`Connection refused`), which
/// carries no URL; the error itself, without its URL, if it has no cause.
fn root_cause(e: reqwest::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    last.unwrap_or_else(|| e.without_url().to_string())
}

impl HttpLookupBuilder {
    /// Fetches a whole batch with one `POST` to `url`, body
    /// `{"keys": [...]}`, answered by a JSON object from key (as a string)
    /// to value; keys left out (or `null`) were not found. Without it, each
    /// key is a `GET` on the URL template.
    #[must_use]
    pub fn batch_url(mut self, url: impl Into<String>) -> Self {
        self.batch_url = Some(url.into());
        self
    }

    /// The health check `GET`s `url` (with the configured headers): any 2xx
    /// is healthy. Without it, the lookup is healthy once its client is
    /// built.
    #[must_use]
    pub fn health_url(mut self, url: impl Into<String>) -> Self {
        self.health_url = Some(url.into());
        self
    }

    /// Sends this header with every request (an API key, a tenant id). The
    /// value is marked sensitive and never shown; an invalid name or value
    /// makes [`build`](Self::build) fail (naming the header, not the
    /// value).
    #[must_use]
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                self.headers.insert(n, v);
            }
            (Err(_), _) => self
                .errors
                .push(format!("http lookup header name {name:?} is not a valid header name")),
            (_, Err(_)) => self.errors.push(format!(
                "http lookup header {name:?} has a value that is not a valid header value (value not shown)"
            )),
        }
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request; the token
    /// is marked sensitive and never shown.
    #[must_use]
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.header(AUTHORIZATION.as_str(), value)
    }

    /// Longest connecting (TCP and TLS) may take.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Longest one request may take, from connecting to the end of the
    /// body.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Most idle connections kept open to one host.
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, connections: usize) -> Self {
        self.settings.pool_max_idle_per_host = connections;
        self
    }

    /// Idle connections are closed after this.
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.pool_idle_timeout = timeout;
        self
    }

    /// Most per-key `GET`s one fetch has in flight at once.
    #[must_use]
    pub fn concurrency(mut self, requests: usize) -> Self {
        self.settings.concurrency = requests;
        self
    }

    /// Largest response body accepted, in bytes; a larger one fails the
    /// request as soon as the limit is passed.
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_response_bytes = bytes;
        self
    }

    /// Sends the event field `field` (found like a key: the event, then its
    /// spans from the innermost out) as the request header `header`. Adds to
    /// the defaults (see the table above); for one header, the first
    /// forwarded field the event has wins.
    pub fn forward_field(
        mut self,
        field: impl Into<Cow<'static, str>>,
        header: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.forward.push((field.into(), header.into()));
        self
    }

    /// Forwards no event fields, not even the defaults (call before
    /// [`forward_field`](Self::forward_field) to forward only those).
    #[must_use]
    pub fn no_forwarded_fields(mut self) -> Self {
        self.forward.clear();
        self
    }

    /// Checks the settings. The client is built at the enricher's start-up.
    pub fn build(self) -> Result<HttpLookup, ConfigError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(ConfigError::msg(e));
        }
        let template = UrlTemplate::parse(&self.template)?;
        let batch_url = self
            .batch_url
            .as_deref()
            .map(|u| check_url("batch_url", u))
            .transpose()?;
        let health_url = self
            .health_url
            .as_deref()
            .map(|u| check_url("health_url", u))
            .transpose()?;
        let s = self.settings;
        if s.concurrency == 0 || s.max_response_bytes == 0 {
            return Err(ConfigError::msg(format!(
                "http lookup needs concurrency >= 1 and max_response_bytes >= 1; got {} and {}",
                s.concurrency, s.max_response_bytes
            )));
        }
        if s.timeout.is_zero() || s.connect_timeout.is_zero() {
            return Err(ConfigError::msg(
                "http lookup timeouts must not be zero".to_owned(),
            ));
        }
        let mut forward_fields = Vec::with_capacity(self.forward.len());
        let mut forward_headers = Vec::with_capacity(self.forward.len());
        for (field, header) in self.forward {
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                ConfigError::msg(format!(
                    "http lookup forwards field {field:?} as {header:?}, which is not a valid header name"
                ))
            })?;
            forward_fields.push(field);
            forward_headers.push(name);
        }
        Ok(HttpLookup {
            template,
            batch_url,
            health_url,
            headers: self.headers,
            settings: s,
            forward_headers,
            forward_fields,
            client: Mutex::new(None),
        })
    }
}

impl Lookup for HttpLookup {
    async fn startup(&self) -> Result<(), EnrichError> {
        self.client().map(drop)
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        // Idle pooled connections close once in-flight requests finish.
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        let client = self.client()?;
        let Some(url) = &self.health_url else {
            return Ok(());
        };
        let shown = redact_url(url.as_str());
        let endpoint = Endpoint {
            method: "GET",
            url: &shown,
        };
        let resp = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| endpoint.transport_error(e, &self.settings))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(endpoint.status_error(resp.status()))
        }
    }

    fn context_fields(&self) -> &[Cow<'static, str>] {
        &self.forward_fields
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        self.fetch_with_context(keys, &[]).await
    }

    async fn fetch_with_context(
        &self,
        keys: &[Key],
        context: &[Vec<Option<Value>>],
    ) -> Result<Found, EnrichError> {
        if keys.is_empty() {
            return Ok(Found::new());
        }
        let client = self.client()?;
        if let Some(url) = &self.batch_url {
            return self.post_batch(&client, url, keys, context).await;
        }
        // The requests are built up front (they start when polled): a
        // closure inside the stream would make the future not `Send`.
        let requests: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| self.get_one(&client, key, context.get(i)))
            .collect();
        futures_util::stream::iter(requests)
            .buffer_unordered(self.settings.concurrency)
            .try_fold(
                Found::with_capacity(keys.len()),
                |mut found, hit| async move {
                    if let Some((k, v)) = hit {
                        found.insert(k, v);
                    }
                    Ok(found)
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_encoded_segment() {
        let t = UrlTemplate::parse("http://api.test/users/{key}/profile").unwrap();
        let url = |k: &str| t.url_for(&Key::from(k)).unwrap().unwrap();
        assert_eq!(
            url("a/b?c#d").as_str(),
            "http://api.test/users/a%2Fb%3Fc%23d/profile"
        );
        assert_eq!(
            url("'; DROP TABLE users; --").path(),
            "/users/%27%3B%20DROP%20TABLE%20users%3B%20--/profile"
        );
        assert_eq!(url("zoë").path(), "/users/zo%C3%AB/profile");
        assert_eq!(url("a.b-c_d~e").path(), "/users/a.b-c_d~e/profile");
        assert_eq!(
            t.url_for(&Key::Int(42)).unwrap().unwrap().path(),
            "/users/42/profile"
        );
        for k in ["", ".", ".."] {
            assert!(t.url_for(&Key::from(k)).is_none(), "{k:?}");
        }
        let q = UrlTemplate::parse("http://api.test/users?id={key}").unwrap();
        assert_eq!(
            q.url_for(&Key::from("..")).unwrap().unwrap().as_str(),
            "http://api.test/users?id=.."
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://app:s3cret@api.test/u/{key}?api_key=k3y"),
            "https://app:***@api.test/u/{key}?…"
        );
        assert_eq!(
            redact_url("http://api.test/u/{key}"),
            "http://api.test/u/{key}"
        );
        assert_eq!(redact_url("http://tok@api.test/x"), "http://tok@api.test/x");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let b = HttpLookup::builder("https://app:pw1@api.test/u/{key}?api_key=k3y")
            .bearer_token("t0ken")
            .header("x-api-key", "s3cret");
        let shown = format!("{b:?}");
        let lookup = b.build().unwrap();
        let shown_built = format!("{lookup:?}");
        for s in [shown, shown_built] {
            for secret in ["pw1", "k3y", "t0ken", "s3cret"] {
                assert!(!s.contains(secret), "{secret} in {s}");
            }
            assert!(
                s.contains("x-api-key") && s.contains("authorization"),
                "{s}"
            );
        }
        assert!(lookup.headers.values().all(HeaderValue::is_sensitive));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = HttpLookup::builder("http://api.test/users")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("{key}"), "{e}");
        let e = HttpLookup::builder("ftp://api.test/{key}")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = HttpLookup::builder("http://api.test/{key}")
            .batch_url("not a url")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("batch_url"), "{e}");
        let e = HttpLookup::builder("http://api.test/{key}")
            .header("x-api-key", "line\nbreak-s3cret")
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("x-api-key") && !e.to_string().contains("s3cret"),
            "{e}"
        );
        let e = HttpLookup::builder("http://api.test/{key}")
            .concurrency(0)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("concurrency"), "{e}");
    }

    #[test]
    fn context_becomes_headers() {
        let lookup = HttpLookup::builder("http://api.test/{key}")
            .forward_field("x_request_id", "x-request-id")
            .build()
            .unwrap();
        assert_eq!(
            lookup.context_fields(),
            ["traceparent", "tracestate", "request_id", "x_request_id"]
        );
        let a = vec![None, None, None, Some(Value::from("r-2"))];
        let b = vec![
            Some(Value::from("00-abc-def-01")),
            Some(Value::from(vec![1])),
            Some(Value::from(7)),
            None,
        ];
        let h = lookup.context_headers([&a, &b].into_iter());
        assert_eq!(h["traceparent"], "00-abc-def-01");
        assert!(!h.contains_key("tracestate"));
        assert_eq!(h["x-request-id"], "7");
    }
}
