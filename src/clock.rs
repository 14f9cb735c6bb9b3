//! Time, from one place, so the scheduler can be tested with tokio's paused clock.
//!
//! The daemon asks a [`Clock`] for "now" and sleeps with tokio timers. In production that is
//! the system clock; in tests, [`TokioClock`] derives wall time from tokio's `Instant`, so
//! `tokio::time::pause()` and `advance()` move both together.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// The tokio instant at which `at` will be reached by this clock.
    fn instant_at(&self, at: DateTime<Utc>) -> tokio::time::Instant {
        let now = self.now();
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::time::Instant::now() + wait
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that moves with tokio's clock: `start` plus the tokio time elapsed since
/// creation. Under `tokio::time::pause()` it stands still until `advance()`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.anchor;
        self.start + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}
