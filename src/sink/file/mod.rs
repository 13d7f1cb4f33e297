//! A JSON-lines file with rotation by size and by time, and retention.
//!
//! The active file keeps its configured name (`app.log`); a rotated file is
//! renamed to `app.log.<UTC time of rotation>` (`app.log.20261127T080359.123456`),
//! so names sort oldest first and nothing is renamed twice. Rotation happens
//! only between lines: a line is never split across files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod rotation;

pub use rotation::Rotation;
use rotation::{RotatedKey, next_boundary, rotated_key};

use super::format::{json, rfc3339};
use super::{Sink, SinkError};
use crate::event::Event;

/// Configures a [`FileSink`].
///
/// | setting | default |
/// | --- | --- |
/// | `max_bytes` | none (no size rotation) |
/// | `rotation` | [`Rotation::Never`] |
/// | `keep` | 7 rotated files |
#[derive(Debug, Clone)]
pub struct FileSinkBuilder {
    path: PathBuf,
    max_bytes: Option<u64>,
    rotation: Rotation,
    keep: usize,
}

impl FileSinkBuilder {
    /// Starts a new file once the active one would grow past `bytes`.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes.max(1));
        self
    }

    /// Starts a new file at every hour or day boundary (UTC).
    #[must_use]
    pub fn rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// How many rotated files to keep; older ones are deleted.
    #[must_use]
    pub fn keep(mut self, files: usize) -> Self {
        self.keep = files;
        self
    }

    pub(crate) fn path_for_errors(&self) -> String {
        self.path.display().to_string()
    }

    /// Opens (or creates, with its directory) the active file for appending.
    pub fn build(self) -> io::Result<FileSink> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file_name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "file sink path {:?} must end in a UTF-8 file name",
                        self.path
                    ),
                )
            })?
            .to_owned();
        let (file, size) = open_append(&self.path)?;
        let now = SystemTime::now();
        let core = Core {
            next_rotation: next_boundary(self.rotation, now),
            path: self.path,
            file_name,
            max_bytes: self.max_bytes,
            rotation: self.rotation,
            keep: self.keep,
            file,
            size,
            buf: Vec::with_capacity(64 * 1024),
            line_ends: Vec::new(),
            reopen: false,
        };
        Ok(FileSink {
            path: core.path.clone(),
            core: Some(core),
            in_flight: None,
        })
    }
}

/// Writes JSON lines to a file, rotating and pruning as configured.
///
/// Lines are serialized on the pipeline's worker; the file I/O runs on
/// tokio's blocking pool, one write at a time, so a slow or stalled disk
/// never holds up the runtime that drives enrichment. A write that fails
/// (a full disk) leaves no partial line behind: the file is cut back to
/// its last whole line, and what was not written is retried by the
/// pipeline, so writing resumes when space returns.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    /// The file and its state, here between writes.
    core: Option<Core>,
    /// The file and its state while a write is on the blocking pool. Kept
    /// here so that a write cut off by the sink timeout does not lose the
    /// file: the next write waits for it first.
    in_flight: Option<tokio::task::JoinHandle<(Core, Result<(), SinkError>)>>,
}

/// What a write needs, moved to the blocking pool and back.
#[derive(Debug)]
struct Core {
    path: PathBuf,
    file_name: String,
    max_bytes: Option<u64>,
    rotation: Rotation,
    keep: usize,
    file: File,
    size: u64,
    next_rotation: Option<u64>,
    buf: Vec<u8>,
    line_ends: Vec<usize>,
    /// The active file must be reopened before the next write.
    reopen: bool,
}

impl FileSink {
    /// Starts configuring a sink writing to `path`.
    #[must_use]
    pub fn builder(path: impl Into<PathBuf>) -> FileSinkBuilder {
        FileSinkBuilder {
            path: path.into(),
            max_bytes: None,
            rotation: Rotation::Never,
            keep: 7,
        }
    }

    /// The active file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's state, once any write still on the blocking pool is done.
    async fn core(&mut self) -> Result<&mut Core, SinkError> {
        if let Some(write) = self.in_flight.as_mut() {
            let joined = write.await;
            self.in_flight = None;
            match joined {
                // Its outcome was already accounted when it was cut off.
                Ok((core, _)) => self.core = Some(core),
                Err(e) => return Err(SinkError::new("the log file's writer failed", e)),
            }
        }
        self.core
            .as_mut()
            .ok_or_else(|| SinkError::msg("the log file's writer failed earlier; no file is open"))
    }
}

impl Core {
    fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        self.file.flush()?;
        let mut stamp = String::with_capacity(22);
        let ts = rfc3339(now);
        // 2026-11-27T08:03:59.123456Z -> 20261127T080359.123456
        for c in ts.chars().filter(|c| !matches!(c, '-' | ':' | 'Z')) {
            stamp.push(c);
        }
        let dir = self.dir();
        let mut target = dir.join(format!("{}.{stamp}", self.file_name));
        let mut n = 1;
        while target.exists() {
            target = dir.join(format!("{}.{stamp}.{n}", self.file_name));
            n += 1;
        }
        // If the rename fails, nothing changed: the caller keeps writing to
        // the current file.
        fs::rename(&self.path, &target)?;
        match open_append(&self.path) {
            Ok((file, size)) => {
                self.file = file;
                self.size = size;
            }
            Err(e) => {
                // The old handle now points at the rotated file; try again
                // before the next write rather than writing there forever.
                self.reopen = true;
                return Err(e);
            }
        }
        // Retention is best effort: a file that cannot be deleted now is
        // deleted at a later rotation, and never costs events.
        let _ = self.prune();
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn prune(&self) -> io::Result<()> {
        let prefix = format!("{}.", self.file_name);
        let mut rotated: Vec<(RotatedKey, String)> = fs::read_dir(self.dir())?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| {
                let key = rotated_key(n.strip_prefix(&prefix)?)?;
                Some((key, n))
            })
            .collect();
        if rotated.len() <= self.keep {
            return Ok(());
        }
        rotated.sort();
        let excess = rotated.len() - self.keep;
        let dir = self.dir();
        // Delete what can be deleted; one stubborn file does not keep the
        // others.
        let mut first_error = None;
        for (_, name) in &rotated[..excess] {
            if let Err(e) = fs::remove_file(dir.join(name)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let core = self.core().await?;
        core.buf.clear();
        core.line_ends.clear();
        for e in events {
            json::write_event(&mut core.buf, e);
            core.line_ends.push(core.buf.len());
        }
        let Some(mut core) = self.core.take() else {
            return Err(SinkError::msg(
                "the log file's writer failed earlier; no file is open",
            ));
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let result = core.write_buffered();
            (core, result)
        }));
        let write = self.in_flight.as_mut().expect("just set");
        let joined = write.await;
        self.in_flight = None;
        match joined {
            Ok((core, result)) => {
                self.core = Some(core);
                result
            }
            Err(e) => Err(SinkError::new("the log file's writer failed", e)),
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        // `File` has no buffer of its own: each write reached the OS.
        self.core().await?.file.flush()?;
        Ok(())
    }
}

impl Core {
    /// Writes `buf` (whole lines, ends in `line_ends`), rotating as needed.
    /// On a failed write the file is cut back to its last whole line and
    /// the error says how many lines were written.
    fn write_buffered(&mut self) -> Result<(), SinkError> {
        if self.reopen {
            let (file, size) = open_append(&self.path)?;
            self.file = file;
            self.size = size;
            self.reopen = false;
        }
        // A failed rotation does not lose the batch: it is written to the
        // current file, and the failure reported once the batch is written.
        let mut rotation_error = None;
        let now = SystemTime::now();
        if let Some(at) = self.next_rotation {
            let secs = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            if secs >= at {
                self.next_rotation = next_boundary(self.rotation, now);
                if self.size > 0
                    && let Err(e) = self.rotate(now)
                {
                    rotation_error = Some(e);
                }
            }
        }
        if self.reopen {
            return Err(SinkError::new(
                "could not reopen the log file after rotating it",
                rotation_error.unwrap_or_else(|| io::Error::other("reopen failed")),
            ));
        }
        let lines = self.line_ends.len();
        let Some(max) = self.max_bytes else {
            self.write_lines(0, self.buf.len(), 0)?;
            // Every line is written: the rotation's failure is reported,
            // but nothing is to be written again.
            return match rotation_error {
                Some(e) => Err(SinkError::new("log file rotation failed", e).after_writing(lines)),
                None => Ok(()),
            };
        };
        // Write runs of whole lines that fit, rotating between them.
        let mut start = 0;
        let mut next_line = 0;
        while start < self.buf.len() {
            let room = max.saturating_sub(self.size) as usize;
            let mut end = start;
            let mut i = next_line;
            while i < self.line_ends.len() && self.line_ends[i] - start <= room {
                end = self.line_ends[i];
                i += 1;
            }
            if end == start {
                if self.size > 0 && rotation_error.is_none() {
                    match self.rotate(SystemTime::now()) {
                        Ok(()) => continue,
                        Err(e) if self.reopen => {
                            return Err(SinkError::new(
                                "could not reopen the log file after rotating it",
                                e,
                            )
                            .after_writing(next_line));
                        }
                        Err(e) => rotation_error = Some(e),
                    }
                }
                if rotation_error.is_some() {
                    // Could not rotate: keep the rest of the batch in the
                    // current file, over the size limit, rather than lose it.
                    end = self.buf.len();
                    i = self.line_ends.len();
                } else {
                    // A single line larger than the limit goes alone into a
                    // file.
                    end = self.line_ends[next_line];
                    i = next_line + 1;
                }
            }
            self.write_lines(start, end, next_line)?;
            start = end;
            next_line = i;
        }
        match rotation_error {
            Some(e) => Err(SinkError::new("log file rotation failed", e).after_writing(lines)),
            None => Ok(()),
        }
    }

    /// Appends `buf[start..end]`, which begins with line `first_line`. If
    /// the write fails part-way (a full disk), the file is cut back to
    /// where it was, so no partial line is left for a reader to trip on.
    fn write_lines(
        &mut self,
        start: usize,
        end: usize,
        first_line: usize,
    ) -> Result<(), SinkError> {
        match self.file.write_all(&self.buf[start..end]) {
            Ok(()) => {
                self.size += (end - start) as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.size);
                Err(SinkError::new("could not write the log file", e).after_writing(first_line))
            }
        }
    }
}
