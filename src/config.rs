//! Settings from TOML files and `FAPILOG__…` environment variables.
//!
//! ```toml
//! level = "info,sqlx=warn"    # filter directives (also accepted as `filter`)
//! service = "checkout"
//! version = "1.4.2"
//! environment = "production"
//! hostname = true
//! pid = true
//!
//! [queue]
//! capacity = 10000
//! overflow = "block"          # block | drop_newest | drop_oldest
//! block_timeout = "5s"
//!
//! [batch]
//! size = 1024
//! linger = "1ms"
//!
//! [worker]
//! threads = 1                 # threads of the pipeline's own runtime
//!
//! [static_fields]
//! region = "eu-west-1"
//!
//! [redaction]                 # on by default; fields named like secrets
//! extra_keys = ["ssn"]        # added to the default secret words
//! values = false              # also scan values for bearer tokens, URL passwords
//!
//! [sinks]
//! timeout = "10s"             # longest write or flush; a sink slower is stalled
//! retries = 3                 # of a failed write, before its events are undelivered
//!
//! [sinks.stdout]
//! format = "json"             # json | pretty
//!
//! [sinks.file]
//! path = "logs/app.log"
//! max_bytes = 104857600
//! rotation = "daily"          # never | hourly | daily
//! keep = 7
//! ```
//!
//! Every key can be overridden from the environment with a `FAPILOG__`
//! prefix and `__` between levels: `FAPILOG__QUEUE__CAPACITY=50000`,
//! `FAPILOG__SINKS__FILE__PATH=/var/log/app.log`. A variable is read as the
//! setting's type: `FAPILOG__VERSION=1.10` is the text `1.10`, and a
//! static field from the environment (`FAPILOG__STATIC_FIELDS__BUILD=0042`)
//! is always text. An unknown key or a bad
//! value is an error naming the key and the expected form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::{Overflow, filter};
use crate::enrich::{REDACTED, Redaction};
use crate::error::{ConfigError, FILTER_HINT};
use crate::pipeline::{Builder, MAX_BATCH_SIZE, MAX_QUEUE_CAPACITY};
use crate::sink::{FileSink, Rotation, StdoutFormat, StdoutSink};

/// Everything the pipeline can be configured with from a file or the
/// environment. Apply it with [`Builder::settings`](crate::Builder::settings).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Filter directives: a level, or directives like
    /// `info,my_crate=debug` (see [`Builder::filter`]; `RUST_LOG`, when
    /// set, still wins at `init`). Also accepted as `filter`.
    #[serde(alias = "filter")]
    pub level: String,
    /// Added to every event as `service`.
    pub service: Option<String>,
    /// Added to every event as `version`.
    pub version: Option<String>,
    /// Added to every event as `environment`.
    pub environment: Option<String>,
    /// Add `hostname` to every event.
    pub hostname: bool,
    /// Add `pid` to every event.
    pub pid: bool,
    /// Other fields added to every event.
    pub static_fields: BTreeMap<String, serde_json::Value>,
    /// The queue between log calls and the worker.
    pub queue: QueueSettings,
    /// How the worker batches events.
    pub batch: BatchSettings,
    /// The worker's runtime.
    pub worker: WorkerSettings,
    /// Shutdown deadlines and the dropped-events record.
    pub shutdown: ShutdownSettings,
    /// Where events go. With none configured, JSON lines to stdout.
    pub sinks: SinkSettings,
    /// Which fields are hidden before any sink.
    pub redaction: RedactionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            level: "info".to_owned(),
            service: None,
            version: None,
            environment: None,
            hostname: false,
            pid: false,
            static_fields: BTreeMap::new(),
            queue: QueueSettings::default(),
            batch: BatchSettings::default(),
            worker: WorkerSettings::default(),
            shutdown: ShutdownSettings::default(),
            sinks: SinkSettings::default(),
            redaction: RedactionSettings::default(),
        }
    }
}

/// `[queue]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueSettings {
    /// Events the queue holds (default 10 000).
    pub capacity: usize,
    /// `block` (default), `drop_newest` or `drop_oldest`.
    pub overflow: Overflow,
    /// Longest a log call waits for room under `block` (default `5s`).
    #[serde(with = "humantime_serde")]
    pub block_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            capacity: 10_000,
            overflow: Overflow::Block,
            block_timeout: Duration::from_secs(5),
        }
    }
}

/// `[batch]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BatchSettings {
    /// Most events per batch (default 1024).
    pub size: usize,
    /// How long the worker waits to fill a partial batch (default `1ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            size: 1024,
            linger: Duration::from_millis(1),
        }
    }
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// Threads of the pipeline's own runtime (default 1); see
    /// [`Builder::worker_threads`].
    pub threads: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings { threads: 1 }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ShutdownSettings {
    /// Longest `shutdown()` waits for the queue to drain (default `30s`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest dropping the guard waits (default `5s`).
    #[serde(with = "humantime_serde")]
    pub drop_timeout: Duration,
    /// How often an "events dropped" record is written when events were
    /// dropped (default `5s`).
    #[serde(with = "humantime_serde")]
    pub drop_report_interval: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            timeout: Duration::from_secs(30),
            drop_timeout: Duration::from_secs(5),
            drop_report_interval: Duration::from_secs(5),
        }
    }
}

/// `[redaction]`; see [`Redaction`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedactionSettings {
    /// Redact at all (default `true`).
    pub enabled: bool,
    /// Secret words replacing the default list
    /// ([`DEFAULT_SECRET_KEYS`](crate::enrich::DEFAULT_SECRET_KEYS)).
    pub keys: Option<Vec<String>>,
    /// Secret words added to the list in force.
    pub extra_keys: Vec<String>,
    /// Scan string values and messages for credentials (default `false`).
    pub values: bool,
    /// What replaces a hidden value (default `[REDACTED]`).
    pub replacement: String,
}

impl Default for RedactionSettings {
    fn default() -> Self {
        RedactionSettings {
            enabled: true,
            keys: None,
            extra_keys: Vec::new(),
            values: false,
            replacement: REDACTED.to_owned(),
        }
    }
}

impl RedactionSettings {
    /// The [`Redaction`] these settings describe.
    pub fn to_redaction(&self) -> Redaction {
        if !self.enabled {
            return Redaction::none();
        }
        let mut r = Redaction::default()
            .values(self.values)
            .replacement(self.replacement.clone());
        if let Some(keys) = &self.keys {
            r = r.keys(keys.iter().cloned());
        }
        for k in &self.extra_keys {
            r = r.key(k.clone());
        }
        r
    }
}

/// `[sinks]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SinkSettings {
    /// Longest one write or flush may take (default `10s`); see
    /// [`Builder::sink_timeout`].
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed write before its events are undelivered
    /// (default 3); see [`Builder::sink_retries`].
    pub retries: u32,
    /// `[sinks.stdout]`
    pub stdout: Option<StdoutSettings>,
    /// `[sinks.file]`
    pub file: Option<FileSettings>,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            timeout: Duration::from_secs(10),
            retries: 3,
            stdout: None,
            file: None,
        }
    }
}

/// `[sinks.stdout]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StdoutSettings {
    /// `json` (default) or `pretty`.
    pub format: StdoutFormat,
}

/// `[sinks.file]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileSettings {
    /// The active file.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// `never` (default), `hourly` or `daily`.
    #[serde(default)]
    pub rotation: Rotation,
    /// Rotated files kept (default 7).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    7
}

impl Settings {
    /// Parses settings from TOML text (no environment overrides).
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(from_config)?;
        Self::finish(cfg)
    }

    /// Reads settings from the `FAPILOG__…` environment variables only.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(None::<&Path>)
    }

    /// Reads a TOML file (when given) and then applies `FAPILOG__…`
    /// environment overrides.
    pub fn load(path: Option<impl AsRef<Path>>) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(p) = path {
            b = b.add_source(config::File::from(p.as_ref()).format(config::FileFormat::Toml));
        }
        // No `try_parsing`: it would turn `FAPILOG__VERSION=1.10` into the
        // number 1.1 and `0042` into 42 before the setting's type is known.
        // Left as text, each value is converted by the type it is read as
        // (numbers and booleans still parse; strings stay exactly as
        // written).
        b = b.add_source(
            config::Environment::with_prefix("FAPILOG")
                .prefix_separator("__")
                .separator("__"),
        );
        let cfg = b.build().map_err(from_config)?;
        Self::finish(cfg)
    }

    fn finish(cfg: config::Config) -> Result<Self, ConfigError> {
        let s: Settings = cfg.try_deserialize().map_err(from_config)?;
        filter::check(&s.level).map_err(|reason| {
            ConfigError::at(
                "level",
                format!(
                    "invalid filter directives {:?}: {reason}; {FILTER_HINT}",
                    s.level
                ),
            )
        })?;
        for (key, value, max) in [
            ("queue.capacity", s.queue.capacity, MAX_QUEUE_CAPACITY),
            ("batch.size", s.batch.size, MAX_BATCH_SIZE),
        ] {
            if value == 0 {
                return Err(ConfigError::at(key, "must be at least 1"));
            }
            if value > max {
                return Err(ConfigError::at(
                    key,
                    format!("must be at most {max}, got {value}"),
                ));
            }
        }
        s.redaction
            .to_redaction()
            .compile()
            .map_err(|e| ConfigError::at("redaction.keys", e))?;
        if s.sinks.timeout.is_zero() {
            return Err(ConfigError::at("sinks.timeout", "must be more than zero"));
        }
        Ok(s)
    }
}

/// Turns the `config` crate's error into ours, naming the full key.
fn from_config(e: config::ConfigError) -> ConfigError {
    let mut key = None;
    let mut inner = e;
    loop {
        match inner {
            config::ConfigError::At { error, key: k, .. } => {
                if key.is_none() {
                    key = k;
                }
                inner = *error;
            }
            config::ConfigError::Type {
                key: Some(ref k), ..
            } if key.is_none() => {
                key = Some(k.clone());
                break;
            }
            _ => break,
        }
    }
    let mut message = inner.to_string();
    // serde's "unknown field" names only the last segment; say where.
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = rest.split('`').nth(1).unwrap_or("").to_owned();
        let full = match &key {
            Some(k) if !k.is_empty() => format!("{k}.{field}"),
            _ => field.clone(),
        };
        message = format!(
            "unknown key `{full}`: {}",
            rest.replacen(&format!("`{field}`, "), "", 1)
        );
        key = Some(full);
    }
    // The `config` crate's enum error does not list the accepted values.
    if let Some(rest) = message.strip_prefix("enum ")
        && let Some((name, value)) = rest.split_once(" does not have variant constructor ")
        && let Some((_, accepted)) = CHOICES.iter().find(|(n, _)| *n == name)
    {
        let accepted: Vec<String> = accepted.iter().map(|a| format!("`{a}`")).collect();
        message = format!(
            "unknown value `{value}`, expected one of {}",
            accepted.join(", ")
        );
    }
    ConfigError::new(key, message)
}

/// The accepted values of each choice setting, for error messages (a test
/// checks them against the types' own `Deserialize`).
const CHOICES: &[(&str, &[&str])] = &[
    ("Overflow", &["block", "drop_newest", "drop_oldest"]),
    ("StdoutFormat", &["json", "pretty"]),
    ("Rotation", &["never", "hourly", "daily"]),
];

impl Builder {
    /// Applies settings read from a file or the environment; sinks in the
    /// settings are added to those already configured.
    #[must_use]
    pub fn settings(mut self, s: &Settings) -> Self {
        self = self
            .filter(s.level.clone())
            .queue_capacity(s.queue.capacity)
            .overflow(s.queue.overflow)
            .block_timeout(s.queue.block_timeout)
            .batch_size(s.batch.size)
            .linger(s.batch.linger)
            .worker_threads(s.worker.threads)
            .shutdown_timeout(s.shutdown.timeout)
            .drop_timeout(s.shutdown.drop_timeout)
            .drop_report_interval(s.shutdown.drop_report_interval);
        for (k, v) in [
            ("service", &s.service),
            ("version", &s.version),
            ("environment", &s.environment),
        ] {
            if let Some(v) = v {
                self = self.static_field(k, v.clone());
            }
        }
        for (k, v) in &s.static_fields {
            self = self.static_field(k.clone(), v.clone());
        }
        if s.hostname {
            self = self.with_hostname();
        }
        if s.pid {
            self = self.with_pid();
        }
        self = self
            .redaction(s.redaction.to_redaction())
            .sink_timeout(s.sinks.timeout)
            .sink_retries(
                s.sinks.retries,
                Duration::from_millis(100),
                Duration::from_secs(2),
            );
        if let Some(out) = &s.sinks.stdout {
            self = self.sink(StdoutSink::new(out.format));
        }
        if let Some(f) = &s.sinks.file {
            let mut b = FileSink::builder(&f.path).rotation(f.rotation).keep(f.keep);
            if let Some(max) = f.max_bytes {
                b = b.max_bytes(max);
            }
            self = self.file(b);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_lists_match_the_types() {
        for (name, accepted) in CHOICES {
            for value in *accepted {
                let toml = match *name {
                    "Overflow" => format!("[queue]\noverflow = \"{value}\""),
                    "StdoutFormat" => format!("[sinks.stdout]\nformat = \"{value}\""),
                    _ => format!("[sinks.file]\npath = \"x\"\nrotation = \"{value}\""),
                };
                assert!(Settings::from_toml_str(&toml).is_ok(), "{toml}");
            }
        }
    }

    #[test]
    fn defaults_parse_from_empty_toml() {
        assert_eq!(Settings::from_toml_str("").unwrap(), Settings::default());
    }
}
