//! Reports that could flood the log (failing accepts, refused clients) are
//! written at most once per interval, with the number held back since the
//! last one, so an attack or an exhausted resource costs a line per
//! interval, not a line per event.

use std::time::{Duration, Instant};

pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimited {
    pub fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last report)` when a report is due now,
    /// else `None` (and this event is held back).
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_interval_with_the_count_between() {
        let mut r = RateLimited::new(Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(r.due(t), Some(0));
        assert_eq!(r.due(t + Duration::from_secs(1)), None);
        assert_eq!(r.due(t + Duration::from_secs(2)), None);
        assert_eq!(r.due(t + Duration::from_secs(5)), Some(2));
    }
}
