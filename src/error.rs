//! Errors returned when setting the pipeline up.

use std::fmt;

use crate::config::ConfigError;

/// Why [`Builder::init`](crate::Builder::init) or
/// [`Builder::build`](crate::Builder::build) failed. Nothing is left
/// half-started when this is returned.
pub struct InitError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Filter {
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
    pub(crate) fn filter(filter: &str, reason: impl fmt::Display) -> Self {
        InitError {
            kind: Kind::Filter {
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
            Kind::Filter { filter, reason } => write!(
                f,
                "invalid level filter {filter:?}: {reason}; expected a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or directives like `info,my_crate=debug`"
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
