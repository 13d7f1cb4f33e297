//! Timestamps: UTC, RFC 3339 with microseconds, `2026-11-27T08:03:59.123456Z`.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant a four-digit year can show (9999-12-31T23:59:59.999999Z).
const LATEST: Duration = Duration::new(253_402_300_799, 999_999_999);

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`. A clock set before 1970
/// shows as the epoch, one past the year 9999 as its last second: a
/// broken clock must not cost the record. Digits are written directly
/// (every record has one: going through `fmt` cost ~10% of the file
/// sink's formatting).
pub(crate) fn write_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().min(LATEST);
    let secs = since.as_secs();
    // Records come many to a second: the part up to the seconds is the
    // last record's, most of the time.
    let (last, mut out) = LAST_SECOND.with(Cell::get);
    if last != secs {
        out = date_and_time(secs);
        LAST_SECOND.with(|c| c.set((secs, out)));
    }
    buf.extend_from_slice(&out);
    let mut frac = [b'.', 0, 0, 0, 0, 0, 0, b'Z'];
    let mut u = since.subsec_micros();
    for i in (1..7).rev() {
        frac[i] = b'0' + (u % 10) as u8;
        u /= 10;
    }
    buf.extend_from_slice(&frac);
}

thread_local! {
    /// The second last written and its `YYYY-MM-DDTHH:MM:SS`.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` of a count of seconds since the epoch.
fn date_and_time(secs: u64) -> [u8; 19] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let two = |n: u64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    let mut out = [0u8; 19];
    out[..4].copy_from_slice(&[
        b'0' + (year / 1000) as u8,
        b'0' + (year / 100 % 10) as u8,
        b'0' + (year / 10 % 10) as u8,
        b'0' + (year % 10) as u8,
    ]);
    out[4] = b'-';
    out[5..7].copy_from_slice(&two(month));
    out[7] = b'-';
    out[8..10].copy_from_slice(&two(day));
    out[10] = b'T';
    out[11..13].copy_from_slice(&two(h));
    out[13] = b':';
    out[14..16].copy_from_slice(&two(m));
    out[16] = b':';
    out[17..19].copy_from_slice(&two(s));
    out
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01, in
/// the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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

    proptest::proptest! {
        #[test]
        fn every_instant_is_written_as_humantime_writes_it(
            secs in 0u64..=253_402_300_799,
            nanos in 0u32..1_000_000_000,
        ) {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            // The same second again (the remembered part), the next one
            // and back: each written as itself.
            let next = (t + Duration::from_millis(700)).min(UNIX_EPOCH + LATEST);
            for t in [t, t, next, t] {
                proptest::prop_assert_eq!(
                    rfc3339(t),
                    humantime::format_rfc3339_micros(t).to_string()
                );
            }
        }
    }

    #[test]
    fn clocks_out_of_range_are_clamped_not_fatal() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(after), "9999-12-31T23:59:59.999999Z");
    }
}
