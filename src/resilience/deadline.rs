//! Deadlines that cannot overflow.

use std::time::Duration;

use tokio::time::Instant;

/// Decades: far enough to mean "never", near enough for every clock's
/// arithmetic.
const NEVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `now + d`, or a time decades away when that would overflow (a timeout of
/// `Duration::MAX` means "never", not a panic).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + NEVER)
}

/// [`after`] for `std`'s clock.
pub(crate) fn after_std(now: std::time::Instant, d: Duration) -> std::time::Instant {
    now.checked_add(d).unwrap_or_else(|| now + NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let now = std::time::Instant::now();
        assert!(after_std(now, Duration::MAX) > now);
    }
}
