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
    in_flight: Option<tokio::task::JoinHandle<Written>>,
    /// The rest of a line a failed write left half out: written first next
    /// time, so no line is broken or written twice.
    tail: Vec<u8>,
    line_ends: Vec<usize>,
}

/// What a write on the blocking pool gives back: the buffer, how much of
/// it went out, and how it ended.
type Written = (Vec<u8>, usize, std::io::Result<()>);

/// After a write that got `done` bytes out of a buffer whose lines (from
/// `start`) end at `line_ends`: how many lines count as written, and the
/// part of the buffer still owed. A line half out counts as written; its
/// end is owed, to be written first next time.
fn after_failure(
    line_ends: &[usize],
    start: usize,
    done: usize,
) -> (usize, std::ops::Range<usize>) {
    let lines = line_ends.iter().take_while(|end| **end <= done).count();
    let line_start = if lines == 0 {
        start
    } else {
        line_ends[lines - 1]
    };
    match line_ends.get(lines) {
        Some(&end) if done > line_start => (lines + 1, done..end),
        _ => (lines, done..done),
    }
}

/// Writes `buf` to stdout, counting what went out.
fn write_out(buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut out = std::io::stdout().lock();
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
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
            tail: Vec::new(),
            line_ends: Vec::new(),
        }
    }
}

impl StdoutSink {
    /// Waits for a write still on the blocking pool and takes its buffer
    /// back.
    async fn settle(&mut self) {
        if let Some(write) = self.in_flight.as_mut() {
            // Its outcome was accounted when it was cut off.
            if let Ok((buf, _, _)) = write.await {
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
        // The end of a line a failed write cut short comes first.
        let tail = std::mem::take(&mut self.tail);
        buf.extend_from_slice(&tail);
        let start = buf.len();
        self.line_ends.clear();
        for e in events {
            match self.format {
                StdoutFormat::Json => json::write_event(&mut buf, e),
                StdoutFormat::Pretty => pretty::write_event(&mut buf, e, self.color),
            }
            self.line_ends.push(buf.len());
        }
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let (done, result) = write_out(&buf);
            (buf, done, result)
        }));
        let write = self.in_flight.as_mut().expect("just set");
        let joined = write.await;
        self.in_flight = None;
        let (buf, done, result) =
            joined.map_err(|e| SinkError::new("the stdout writer failed", e))?;
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(e) if done < start => {
                // Not even the old tail went out: it is still owed.
                self.tail = buf[done..start].to_vec();
                Err(SinkError::new("could not write to stdout", e))
            }
            Err(e) => {
                let (written, owed) = after_failure(&self.line_ends, start, done);
                self.tail = buf[owed].to_vec();
                Err(SinkError::new("could not write to stdout", e).after_writing(written))
            }
        };
        self.buf = buf;
        outcome
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.settle().await;
        tokio::task::spawn_blocking(|| std::io::stdout().lock().flush())
            .await
            .map_err(|e| SinkError::new("the stdout writer failed", e))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::after_failure;

    #[test]
    fn a_half_written_line_is_finished_not_repeated() {
        // Three lines of 10 bytes after a 4-byte tail.
        let ends = [14, 24, 34];
        assert_eq!(
            after_failure(&ends, 4, 4),
            (0, 4..4),
            "nothing of the lines out"
        );
        assert_eq!(after_failure(&ends, 4, 9), (1, 9..14), "half of the first");
        assert_eq!(
            after_failure(&ends, 4, 14),
            (1, 14..14),
            "exactly the first"
        );
        assert_eq!(after_failure(&ends, 4, 30), (3, 30..34), "half of the last");
    }
}
