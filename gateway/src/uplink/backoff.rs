//! Exponential backoff with jitter, so that a hundred gateways cut off together do not reconnect
//! in lock-step when the WAN comes back.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next wait: `min * 2^attempt`, capped at `max`, scaled by `jitter` in `[0.5, 1.0]`
    /// ("equal jitter": never less than half the step, so waits still grow).
    pub fn wait_with(&mut self, jitter: f64) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        step.mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// The next wait with random jitter.
    pub fn next_wait(&mut self) -> Duration {
        self.wait_with(rand::random::<f64>() * 0.5 + 0.5)
    }

    /// Called once a connection has succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let waits: Vec<u64> = (0..6).map(|_| b.wait_with(1.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.wait_with(1.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_half_to_full_step() {
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        for _ in 0..100 {
            let d = b.next_wait();
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(60),
                "{d:?}"
            );
        }
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        assert_eq!(b.wait_with(0.0), Duration::from_secs(2));
    }

    #[test]
    fn survives_absurd_attempt_counts() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_wait() <= Duration::from_secs(60));
        }
    }
}
