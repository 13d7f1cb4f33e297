//! Errors returned when setting the pipeline up. A leaf: it depends on
//! nothing else of the crate, so every module can return these.

use std::fmt;

/// Why [`Builder::init`](crate::Builder::init) or
/// [`Builder::build`](crate::Builder::build) failed. Nothing is left
/// half-started when this is returned.
pub struct InitError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Filter {
        origin: String,
        filter: String,
        reason: String,
    },
    GlobalSubscriber(String),
    LogBridge(String),
    Runtime(std::io::Error),
    Sink {
        sink: String,
        source: std::io::Error,
    },
    Config(ConfigError),
    Enricher {
        name: String,
        reason: String,
    },
    Required {
        name: String,
        error: String,
    },
    Startup(String),
}

impl InitError {
    /// Bad filter directives; `origin` says where they came from
    /// (`filter(…)`, `RUST_LOG`).
    pub(crate) fn filter(
        origin: impl Into<String>,
        filter: &str,
        reason: impl fmt::Display,
    ) -> Self {
        InitError {
            kind: Kind::Filter {
                origin: origin.into(),
                filter: filter.to_owned(),
                reason: reason.to_string(),
            },
        }
    }
    pub(crate) fn global_subscriber(reason: impl fmt::Display) -> Self {
        InitError {
            kind: Kind::GlobalSubscriber(reason.to_string()),
        }
    }
    pub(crate) fn log_bridge(reason: impl fmt::Display) -> Self {
        InitError {
            kind: Kind::LogBridge(reason.to_string()),
        }
    }
    pub(crate) fn runtime(e: std::io::Error) -> Self {
        InitError {
            kind: Kind::Runtime(e),
        }
    }
    pub(crate) fn sink(sink: &str, source: std::io::Error) -> Self {
        InitError {
            kind: Kind::Sink {
                sink: sink.to_owned(),
                source,
            },
        }
    }

    pub(crate) fn enricher(name: &str, reason: impl fmt::Display) -> Self {
        InitError {
            kind: Kind::Enricher {
                name: name.to_owned(),
                reason: reason.to_string(),
            },
        }
    }
    pub(crate) fn required(name: &str, error: &str) -> Self {
        InitError {
            kind: Kind::Required {
                name: name.to_owned(),
                error: error.to_owned(),
            },
        }
    }
    pub(crate) fn startup(reason: impl fmt::Display) -> Self {
        InitError {
            kind: Kind::Startup(reason.to_string()),
        }
    }

    /// The configuration error behind this one, if it is one.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match &self.kind {
            Kind::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for InitError {
    fn from(e: ConfigError) -> Self {
        InitError {
            kind: Kind::Config(e),
        }
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Filter {
                origin,
                filter,
                reason,
            } => write!(
                f,
                "invalid filter directives {filter:?} in {origin}: {reason}; {FILTER_HINT}"
            ),
            Kind::GlobalSubscriber(r) => write!(
                f,
                "a global tracing subscriber is already installed ({r}); call `init` once, or use `build` and compose the layer into your own subscriber"
            ),
            Kind::LogBridge(r) => write!(
                f,
                "could not bridge the `log` crate ({r}); another logger is installed: turn the bridge off with `bridge_log(false)`"
            ),
            Kind::Runtime(e) => write!(f, "could not start the pipeline's worker thread: {e}"),
            Kind::Sink { sink, source } => write!(f, "could not open sink `{sink}`: {source}"),
            Kind::Config(e) => fmt::Display::fmt(e, f),
            Kind::Enricher { name, reason } => {
                write!(f, "invalid async enricher setup for {name}: {reason}")
            }
            Kind::Required { name, error } => write!(
                f,
                "required enricher `{name}` failed to start: {error}; fix the dependency, or drop `required()` to start without it and retry in the background"
            ),
            Kind::Startup(r) => write!(f, "the pipeline did not start: {r}"),
        }
    }
}

impl fmt::Debug for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for InitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Runtime(e) => Some(e),
            Kind::Sink { source, .. } => Some(source),
            Kind::Config(e) => Some(e),
            _ => None,
        }
    }
}

/// What a filter looks like, for error messages.
pub(crate) const FILTER_HINT: &str = "expected a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or directives like `info,my_crate=debug`";

/// A setting that could not be used: which one, and what was expected.
///
/// Returned by [`Settings`](crate::Settings) for a bad file or environment
/// variable (the key is dotted: `queue.capacity`), and by the builders of
/// the lookup sources for a bad setting (`query`, `url`, `header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: Option<String>,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(key: Option<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key,
            message: message.into(),
        }
    }

    /// An error whose message names the setting itself.
    #[cfg_attr(
        not(any(feature = "_sql", feature = "http", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Self::new(None, message)
    }

    /// An error about one setting.
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Some(key.into()), message)
    }

    /// The setting at fault (`queue.capacity`, `query`), when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong and what was expected, without the key.
    pub fn message(&self) -> &str {
        &self.message
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
