//! Settings from TOML files and `FAPILOG__…` environment variables.
//!
//! ```toml
//! level = "info,sqlx=warn"
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
//! [static_fields]
//! region = "eu-west-1"
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
//! `FAPILOG__SINKS__FILE__PATH=/var/log/app.log`. An unknown key or a bad
//! value is an error naming the key and the expected form.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::pipeline::Overflow;
use crate::sink::{Rotation, StdoutFormat};

/// Everything the pipeline can be configured with from a file or the
/// environment. Apply it with [`Builder::settings`](crate::Builder::settings).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Level filter: a level, or directives like `info,my_crate=debug`.
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
    /// Shutdown deadlines and the dropped-events record.
    pub shutdown: ShutdownSettings,
    /// Where events go. With none configured, JSON lines to stdout.
    pub sinks: SinkSettings,
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
            shutdown: ShutdownSettings::default(),
            sinks: SinkSettings::default(),
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
    pub overflow: OverflowSetting,
    /// Longest a log call waits for room under `block` (default `5s`).
    #[serde(with = "humantime_serde")]
    pub block_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            capacity: 10_000,
            overflow: OverflowSetting::Block,
            block_timeout: Duration::from_secs(5),
        }
    }
}

/// The overflow policy's configuration form; see [`Overflow`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum OverflowSetting {
    /// [`Overflow::Block`]
    #[default]
    Block,
    /// [`Overflow::DropNewest`]
    DropNewest,
    /// [`Overflow::DropOldest`]
    DropOldest,
}

impl From<OverflowSetting> for Overflow {
    fn from(o: OverflowSetting) -> Self {
        match o {
            OverflowSetting::Block => Overflow::Block,
            OverflowSetting::DropNewest => Overflow::DropNewest,
            OverflowSetting::DropOldest => Overflow::DropOldest,
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

/// `[sinks]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SinkSettings {
    /// `[sinks.stdout]`
    pub stdout: Option<StdoutSettings>,
    /// `[sinks.file]`
    pub file: Option<FileSettings>,
}

/// `[sinks.stdout]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StdoutSettings {
    /// `json` (default) or `pretty`.
    pub format: FormatSetting,
}

/// The stdout format's configuration form; see [`StdoutFormat`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum FormatSetting {
    /// JSON lines.
    #[default]
    Json,
    /// The human format.
    Pretty,
}

impl From<FormatSetting> for StdoutFormat {
    fn from(f: FormatSetting) -> Self {
        match f {
            FormatSetting::Json => StdoutFormat::Json,
            FormatSetting::Pretty => StdoutFormat::Pretty,
        }
    }
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
    pub rotation: RotationSetting,
    /// Rotated files kept (default 7).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    7
}

/// The rotation's configuration form; see [`Rotation`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum RotationSetting {
    /// Size only.
    #[default]
    Never,
    /// Every hour.
    Hourly,
    /// Every day.
    Daily,
}

impl From<RotationSetting> for Rotation {
    fn from(r: RotationSetting) -> Self {
        match r {
            RotationSetting::Never => Rotation::Never,
            RotationSetting::Hourly => Rotation::Hourly,
            RotationSetting::Daily => Rotation::Daily,
        }
    }
}

impl Settings {
    /// Parses settings from TOML text (no environment overrides).
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(ConfigError::from_config)?;
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
        b = b.add_source(
            config::Environment::with_prefix("FAPILOG")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let cfg = b.build().map_err(ConfigError::from_config)?;
        Self::finish(cfg)
    }

    fn finish(cfg: config::Config) -> Result<Self, ConfigError> {
        let s: Settings = cfg.try_deserialize().map_err(ConfigError::from_config)?;
        parse_filter(&s.level).map_err(|reason| ConfigError {
            key: Some("level".to_owned()),
            message: format!(
                "invalid level filter {:?}: {reason}; expected a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or directives like `info,my_crate=debug`",
                s.level
            ),
        })?;
        if s.queue.capacity == 0 {
            return Err(ConfigError {
                key: Some("queue.capacity".to_owned()),
                message: "must be at least 1".to_owned(),
            });
        }
        if s.batch.size == 0 {
            return Err(ConfigError {
                key: Some("batch.size".to_owned()),
                message: "must be at least 1".to_owned(),
            });
        }
        Ok(s)
    }
}

/// A setting that could not be read: which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// The dotted key at fault (`queue.capacity`), when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn from_config(e: config::ConfigError) -> Self {
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
        ConfigError { key, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) if !self.message.contains(&format!("`{k}`")) => {
                write!(f, "invalid configuration at `{k}`: {}", self.message)
            }
            _ => write!(f, "invalid configuration: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a level filter strictly: every directive without `=` must be a
/// level (tracing-subscriber's `Targets` would take `verbose` as a target).
pub(crate) fn parse_filter(s: &str) -> Result<Targets, String> {
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.split_once('=') {
            Some((target, level)) => {
                if target.trim().is_empty() {
                    return Err(format!("directive {directive:?} has no target before `=`"));
                }
                level
            }
            None => directive,
        };
        level
            .trim()
            .parse::<LevelFilter>()
            .map_err(|_| format!("{:?} is not a level", level.trim()))?;
    }
    s.parse::<Targets>().map_err(|e| e.to_string())
}

impl TryFrom<String> for OverflowSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "block" => Ok(OverflowSetting::Block),
            "drop_newest" => Ok(OverflowSetting::DropNewest),
            "drop_oldest" => Ok(OverflowSetting::DropOldest),
            other => Err(format!(
                "unknown value `{other}`, expected one of `block`, `drop_newest`, `drop_oldest`"
            )),
        }
    }
}

impl TryFrom<String> for FormatSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "json" => Ok(FormatSetting::Json),
            "pretty" => Ok(FormatSetting::Pretty),
            other => Err(format!(
                "unknown value `{other}`, expected one of `json`, `pretty`"
            )),
        }
    }
}

impl TryFrom<String> for RotationSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "never" => Ok(RotationSetting::Never),
            "hourly" => Ok(RotationSetting::Hourly),
            "daily" => Ok(RotationSetting::Daily),
            other => Err(format!(
                "unknown value `{other}`, expected one of `never`, `hourly`, `daily`"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_accepts_levels_and_directives() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,my_crate=debug,other::m=off").is_ok());
        assert!(parse_filter("verbose").is_err());
        assert!(parse_filter("my_crate=loud").is_err());
        assert!(parse_filter("=info").is_err());
    }

    #[test]
    fn defaults_parse_from_empty_toml() {
        assert_eq!(Settings::from_toml_str("").unwrap(), Settings::default());
    }
}
