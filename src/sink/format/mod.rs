//! How events are rendered: JSON lines (the machine format, field names
//! documented in the crate docs) and the human "pretty" format.

pub(crate) mod json;
pub(crate) mod pretty;
mod time;

pub(crate) use time::{rfc3339, write_rfc3339};
