//! Token buckets per terminal: each may make `burst` requests at once and `rate` per second
//! after that. Pure, with the clock passed in, so tests never sleep.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use firmware_config::runtime::clock::Instant;

#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes one token of `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str, rate: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(burst.max(1));
        let rate = rate.max(1e-6);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.take("kiosk-1", 2.0, 5, t0).unwrap();
        }
        let wait = l.take("kiosk-1", 2.0, 5, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another terminal has its own bucket.
        l.take("kiosk-2", 2.0, 5, t0).unwrap();
        // Half a second later, one more; not two.
        let t1 = t0 + Duration::from_millis(500);
        l.take("kiosk-1", 2.0, 5, t1).unwrap();
        assert!(l.take("kiosk-1", 2.0, 5, t1).is_err());
        // A long pause fills the bucket only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            l.take("kiosk-1", 2.0, 5, t2).unwrap();
        }
        assert!(l.take("kiosk-1", 2.0, 5, t2).is_err());
    }
}
