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

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
#[cfg(test)]
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
#[cfg(test)]
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::encode;
use crate::event::{Event, Value};

/// A record waiting to be sent: its encoded `LogRecord`, and its scope.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) scope: Cow<'static, str>,
    /// Exactly as long as it is, so the buffer's byte bound is its memory.
    pub(super) record: Box<[u8]>,
    /// Counted in the pipeline's stats (false for fapilog's own records).
    pub(super) counted: bool,
}

impl Pending {
    /// What the record takes in the buffer and in a request.
    pub(super) fn bytes(&self) -> usize {
        encode::framed(self.record.len()) + self.scope.len() / 8
    }
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
#[cfg(test)]
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
    pub(super) fn skips(&self, name: &str, value: &Value) -> bool {
        self.fields
            .iter()
            .any(|(k, v)| *k == name && value.as_str() == Some(v.as_str()))
    }
}

/// The record of one event, built from the generated types: what
/// [`encode::record`] must write, for the tests to compare.
#[cfg(test)]
pub(super) fn record(event: &Event, omit: &Omit) -> LogRecord {
    let (number, text) = encode::severity(event.level());
    let number = number as i32;
    let time = event
        .timestamp()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
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

/// A record ready for the buffer, encoded in `scratch` first.
pub(super) fn pending(event: &Event, omit: &Omit, counted: bool, scratch: &mut Vec<u8>) -> Pending {
    scratch.clear();
    encode::record(event, omit, scratch);
    Pending {
        scope: event.site.target_cow(),
        record: scratch.as_slice().into(),
        counted,
    }
}

/// The encoded request of these records: one resource, a scope per
/// target (in the order targets first appear; records keep their order
/// within it).
pub(super) fn request(resource: &[u8], records: &[Pending]) -> Vec<u8> {
    let mut scopes: Vec<(&str, Vec<&[u8]>)> = Vec::new();
    for p in records {
        match scopes
            .iter_mut()
            .find(|(name, _)| *name == p.scope.as_ref())
        {
            Some((_, list)) => list.push(&p.record[..]),
            None => scopes.push((p.scope.as_ref(), vec![&p.record[..]])),
        }
    }
    encode::request(resource, &scopes)
}
