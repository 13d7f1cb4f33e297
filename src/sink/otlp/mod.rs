//! [`OtlpSink`]: records to an OpenTelemetry Collector (or any OTLP
//! receiver) over OTLP/gRPC or OTLP/HTTP with protobuf, fed by the
//! pipeline's own batches.
//!
//! Why not the SDK's `BatchLogProcessor` and `opentelemetry-otlp`'s
//! `LogExporter`: the processor drops records under load, and the exporter
//! answers a partial success with `Ok` (it only logs the rejected count)
//! and every failure with an opaque string, so neither rejected records
//! nor a collector's "retry later" could be counted or honoured per
//! record; feeding it our batches would also go through `LogBatch::new`,
//! which the SDK documents as not for outside use. This sink speaks the
//! same protocol with the same parts the exporter is made of: the
//! generated messages and gRPC client of `opentelemetry-proto`, tonic, and
//! reqwest.
//!
//! The mapping of events to OTLP records is documented on [`OtlpSink`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::capture::spawn_suppressed;
use crate::enrich::redact::redact_url;
use crate::error::ConfigError;
use crate::event::Event;
use crate::observe::SinkCounters;
use crate::sink::{Sink, SinkError};

mod encode;
mod export;
mod map;
mod transport;

use export::Buffer;
use map::Omit;
use transport::Prepared;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`), default port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), default port 4318:
    /// the OpenTelemetry specification's default.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name the `OTEL_EXPORTER_OTLP_PROTOCOL` variable uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}

/// Configures an [`OtlpSink`]; add it with
/// [`Builder::otlp`](crate::Builder::otlp).
///
/// Every setting not given here is taken from the standard environment
/// variables, where set (`OTEL_EXPORTER_OTLP_LOGS_*` before
/// `OTEL_EXPORTER_OTLP_*`): `ENDPOINT`, `PROTOCOL` (`grpc` or
/// `http/protobuf`), `HEADERS` (`key=value,…`, values percent-decoded),
/// `TIMEOUT` (milliseconds), `COMPRESSION` (`gzip` or `none`),
/// `CERTIFICATE` (a PEM file of CA certificates), and `OTEL_SERVICE_NAME`
/// and `OTEL_RESOURCE_ATTRIBUTES` for the resource. What the builder sets
/// wins over the environment; [`ignore_env`](Self::ignore_env) ignores it.
///
/// | setting | default |
/// | --- | --- |
/// | protocol | `http/protobuf` |
/// | endpoint | `http://localhost:4318/v1/logs` (HTTP), `http://localhost:4317` (gRPC) |
/// | timeout | 10 s a request |
/// | compression | none |
/// | retry buffer | 65 536 records and 64 MiB, requests in flight included |
/// | request | at most 2 048 records and 3 MiB (encoded) |
/// | retries | backoff from 100 ms to 5 s, or the collector's `Retry-After` / `RetryInfo`; given up after 5 min |
///
/// Header values are secrets (an API key): they show nowhere, not in
/// `Debug`, errors or stats.
#[derive(Clone, Default)]
pub struct OtlpSinkBuilder {
    protocol: Option<OtlpProtocol>,
    endpoint: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    gzip: Option<bool>,
    ca_pem: Option<Vec<u8>>,
    resource: Vec<(String, String)>,
    service_name: Option<String>,
    service_version: Option<String>,
    environment: Option<String>,
    host_name: Option<String>,
    buffer_events: Option<usize>,
    buffer_bytes: Option<usize>,
    max_batch: Option<usize>,
    max_request_bytes: Option<usize>,
    retry: Option<(Duration, Duration)>,
    give_up_after: Option<Duration>,
    ignore_env: bool,
}

impl fmt::Debug for OtlpSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSinkBuilder")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("headers", &redacted_headers(&self.headers))
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .field("service_name", &self.service_name)
            .field("ignore_env", &self.ignore_env)
            .finish_non_exhaustive()
    }
}

fn redacted_headers(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .map(|(k, _)| format!("{k}: {}", crate::enrich::redact::REDACTED))
        .collect()
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpSinkBuilder {
    /// A builder with every setting at its default (or from the
    /// environment).
    pub fn new() -> Self {
        Self::default()
    }

    /// gRPC or HTTP/protobuf.
    #[must_use]
    pub fn protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The collector's URL (`http://` or `https://`). For HTTP a URL
    /// without a path gets `/v1/logs`; one with a path is used as it is.
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// A header (gRPC metadata) sent with every request, e.g. an API key.
    /// Its value is treated as a secret.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Longest one request may take (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Compresses requests with gzip.
    #[must_use]
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = Some(on);
        self
    }

    /// CA certificates (PEM) to trust for an `https://` endpoint, besides
    /// the system's.
    #[must_use]
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// `service.name` of the resource (default: the pipeline's
    /// [`service`](crate::Builder::service), else `OTEL_SERVICE_NAME`, else
    /// `unknown_service`).
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// `service.version` of the resource (default: the pipeline's
    /// [`version`](crate::Builder::version)).
    #[must_use]
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// `deployment.environment.name` of the resource (default: the
    /// pipeline's [`environment`](crate::Builder::environment)).
    #[must_use]
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = Some(env.into());
        self
    }

    /// `host.name` of the resource (default: this machine's hostname).
    #[must_use]
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = Some(name.into());
        self
    }

    /// Another resource attribute (these win over `OTEL_RESOURCE_ATTRIBUTES`).
    #[must_use]
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.resource.retain(|(k, _)| *k != key);
        self.resource.push((key, value.into()));
        self
    }

    /// Bounds of the retry buffer: records held while the collector is
    /// slow or away, requests in flight included. Records that find it
    /// full are counted as undelivered (default 65 536 and 64 MiB).
    #[must_use]
    pub fn buffer(mut self, events: usize, bytes: usize) -> Self {
        self.buffer_events = Some(events.max(1));
        self.buffer_bytes = Some(bytes.max(1));
        self
    }

    /// Most records and encoded bytes in one request (default 2 048 and
    /// 3 MiB; a collector's gRPC receiver takes 4 MiB by default). A record
    /// larger than the byte limit is undelivered.
    #[must_use]
    pub fn max_request(mut self, records: usize, bytes: usize) -> Self {
        self.max_batch = Some(records.max(1));
        self.max_request_bytes = Some(bytes.max(256));
        self
    }

    /// Backoff between retries of a request the collector refused for now
    /// (default 100 ms doubling to 5 s); a `Retry-After` (HTTP) or
    /// `RetryInfo` (gRPC) delay is waited instead when given.
    #[must_use]
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        self.retry = Some((min, max.max(min)));
        self
    }

    /// How long a request is retried before its records are counted as
    /// undelivered (default 5 min).
    #[must_use]
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = Some(after);
        self
    }

    /// Ignores the `OTEL_*` environment variables.
    #[must_use]
    pub fn ignore_env(mut self) -> Self {
        self.ignore_env = true;
        self
    }

    /// Resolves the configuration and checks it (endpoint, headers, TLS):
    /// the error names the setting or variable that is wrong.
    pub fn build(self) -> Result<OtlpSink, ConfigError> {
        self.build_with(&Defaults::default())
    }

    pub(crate) fn build_with(self, defaults: &Defaults) -> Result<OtlpSink, ConfigError> {
        let ignore = self.ignore_env;
        let env = |name: &str| {
            if ignore {
                None
            } else {
                std::env::var(name).ok().filter(|v| !v.trim().is_empty())
            }
        };
        let config = self.resolve(defaults, &env)?;
        let prepared = Prepared::new(&config).map_err(|(key, e)| ConfigError::at(key, e))?;
        Ok(OtlpSink {
            config: Arc::new(config),
            prepared: Some(prepared),
            buffer: None,
            task: None,
            omit: Omit { fields: Vec::new() },
            max_wait: Duration::from_secs(5),
            scratch: Vec::with_capacity(1024),
        })
    }

    fn resolve(
        self,
        defaults: &Defaults,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // A signal-specific variable first, then the general one.
        let var = |suffix: &str| -> Option<(String, String)> {
            let logs = format!("OTEL_EXPORTER_OTLP_LOGS_{suffix}");
            if let Some(v) = env(&logs) {
                return Some((logs, v));
            }
            let all = format!("OTEL_EXPORTER_OTLP_{suffix}");
            env(&all).map(|v| (all, v))
        };

        let protocol = match self.protocol {
            Some(p) => p,
            None => match var("PROTOCOL") {
                Some((name, v)) => OtlpProtocol::parse(&v).ok_or_else(|| {
                    ConfigError::at(
                        name,
                        format!(
                            "`{}` is not a supported OTLP protocol: use `grpc` or `http/protobuf`",
                            v.trim()
                        ),
                    )
                })?,
                None => OtlpProtocol::HttpProtobuf,
            },
        };

        let (endpoint, origin) = match self.endpoint {
            Some(e) => (with_logs_path(&e, protocol), "otlp.endpoint".to_owned()),
            None => match env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
                Some(e) => (
                    e.trim().to_owned(),
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT".to_owned(),
                ),
                None => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(e) => (
                        match protocol {
                            OtlpProtocol::HttpProtobuf => {
                                format!("{}/v1/logs", e.trim().trim_end_matches('/'))
                            }
                            OtlpProtocol::Grpc => e.trim().to_owned(),
                        },
                        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    ),
                    None => (
                        match protocol {
                            OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/logs",
                            OtlpProtocol::Grpc => "http://localhost:4317",
                        }
                        .to_owned(),
                        "otlp.endpoint".to_owned(),
                    ),
                },
            },
        };
        check_endpoint(&endpoint).map_err(|e| ConfigError::at(origin, e))?;

        let mut headers: Vec<(String, String)> = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        ] {
            if let Some(v) = env(name) {
                for (k, v) in parse_pairs(&v).map_err(|e| ConfigError::at(name, e))? {
                    headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
                    headers.push((k, v));
                }
            }
        }
        for (k, v) in self.headers {
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }

        let timeout = match self.timeout {
            Some(t) => t,
            None => match var("TIMEOUT") {
                Some((name, v)) => {
                    v.trim()
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| {
                            ConfigError::at(
                                name,
                                format!("`{}` is not a timeout in milliseconds", v.trim()),
                            )
                        })?
                }
                None => DEFAULT_TIMEOUT,
            },
        };
        if timeout.is_zero() {
            return Err(ConfigError::at(
                "otlp.timeout",
                "the OTLP timeout must be more than zero",
            ));
        }

        let gzip = match self.gzip {
            Some(g) => g,
            None => match var("COMPRESSION") {
                Some((name, v)) => match v.trim() {
                    "gzip" => true,
                    "none" => false,
                    other => {
                        return Err(ConfigError::at(
                            name,
                            format!(
                                "`{other}` is not a supported compression: use `gzip` or `none`"
                            ),
                        ));
                    }
                },
                None => false,
            },
        };

        let ca_pem = match self.ca_pem {
            Some(p) => Some(p),
            None => match var("CERTIFICATE") {
                Some((name, path)) => Some(std::fs::read(path.trim()).map_err(|e| {
                    ConfigError::at(name, format!("cannot read `{}`: {e}", path.trim()))
                })?),
                None => None,
            },
        };

        // Resource: builder, then the environment, then the pipeline's.
        let mut attrs: Vec<(String, String)> = Vec::new();
        fn set(attrs: &mut Vec<(String, String)>, k: &str, v: String) {
            attrs.retain(|(a, _)| a != k);
            attrs.push((k.to_owned(), v));
        }
        if let Some(v) = &defaults.service {
            set(&mut attrs, "service.name", v.clone());
        }
        if let Some(v) = &defaults.version {
            set(&mut attrs, "service.version", v.clone());
        }
        if let Some(v) = &defaults.environment {
            set(&mut attrs, "deployment.environment.name", v.clone());
        }
        if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in
                parse_pairs(&v).map_err(|e| ConfigError::at("OTEL_RESOURCE_ATTRIBUTES", e))?
            {
                set(&mut attrs, &k, v);
            }
        }
        if let Some(v) = env("OTEL_SERVICE_NAME") {
            set(&mut attrs, "service.name", v.trim().to_owned());
        }
        for (k, v) in self.resource {
            set(&mut attrs, &k, v);
        }
        if let Some(v) = self.service_name {
            set(&mut attrs, "service.name", v);
        }
        if let Some(v) = self.service_version {
            set(&mut attrs, "service.version", v);
        }
        if let Some(v) = self.environment {
            set(&mut attrs, "deployment.environment.name", v);
        }
        if let Some(v) = self.host_name {
            set(&mut attrs, "host.name", v);
        }
        if !attrs.iter().any(|(k, _)| k == "service.name") {
            set(&mut attrs, "service.name", "unknown_service".to_owned());
        }
        if !attrs.iter().any(|(k, _)| k == "host.name") {
            set(
                &mut attrs,
                "host.name",
                gethostname::gethostname().to_string_lossy().into_owned(),
            );
        }
        set(&mut attrs, "telemetry.sdk.name", "fapilog".to_owned());
        set(&mut attrs, "telemetry.sdk.language", "rust".to_owned());
        set(
            &mut attrs,
            "telemetry.sdk.version",
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        let resource = Resource {
            attributes: attrs
                .into_iter()
                .map(|(k, v)| -> KeyValue { map::kv(k, map::string(v)) })
                .collect(),
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        };

        let (retry_min, retry_max) = self
            .retry
            .unwrap_or((Duration::from_millis(100), Duration::from_secs(5)));
        let resource_bytes = prost::Message::encode_to_vec(&resource);
        Ok(Config {
            resource_bytes,
            protocol,
            endpoint,
            headers,
            timeout,
            gzip,
            ca_pem,
            resource,
            buffer_events: self.buffer_events.unwrap_or(65_536),
            buffer_bytes: self.buffer_bytes.unwrap_or(64 << 20),
            max_batch: self.max_batch.unwrap_or(2048),
            max_request_bytes: self.max_request_bytes.unwrap_or(3 << 20),
            retry_min,
            retry_max,
            give_up_after: self.give_up_after.unwrap_or(Duration::from_secs(300)),
        })
    }
}

/// What the pipeline knows that the resource defaults to.
#[derive(Debug, Default, Clone)]
pub(crate) struct Defaults {
    pub(crate) service: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) environment: Option<String>,
    /// The pipeline adds `hostname` to its events.
    pub(crate) hostname: bool,
}

/// For HTTP, a URL without a path is the collector's base.
fn with_logs_path(url: &str, protocol: OtlpProtocol) -> String {
    let url = url.trim();
    if protocol == OtlpProtocol::HttpProtobuf
        && let Ok(u) = reqwest::Url::parse(url)
        && (u.path().is_empty() || u.path() == "/")
    {
        return format!("{}/v1/logs", url.trim_end_matches('/'));
    }
    url.to_owned()
}

fn check_endpoint(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let u = reqwest::Url::parse(url)
        .map_err(|e| format!("`{shown}` is not a URL ({e}): use e.g. `http://localhost:4317`"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "`{shown}`: an OTLP endpoint is `http://` or `https://`"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// `key=value,key2=value2`, values (and keys) percent-decoded, as the
/// `OTEL_*_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` variables have them.
fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, part) in s.split(',').enumerate() {
        if part.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "entry {} is not `key=value` (entries are separated by commas)",
                i + 1
            ));
        };
        let k = percent_encoding::percent_decode_str(k.trim())
            .decode_utf8()
            .map_err(|_| format!("the key of entry {} is not UTF-8", i + 1))?
            .into_owned();
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of entry {} is not UTF-8", i + 1))?
            .into_owned();
        if k.is_empty() {
            return Err(format!("entry {} has an empty key", i + 1));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The resolved configuration.
pub(crate) struct Config {
    protocol: OtlpProtocol,
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    gzip: bool,
    ca_pem: Option<Vec<u8>>,
    resource: Resource,
    /// The resource, encoded once.
    resource_bytes: Vec<u8>,
    buffer_events: usize,
    buffer_bytes: usize,
    max_batch: usize,
    max_request_bytes: usize,
    retry_min: Duration,
    retry_max: Duration,
    give_up_after: Duration,
}

impl Config {
    /// A string attribute of the resource.
    fn resource_string(&self, key: &str) -> Option<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        self.resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(V::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    }
}

/// Writes records to an OTLP collector; see [`OtlpSinkBuilder`] for the
/// settings.
///
/// `write_batch` encodes and queues, and returns at once; a task of the
/// sink's sends the queue, two requests at a time, retrying what the
/// collector refuses for now. What the collector accepted counts as
/// written; what it rejected (a partial success), what it refused for
/// good, what was given up on and what found the buffer full counts as
/// undelivered — in [`SinkStats`](crate::SinkStats), with the sink's
/// `status` and `buffered` records. At shutdown the sink sends what it
/// holds until the shutdown deadline.
///
/// # Mapping
///
/// | OTLP | from |
/// | --- | --- |
/// | resource | `service.name`, `service.version`, `deployment.environment.name`, `host.name`, `telemetry.sdk.*`, then user attributes and `OTEL_RESOURCE_ATTRIBUTES` |
/// | scope | the event's target |
/// | `time_unix_nano`, `observed_time_unix_nano` | the event's timestamp (taken at the log call) |
/// | `severity_number` / `severity_text` | TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17 / the level's name |
/// | `body` | the message, a string |
/// | attributes | the event's fields by name; span fields as `span.<span name>.<field>` (of spans of one name, the innermost); enriched values by name, nested objects as key-value lists; `enrichment_errors` as a key-value list `enricher → reason`; `code.file.path`, `code.line.number`, `code.namespace` (module path), `thread.name`, `thread.id` |
/// | `trace_id`, `span_id`, `flags` | the event's trace context (from `tracing-opentelemetry` or a `traceparent` field) |
///
/// The pipeline's `service`, `version`, `environment` and `hostname`
/// fields are the resource's defaults, and are left out of a record's
/// attributes where they equal the resource's.
pub struct OtlpSink {
    config: Arc<Config>,
    prepared: Option<Prepared>,
    buffer: Option<Arc<Buffer>>,
    task: Option<tokio::task::AbortHandle>,
    omit: Omit,
    /// Longest a write waits for room in the buffer (half the pipeline's
    /// sink timeout, so that the pipeline never times a write out).
    max_wait: Duration,
    scratch: Vec<u8>,
}

impl fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSink")
            .field("protocol", &self.config.protocol)
            .field("endpoint", &redact_url(&self.config.endpoint))
            .field("headers", &redacted_headers(&self.config.headers))
            .finish_non_exhaustive()
    }
}

impl OtlpSink {
    /// A builder; see [`OtlpSinkBuilder`].
    pub fn builder() -> OtlpSinkBuilder {
        OtlpSinkBuilder::new()
    }

    /// Connects the sink to its stats: it counts what it delivered itself.
    pub(crate) fn attach(
        &mut self,
        counters: Arc<SinkCounters>,
        defaults: &Defaults,
        sink_timeout: Duration,
    ) {
        let mut fields = Vec::new();
        for (attr, field) in [
            ("service.name", "service"),
            ("service.version", "version"),
            ("deployment.environment.name", "environment"),
            ("host.name", "hostname"),
        ] {
            if field == "hostname" && !defaults.hostname {
                continue;
            }
            if let Some(v) = self.config.resource_string(attr) {
                fields.push((field, v));
            }
        }
        self.omit = Omit { fields };
        self.buffer = Some(Arc::new(Buffer::new(counters)));
        self.max_wait = sink_timeout / 2;
    }

    fn buffer(&mut self) -> Result<&Arc<Buffer>, SinkError> {
        let buffer = self
            .buffer
            .as_ref()
            .ok_or_else(|| SinkError::msg("OTLP sink used outside a pipeline"))?;
        if buffer.needs_task()
            && let Some(prepared) = self.prepared.take()
        {
            let task = spawn_suppressed(export::run(buffer.clone(), self.config.clone(), prepared));
            self.task = Some(task.abort_handle());
        }
        Ok(buffer)
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        "otlp"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let buffer = self.buffer()?.clone();
        let counted = buffer
            .counters
            .counting
            .load(std::sync::atomic::Ordering::Relaxed);
        let scratch = &mut self.scratch;
        let records = events
            .iter()
            .map(|e| map::pending(e, &self.omit, counted, scratch))
            .collect();
        buffer.push(records, &self.config, self.max_wait).await;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(b) = &self.buffer {
            b.flush();
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(b) = self.buffer.clone() {
            b.close().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
