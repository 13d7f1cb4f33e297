//! Built-in sync enrichers: fields known at start-up.

use super::Enricher;
use crate::event::{Event, FieldName, Value};

/// Adds the same fields to every event: service name, version, environment,
/// or anything else known at start-up.
#[derive(Debug, Clone, Default)]
pub struct StaticFields {
    fields: Vec<(FieldName, Value)>,
}

impl StaticFields {
    /// No fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one field.
    #[must_use]
    pub fn field(mut self, name: impl Into<FieldName>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The value of the field `name`, if one was added.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl Enricher for StaticFields {
    fn enrich(&self, event: &mut Event) {
        for (k, v) in &self.fields {
            event.insert(k.clone(), v.clone());
        }
    }
    fn name(&self) -> &str {
        "static_fields"
    }
}

/// Adds `hostname`, read once at start-up.
#[derive(Debug, Clone)]
pub struct Hostname {
    host: Value,
}

impl Hostname {
    /// Reads the machine's host name.
    pub fn new() -> Self {
        Hostname {
            host: Value::String(gethostname::gethostname().to_string_lossy().into_owned()),
        }
    }
}

impl Default for Hostname {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher for Hostname {
    fn enrich(&self, event: &mut Event) {
        event.insert("hostname", self.host.clone());
    }
    fn name(&self) -> &str {
        "hostname"
    }
}

/// Adds `pid`, the process id.
#[derive(Debug, Clone, Copy)]
pub struct Pid {
    pid: u32,
}

impl Pid {
    /// Reads the process id.
    pub fn new() -> Self {
        Pid {
            pid: std::process::id(),
        }
    }
}

impl Default for Pid {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher for Pid {
    fn enrich(&self, event: &mut Event) {
        event.insert("pid", self.pid);
    }
    fn name(&self) -> &str {
        "pid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn builtins_add_their_fields() {
        let mut e = Event::new(Level::INFO, "t", "m");
        Hostname::new().enrich(&mut e);
        Pid::new().enrich(&mut e);
        StaticFields::new().field("service", "svc").enrich(&mut e);
        assert_eq!(e.field("pid"), Some(&Value::from(std::process::id())));
        assert_eq!(e.field("service"), Some(&Value::from("svc")));
        assert!(e.field("hostname").is_some_and(|h| h.is_string()));
    }

    #[test]
    fn reserved_names_are_prefixed() {
        let mut e = Event::new(Level::INFO, "t", "m");
        e.insert("level", "nope");
        assert_eq!(e.inserted().next().map(|(k, _)| k), Some("_level"));
    }
}
