//! One [`Event`] as one OTLP `LogRecord`, and records grouped into an
//! export request (one resource, a scope per target).
//!
//! | OTLP | from |
//! | --- | --- |
//! | `time_unix_nano`, `observed_time_unix_nano` | the event's timestamp (taken at the log call) |
//! | `severity_number`, `severity_text` | level: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17 |
//! | `body` | the message (a string) |
//! | `attributes` | event fields, then span fields as `span.<span name>.<field>` (innermost span wins a repeated name), then enriched values, `enrichment_errors`, `code.*`, `thread.*` |
//! | `trace_id`, `span_id`, `flags` | the event's trace context |
//! | scope name | the target |
//!
//! JSON values keep their shape: objects become key-value lists, arrays
//! arrays, integers `int_value` (a `u64` above `i64::MAX` a `double_value`),
//! `null` an empty value.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tracing::Level;

use crate::event::{Event, Value};

/// A record waiting to be sent, with its scope and its encoded size.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) scope: Box<str>,
    pub(super) record: LogRecord,
    /// Encoded size of the record, plus a little for its framing.
    pub(super) bytes: usize,
    /// Counted in the pipeline's stats (false for fapilog's own records).
    pub(super) counted: bool,
}

pub(super) fn severity(level: Level) -> (i32, &'static str) {
    match level {
        Level::TRACE => (1, "TRACE"),
        Level::DEBUG => (5, "DEBUG"),
        Level::INFO => (9, "INFO"),
        Level::WARN => (13, "WARN"),
        _ => (17, "ERROR"),
    }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) fn kv(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

pub(super) fn string(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

/// A JSON value as an OTLP value, its shape kept.
pub(super) fn any(value: &Value) -> AnyValue {
    let v = match value {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(if let Some(i) = n.as_i64() {
            any_value::Value::IntValue(i)
        } else {
            any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        })),
        Value::Object(o) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv(k.clone(), any(v))).collect(),
        })),
    };
    AnyValue { value: v }
}

/// Fields whose values the resource already carries (the pipeline's
/// static `service`, `version`, `environment` and `hostname`): left out of
/// the record's attributes when they equal the resource's.
pub(super) struct Omit {
    pub(super) fields: Vec<(&'static str, String)>,
}

impl Omit {
    fn skips(&self, name: &str, value: &Value) -> bool {
        self.fields
            .iter()
            .any(|(k, v)| *k == name && value.as_str() == Some(v.as_str()))
    }
}

/// The record of one event.
pub(super) fn record(event: &Event, omit: &Omit) -> LogRecord {
    let (number, text) = severity(event.level());
    let time = nanos(event.timestamp());
    let mut attributes: Vec<KeyValue> =
        Vec::with_capacity(event.fields.len() + event.extra.len() + 4);
    for (k, v) in event.fields() {
        attributes.push(kv(k, any(v)));
    }
    let spans: Vec<_> = event.spans().collect();
    for (i, span) in spans.iter().enumerate() {
        // A span name repeated further in is left to the innermost.
        if spans[i + 1..].iter().any(|s| s.name() == span.name()) {
            continue;
        }
        for (k, v) in span.fields() {
            attributes.push(kv(format!("span.{}.{k}", span.name()), any(v)));
        }
    }
    for (k, v) in event.inserted() {
        if !omit.skips(k, v) {
            attributes.push(kv(k, any(v)));
        }
    }
    let errors: Vec<KeyValue> = event
        .enrichment_errors()
        .map(|(k, v)| kv(k, string(v)))
        .collect();
    if !errors.is_empty() {
        attributes.push(kv(
            "enrichment_errors",
            AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: errors,
                })),
            },
        ));
    }
    if let Some(file) = event.file() {
        attributes.push(kv("code.file.path", string(file)));
    }
    if let Some(line) = event.line() {
        attributes.push(kv(
            "code.line.number",
            AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(line))),
            },
        ));
    }
    if let Some(module) = event.module_path() {
        attributes.push(kv("code.namespace", string(module)));
    }
    if let Some(name) = event.thread_name() {
        attributes.push(kv("thread.name", string(name)));
    }
    if event.thread_id() != 0 {
        attributes.push(kv(
            "thread.id",
            AnyValue {
                value: Some(any_value::Value::IntValue(
                    i64::try_from(event.thread_id()).unwrap_or(i64::MAX),
                )),
            },
        ));
    }
    let (trace_id, span_id, flags) = match event.trace() {
        Some(t) => (
            t.trace_id_bytes().to_vec(),
            t.span_id_bytes().to_vec(),
            u32::from(t.flags()),
        ),
        None => (Vec::new(), Vec::new(), 0),
    };
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: number,
        severity_text: text.to_owned(),
        body: event.message().map(string),
        attributes,
        dropped_attributes_count: 0,
        flags,
        trace_id,
        span_id,
        event_name: String::new(),
    }
}

/// A record ready for the buffer.
pub(super) fn pending(event: &Event, omit: &Omit, counted: bool) -> Pending {
    let record = record(event, omit);
    let scope: Box<str> = event.target().into();
    // The record's own framing in `ScopeLogs`, and a share of its scope's.
    let bytes = record.encoded_len() + 8 + scope.len() / 4;
    Pending {
        scope,
        record,
        bytes,
        counted,
    }
}

/// The request of these records: one resource, a scope per target (in
/// the order targets first appear; records keep their order within it).
pub(super) fn request(resource: &Resource, records: Vec<Pending>) -> ExportLogsServiceRequest {
    let mut scopes: Vec<ScopeLogs> = Vec::new();
    for p in records {
        let at = match scopes.iter().position(|s| {
            s.scope
                .as_ref()
                .is_some_and(|sc| sc.name.as_str() == &*p.scope)
        }) {
            Some(i) => i,
            None => {
                scopes.push(ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: p.scope.into(),
                        ..Default::default()
                    }),
                    log_records: Vec::new(),
                    schema_url: String::new(),
                });
                scopes.len() - 1
            }
        };
        scopes[at].log_records.push(p.record);
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: scopes,
            schema_url: String::new(),
        }],
    }
}
