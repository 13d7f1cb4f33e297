//! The JSON-lines form of an event. Field names are part of the public
//! contract and documented in the crate docs ("Output format").

use super::write_rfc3339;
use crate::event::{Event, FieldName, Value, push_hex};

/// Appends `event` as one JSON object and a newline.
pub(crate) fn write_event(buf: &mut Vec<u8>, event: &Event) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    write_rfc3339(buf, event.timestamp);
    buf.extend_from_slice(b"\",\"level\":\"");
    buf.extend_from_slice(event.level.as_str().as_bytes());
    buf.push(b'"');
    if let Some(m) = &event.message {
        buf.extend_from_slice(b",\"message\":");
        write_str(buf, m);
    }
    buf.extend_from_slice(b",\"target\":");
    write_str(buf, &event.target);
    if let Some(t) = &event.trace {
        buf.extend_from_slice(b",\"trace_id\":\"");
        push_hex(buf, &t.trace_id_bytes());
        buf.extend_from_slice(b"\",\"span_id\":\"");
        push_hex(buf, &t.span_id_bytes());
        buf.push(b'"');
    }
    if !event.fields.is_empty() {
        buf.extend_from_slice(b",\"fields\":");
        write_map(buf, &event.fields);
    }
    if !event.spans.is_empty() {
        buf.extend_from_slice(b",\"spans\":[");
        for (i, span) in event.spans.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"name\":");
            write_str(buf, span.name);
            if !span.fields.is_empty() {
                buf.extend_from_slice(b",\"fields\":");
                write_map(buf, &span.fields);
            }
            buf.push(b'}');
        }
        buf.push(b']');
    }
    for (k, v) in &event.extra {
        buf.push(b',');
        write_str(buf, k);
        buf.push(b':');
        write_value(buf, v);
    }
    if !event.errors.is_empty() {
        buf.extend_from_slice(b",\"enrichment_errors\":{");
        for (i, (k, v)) in event.errors.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(buf, k);
            buf.push(b':');
            write_str(buf, v);
        }
        buf.push(b'}');
    }
    if let Some(m) = &event.module_path {
        buf.extend_from_slice(b",\"module\":");
        write_str(buf, m);
    }
    if let Some(f) = &event.file {
        buf.extend_from_slice(b",\"file\":");
        write_str(buf, f);
    }
    if let Some(l) = event.line {
        buf.extend_from_slice(b",\"line\":");
        buf.extend_from_slice(itoa::Buffer::new().format(l).as_bytes());
    }
    if let Some(t) = &event.thread_name {
        buf.extend_from_slice(b",\"thread_name\":");
        write_str(buf, t);
    }
    if event.thread_id != 0 {
        buf.extend_from_slice(b",\"thread_id\":");
        buf.extend_from_slice(itoa::Buffer::new().format(event.thread_id).as_bytes());
    }
    buf.extend_from_slice(b"}\n");
}

fn write_map(buf: &mut Vec<u8>, fields: &[(FieldName, Value)]) {
    buf.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k);
        buf.push(b':');
        write_value(buf, v);
    }
    buf.push(b'}');
}

pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn write_value(buf: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *buf, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_is_written_at_the_top_level() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ev =
            Event::new(tracing::Level::INFO, "app", "m").with_span("req", [("traceparent", tp)]);
        let mut buf = Vec::new();
        write_event(&mut buf, &ev);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "00f067aa0ba902b7");
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("{\"timestamp\":"), "{text}");
        assert!(text.contains("\"target\":\"app\",\"trace_id\":"), "{text}");
    }

    #[test]
    fn event_is_one_valid_json_line() {
        let ev = Event::new(tracing::Level::WARN, "app", "he said \"hi\"\n")
            .with_field("n", 3)
            .with_field("ok", true)
            .with_span("request", [("user_id", 42)]);
        let mut buf = Vec::new();
        write_event(&mut buf, &ev);
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "he said \"hi\"\n");
        assert_eq!(v["fields"]["n"], 3);
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["spans"][0]["name"], "request");
        assert_eq!(v["spans"][0]["fields"]["user_id"], 42);
    }
}
