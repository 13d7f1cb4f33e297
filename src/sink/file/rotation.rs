//! When files rotate, and how rotated files are named: the active file's
//! name plus the UTC time of rotation (`app.log.20261127T080359.123456`),
//! with a counter when two rotations share a microsecond, so names sort
//! oldest first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a [`FileSink`](super::FileSink) starts a new file regardless of size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rotation {
    /// Only by size (or never, without a size limit).
    #[default]
    Never,
    /// At the start of every UTC hour.
    Hourly,
    /// At every UTC midnight.
    Daily,
}

impl Rotation {
    fn period(self) -> Option<u64> {
        match self {
            Rotation::Never => None,
            Rotation::Hourly => Some(3600),
            Rotation::Daily => Some(86_400),
        }
    }
}

/// (timestamp, collision suffix) of a rotated file's name after the prefix.
pub(super) type RotatedKey = (String, u64);

pub(super) fn rotated_key(rest: &str) -> Option<RotatedKey> {
    // 20261127T080359.123456 or 20261127T080359.123456.3
    let stamp = rest.get(..22)?;
    let valid = stamp.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'T',
        15 => b == b'.',
        _ => b.is_ascii_digit(),
    });
    if !valid {
        return None;
    }
    let n = match &rest[22..] {
        "" => 0,
        suffix => suffix.strip_prefix('.')?.parse().ok()?,
    };
    Some((stamp.to_owned(), n))
}

pub(super) fn next_boundary(rotation: Rotation, now: SystemTime) -> Option<u64> {
    let period = rotation.period()?;
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    Some((secs / period + 1) * period)
}
