//! The request's identity from its headers: which incoming values are kept,
//! and fresh ids for the rest.
//!
//! Every check looks at a header value's length before its bytes, and
//! nothing here allocates more than the bounds below, so a hostile header
//! costs no more than reading it. A value that fails a check is ignored —
//! never echoed, never an error.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::GetAll;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::event::{TraceContext, push_hex};

/// The W3C Trace Context headers.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest incoming request id kept, in bytes.
pub(crate) const MAX_REQUEST_ID: usize = 128;
/// Longest `tracestate` kept, in bytes (all its headers together), as the
/// W3C recommendation says a vendor may cut it.
pub(crate) const MAX_TRACESTATE: usize = 512;
/// Most list members of a `tracestate` kept (the W3C limit).
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `traceparent` parsed: version 00 has 55 bytes; later versions
/// may add fields, within reason.
const MAX_TRACEPARENT: usize = 256;
/// Longest path recorded on the span, in bytes; a longer one is cut.
pub(crate) const MAX_PATH: usize = 2048;
/// Longest method recorded (extension methods are any token).
pub(crate) const MAX_METHOD: usize = 32;

/// The value of `name` if the request has exactly one such header and it
/// is a well-formed request id: 1 to [`MAX_REQUEST_ID`] bytes of
/// `A-Z a-z 0-9 . _ : -`.
pub(crate) fn incoming_request_id(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let value = single(headers.get_all(name))?;
    is_request_id(value.as_bytes()).then(|| value.clone())
}

/// Whether `id` is a request id this layer keeps.
pub(crate) fn is_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The trace context of the request's `traceparent`, if it has exactly one
/// and it is valid. Two of them are ambiguous, so neither is trusted.
pub(crate) fn incoming_traceparent(headers: &HeaderMap) -> Option<TraceContext> {
    let value = single(headers.get_all(TRACEPARENT))?;
    if value.len() > MAX_TRACEPARENT {
        return None;
    }
    TraceContext::from_traceparent(value.to_str().ok()?)
}

/// The request's `tracestate`: its headers joined with `,` (the standard
/// lets a list be split over several), empty members left out; `None`
/// when there is none, when it is longer than [`MAX_TRACESTATE`] or has
/// more than 32 members, or when it holds anything but printable ASCII.
pub(crate) fn incoming_tracestate(headers: &HeaderMap) -> Option<String> {
    let mut out = String::new();
    let mut members = 0;
    for value in headers.get_all(TRACESTATE) {
        if value.len() > MAX_TRACESTATE {
            return None;
        }
        let bytes = value.as_bytes();
        if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return None;
        }
        // Printable ASCII is UTF-8.
        let text = std::str::from_utf8(bytes).ok()?;
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            members += 1;
            let sep = usize::from(!out.is_empty());
            if members > MAX_TRACESTATE_MEMBERS || out.len() + sep + member.len() > MAX_TRACESTATE {
                return None;
            }
            if sep == 1 {
                out.push(',');
            }
            out.push_str(member);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The only value of a header, or `None` when it is absent or repeated.
fn single(all: GetAll<'_, HeaderValue>) -> Option<&HeaderValue> {
    let mut iter = all.into_iter();
    let first = iter.next()?;
    iter.next().is_none().then_some(first)
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        s
    } else {
        &s[..s.floor_char_boundary(max)]
    }
}

/// A new request id: 32 lower-case hex digits (128 random bits).
pub(crate) fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    let mut out = Vec::with_capacity(32);
    push_hex(&mut out, &bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// A new span id, never all zeros.
pub(crate) fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    fill_random(&mut id);
    nonzero(&mut id);
    id
}

/// A new trace: random trace and span ids, sampled.
pub(crate) fn new_trace() -> TraceContext {
    let mut trace_id = [0u8; 16];
    fill_random(&mut trace_id);
    nonzero(&mut trace_id);
    TraceContext::new(trace_id, new_span_id(), 1).unwrap_or_else(fallback_trace)
}

/// `trace` continued by a new span: same trace id and flags, a new span
/// id (the incoming one becomes the parent).
pub(crate) fn child_of(trace: &TraceContext) -> TraceContext {
    TraceContext::new(trace.trace_id_bytes(), new_span_id(), trace.flags())
        .unwrap_or_else(fallback_trace)
}

/// Neither id is ever all zeros, so `TraceContext::new` cannot refuse;
/// should it, a fixed valid context beats a panic in a request.
fn fallback_trace() -> TraceContext {
    TraceContext::new([1; 16], [1; 8], 1).expect("non-zero ids")
}

fn nonzero(id: &mut [u8]) {
    if id.iter().all(|b| *b == 0)
        && let Some(last) = id.last_mut()
    {
        *last = 1;
    }
}

/// Fills `out` with unpredictable bytes: SipHash, under the process's
/// random `RandomState` keys, of a process-wide counter. Not a CSPRNG, but
/// ids that cannot be guessed without the keys and never repeat within a
/// process, at the cost of a hash — no new dependency.
fn fill_random(out: &mut [u8]) {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    for chunk in out.chunks_mut(8) {
        let mut h = keys.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).expect("valid header value"));
        }
        h
    }

    #[test]
    fn request_ids_are_checked() {
        let name = HeaderName::from_static("x-request-id");
        let ok = "req-42_a.b:c";
        assert_eq!(
            incoming_request_id(&headers(&[("x-request-id", ok.as_bytes())]), &name).unwrap(),
            ok
        );
        let long = "a".repeat(MAX_REQUEST_ID);
        assert!(
            incoming_request_id(&headers(&[("x-request-id", long.as_bytes())]), &name).is_some()
        );
        let too_long = "a".repeat(MAX_REQUEST_ID + 1);
        for bad in [
            &b""[..],
            too_long.as_bytes(),
            b"has space",
            b"slash/es",
            b"quote\"",
            b"\xff\xfe",
            b"caf\xc3\xa9",
            b"tab\there",
        ] {
            assert_eq!(
                incoming_request_id(&headers(&[("x-request-id", bad)]), &name),
                None,
                "{bad:?}"
            );
        }
        let twice = headers(&[("x-request-id", b"one"), ("x-request-id", b"two")]);
        assert_eq!(incoming_request_id(&twice, &name), None);
        assert_eq!(incoming_request_id(&HeaderMap::new(), &name), None);
    }

    #[test]
    fn traceparent_needs_exactly_one_valid_header() {
        const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = incoming_traceparent(&headers(&[("traceparent", TP)])).unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            incoming_traceparent(&headers(&[("traceparent", TP), ("traceparent", TP)])),
            None
        );
        let huge = [b'0'; 10_000];
        assert_eq!(
            incoming_traceparent(&headers(&[("traceparent", &huge)])),
            None
        );
        assert_eq!(
            incoming_traceparent(&headers(&[("traceparent", b"\xff-00")])),
            None
        );
    }

    #[test]
    fn tracestate_is_joined_and_bounded() {
        let ts = incoming_tracestate(&headers(&[
            ("tracestate", b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ("tracestate", b" ,vendor=x"),
        ]));
        assert_eq!(
            ts.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor=x")
        );
        assert_eq!(incoming_tracestate(&HeaderMap::new()), None);
        assert_eq!(
            incoming_tracestate(&headers(&[("tracestate", b" , ")])),
            None
        );
        let long = "a".repeat(MAX_TRACESTATE + 1);
        assert_eq!(
            incoming_tracestate(&headers(&[("tracestate", long.as_bytes())])),
            None
        );
        let half = "a=".to_owned() + &"b".repeat(300);
        assert_eq!(
            incoming_tracestate(&headers(&[
                ("tracestate", half.as_bytes()),
                ("tracestate", half.as_bytes())
            ])),
            None,
            "the limit holds for all headers together"
        );
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            incoming_tracestate(&headers(&[("tracestate", many.as_bytes())])),
            None
        );
        assert_eq!(
            incoming_tracestate(&headers(&[("tracestate", b"a=\xff")])),
            None
        );
        assert_eq!(
            incoming_tracestate(&headers(&[("tracestate", b"a=\tb")])),
            None
        );
    }

    #[test]
    fn fresh_ids_are_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = new_request_id();
            assert_eq!(id.len(), 32);
            assert!(is_request_id(id.as_bytes()));
            assert!(seen.insert(id));
        }
        let t = new_trace();
        assert!(t.is_sampled());
        let child = child_of(&t);
        assert_eq!(child.trace_id(), t.trace_id());
        assert_ne!(child.span_id(), t.span_id());
        assert_ne!(new_trace().trace_id(), t.trace_id());
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("abcdef", 3), "abc");
        assert_eq!(bounded("a\u{e9}b", 2), "a");
    }
}
