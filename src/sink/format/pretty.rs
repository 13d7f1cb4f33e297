//! The human format: `TIMESTAMP LEVEL target: message key=value … span{…}`.

use std::fmt::Write as _;

use tracing::Level;

use super::write_rfc3339;
use crate::event::{Event, Value};

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

fn level_color(level: Level) -> &'static str {
    match level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

pub(crate) fn write_event(buf: &mut Vec<u8>, e: &Event, color: bool) {
    let mut s = String::with_capacity(128);
    let (dim, bold, reset) = if color {
        (DIM, BOLD, RESET)
    } else {
        ("", "", "")
    };
    let mut ts = Vec::with_capacity(27);
    write_rfc3339(&mut ts, e.timestamp);
    s.push_str(dim);
    s.push_str(std::str::from_utf8(&ts).unwrap_or(""));
    s.push_str(reset);
    s.push(' ');
    if color {
        s.push_str(level_color(e.level));
    }
    let _ = write!(s, "{:>5}", e.level.as_str());
    s.push_str(reset);
    s.push(' ');
    if let Some(t) = &e.trace {
        // A short form, enough to find the trace: its first 8 hex digits.
        s.push_str(dim);
        s.push('[');
        s.push_str(&t.trace_id()[..8]);
        s.push(']');
        s.push_str(reset);
        s.push(' ');
    }
    for span in e.spans() {
        s.push_str(bold);
        push_escaped(&mut s, span.name());
        s.push_str(reset);
        let mut first = true;
        for (k, v) in span.fields() {
            s.push(if first { '{' } else { ' ' });
            first = false;
            push_kv(&mut s, k, v, "", "");
        }
        if !first {
            s.push('}');
        }
        s.push(':');
    }
    if !e.spans.is_empty() {
        s.push(' ');
    }
    s.push_str(dim);
    push_escaped(&mut s, e.target());
    s.push(':');
    s.push_str(reset);
    s.push(' ');
    if let Some(m) = e.message() {
        push_escaped(&mut s, m);
    }
    for (k, v) in e.fields().chain(e.inserted()) {
        s.push(' ');
        push_kv(&mut s, k, v, dim, reset);
    }
    let mut errors = e.enrichment_errors().peekable();
    if errors.peek().is_some() {
        s.push_str(" enrichment_errors={");
        for (i, (k, v)) in errors.enumerate() {
            if i > 0 {
                s.push(' ');
            }
            push_escaped(&mut s, k);
            s.push('=');
            push_escaped(&mut s, v);
        }
        s.push('}');
    }
    s.push('\n');
    buf.extend_from_slice(s.as_bytes());
}

/// Control characters (newlines, escape sequences) are shown escaped, so a
/// message cannot forge lines or colours in a terminal.
fn push_escaped(s: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
}

fn push_kv(s: &mut String, k: &str, v: &Value, dim: &str, reset: &str) {
    s.push_str(dim);
    // Names can come from remote data (a lookup's `merge_prefix`).
    push_escaped(s, k);
    s.push('=');
    s.push_str(reset);
    match v {
        Value::String(text) => {
            let _ = write!(s, "{text:?}");
        }
        other => {
            let _ = write!(s, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_has_no_escape_codes() {
        let e = Event::new(Level::INFO, "app", "hello")
            .with_field("n", 1)
            .with_span("req", [("id", "a")]);
        let mut buf = Vec::new();
        write_event(&mut buf, &e, false);
        let line = String::from_utf8(buf).unwrap();
        assert!(!line.contains('\x1b'));
        assert!(
            line.ends_with("INFO req{id=\"a\"}: app: hello n=1\n"),
            "{line}"
        );
    }

    #[test]
    fn trace_shows_in_short() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = Event::new(Level::INFO, "app", "hello").with_field("traceparent", tp);
        let mut buf = Vec::new();
        write_event(&mut buf, &e, false);
        let line = String::from_utf8(buf).unwrap();
        assert!(line.contains(" INFO [4bf92f35] app: hello"), "{line}");
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        let mut buf = Vec::new();
        let forged = "ok\n2026-01-01T00:00:00Z ERROR fake: \x1b[31mred";
        write_event(&mut buf, &Event::new(Level::INFO, "app", forged), false);
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\x1b'), "{line}");
        assert!(line.contains("ok\\n2026"), "{line}");
    }

    #[test]
    fn control_characters_in_names_targets_and_reasons_are_escaped() {
        let forged = "\u{1b}[31mevil\nFAKE LINE";
        let mut e = Event::new(Level::INFO, forged.to_owned(), "m").with_span("s", [(forged, 1)]);
        e.insert(forged.to_owned(), 1);
        e.add_enrichment_error(forged.to_owned(), forged.to_owned());
        let mut buf = Vec::new();
        write_event(&mut buf, &e, false);
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\x1b'), "{line}");
        assert!(line.contains("\\u{1b}[31mevil\\nFAKE LINE"), "{line}");
    }

    #[test]
    fn coloured_line_has_escape_codes() {
        let mut buf = Vec::new();
        write_event(&mut buf, &Event::new(Level::ERROR, "app", "x"), true);
        assert!(String::from_utf8(buf).unwrap().contains("\x1b[31m"));
    }
}
