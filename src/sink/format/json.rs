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
        write_utf8(buf, m.as_bytes());
    }
    let site = event.site.call_site().map(rendered_site);
    match &site {
        Some(site) => buf.extend_from_slice(&site.target),
        None => write_target(buf, event.target()),
    }
    if let Some(t) = &event.trace {
        buf.extend_from_slice(b",\"trace_id\":\"");
        push_hex(buf, &t.trace_id_bytes());
        buf.extend_from_slice(b"\",\"span_id\":\"");
        push_hex(buf, &t.span_id_bytes());
        buf.push(b'"');
    }
    if !event.fields.is_empty() {
        buf.extend_from_slice(b",\"fields\":");
        match &site {
            // The event's field names are its call site's, all plain.
            Some(site) if site.plain_names => write_plain_map(buf, &event.fields),
            _ => write_map(buf, &event.fields),
        }
    }
    if !event.spans.is_empty() {
        buf.extend_from_slice(b",\"spans\":[");
        for (i, span) in event.spans.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            // Rendered once for all the events of the span.
            buf.extend_from_slice(span.json.get_or_init(|| {
                let mut out = Vec::with_capacity(64);
                out.extend_from_slice(b"{\"name\":");
                write_str(&mut out, span.name);
                if !span.fields.is_empty() {
                    out.extend_from_slice(b",\"fields\":");
                    write_map(&mut out, &span.fields);
                }
                out.push(b'}');
                out.into_boxed_slice()
            }));
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
    match &site {
        Some(site) => buf.extend_from_slice(&site.location),
        None => write_location(buf, event.module_path(), event.file(), event.line()),
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

fn write_target(buf: &mut Vec<u8>, target: &str) {
    buf.extend_from_slice(b",\"target\":");
    write_str(buf, target);
}

fn write_location(buf: &mut Vec<u8>, module: Option<&str>, file: Option<&str>, line: Option<u32>) {
    if let Some(m) = module {
        buf.extend_from_slice(b",\"module\":");
        write_str(buf, m);
    }
    if let Some(f) = file {
        buf.extend_from_slice(b",\"file\":");
        write_str(buf, f);
    }
    if let Some(l) = line {
        buf.extend_from_slice(b",\"line\":");
        buf.extend_from_slice(itoa::Buffer::new().format(l).as_bytes());
    }
}

/// A call site's target and location as written, rendered once.
struct RenderedSite {
    target: Box<[u8]>,
    location: Box<[u8]>,
    /// No field name of the call site needs an escape.
    plain_names: bool,
}

/// Slots of `SITES`.
const SITE_SLOTS: usize = 256;

/// A slot of `SITES`: the metadata's address and its rendering.
type SiteSlot = Option<(usize, std::rc::Rc<RenderedSite>)>;

thread_local! {
    /// Call sites rendered on this thread, direct-mapped by the address of
    /// their metadata (a call site another one pushed out is rendered
    /// again): every event of a call site has the same target, module,
    /// file and line.
    static SITES: std::cell::RefCell<Vec<SiteSlot>> = std::cell::RefCell::new(vec![None; SITE_SLOTS]);
}

fn rendered_site(meta: &'static tracing::Metadata<'static>) -> std::rc::Rc<RenderedSite> {
    let addr = meta as *const tracing::Metadata<'static> as usize;
    let slot = ((addr >> 4) ^ (addr >> 12)) % SITE_SLOTS;
    SITES.with(|sites| {
        let mut sites = sites.borrow_mut();
        if let Some((a, site)) = &sites[slot]
            && *a == addr
        {
            return site.clone();
        }
        let mut target = Vec::new();
        write_target(&mut target, meta.target());
        let mut location = Vec::new();
        write_location(&mut location, meta.module_path(), meta.file(), meta.line());
        let site = std::rc::Rc::new(RenderedSite {
            target: target.into_boxed_slice(),
            location: location.into_boxed_slice(),
            plain_names: meta
                .fields()
                .iter()
                .all(|f| !needs_escape(f.name().as_bytes())),
        });
        sites[slot] = Some((addr, site.clone()));
        site
    })
}

/// [`write_map`] of fields whose names need no escape.
fn write_plain_map(buf: &mut Vec<u8>, fields: &[(FieldName, Value)]) {
    buf.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b"\":");
        write_value(buf, v);
    }
    buf.push(b'}');
}

fn write_map(buf: &mut Vec<u8>, fields: &[(FieldName, Value)]) {
    write_object(buf, fields.iter().map(|(k, v)| (k.as_ref(), v)));
}

fn write_object<'a>(buf: &mut Vec<u8>, entries: impl Iterator<Item = (&'a str, &'a Value)>) {
    buf.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k);
        buf.push(b':');
        write_value(buf, v);
    }
    buf.push(b'}');
}

/// Whether a byte must be escaped in a JSON string: a quote, a backslash
/// or a control character (what `serde_json` escapes, no more: text other
/// than these, UTF-8 included, is written as it is).
const fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `bytes` must be escaped, eight bytes at a time:
/// with `ONES` the byte 0x01 repeated and `HIGH` 0x80, `(x - n*ONES) & !x
/// & HIGH` is non-zero exactly when some byte of `x` is below `n` (for `n`
/// up to 0x80), and a byte equal to `c` is a zero byte of `x ^ c*ONES`.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Spaces: bytes that need no escape, to pad a short string's word.
    const PAD: u64 = ONES * 0x20;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |x: u64| {
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        below(x, 0x20) | below(quote, 1) | below(backslash, 1) != 0
    };
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0x20; 8]));
    let half = |c: &[u8]| u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0x20; 4])));
    let quarter = |c: &[u8]| u64::from(u16::from_le_bytes(c.try_into().unwrap_or([0x20; 2])));
    let n = bytes.len();
    // Most strings (field names, short values) are under eight bytes: one
    // word built from overlapping loads (a byte seen twice is harmless),
    // padded with spaces, instead of a loop over the bytes.
    match n {
        0 => false,
        1 => has(PAD << 8 | u64::from(bytes[0])),
        2..=3 => has(PAD << 32 | quarter(&bytes[n - 2..]) << 16 | quarter(&bytes[..2])),
        4..=7 => has(half(&bytes[n - 4..]) << 32 | half(&bytes[..4])),
        _ => {
            let mut chunks = bytes.chunks_exact(8);
            if chunks.any(|c| has(word(c))) {
                return true;
            }
            // The tail: the last eight bytes, overlapping the words before.
            !chunks.remainder().is_empty() && has(word(&bytes[n - 8..]))
        }
    }
}

/// Appends `s` as a JSON string. Most strings need no escape at all: they
/// are checked eight bytes at a time and copied in one go; the rest are
/// copied in runs between escapes.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    write_utf8(buf, s.as_bytes());
}

/// [`write_str`] of bytes known to be UTF-8 (a message's, which skips
/// checking them again).
fn write_utf8(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    if !needs_escape(bytes) {
        buf.extend_from_slice(bytes);
    } else {
        write_escaped(buf, bytes);
    }
    buf.push(b'"');
}

#[cold]
fn write_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !escaped(b) {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            _ => buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Appends `v` as JSON (as `serde_json` writes it, without going through
/// its `io::Write` serializer for every string).
fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(true) => buf.extend_from_slice(b"true"),
        Value::Bool(false) => buf.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else if let Some(u) = n.as_u64() {
                buf.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else {
                // Floats as serde_json formats them (finite: a `Number`
                // holds no NaN or infinity).
                let _ = serde_json::to_writer(&mut *buf, n);
            }
        }
        Value::String(s) => write_str(buf, s),
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_value(buf, item);
            }
            buf.push(b']');
        }
        Value::Object(map) => write_object(buf, map.iter().map(|(k, v)| (k.as_str(), v))),
    }
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
    fn every_escape_is_found_at_every_position_of_every_short_length() {
        let must: Vec<u8> = (0..0x20).chain([b'"', b'\\']).collect();
        for len in 0..=40 {
            // Bytes that need no escape, the edges included.
            for safe in [b' ', b'a', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                let text = vec![safe; len];
                assert!(!needs_escape(&text), "{len} x {safe:#x}");
            }
            for at in 0..len {
                for &b in &must {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert!(needs_escape(&text), "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn strings_and_values_are_written_as_serde_json_writes_them(
            text in "(?s).{0,40}",
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            n in proptest::num::i64::ANY,
            u in proptest::num::u64::ANY,
            f in proptest::num::f64::NORMAL,
        ) {
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            for s in [text.as_str(), lossy.as_str(), "\u{0}\u{1f}\u{7f}\"\\\n\r\t\u{8}\u{c}é€😀"] {
                let mut ours = Vec::new();
                write_str(&mut ours, s);
                proptest::prop_assert_eq!(&ours, &serde_json::to_vec(s).unwrap());
            }
            let v = serde_json::json!({
                "s": text, "n": n, "u": u, "f": f, "neg": -0.0, "b": [true, false, null],
                "nested": {"k\"ey": [lossy, {"x": 1.5e300}]}, "empty": {}, "none": [],
            });
            let mut ours = Vec::new();
            write_value(&mut ours, &v);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&v).unwrap());
        }
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
