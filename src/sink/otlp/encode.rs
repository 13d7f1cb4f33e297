//! Events straight to OTLP protobuf bytes, and records into an export
//! request, without building the generated message structs.
//!
//! Why by hand: building a `LogRecord` allocates a `String` per attribute
//! key and value and a `Vec` per nested value, and a held record costs
//! several times its encoded size in memory. Encoding once, on the sink's
//! task, keeps the retry buffer's byte bound the real memory bound, makes
//! a retry resend the same bytes, and lets one request be assembled from
//! held records by copying. The layout follows
//! `opentelemetry/proto/logs/v1/logs.proto`; the tests decode what is
//! written here with the generated types (`prost`) and compare.

use tracing::Level;

use super::map::Omit;
use crate::event::{Event, Value};

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire)));
}

pub(super) fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field whose content `f` writes: one byte is kept
/// for the length, and the content moved up in the rare case it needs
/// more.
fn nested(buf: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    f(buf);
    let len = buf.len() - at - 1;
    let extra = varint_len(len as u64) - 1;
    if extra > 0 {
        buf.splice(at + 1..at + 1, std::iter::repeat_n(0, extra));
    }
    let mut len_bytes = Vec::with_capacity(5);
    varint(&mut len_bytes, len as u64);
    buf[at..at + len_bytes.len()].copy_from_slice(&len_bytes);
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(buf, field, LEN);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn str_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    bytes_field(buf, field, s.as_bytes());
}

/// `AnyValue` content of a JSON value (shape kept; `null` is empty).
fn any(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => {
            key(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                key(buf, 3, VARINT);
                varint(buf, i as u64);
            } else {
                key(buf, 4, FIXED64);
                buf.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        }
        Value::String(s) => str_field(buf, 1, s),
        Value::Array(items) => nested(buf, 5, |buf| {
            for item in items {
                nested(buf, 1, |buf| any(buf, item));
            }
        }),
        Value::Object(map) => nested(buf, 6, |buf| {
            for (k, v) in map {
                nested(buf, 1, |buf| {
                    str_field(buf, 1, k);
                    nested(buf, 2, |buf| any(buf, v));
                });
            }
        }),
    }
}

/// One attribute (`KeyValue`, field 6 of `LogRecord`); the key is written
/// from `key_parts`, concatenated.
fn attribute(buf: &mut Vec<u8>, key_parts: &[&str], value: impl FnOnce(&mut Vec<u8>)) {
    nested(buf, 6, |buf| {
        let len: usize = key_parts.iter().map(|p| p.len()).sum();
        key(buf, 1, LEN);
        varint(buf, len as u64);
        for p in key_parts {
            buf.extend_from_slice(p.as_bytes());
        }
        nested(buf, 2, value);
    });
}

fn string_value(s: &str) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |buf| str_field(buf, 1, s)
}

fn int_value(i: i64) -> impl FnOnce(&mut Vec<u8>) {
    move |buf| {
        key(buf, 3, VARINT);
        varint(buf, i as u64);
    }
}

pub(super) fn severity(level: Level) -> (u64, &'static str) {
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

/// The encoded `LogRecord` of one event (its content, without the
/// field key and length that frame it in `ScopeLogs`).
pub(super) fn record(event: &Event, omit: &Omit, buf: &mut Vec<u8>) {
    let time = nanos(event.timestamp());
    if time != 0 {
        key(buf, 1, FIXED64);
        buf.extend_from_slice(&time.to_le_bytes());
    }
    let (number, text) = severity(event.level());
    key(buf, 2, VARINT);
    varint(buf, number);
    str_field(buf, 3, text);
    if let Some(message) = event.message() {
        nested(buf, 5, string_value(message));
    }
    for (k, v) in event.fields() {
        attribute(buf, &[k], |buf| any(buf, v));
    }
    let spans = &event.spans;
    for (i, span) in spans.iter().enumerate() {
        // Of spans of one name, the innermost's fields.
        if spans[i + 1..].iter().any(|s| s.name() == span.name()) {
            continue;
        }
        for (k, v) in span.fields() {
            attribute(buf, &["span.", span.name(), ".", k], |buf| any(buf, v));
        }
    }
    for (k, v) in event.inserted() {
        if !omit.skips(k, v) {
            attribute(buf, &[k], |buf| any(buf, v));
        }
    }
    if event.enrichment_errors().next().is_some() {
        attribute(buf, &["enrichment_errors"], |buf| {
            nested(buf, 6, |buf| {
                for (enricher, reason) in event.enrichment_errors() {
                    nested(buf, 1, |buf| {
                        str_field(buf, 1, enricher);
                        nested(buf, 2, string_value(reason));
                    });
                }
            });
        });
    }
    if let Some(file) = event.file() {
        attribute(buf, &["code.file.path"], string_value(file));
    }
    if let Some(line) = event.line() {
        attribute(buf, &["code.line.number"], int_value(i64::from(line)));
    }
    if let Some(module) = event.module_path() {
        attribute(buf, &["code.namespace"], string_value(module));
    }
    if let Some(name) = event.thread_name() {
        attribute(buf, &["thread.name"], string_value(name));
    }
    if event.thread_id() != 0 {
        let id = i64::try_from(event.thread_id()).unwrap_or(i64::MAX);
        attribute(buf, &["thread.id"], int_value(id));
    }
    if let Some(t) = event.trace() {
        if t.flags() != 0 {
            key(buf, 8, FIXED32);
            buf.extend_from_slice(&u32::from(t.flags()).to_le_bytes());
        }
        bytes_field(buf, 9, &t.trace_id_bytes());
        bytes_field(buf, 10, &t.span_id_bytes());
    }
    if time != 0 {
        key(buf, 11, FIXED64);
        buf.extend_from_slice(&time.to_le_bytes());
    }
}

/// Bytes a length-delimited field of `len` content bytes takes (a
/// one-byte key).
pub(super) fn framed(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn frame(buf: &mut Vec<u8>, field: u32, len: usize) {
    key(buf, field, LEN);
    varint(buf, len as u64);
}

/// An `ExportLogsServiceRequest` of one resource (its encoded content
/// given) and, per scope in order, its records' encoded contents.
pub(super) fn request(resource: &[u8], scopes: &[(&str, Vec<&[u8]>)]) -> Vec<u8> {
    let scope_len = |name: &str, records: &[&[u8]]| -> usize {
        let scope = if name.is_empty() {
            0
        } else {
            framed(name.len())
        };
        framed(scope) + records.iter().map(|r| framed(r.len())).sum::<usize>()
    };
    let resource_logs_len = framed(resource.len())
        + scopes
            .iter()
            .map(|(n, r)| framed(scope_len(n, r)))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(framed(resource_logs_len));
    // ExportLogsServiceRequest.resource_logs = 1
    frame(&mut buf, 1, resource_logs_len);
    // ResourceLogs.resource = 1
    frame(&mut buf, 1, resource.len());
    buf.extend_from_slice(resource);
    for (name, records) in scopes {
        // ResourceLogs.scope_logs = 2
        frame(&mut buf, 2, scope_len(name, records));
        // ScopeLogs.scope = 1 (InstrumentationScope.name = 1)
        let scope = if name.is_empty() {
            0
        } else {
            framed(name.len())
        };
        frame(&mut buf, 1, scope);
        if !name.is_empty() {
            str_field(&mut buf, 1, name);
        }
        for r in records {
            // ScopeLogs.log_records = 2
            frame(&mut buf, 2, r.len());
            buf.extend_from_slice(r);
        }
    }
    debug_assert_eq!(buf.len(), buf.capacity());
    buf
}
