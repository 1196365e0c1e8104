//! `Clock`: the one place tasks read the time of day from.
//!
//! Two kinds of time, kept apart on purpose:
//! - **Monotonic** ([`Instant`], tokio's): deadlines, timeouts, heartbeats, rates. It follows
//!   tokio's paused time, so a test can let hours pass in moments.
//! - **Wall** ([`Clock::now_utc`]): event times, signatures' freshness, expiry dates. A
//!   `Clock` is the system's in production; a test makes one that starts at a chosen date
//!   and moves with tokio's time, or one set wrong by a given offset.

use std::time::Duration;

use time::OffsetDateTime;

/// Monotonic time for tasks. tokio's `Instant` is the system's when time is not paused.
pub type Instant = tokio::time::Instant;

/// The time of day, as a task sees it. Cheap to clone; every clone reads the same time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    source: Source,
    /// Added to every reading: a clock set wrong.
    skew: time::Duration,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    System,
    /// `start` at `origin`, moving with tokio's monotonic time from there.
    Following {
        start: OffsetDateTime,
        origin: Instant,
    },
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system's clock: what every service runs on.
    pub fn system() -> Self {
        Self {
            source: Source::System,
            skew: time::Duration::ZERO,
        }
    }

    /// A clock that reads `start` now and then moves with tokio's time: under
    /// `tokio::time::pause` simulated days pass as fast as the tasks can run.
    pub fn following_tokio(start: OffsetDateTime) -> Self {
        Self {
            source: Source::Following {
                start,
                origin: Instant::now(),
            },
            skew: time::Duration::ZERO,
        }
    }

    /// The same clock set wrong by `skew` (positive: ahead).
    pub fn skewed(self, skew: time::Duration) -> Self {
        Self { skew, ..self }
    }

    /// The time of day.
    pub fn now_utc(&self) -> OffsetDateTime {
        let now = match self.source {
            Source::System => OffsetDateTime::now_utc(),
            Source::Following { start, origin } => start + origin.elapsed(),
        };
        now + self.skew
    }

    /// The time of day in Unix milliseconds.
    pub fn unix_ms(&self) -> i64 {
        (self.now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// The time of day in Unix microseconds (never negative: 0 before 1970).
    pub fn unix_micros(&self) -> u64 {
        u64::try_from(self.now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(0)
    }

    /// Monotonic now.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// How long since `since`, never negative.
    pub fn since(&self, since: Instant) -> Duration {
        Instant::now().saturating_duration_since(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_moves_with_paused_time_and_the_system_clock_does_not() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = Clock::following_tokio(start);
        let system = Clock::system();
        let before = system.now_utc();
        tokio::time::sleep(Duration::from_secs(72 * 3600)).await;
        assert_eq!(clock.now_utc(), start + Duration::from_secs(72 * 3600));
        // Seventy-two paused hours took no real time.
        assert!(system.now_utc() - before < time::Duration::minutes(1));
    }

    #[test]
    fn a_skewed_clock_reads_its_offset_from_the_one_it_was_made_from() {
        let clock = Clock::system().skewed(time::Duration::days(-400));
        let gap = OffsetDateTime::now_utc() - clock.now_utc();
        assert!(
            (gap - time::Duration::days(400)).abs() < time::Duration::minutes(1),
            "{gap}"
        );
        assert!(clock.unix_ms() > 0);
    }
}
