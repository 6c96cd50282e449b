//! Deadlines that cannot overflow.

use std::time::{Duration, Instant};

/// The longest duration a setting may have: 100 years, "never" for any
/// real server, and far from the limits of `Instant` arithmetic.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, never panicking: a `d` past what `Instant` can hold is
/// clamped to [`MAX_DURATION`] (and to `now` should even that not fit).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(d.min(MAX_DURATION))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_clamped_not_panicking() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert_eq!(after(now, Duration::MAX), now + MAX_DURATION);
        assert_eq!(after(now, Duration::from_secs(u64::MAX)), now + MAX_DURATION);
    }
}
