//! The owned record of one log call.
//!
//! An [`Event`] is built on the caller's thread by the layer and then owned by
//! the pipeline: everything an enricher or a sink may need later (span fields,
//! thread, location) is captured at log time, because by the time the worker
//! sees the event the caller's spans may be gone.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::Level;

/// A field value. Captured values keep their type: integers stay integers,
/// floats stay floats, booleans stay booleans; `?debug` and `%display` values
/// and strings become JSON strings. Enrichers may add any JSON value.
pub type Value = serde_json::Value;

/// The name of a field: static for fields captured from `tracing`, owned for
/// fields added at run time.
pub type FieldName = Cow<'static, str>;

/// `name` as a `&'static str` kept for the life of the process, the same
/// one for equal names: for names that recur in every event (threads',
/// enrichers' fields), so that events borrow them instead of each holding
/// a copy. At most 4096 names of at most 256 bytes; `None` beyond.
pub(crate) fn intern(name: &str) -> Option<&'static str> {
    const MAX_NAMES: usize = 4096;
    const MAX_LEN: usize = 256;
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if name.len() > MAX_LEN {
        return None;
    }
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return Some(n);
    }
    if names.len() >= MAX_NAMES {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    Some(leaked)
}

/// A value shared by many events, as a lookup cache shares what it holds:
/// cloning it, or adding it to an event with
/// [`Patch::insert_shared`](crate::enrich::Patch::insert_shared), costs a
/// reference count, not a copy of the tree. It is immutable; redaction
/// looks at it once (not once per event) and, if it would change it,
/// writes a redacted copy instead.
#[derive(Clone)]
pub struct SharedValue(Arc<SharedInner>);

struct SharedInner {
    value: Value,
    /// The first redactor's verdict: its id, and the redacted copy, or
    /// `None` when it changes nothing.
    redacted: std::sync::OnceLock<(u64, Option<SharedValue>)>,
}

impl SharedValue {
    /// Shares `value`.
    pub fn new(value: Value) -> Self {
        SharedValue(Arc::new(SharedInner {
            value,
            redacted: std::sync::OnceLock::new(),
        }))
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.0.value
    }

    /// What redactor `id` makes of this value, computed by `redact` the
    /// first time only (for the first redactor that asks).
    pub(crate) fn redacted_by(
        &self,
        id: u64,
        redact: impl FnOnce(&Value) -> Option<SharedValue>,
    ) -> Option<SharedValue> {
        match self.0.redacted.get() {
            Some((by, verdict)) if *by == id => verdict.clone(),
            Some(_) => redact(&self.0.value),
            None => {
                let verdict = redact(&self.0.value);
                let _ = self.0.redacted.set((id, verdict.clone()));
                verdict
            }
        }
    }
}

impl std::ops::Deref for SharedValue {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.value
    }
}

impl From<Value> for SharedValue {
    fn from(value: Value) -> Self {
        SharedValue::new(value)
    }
}

impl PartialEq for SharedValue {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.value == other.0.value
    }
}

impl std::fmt::Debug for SharedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.value.fmt(f)
    }
}

/// Where an event was logged: a `tracing` call site's metadata (one
/// pointer: an event is moved through the queue and into a batch, so its
/// size is paid on every move), or a location given by value (records
/// bridged from `log`, events the application builds). `Static` also
/// promises that every field of the event is one the metadata names, so
/// what is true of the call site's names (none is secret) is true of the
/// event's.
#[derive(Debug, Clone)]
pub(crate) enum Site {
    Static(&'static tracing::Metadata<'static>),
    Given(Box<GivenSite>),
}

/// A location given by value.
#[derive(Debug, Clone)]
pub(crate) struct GivenSite {
    pub(crate) target: Cow<'static, str>,
    pub(crate) module_path: Option<Cow<'static, str>>,
    pub(crate) file: Option<Cow<'static, str>>,
    pub(crate) line: Option<u32>,
}

impl Site {
    /// The location of a call site, given by value.
    fn given(meta: &'static tracing::Metadata<'static>) -> Site {
        Site::Given(Box::new(GivenSite {
            target: Cow::Borrowed(meta.target()),
            module_path: meta.module_path().map(Cow::Borrowed),
            file: meta.file().map(Cow::Borrowed),
            line: meta.line(),
        }))
    }

    /// The call site whose metadata names every field of the event (an
    /// event's fields are its call site's, or some of them), if any.
    pub(crate) fn call_site(&self) -> Option<&'static tracing::Metadata<'static>> {
        match self {
            Site::Static(m) => Some(m),
            Site::Given(_) => None,
        }
    }

    pub(crate) fn target(&self) -> &str {
        match self {
            Site::Static(m) => m.target(),
            Site::Given(g) => &g.target,
        }
    }

    /// The target, without a copy when it is static.
    #[cfg(feature = "otlp")]
    pub(crate) fn target_cow(&self) -> Cow<'static, str> {
        match self {
            Site::Static(m) => Cow::Borrowed(m.target()),
            Site::Given(g) => g.target.clone(),
        }
    }

    pub(crate) fn module_path(&self) -> Option<&str> {
        match self {
            Site::Static(m) => m.module_path(),
            Site::Given(g) => g.module_path.as_deref(),
        }
    }

    pub(crate) fn file(&self) -> Option<&str> {
        match self {
            Site::Static(m) => m.file(),
            Site::Given(g) => g.file.as_deref(),
        }
    }

    pub(crate) fn line(&self) -> Option<u32> {
        match self {
            Site::Static(m) => m.line(),
            Site::Given(g) => g.line,
        }
    }
}

/// Bytes of a message held inline.
const MESSAGE_INLINE: usize = 22;

/// An event's message. One that fits in 22 bytes (a short literal phrase,
/// as many are) is held inline: no allocation on the caller's thread and
/// no free on the worker's.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Inline(u8, [u8; MESSAGE_INLINE]),
    Heap(String),
}

impl Message {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Only whole `str`s are copied in (see `MessageWriter`), so the
            // bytes are UTF-8 and this never falls back.
            Message::Inline(n, bytes) => std::str::from_utf8(&bytes[..*n as usize]).unwrap_or(""),
            Message::Heap(s) => s,
        }
    }

    /// The message's bytes, UTF-8 (without checking them again).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Inline(n, bytes) => &bytes[..*n as usize],
            Message::Heap(s) => s.as_bytes(),
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Heap(s)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Formats a message inline while it fits, else into a `String`.
pub(crate) struct MessageWriter {
    len: usize,
    inline: [u8; MESSAGE_INLINE],
    heap: Option<String>,
}

impl MessageWriter {
    pub(crate) fn new() -> Self {
        MessageWriter {
            len: 0,
            inline: [0; MESSAGE_INLINE],
            heap: None,
        }
    }

    pub(crate) fn finish(self) -> Message {
        match self.heap {
            Some(s) => Message::Heap(s),
            None => Message::Inline(self.len as u8, self.inline),
        }
    }
}

impl fmt::Write for MessageWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(heap) = &mut self.heap {
            heap.push_str(s);
        } else if self.len + s.len() <= MESSAGE_INLINE {
            self.inline[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            // Sized up front: growing from the inline part costs several
            // reallocations on the caller's thread.
            let mut heap = String::with_capacity((self.len + s.len()).max(64));
            heap.push_str(std::str::from_utf8(&self.inline[..self.len]).unwrap_or(""));
            heap.push_str(s);
            self.heap = Some(heap);
        }
        Ok(())
    }
}

/// The fields enrichers added to an event (and what one enricher adds to
/// one event): the first is held inline, since most events get one (a
/// lookup's value under one key), which saves an allocation on the worker
/// and a free per event.
pub(crate) type Added = smallvec::SmallVec<[(FieldName, FieldValue); 1]>;

/// A value an enricher added: the event's own, or one it shares with a
/// cache (a lookup's hit costs a reference count, not a copy of the tree).
/// Redaction copies a shared value only when it would change it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    Own(Value),
    Shared(SharedValue),
}

impl std::ops::Deref for FieldValue {
    type Target = Value;
    fn deref(&self) -> &Value {
        match self {
            FieldValue::Own(v) => v,
            FieldValue::Shared(v) => v,
        }
    }
}

/// The keys that fapilog itself writes at the top level of a JSON line.
/// Fields added with [`Event::insert`] under one of these names are written
/// with a leading underscore instead, so they cannot shadow the record.
pub const RESERVED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "message",
    "target",
    "fields",
    "spans",
    "module",
    "file",
    "line",
    "thread_name",
    "thread_id",
    "enrichment_errors",
    "trace_id",
    "span_id",
];

/// The W3C trace context an event belongs to: the trace, the span within
/// it, and the trace flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// A context from its parts; `None` when the trace or span id is all
    /// zeros (invalid in W3C Trace Context).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Parses a `traceparent` header value:
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. Lower-case
    /// hex only, as the standard says; a later version's extra fields are
    /// ignored. `None` when it is malformed.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; later ones may add more.
        if version == "00" && rest.is_some() {
            return None;
        }
        let trace_id = hex_array::<16>(trace)?;
        let span_id = hex_array::<8>(span)?;
        let [flags] = hex_array::<1>(flags)?;
        Self::new(trace_id, span_id, flags)
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id's bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The context as a `traceparent` value (version 00).
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `bytes` as lower-case hex.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// The fields recorded on one span, in the order they were recorded.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub(crate) name: &'static str,
    pub(crate) fields: Vec<(FieldName, Value)>,
    /// From a `traceparent` field of the span, when it has a valid one.
    pub(crate) trace: Option<TraceContext>,
    /// Whether the first redactor to look (its id) would change a field:
    /// a span is judged once, not once for every event logged in it.
    /// Reset whenever its fields change.
    pub(crate) redaction: std::sync::OnceLock<(u64, bool)>,
    /// The span as the JSON formatter writes it, rendered once for all
    /// the events logged in it. Reset whenever its fields change.
    pub(crate) json: std::sync::OnceLock<Box<[u8]>>,
}

impl SpanRecord {
    /// A record of a span's fields, judged and rendered when first needed.
    pub(crate) fn new(
        name: &'static str,
        fields: Vec<(FieldName, Value)>,
        trace: Option<TraceContext>,
    ) -> Self {
        SpanRecord {
            name,
            fields,
            trace,
            redaction: Default::default(),
            json: Default::default(),
        }
    }

    /// Forgets what was judged or rendered of the fields: they are about to
    /// change.
    pub(crate) fn fields_changed(&mut self) {
        self.redaction = Default::default();
        self.json = Default::default();
    }

    /// The span's name, as given to the `span!` macro.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The span's fields in recording order (a later `record` of a field
    /// replaces its value in place).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The trace context of the span's `traceparent` field, if valid.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The value of one field of this span.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// One log record, owned by the pipeline.
///
/// The spans an event was logged in, root first: shared, since every
/// event of a span has the same ones. No spans is no allocation and no
/// reference count.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanChain(Option<Arc<[Arc<SpanRecord>]>>);

impl SpanChain {
    /// The spans, for changing some (copied first if shared).
    pub(crate) fn make_mut(&mut self) -> &mut [Arc<SpanRecord>] {
        match &mut self.0 {
            Some(chain) => Arc::make_mut(chain),
            None => &mut [],
        }
    }
}

impl std::ops::Deref for SpanChain {
    type Target = [Arc<SpanRecord>];
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl From<Vec<Arc<SpanRecord>>> for SpanChain {
    fn from(spans: Vec<Arc<SpanRecord>>) -> Self {
        SpanChain((!spans.is_empty()).then(|| spans.into()))
    }
}

impl FromIterator<Arc<SpanRecord>> for SpanChain {
    fn from_iter<I: IntoIterator<Item = Arc<SpanRecord>>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

/// Built by the layer on the caller's thread; enriched and written on the
/// pipeline's worker. Enrichers read it with [`Event::field`] (event fields
/// first, then span fields from the innermost span outwards) and add to it
/// with [`Event::insert`].
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) timestamp: SystemTime,
    pub(crate) level: Level,
    pub(crate) site: Site,
    pub(crate) message: Option<Message>,
    pub(crate) fields: Vec<(FieldName, Value)>,
    /// Root first, leaf last. Shared by every event logged in the same
    /// span (see `capture`), so an event costs one reference count here.
    pub(crate) spans: SpanChain,
    pub(crate) thread_name: Option<&'static str>,
    pub(crate) thread_id: u64,
    pub(crate) extra: Added,
    pub(crate) errors: Vec<(FieldName, Cow<'static, str>)>,
    pub(crate) trace: Option<TraceContext>,
}

impl Event {
    /// A new event with the current time and no fields, for sinks' and
    /// enrichers' tests and for records the application builds itself.
    pub fn new(
        level: Level,
        target: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Event {
            timestamp: SystemTime::now(),
            level,
            site: Site::Given(Box::new(GivenSite {
                target: target.into(),
                module_path: None,
                file: None,
                line: None,
            })),
            message: Some(Message::Heap(message.into())),
            fields: Vec::new(),
            spans: SpanChain::default(),
            thread_name: None,
            thread_id: 0,
            extra: Added::new(),
            errors: Vec::new(),
            trace: None,
        }
    }

    /// Sets the trace context the event belongs to.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The trace context the event belongs to: from a valid `traceparent`
    /// field of the event, else of the innermost span that has one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// Adds an event field, as if it had been given to the log macro.
    #[must_use]
    pub fn with_field(mut self, name: impl Into<FieldName>, value: impl Into<Value>) -> Self {
        // A call site's metadata stands for the names of its fields (see
        // `Site`): a field it does not name makes the location a given one.
        if let Site::Static(meta) = self.site {
            self.site = Site::given(meta);
        }
        self.fields.push((name.into(), value.into()));
        if let Some(t) = trace_of(&self.fields[self.fields.len() - 1..]) {
            self.trace = Some(t);
        }
        self
    }

    /// Adds a span (outermost first) with its fields.
    pub fn with_span<I, K, V>(mut self, name: &'static str, fields: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<FieldName>,
        V: Into<Value>,
    {
        let fields: Vec<(FieldName, Value)> = fields
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let trace = trace_of(&fields);
        let mut spans = self.spans.to_vec();
        spans.push(Arc::new(SpanRecord::new(name, fields, trace)));
        self.spans = spans.into();
        if self.trace.is_none() {
            self.trace = self.spans.iter().rev().find_map(|s| s.trace);
        }
        self
    }

    /// When the log call was made.
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// The event's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The event's target (by default the module path of the log call).
    pub fn target(&self) -> &str {
        self.site.target()
    }

    /// The module path of the log call, when known.
    pub fn module_path(&self) -> Option<&str> {
        self.site.module_path()
    }

    /// The source file of the log call, when known.
    pub fn file(&self) -> Option<&str> {
        self.site.file()
    }

    /// The source line of the log call, when known.
    pub fn line(&self) -> Option<u32> {
        self.site.line()
    }

    /// The formatted message, if the event had one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_ref().map(Message::as_str)
    }

    /// The event's own fields (not span fields), in the order given.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The spans in scope at the log call, outermost first.
    pub fn spans(&self) -> impl DoubleEndedIterator<Item = &SpanRecord> {
        self.spans.iter().map(|s| s.as_ref())
    }

    /// Looks a field up by name: the event's own fields first, then the
    /// fields of the spans in scope from the innermost outwards, then the
    /// fields added by enrichers. This is how a lookup finds its key: a
    /// `user_id` recorded on a request span is found for every event logged
    /// inside that span.
    pub fn field(&self, name: &str) -> Option<&Value> {
        if let Some((_, v)) = self.fields.iter().find(|(k, _)| k.as_ref() == name) {
            return Some(v);
        }
        for span in self.spans.iter().rev() {
            if let Some(v) = span.field(name) {
                return Some(v);
            }
        }
        self.extra
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| &**v)
    }

    /// The name of the thread the log call was made on, if it had one.
    pub fn thread_name(&self) -> Option<&str> {
        self.thread_name
    }

    /// The id of the thread the log call was made on (the number in
    /// `std::thread::ThreadId`'s debug form).
    pub fn thread_id(&self) -> u64 {
        self.thread_id
    }

    /// Adds or replaces a top-level field of the written record. This is
    /// what enrichers call. A name that collides with one of
    /// [`RESERVED_KEYS`] is written with a leading underscore.
    pub fn insert(&mut self, name: impl Into<FieldName>, value: impl Into<Value>) {
        self.insert_field(name.into(), FieldValue::Own(value.into()));
    }

    /// [`insert`](Self::insert) of a value shared with others (a cache's):
    /// the event holds a reference, not a copy.
    pub fn insert_shared(&mut self, name: impl Into<FieldName>, value: SharedValue) {
        self.insert_field(name.into(), FieldValue::Shared(value));
    }

    /// An enricher's fields, as [`insert_field`](Self::insert_field) one
    /// by one; an event's first field takes the patch's storage as it is.
    pub(crate) fn insert_fields(&mut self, mut fields: Added) {
        if self.extra.is_empty() && fields.len() == 1 {
            let name = &mut fields[0].0;
            if RESERVED_KEYS.contains(&name.as_ref()) {
                *name = Cow::Owned(format!("_{name}"));
            }
            self.extra = fields;
            return;
        }
        for (k, v) in fields {
            self.insert_field(k, v);
        }
    }

    pub(crate) fn insert_field(&mut self, mut name: FieldName, value: FieldValue) {
        if RESERVED_KEYS.contains(&name.as_ref()) {
            name = Cow::Owned(format!("_{name}"));
        }
        if let Some(slot) = self.extra.iter_mut().find(|(k, _)| *k == name) {
            slot.1 = value;
        } else {
            self.extra.push((name, value));
        }
    }

    /// The top-level fields added by enrichers, in insertion order.
    pub fn inserted(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.extra.iter().map(|(k, v)| (k.as_ref(), &**v))
    }

    /// Records that an enricher could not add its fields to this event,
    /// and why (`"timeout"`, `"circuit_open"`, an error message). Written
    /// under `enrichment_errors`.
    pub fn add_enrichment_error(
        &mut self,
        enricher: impl Into<FieldName>,
        reason: impl Into<Cow<'static, str>>,
    ) {
        self.errors.push((enricher.into(), reason.into()));
    }

    /// The enrichment errors recorded on this event.
    pub fn enrichment_errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.errors.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

/// The trace context of a `traceparent` field among `fields`, if one is
/// valid.
pub(crate) fn trace_of(fields: &[(FieldName, Value)]) -> Option<TraceContext> {
    fields
        .iter()
        .find(|(k, _)| k.as_ref() == "traceparent")
        .and_then(|(_, v)| v.as_str())
        .and_then(TraceContext::from_traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn written(pieces: &[&str]) -> Message {
        let mut w = MessageWriter::new();
        for p in pieces {
            w.write_str(p).unwrap();
        }
        w.finish()
    }

    #[test]
    fn a_message_is_inline_up_to_its_limit_and_whole_past_it() {
        let fits = "x".repeat(MESSAGE_INLINE);
        let m = written(&[&fits[..5], &fits[5..]]);
        assert!(matches!(m, Message::Inline(..)));
        assert_eq!(m.as_str(), fits);
        let over = format!("{fits}é");
        let m = written(&[&fits, "é"]);
        assert!(matches!(m, Message::Heap(_)));
        assert_eq!(m.as_str(), over);
        assert_eq!(written(&[]).as_str(), "");
        let long = "ü".repeat(100);
        assert_eq!(written(&[&long[..20], &long[20..]]).as_str(), long);
    }

    proptest::proptest! {
        #[test]
        fn a_message_reads_back_as_written(pieces in proptest::collection::vec(".{0,12}", 0..6)) {
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let m = written(&refs);
            proptest::prop_assert_eq!(m.as_str(), pieces.concat());
        }
    }

    #[test]
    fn traceparent_is_parsed_strictly() {
        let t = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .expect("the standard's example");
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert!(t.is_sampled());
        assert_eq!(
            t.to_traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(
            TraceContext::from_traceparent(later).is_some(),
            "a later version's extra field"
        );
        for bad in [
            "",
            "00",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }
}
