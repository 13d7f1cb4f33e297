//! Copying a `tracing` event's or span's fields into owned values.

use std::borrow::Cow;
use std::fmt;

use tracing::field::{Field, Visit};

use crate::event::{FieldName, Message, MessageWriter, Value};

/// Copies field values, keeping their types.
pub(super) struct FieldVisitor {
    pub(super) message: Option<Message>,
    pub(super) fields: Vec<(FieldName, Value)>,
    skip_log_fields: bool,
}

impl FieldVisitor {
    pub(super) fn new(skip_log_fields: bool) -> Self {
        Self::with_capacity(skip_log_fields, 0)
    }

    pub(super) fn with_capacity(skip_log_fields: bool, fields: usize) -> Self {
        FieldVisitor {
            message: None,
            fields: Vec::with_capacity(fields),
            skip_log_fields,
        }
    }

    fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return;
        }
        self.fields.push((Cow::Borrowed(name), value));
    }
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number form.
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.push(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, Value::from(v)),
            Err(_) => self.push(field, Value::String(value.to_string())),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.push(field, Value::from(v)),
            Err(_) => self.push(field, Value::String(value.to_string())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let mut w = MessageWriter::new();
            let _ = fmt::Write::write_str(&mut w, value);
            self.message = Some(w.finish());
        } else {
            self.push(field, Value::String(value.to_owned()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let mut w = MessageWriter::new();
            let _ = fmt::Write::write_fmt(&mut w, format_args!("{value:?}"));
            self.message = Some(w.finish());
            return;
        }
        // Sized up front: growing a String from empty costs several
        // reallocations per value on the caller's thread.
        let mut text = String::with_capacity(64);
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{value:?}"));
        self.push(field, Value::String(text));
    }
}
