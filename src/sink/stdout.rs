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
///
/// Lines are formatted on the pipeline's worker; the write to stdout (which
/// blocks when a terminal or a pipe is slow) runs on tokio's blocking pool,
/// one at a time, so it never holds up the runtime that drives enrichment.
#[derive(Debug)]
pub struct StdoutSink {
    format: StdoutFormat,
    color: bool,
    buf: Vec<u8>,
    /// A write still on the blocking pool (cut off by the sink timeout):
    /// the next one waits for it, so batches stay in order.
    in_flight: Option<tokio::task::JoinHandle<(Vec<u8>, std::io::Result<()>)>>,
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
            in_flight: None,
        }
    }
}

impl StdoutSink {
    /// Waits for a write still on the blocking pool and takes its buffer
    /// back.
    async fn settle(&mut self) {
        if let Some(write) = self.in_flight.as_mut() {
            // Its outcome was accounted when it was cut off.
            if let Ok((buf, _)) = write.await {
                self.buf = buf;
            }
            self.in_flight = None;
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
        self.settle().await;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for e in events {
            match self.format {
                StdoutFormat::Json => json::write_event(&mut buf, e),
                StdoutFormat::Pretty => pretty::write_event(&mut buf, e, self.color),
            }
        }
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let result = std::io::stdout().lock().write_all(&buf);
            (buf, result)
        }));
        let write = self.in_flight.as_mut().expect("just set");
        let joined = write.await;
        self.in_flight = None;
        let (buf, result) = joined.map_err(|e| SinkError::new("the stdout writer failed", e))?;
        self.buf = buf;
        result?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.settle().await;
        tokio::task::spawn_blocking(|| std::io::stdout().lock().flush())
            .await
            .map_err(|e| SinkError::new("the stdout writer failed", e))??;
        Ok(())
    }
}
