//! Timestamps: UTC, RFC 3339 with microseconds, `2026-11-27T08:03:59.123456Z`.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant `humantime` can show (9999-12-31T23:59:59.999999Z).
const LATEST: Duration = Duration::new(253_402_300_799, 999_999_999);

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`. A clock set before 1970
/// shows as the epoch, one past the year 9999 as its last second: a
/// broken clock must not cost the record.
pub(crate) fn write_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().min(LATEST);
    // Writing into a Vec cannot fail, and the instant is in range.
    let _ = write!(
        buf,
        "{}",
        humantime::format_rfc3339_micros(UNIX_EPOCH + since)
    );
}

/// The RFC 3339 timestamp of `t` as a string.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let mut buf = Vec::with_capacity(27);
    write_rfc3339(&mut buf, t);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, micros * 1000))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day in a century leap year)
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        // last second of a year
        assert_eq!(at(1_735_689_599, 999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn clocks_out_of_range_are_clamped_not_fatal() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(after), "9999-12-31T23:59:59.999999Z");
    }
}
