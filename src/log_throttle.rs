//! One throttle for log lines about a problem that repeats (a wrong baud
//! rate fails every frame, a broken rule script every reading, a full
//! live queue every message): at most `burst` lines per window, the rest
//! counted and reported with the first line of the next window. The
//! metrics count every occurrence; only the log is throttled.
//!
//! Owns the window arithmetic only. Must not log itself: callers word
//! their lines.

use std::time::{Duration, Instant};

/// At most `burst` lines per `every`; see the module doc.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    burst: u32,
    since: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogThrottle {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        Self::with_burst(every, 1)
    }

    /// `burst` lines per `every` (at least one).
    pub fn with_burst(every: Duration, burst: u32) -> Self {
        LogThrottle {
            every,
            burst: burst.max(1),
            since: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being the lines held
    /// back in the window before (non-zero only on a window's first line);
    /// `None` when this one is held back.
    pub fn ready(&mut self) -> Option<u64> {
        self.ready_at(Instant::now())
    }

    fn ready_at(&mut self, now: Instant) -> Option<u64> {
        if self
            .since
            .is_none_or(|s| now.duration_since(s) >= self.every)
        {
            self.since = Some(now);
            self.logged = 1;
            return Some(std::mem::take(&mut self.suppressed));
        }
        if self.logged < self.burst {
            self.logged += 1;
            return Some(0);
        }
        self.suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_past_the_burst_and_reports_the_count_next_window() {
        let start = Instant::now();
        let mut t = LogThrottle::with_burst(Duration::from_secs(10), 2);
        assert_eq!(t.ready_at(start), Some(0));
        assert_eq!(t.ready_at(start), Some(0));
        assert_eq!(t.ready_at(start), None);
        assert_eq!(t.ready_at(start), None);
        let later = start + Duration::from_secs(10);
        assert_eq!(t.ready_at(later), Some(2));
        assert_eq!(t.ready_at(later), Some(0));
    }

    #[test]
    fn one_line_per_window_by_default() {
        let start = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(t.ready_at(start), Some(0));
        assert_eq!(t.ready_at(start), None);
        assert_eq!(t.ready_at(start + Duration::from_millis(999)), None);
        assert_eq!(t.ready_at(start + Duration::from_secs(1)), Some(2));
    }
}
