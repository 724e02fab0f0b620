//! Rate-limited warnings: a fault that repeats (a peer retrying a refused
//! hello every second, a bad snapshot sent again and again) is logged once
//! per interval, with the number of repeats left unsaid since the last line.

use std::time::{Duration, Instant};

/// Lets one log line through per `interval`; counts the others.
#[derive(Debug, Clone)]
pub struct WarnLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> WarnLimiter {
        WarnLimiter { interval, last: None, suppressed: 0 }
    }

    /// `Some(n)` when a line may be logged at `now`, `n` being how many were
    /// held back since the last one; `None` (and counted) otherwise.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_repeats_are_counted() {
        let mut limiter = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        for s in 1..10 {
            assert_eq!(limiter.allow(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limiter.allow(t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), None);
    }
}
