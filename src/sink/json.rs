//! The JSON-lines form of an event. Field names are part of the public
//! contract and documented in the crate docs ("Output format").

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Event, FieldName, Value};

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

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`, UTC.
pub(crate) fn write_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let micros = d.subsec_micros();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let mut tmp = [0u8; 27];
    write_digits(&mut tmp[0..4], y as u64);
    tmp[4] = b'-';
    write_digits(&mut tmp[5..7], m as u64);
    tmp[7] = b'-';
    write_digits(&mut tmp[8..10], dd as u64);
    tmp[10] = b'T';
    write_digits(&mut tmp[11..13], hh);
    tmp[13] = b':';
    write_digits(&mut tmp[14..16], mm);
    tmp[16] = b':';
    write_digits(&mut tmp[17..19], ss);
    tmp[19] = b'.';
    write_digits(&mut tmp[20..26], micros as u64);
    tmp[26] = b'Z';
    buf.extend_from_slice(&tmp);
}

/// The RFC 3339 timestamp of `t` as a string.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let mut buf = Vec::with_capacity(27);
    write_rfc3339(&mut buf, t);
    String::from_utf8(buf).unwrap_or_default()
}

fn write_digits(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, micros * 1000))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day in a century leap year)
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        // last second of a year
        assert_eq!(at(1_735_689_599, 999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
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
