//! Standard output.

use std::io::{IsTerminal, Write};

use super::format::{json, pretty};
use super::{Sink, SinkError};
use crate::event::Event;

/// How [`StdoutSink`] renders events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StdoutFormat {
    /// One JSON object per line (see the crate docs for the field names).
    #[default]
    Json,
    /// One line per event for humans; coloured only when stdout is a
    /// terminal.
    Pretty,
}

/// Writes events to standard output, one batch per `write` call.
#[derive(Debug)]
pub struct StdoutSink {
    format: StdoutFormat,
    color: bool,
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A sink writing JSON lines.
    pub fn json() -> Self {
        Self::new(StdoutFormat::Json)
    }

    /// A sink writing the human format.
    pub fn pretty() -> Self {
        Self::new(StdoutFormat::Pretty)
    }

    /// A sink writing `format`.
    pub fn new(format: StdoutFormat) -> Self {
        StdoutSink {
            format,
            color: std::io::stdout().is_terminal(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        match self.format {
            StdoutFormat::Json => "stdout_json",
            StdoutFormat::Pretty => "stdout_pretty",
        }
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.buf.clear();
        for e in events {
            match self.format {
                StdoutFormat::Json => json::write_event(&mut self.buf, e),
                StdoutFormat::Pretty => pretty::write_event(&mut self.buf, e, self.color),
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        std::io::stdout().lock().flush()?;
        Ok(())
    }
}
