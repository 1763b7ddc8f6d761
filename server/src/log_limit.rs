//! Warnings that a peer can trigger at will (a flood of connections from
//! one address, each refused), logged at most once per [`WINDOW`] per
//! place in the code, with how many like them were left out. One flooding
//! client must not be able to fill the server's log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per place per window.
pub const WINDOW: Duration = Duration::from_secs(5);

/// One place's limit: `static REFUSED: LogLimit = LogLimit::new();`, then
/// `if let Some(left_out) = REFUSED.allow() { tracing::warn!(left_out, ...) }`.
#[derive(Debug)]
pub struct LogLimit {
    last: Mutex<Option<Instant>>,
    left_out: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> LogLimit {
        LogLimit::new()
    }
}

impl LogLimit {
    /// A limit that has logged nothing yet.
    pub const fn new() -> LogLimit {
        LogLimit {
            last: Mutex::new(None),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether to log now: `Some(n)` with the lines left out since the last
    /// one logged, or `None` (this one is counted and left out).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = hoard_engine::lock::lock(&self.last);
        match *last {
            Some(at) if now.saturating_duration_since(at) < WINDOW => {
                self.left_out.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.left_out.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_one_line_and_the_next_window_says_how_many_were_left_out() {
        let limit = LogLimit::new();
        let start = Instant::now();
        let logged: Vec<u64> = (0..100)
            .filter_map(|i| limit.allow_at(start + Duration::from_millis(i)))
            .collect();
        assert_eq!(logged, vec![0], "one line for a burst of 100");
        assert_eq!(limit.allow_at(start + WINDOW + Duration::from_millis(100)), Some(99));
        assert_eq!(limit.allow_at(start + WINDOW * 3), Some(0));
    }
}
