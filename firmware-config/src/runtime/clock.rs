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

/// The other side's clock, as its signed messages show it: each carries the time it was made,
/// and its difference from when it arrived is the other clock's offset less the time on the
/// way. Transit only ever lowers a sample, so the estimate is the highest of the samples of
/// the last [`OFFSET_WINDOW`] (at most [`OFFSET_SAMPLES`], always the newest): a forward step
/// shows at once, a backward one within the window, and an old message resent after a cut (or
/// replayed) among newer ones never drags it down.
#[derive(Debug, Clone, Default)]
pub struct PeerClock {
    /// (when it arrived, on the monotonic clock; the offset it showed, ms)
    samples: std::collections::VecDeque<(Instant, i64)>,
}

/// Most samples a [`PeerClock`] keeps.
pub const OFFSET_SAMPLES: usize = 16;
/// How long a sample counts.
pub const OFFSET_WINDOW: Duration = Duration::from_secs(60);

impl PeerClock {
    /// A message made at `sent` (the other's clock) arrived at `now` (ours).
    pub fn observe(&mut self, sent: OffsetDateTime, now: OffsetDateTime) {
        self.observe_at(sent, now, Instant::now());
    }

    fn observe_at(&mut self, sent: OffsetDateTime, now: OffsetDateTime, at: Instant) {
        let ms = (sent - now).whole_milliseconds();
        let ms = ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        while self.samples.len() >= OFFSET_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) > OFFSET_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((at, ms));
    }

    /// The other clock minus ours, in milliseconds; None before its first message.
    pub fn offset_ms(&self) -> Option<i64> {
        self.samples.iter().map(|(_, ms)| *ms).max()
    }

    /// The time on the other clock at our `now` (`now` itself before it is known).
    pub fn their_now(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + time::Duration::milliseconds(self.offset_ms().unwrap_or(0))
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

    #[test]
    fn a_peer_clock_is_the_highest_recent_sample_and_follows_steps() {
        let at = |secs: i64| OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap();
        let t0 = Instant::now();
        let mono = |secs: u64| t0 + Duration::from_secs(secs);
        let mut c = PeerClock::default();
        assert_eq!(c.offset_ms(), None);
        // Three hours behind, with a little transit on each message.
        for i in 0..10 {
            let lag = time::Duration::milliseconds(i % 5);
            c.observe_at(at(i - 3 * 3600), at(i) + lag, mono(i as u64));
        }
        assert_eq!(c.offset_ms(), Some(-3 * 3600 * 1000));
        // An old message resent after a cut does not drag it down.
        c.observe_at(at(-10 * 3600), at(20), mono(20));
        assert_eq!(c.offset_ms(), Some(-3 * 3600 * 1000));
        // Stepped right: seen at once.
        c.observe_at(at(21), at(21), mono(21));
        assert_eq!(c.offset_ms(), Some(0));
        // Stepped back an hour: seen once the window has passed, and no sooner.
        c.observe_at(at(30 - 3600), at(30), mono(30));
        assert_eq!(c.offset_ms(), Some(0));
        c.observe_at(at(90 - 3600), at(90), mono(90));
        assert_eq!(c.offset_ms(), Some(-3600 * 1000));
        assert_eq!(c.their_now(at(100)), at(100) - time::Duration::hours(1));
    }
}
