//! Redaction: secrets never reach a sink.
//!
//! After enrichment and before any sink, every event's fields, span fields
//! and enriched values (nested objects and arrays too) are checked: a
//! field whose **name** looks like a secret has its value replaced by
//! `[REDACTED]`. Names match when, lower-cased and with `-`, `_` and `.`
//! left out, they *contain* one of the secret words — so `db_password`,
//! `X-Api-Key` and `refreshToken` are caught by `password`, `api_key` and
//! `token`. Over-hiding a field is the safe way to be wrong.
//!
//! Optionally ([`Redaction::values`]), string **values** are scanned too:
//! `Bearer …` / `Basic …` credentials and the password of any
//! `scheme://user:password@host` URL inside a value or message are hidden.
//!
//! Connection strings of the built-in sources are redacted separately,
//! wherever they show (`Debug`, errors, health), by [`redact_url`].

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{Event, FieldName, FieldValue, SharedValue, SpanRecord, Value};

mod url;

pub(crate) use url::{Query, url};

/// The secret words redaction looks for by default: a field is hidden when
/// its name (lower-cased, `-`, `_` and `.` left out) contains one of them.
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "authorization",
    "cookie",
    "set-cookie",
    "private_key",
    "access_key",
    "client_secret",
    "credential",
];

/// What replaces a hidden value, unless [`Redaction::replacement`] says
/// otherwise.
pub const REDACTED: &str = "[REDACTED]";

/// Hides the password of a URL's user info and password-like query
/// parameters, whatever characters the password holds:
///
/// ```
/// assert_eq!(
///     fapilog::enrich::redact_url("postgres://app:Zq9X?w7#Kv@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require",
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    self::url(url, Query::HidePasswords)
}

/// Which fields and values are hidden before any sink sees an event; set
/// it with [`Builder::redaction`](crate::Builder::redaction).
///
/// | setting | default |
/// | --- | --- |
/// | on | yes |
/// | secret words ([`key`](Self::key), [`keys`](Self::keys)) | [`DEFAULT_SECRET_KEYS`] |
/// | [`values`](Self::values) (bearer tokens, URL passwords in values) | off |
/// | [`replacement`](Self::replacement) | `[REDACTED]` |
#[derive(Clone, PartialEq, Eq)]
pub struct Redaction {
    enabled: bool,
    keys: Vec<String>,
    values: bool,
    replacement: Cow<'static, str>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            enabled: true,
            keys: DEFAULT_SECRET_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            values: false,
            replacement: Cow::Borrowed(REDACTED),
        }
    }
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redaction")
            .field("enabled", &self.enabled)
            .field("keys", &self.keys)
            .field("values", &self.values)
            .field("replacement", &self.replacement)
            .finish()
    }
}

impl Redaction {
    /// Redaction off: events reach the sinks as they are.
    #[must_use]
    pub fn none() -> Self {
        Redaction {
            enabled: false,
            ..Self::default()
        }
    }

    /// Adds a secret word to the list (`"ssn"`, `"x-internal-auth"`).
    #[must_use]
    pub fn key(mut self, word: impl Into<String>) -> Self {
        self.keys.push(word.into());
        self
    }

    /// Replaces the list of secret words (the default list is dropped).
    #[must_use]
    pub fn keys<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys = words.into_iter().map(Into::into).collect();
        self
    }

    /// Whether string values (and messages) are scanned as well: `Bearer`
    /// and `Basic` credentials and URL passwords inside them are hidden.
    #[must_use]
    pub fn values(mut self, on: bool) -> Self {
        self.values = on;
        self
    }

    /// What replaces a hidden value.
    #[must_use]
    pub fn replacement(mut self, text: impl Into<Cow<'static, str>>) -> Self {
        self.replacement = text.into();
        self
    }

    /// The secret words in force.
    pub fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// Checks the settings and prepares the matcher; `None` when off.
    pub(crate) fn compile(&self) -> Result<Option<Redactor>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let mut patterns: Vec<Box<[u8]>> = Vec::new();
        for word in &self.keys {
            let normal = normalize(word);
            if normal.len() < 2 {
                return Err(format!(
                    "secret word {word:?} is too short to match safely: give at least two letters or digits"
                ));
            }
            if !patterns.iter().any(|p| **p == *normal) {
                patterns.push(normal.into_boxed_slice());
            }
        }
        let mut starts = vec![0u64; 1024].into_boxed_slice();
        for p in &patterns {
            let i = bigram(p[0], p[1]);
            starts[i / 64] |= 1 << (i % 64);
        }
        static IDS: AtomicU64 = AtomicU64::new(0);
        Ok(Some(Redactor {
            patterns,
            starts,
            values: self.values,
            replacement: Value::String(self.replacement.to_string()),
            id: IDS.fetch_add(1, Ordering::Relaxed),
        }))
    }
}

fn normalize(word: &str) -> Vec<u8> {
    word.bytes()
        .filter(|b| !matches!(b, b'-' | b'_' | b'.'))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

fn bigram(a: u8, b: u8) -> usize {
    (usize::from(a) << 8) | usize::from(b)
}

/// The compiled form of a [`Redaction`], run by the worker on every event.
pub(crate) struct Redactor {
    /// Normalized secret words, each at least two bytes.
    patterns: Vec<Box<[u8]>>,
    /// A bit per byte pair that starts some pattern: most names have none
    /// of these pairs, so most checks end after one table look-up a pair.
    starts: Box<[u64]>,
    values: bool,
    replacement: Value,
    /// Tells this redactor's memo entries from another's.
    id: u64,
}

/// Verdicts on field names that live for the whole program (the names
/// `tracing` gives, one set per call site), by redactor and address: most
/// of an event's names are checked once per thread, not once per event.
type Memo = HashMap<(u64, usize, usize), bool, BuildHasherDefault<AddrHasher>>;

thread_local! {
    static STATIC_NAMES: RefCell<Memo> = RefCell::new(Memo::default());
    /// The memo's most recent verdicts, direct-mapped by address, in front
    /// of it: an event's names are mostly the ones the last event had, and
    /// this costs a few instructions where the map costs a hash and a probe.
    static RECENT_NAMES: [Cell<(usize, usize, u64, bool)>; RECENT] =
        const { [const { Cell::new((0, 0, u64::MAX, false)) }; RECENT] };
    /// Verdicts on call sites (metadata address, redactor id, whether any
    /// of its field names is secret), direct-mapped by address.
    static CALL_SITES: [Cell<(usize, u64, bool)>; RECENT] =
        const { [const { Cell::new((0, u64::MAX, false)) }; RECENT] };
}

/// Slots of `RECENT_NAMES`.
const RECENT: usize = 64;

/// Longest name `OWNED_NAMES` keeps.
const OWNED_NAME: usize = 16;

/// A verdict on a name that is not static, kept with the name itself (its
/// bytes as two words, zero-padded) so a hit is exact: a name colliding
/// with another in the slot is never given the other's verdict.
#[derive(Clone, Copy)]
struct OwnedVerdict {
    id: u64,
    words: [u64; 2],
    len: u8,
    secret: bool,
}

thread_local! {
    /// Verdicts on names that are not static (an object's keys, a row's
    /// column names), direct-mapped by a hash of the name: a lookup's
    /// values come with the same few keys again and again.
    static OWNED_NAMES: [Cell<OwnedVerdict>; RECENT] = const {
        [const {
            Cell::new(OwnedVerdict {
                id: u64::MAX,
                words: [0; 2],
                len: 0,
                secret: false,
            })
        }; RECENT]
    };
}

/// The memo's keys are addresses and ids: mixing them is hashing enough.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

/// Span records redacted in this batch, by the address of the original:
/// a span shared by many events is copied once.
pub(crate) type SpanCache = HashMap<usize, Arc<SpanRecord>>;

impl Redactor {
    /// Whether a field of this name is hidden.
    pub(crate) fn is_secret(&self, name: &str) -> bool {
        let mut buf = [0u8; 128];
        let mut n = 0;
        let mut long = Vec::new();
        for b in name.bytes() {
            if matches!(b, b'-' | b'_' | b'.') {
                continue;
            }
            let b = b.to_ascii_lowercase();
            if n < buf.len() {
                buf[n] = b;
            } else {
                if long.is_empty() {
                    long.extend_from_slice(&buf);
                }
                long.push(b);
            }
            n += 1;
        }
        let key: &[u8] = if long.is_empty() { &buf[..n] } else { &long };
        key.windows(2).enumerate().any(|(i, pair)| {
            let bit = bigram(pair[0], pair[1]);
            self.starts[bit / 64] & (1 << (bit % 64)) != 0
                && self.patterns.iter().any(|p| key[i..].starts_with(p))
        })
    }

    /// [`is_secret`](Self::is_secret) for a name that is not static,
    /// remembered per thread for short names.
    fn is_secret_key(&self, name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.len() > OWNED_NAME {
            return self.is_secret(name);
        }
        let mut padded = [0u8; OWNED_NAME];
        padded[..bytes.len()].copy_from_slice(bytes);
        let word = |i: usize| u64::from_le_bytes(padded[i..i + 8].try_into().unwrap_or([0; 8]));
        let words = [word(0), word(8)];
        let h = (words[0] ^ (bytes.len() as u64).rotate_left(56))
            .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
            .rotate_left(26)
            ^ words[1];
        let h = h.wrapping_mul(0x9e_37_79_b9_7f_4a_7c_15);
        // Two ways per set: names that share a set do not evict each other.
        let set = (h >> 59) as usize * 2;
        let len = bytes.len() as u8;
        let matches = |v: &OwnedVerdict| v.id == self.id && v.len == len && v.words == words;
        if let Some(secret) = OWNED_NAMES.with(|m| {
            let (first, second) = (m[set].get(), m[set + 1].get());
            if matches(&first) {
                Some(first.secret)
            } else if matches(&second) {
                Some(second.secret)
            } else {
                None
            }
        }) {
            return secret;
        }
        let secret = self.is_secret(name);
        let entry = OwnedVerdict {
            id: self.id,
            words,
            len,
            secret,
        };
        OWNED_NAMES.with(|m| {
            m[set + 1].set(m[set].get());
            m[set].set(entry);
        });
        secret
    }

    /// Redacts a whole batch before it goes to the sinks.
    pub(crate) fn redact_batch(&self, batch: &mut [Event]) {
        let mut spans = SpanCache::new();
        for event in batch {
            self.redact(event, &mut spans);
        }
    }

    fn redact(&self, event: &mut Event, spans: &mut SpanCache) {
        match event.site.call_site() {
            // No name of the call site is secret: only values are looked at.
            Some(site) if !self.call_site_has_secret(site) => {
                for (_, v) in &mut event.fields {
                    self.redact_value(v);
                }
            }
            _ => self.redact_fields(&mut event.fields),
        }
        self.redact_added(&mut event.extra);
        if event.spans.iter().any(|span| self.span_needs(span)) {
            // Copies the chain (references only), then each span to redact
            // once per batch.
            for span in event.spans.make_mut() {
                if !self.span_needs(span) {
                    continue;
                }
                let key = Arc::as_ptr(span) as usize;
                let redacted = spans.entry(key).or_insert_with(|| {
                    let mut copy = SpanRecord::clone(span);
                    copy.fields_changed();
                    self.redact_fields(&mut copy.fields);
                    Arc::new(copy)
                });
                *span = redacted.clone();
            }
        }
        if self.values
            && let Some(message) = &mut event.message
            && let Some(hidden) = self.redact_text(message.as_str())
        {
            *message = hidden.into();
        }
    }

    /// Whether any field the call site names is secret, remembered per
    /// thread by the metadata's address: one look-up per event, not one
    /// per field.
    fn call_site_has_secret(&self, site: &'static tracing::Metadata<'static>) -> bool {
        let addr = site as *const tracing::Metadata<'static> as usize;
        let slot = ((addr >> 4) ^ (addr >> 12)) % RECENT;
        let known = CALL_SITES.with(|c| c[slot].get());
        if known.0 == addr && known.1 == self.id {
            return known.2;
        }
        let verdict = site
            .fields()
            .iter()
            .any(|f| self.is_secret_name(&Cow::Borrowed(f.name())));
        CALL_SITES.with(|c| c[slot].set((addr, self.id, verdict)));
        verdict
    }

    /// [`is_secret`](Self::is_secret), remembered for names that live as
    /// long as the program.
    fn is_secret_name(&self, name: &FieldName) -> bool {
        match name {
            Cow::Borrowed(s) => {
                let (addr, len) = (s.as_ptr() as usize, s.len());
                let slot = ((addr >> 3) ^ (addr >> 11) ^ len) % RECENT;
                let recent = RECENT_NAMES.with(|r| r[slot].get());
                if (recent.0, recent.1, recent.2) == (addr, len, self.id) {
                    return recent.3;
                }
                let key = (self.id, addr, len);
                let verdict = STATIC_NAMES.with(|memo| {
                    if let Some(known) = memo.borrow().get(&key) {
                        return *known;
                    }
                    let verdict = self.is_secret(s);
                    memo.borrow_mut().insert(key, verdict);
                    verdict
                });
                RECENT_NAMES.with(|r| r[slot].set((addr, len, self.id, verdict)));
                verdict
            }
            Cow::Owned(s) => self.is_secret_key(s),
        }
    }

    fn redact_fields(&self, fields: &mut [(FieldName, Value)]) {
        for (k, v) in fields {
            if self.is_secret_name(k) {
                *v = self.replacement.clone();
            } else {
                self.redact_value(v);
            }
        }
    }

    /// [`redact_fields`](Self::redact_fields) for enrichers' fields: a
    /// shared value is looked at once for all the events that hold it, and
    /// replaced by a redacted copy only if redaction changes it (the
    /// cache's original is never touched).
    fn redact_added(&self, fields: &mut [(FieldName, FieldValue)]) {
        for (k, v) in fields {
            if self.is_secret_name(k) {
                *v = FieldValue::Own(self.replacement.clone());
                continue;
            }
            match v {
                FieldValue::Own(v) => self.redact_value(v),
                FieldValue::Shared(shared) => {
                    let verdict = shared.redacted_by(self.id, |value| {
                        self.value_needs(value).then(|| {
                            let mut copy = value.clone();
                            self.redact_value(&mut copy);
                            SharedValue::new(copy)
                        })
                    });
                    if let Some(redacted) = verdict {
                        *shared = redacted;
                    }
                }
            }
        }
    }

    /// Redacts inside a value: secret keys of nested objects, and (with
    /// value scanning) secrets inside strings.
    fn redact_value(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, inner) in map.iter_mut() {
                    if self.is_secret_key(k) {
                        *inner = self.replacement.clone();
                    } else {
                        self.redact_value(inner);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_value(i)),
            Value::String(s) if self.values => {
                if let Some(hidden) = self.redact_text(s) {
                    *s = hidden;
                }
            }
            _ => {}
        }
    }

    /// Whether redaction would change a field of `span`: judged once per
    /// span (by the first redactor to ask), not once per event in it.
    fn span_needs(&self, span: &SpanRecord) -> bool {
        match span.redaction.get() {
            Some((by, verdict)) if *by == self.id => *verdict,
            known => {
                let verdict = span.fields.iter().any(|(k, v)| self.needs(k, v));
                if known.is_none() {
                    let _ = span.redaction.set((self.id, verdict));
                }
                verdict
            }
        }
    }

    /// Whether a field would change (without changing it).
    fn needs(&self, k: &FieldName, v: &Value) -> bool {
        self.is_secret_name(k) || self.value_needs(v)
    }

    fn value_needs(&self, v: &Value) -> bool {
        match v {
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.is_secret_key(k) || self.value_needs(v)),
            Value::Array(items) => items.iter().any(|i| self.value_needs(i)),
            Value::String(s) if self.values => self.redact_text(s).is_some(),
            _ => false,
        }
    }

    /// `text` with credentials hidden, or `None` when it has none.
    fn redact_text(&self, text: &str) -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let has_scheme = ["bearer", "basic"].iter().any(|s| lower.contains(s));
        if !has_scheme && !text.contains("://") {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        // Whitespace-separated words keep their separators.
        let mut rest = text;
        let mut hide_next = false;
        while !rest.is_empty() {
            let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (word, after) = rest.split_at(word_end);
            let space_end = after
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(after.len());
            let (space, next) = after.split_at(space_end);
            if hide_next && !word.is_empty() {
                out.push_str(self.replacement.as_str().unwrap_or(REDACTED));
                changed = true;
                hide_next = false;
            } else if word.contains("://") {
                let start = word.find(|c: char| c.is_ascii_alphanumeric()).unwrap_or(0);
                let hidden = url(&word[start..], Query::HidePasswords);
                changed |= hidden != word[start..];
                out.push_str(&word[..start]);
                out.push_str(&hidden);
            } else {
                out.push_str(word);
                // `"Bearer`, `(Basic`: the scheme may be quoted or bracketed.
                let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                hide_next =
                    bare.eq_ignore_ascii_case("bearer") || bare.eq_ignore_ascii_case("basic");
            }
            out.push_str(space);
            rest = next;
        }
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redaction::default().compile().unwrap().unwrap()
    }

    #[test]
    fn a_shared_value_is_redacted_in_a_copy_and_the_original_is_left_alone() {
        let r = redactor();
        let secret = SharedValue::new(json!({"name": "ada", "api_token": "t0k3n"}));
        let clean = SharedValue::new(json!({"name": "bob"}));
        // Twice: the second batch takes the verdict the first one left.
        for _ in 0..2 {
            let mut batch: Vec<Event> = (0..3)
                .map(|_| {
                    let mut e = Event::new(tracing::Level::INFO, "t", "m");
                    e.insert_shared("user", secret.clone());
                    e.insert_shared("other", clean.clone());
                    e
                })
                .collect();
            r.redact_batch(&mut batch);
            for e in &batch {
                assert_eq!(
                    e.field("user"),
                    Some(&json!({"name": "ada", "api_token": REDACTED}))
                );
                assert_eq!(e.field("other"), Some(&json!({"name": "bob"})));
            }
        }
        assert_eq!(secret["api_token"], "t0k3n", "the cache's value changed");
        // Another redactor (another pipeline) judges for itself.
        let keep_all = Redaction::default()
            .keys(Vec::<String>::new())
            .compile()
            .unwrap();
        if let Some(other) = keep_all {
            let mut e = Event::new(tracing::Level::INFO, "t", "m");
            e.insert_shared("user", secret.clone());
            other.redact_batch(std::slice::from_mut(&mut e));
            assert_eq!(e.field("user"), Some(secret.value()));
        }
    }

    #[test]
    fn secret_names_match_whatever_their_case_and_separators() {
        let r = redactor();
        for name in [
            "password",
            "PASSWORD",
            "db_password",
            "Passwd",
            "api_key",
            "X-Api-Key",
            "apiKey",
            "authorization",
            "Authorization",
            "cookie",
            "Set-Cookie",
            "private_key",
            "aws.access_key.id",
            "client_secret",
            "refreshToken",
            "access_token",
            "user.pwd",
        ] {
            assert!(r.is_secret(name), "{name} should be hidden");
        }
        for name in [
            "user_id", "order_id", "message", "amount", "path", "author", "pass",
        ] {
            assert!(!r.is_secret(name), "{name} should be kept");
        }
        let long = format!("{}_password", "x".repeat(300));
        assert!(r.is_secret(&long), "names longer than the stack buffer");
    }

    #[test]
    fn fields_spans_and_nested_enriched_values_are_hidden() {
        let r = redactor();
        let mut e = Event::new(tracing::Level::INFO, "app", "login")
            .with_field("user", "ada")
            .with_field("password", "hunter2")
            .with_span("request", [("authorization", "Bearer xyz"), ("path", "/x")]);
        e.insert(
            "account",
            json!({"id": 1, "api_key": "abc", "nested": [{"client_secret": "s"}]}),
        );
        let mut batch = vec![e.clone(), e];
        r.redact_batch(&mut batch);
        for e in &batch {
            assert_eq!(e.field("user"), Some(&json!("ada")));
            assert_eq!(e.field("password"), Some(&json!(REDACTED)));
            let span = e.spans().next().unwrap();
            assert_eq!(span.field("authorization"), Some(&json!(REDACTED)));
            assert_eq!(span.field("path"), Some(&json!("/x")));
            assert_eq!(
                e.field("account"),
                Some(
                    &json!({"id": 1, "api_key": REDACTED, "nested": [{"client_secret": REDACTED}]})
                )
            );
        }
        // The span was copied once for the batch, not once per event.
        assert!(Arc::ptr_eq(&batch[0].spans[0], &batch[1].spans[0]));
    }

    #[test]
    fn values_are_scanned_only_when_asked() {
        let quoted = "{\"authorization\": \"Bearer abc\", \"x\": \"Basic\tdef==\"}";
        let r = Redaction::default()
            .values(true)
            .compile()
            .unwrap()
            .unwrap();
        let hidden = r.redact_text(quoted).expect("has credentials");
        assert!(
            !hidden.contains("abc") && !hidden.contains("def=="),
            "{hidden}"
        );
        let text = "call with Bearer abc.def to postgres://app:pw@db/x done";
        let mut e = Event::new(tracing::Level::INFO, "app", text).with_field("note", text);
        redactor().redact_batch(std::slice::from_mut(&mut e));
        assert_eq!(e.message(), Some(text), "off by default");

        let r = Redaction::default()
            .values(true)
            .compile()
            .unwrap()
            .unwrap();
        r.redact_batch(std::slice::from_mut(&mut e));
        let want = "call with Bearer [REDACTED] to postgres://app:***@db/x done";
        assert_eq!(e.message(), Some(want));
        assert_eq!(e.field("note"), Some(&json!(want)));
    }

    #[test]
    fn settings_are_checked() {
        assert!(Redaction::none().compile().unwrap().is_none());
        assert!(Redaction::default().key("x").compile().is_err());
        let r = Redaction::default()
            .keys(["ssn"])
            .compile()
            .unwrap()
            .unwrap();
        assert!(r.is_secret("customer_ssn"));
        assert!(!r.is_secret("password"), "the list was replaced");
    }

    #[test]
    fn remembered_verdicts_on_owned_names_are_each_redactors_own() {
        let default = redactor();
        let ssn_only = Redaction::default()
            .keys(["ssn"])
            .compile()
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            assert!(default.is_secret_key("password"));
            assert!(!ssn_only.is_secret_key("password"));
            assert!(ssn_only.is_secret_key("customer_ssn"));
            assert!(!default.is_secret_key("customer_ssn"));
        }
        let long = format!("{}_token", "x".repeat(OWNED_NAME));
        assert!(default.is_secret_key(&long) && default.is_secret_key(&long));
    }

    proptest! {
        #[test]
        fn a_remembered_verdict_is_the_verdict(
            names in proptest::collection::vec("[a-zA-Z_]{0,8}(token|name|key|id|pass)?[a-z]{0,3}", 1..200),
        ) {
            // Many names through the same 64 slots: collisions must give
            // each name its own verdict.
            let r = redactor();
            for name in names.iter().chain(names.iter()) {
                prop_assert_eq!(r.is_secret_key(name), r.is_secret(name), "{}", name);
            }
        }

        #[test]
        fn a_secret_word_anywhere_in_a_name_is_found(
            before in "[a-zA-Z0-9]{0,10}",
            after in "[a-zA-Z0-9]{0,10}",
            word in proptest::sample::select(DEFAULT_SECRET_KEYS),
            sep in "[-_.]?",
            upper in any::<bool>(),
        ) {
            let word = if upper { word.to_uppercase() } else { word.to_owned() };
            let name = format!("{before}{sep}{word}{sep}{after}");
            prop_assert!(redactor().is_secret(&name), "{name}");
        }
    }
}
