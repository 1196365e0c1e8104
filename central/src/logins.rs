//! Guarding the console's logins against guessing and against being used to exhaust central.
//!
//! - **Throttled per address and per name.** After [`FREE_FAILURES`] failed logins, each
//!   further attempt from the same address, or for the same name, must wait: 1 s, then twice
//!   as long after every failure, up to [`MAX_WAIT`]. A throttled attempt is answered 429 with
//!   `Retry-After` before any password is checked, so it costs central nothing. A success
//!   clears its address and name.
//! - **Argon2 behind a small semaphore.** Checking a password takes ~19 MiB and most of a core
//!   for a moment; at most [`CHECKS_AT_ONCE`] run at once, and an attempt that cannot start one
//!   within [`QUEUE_WAIT`] is answered 503.
//! - **Failures aggregated in the audit.** A burst of failures for one name from one address
//!   is one audit entry whose count and last time grow, not one entry per guess.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use firmware_config::runtime::clock::Instant;

/// Failures allowed before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Password checks running at once.
pub const CHECKS_AT_ONCE: usize = 2;
/// How long an attempt may wait for a password check to start.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// A failure older than this is forgotten (and a burst in the audit ends).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Most addresses and names remembered; beyond, the oldest are forgotten first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// When the next attempt may be made.
    fn next_allowed(&self) -> Instant {
        if self.count < FREE_FAILURES {
            return self.last;
        }
        let doublings = (self.count - FREE_FAILURES).min(20);
        let wait = Duration::from_secs(1u64 << doublings).min(MAX_WAIT);
        self.last + wait
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Key {
    Address(IpAddr),
    Name(String),
}

/// A burst of failures for one name from one address, as one audit entry.
#[derive(Debug, Clone)]
pub struct Burst {
    /// The audit entry's key (rewritten as the burst grows).
    pub audit_key: Vec<u8>,
    pub count: u32,
    pub first: time::OffsetDateTime,
    last: Instant,
}

pub struct LoginGuard {
    failures: Mutex<HashMap<Key, Failures>>,
    bursts: Mutex<HashMap<(String, IpAddr), Burst>>,
    checks: tokio::sync::Semaphore,
    next_key: std::sync::atomic::AtomicU64,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            bursts: Mutex::default(),
            checks: tokio::sync::Semaphore::new(CHECKS_AT_ONCE),
            next_key: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Why an attempt is not even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Too many failures: wait this long.
    Throttled(Duration),
    /// Every password check is busy.
    Busy,
}

impl LoginGuard {
    fn keys(address: IpAddr, name: &str) -> [Key; 2] {
        [Key::Address(address), Key::Name(name.to_owned())]
    }

    /// Whether an attempt for `name` from `address` may be checked now.
    pub fn admit(&self, address: IpAddr, name: &str, now: Instant) -> Result<(), Held> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = Self::keys(address, name)
            .iter()
            .filter_map(|k| failures.get(k))
            .map(|f| f.next_allowed().saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Held::Throttled(wait))
        }
    }

    /// Runs `check` (a password check, blocking) for `name` from `address` with one of the few
    /// permits: `Busy` when none frees up in time, `Throttled` when failures recorded while
    /// it waited hold it back now (a burst of attempts admitted together is not all checked).
    pub async fn check<T: Send + 'static>(
        &self,
        address: IpAddr,
        name: &str,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Held> {
        let permit = tokio::time::timeout(QUEUE_WAIT, self.checks.acquire())
            .await
            .map_err(|_| Held::Busy)?
            .map_err(|_| Held::Busy)?;
        self.admit(address, name, Instant::now())?;
        let out = tokio::task::spawn_blocking(check)
            .await
            .map_err(|_| Held::Busy);
        drop(permit);
        out
    }

    /// A failed attempt: counted for the address and the name. Returns the burst it belongs
    /// to, for the audit.
    pub fn failed(&self, address: IpAddr, name: &str, now: Instant) -> Burst {
        {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            if failures.len() >= MAX_TRACKED {
                failures.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
                if failures.len() >= MAX_TRACKED {
                    // Still full: forget the oldest half.
                    let mut lasts: Vec<Instant> = failures.values().map(|f| f.last).collect();
                    lasts.sort_unstable();
                    let cut = lasts[lasts.len() / 2];
                    failures.retain(|_, f| f.last > cut);
                }
            }
            for k in Self::keys(address, name) {
                let f = failures.entry(k).or_insert(Failures {
                    count: 0,
                    last: now,
                });
                if now.saturating_duration_since(f.last) >= FORGET_AFTER {
                    f.count = 0;
                }
                f.count = f.count.saturating_add(1);
                f.last = now;
            }
        }
        let mut bursts = self.bursts.lock().unwrap_or_else(PoisonError::into_inner);
        if bursts.len() >= MAX_TRACKED {
            bursts.retain(|_, b| now.saturating_duration_since(b.last) < FORGET_AFTER);
        }
        let key = (name.to_owned(), address);
        // The burst's audit key is made with the burst, under this lock: two refusals checked
        // at once then write the same entry instead of one each.
        let fresh = |now| Burst {
            audit_key: self.new_audit_key(),
            count: 0,
            first: time::OffsetDateTime::now_utc(),
            last: now,
        };
        let b = bursts.entry(key).or_insert_with(|| fresh(now));
        if now.saturating_duration_since(b.last) >= FORGET_AFTER {
            *b = fresh(now);
        }
        b.count = b.count.saturating_add(1);
        b.last = now;
        b.clone()
    }

    /// A key for a burst's audit entry: the time first (entries stay in order), a marker no
    /// other entry's key has, then a counter.
    fn new_audit_key(&self) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
        let mut key = now.to_be_bytes().to_vec();
        key.push(0xff);
        let n = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        key.extend_from_slice(&n.to_be_bytes());
        key
    }

    /// A successful login clears its address and name.
    pub fn succeeded(&self, address: IpAddr, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for k in Self::keys(address, name) {
            failures.remove(&k);
        }
        drop(failures);
        self.bursts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(name.to_owned(), address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn waits_begin_after_a_few_failures_and_double_per_address_and_per_name() {
        let g = LoginGuard::default();
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            assert_eq!(g.admit(A, "wang", t0), Ok(()), "failure {i} is free");
            g.failed(A, "wang", t0);
        }
        let Err(Held::Throttled(w)) = g.admit(A, "wang", t0) else {
            panic!("throttled after {FREE_FAILURES}");
        };
        assert_eq!(w, Duration::from_secs(1));
        // The same name from another address, another name from the same address: held too.
        assert!(g.admit(B, "wang", t0).is_err());
        assert!(g.admit(A, "li", t0).is_err());
        assert_eq!(g.admit(B, "li", t0), Ok(()));
        // Each further failure doubles the wait, up to the cap.
        let mut t = t0 + Duration::from_secs(1);
        assert_eq!(g.admit(A, "wang", t), Ok(()));
        g.failed(A, "wang", t);
        assert_eq!(
            g.admit(A, "wang", t),
            Err(Held::Throttled(Duration::from_secs(2)))
        );
        for _ in 0..30 {
            g.failed(A, "wang", t);
        }
        t += Duration::from_secs(1);
        let Err(Held::Throttled(w)) = g.admit(A, "wang", t) else {
            panic!()
        };
        assert!(
            w <= MAX_WAIT && w > MAX_WAIT - Duration::from_secs(2),
            "{w:?}"
        );
        g.succeeded(A, "wang");
        assert_eq!(g.admit(A, "wang", t), Ok(()));
        // Forgotten after a quiet hour.
        for _ in 0..10 {
            g.failed(B, "zhao", t);
        }
        let later = t + FORGET_AFTER;
        g.failed(B, "zhao", later);
        assert_eq!(g.admit(B, "zhao", later), Ok(()));
    }

    #[test]
    fn failures_of_one_name_from_one_address_are_one_growing_burst() {
        let g = LoginGuard::default();
        let t = Instant::now();
        let first = g.failed(A, "wang", t);
        assert_eq!(first.count, 1);
        assert!(!first.audit_key.is_empty());
        // The second refusal writes the first one's entry, even before that one is written.
        let b = g.failed(A, "wang", t);
        assert_eq!((b.count, b.audit_key.clone()), (2, first.audit_key));
        assert_eq!(
            g.failed(B, "wang", t).count,
            1,
            "another address, another burst"
        );
        assert_eq!(
            g.failed(A, "wang", t + FORGET_AFTER).count,
            1,
            "a new burst later"
        );
    }

    #[tokio::test]
    async fn at_most_a_few_password_checks_run_at_once() {
        let g = std::sync::Arc::new(LoginGuard::default());
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (g, running, most) = (g.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                g.check(A, "wang", move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            CHECKS_AT_ONCE
        );
    }

    #[tokio::test]
    async fn attempts_waiting_together_are_held_once_failures_pile_up() {
        let g = std::sync::Arc::new(LoginGuard::default());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let g = g.clone();
            tasks.push(tokio::spawn(async move {
                let checked = g
                    .check(A, "wang", || std::thread::sleep(Duration::from_millis(5)))
                    .await;
                if checked.is_ok() {
                    g.failed(A, "wang", Instant::now());
                }
                checked.is_ok()
            }));
        }
        let mut checked = 0;
        for t in tasks {
            checked += usize::from(t.await.unwrap());
        }
        assert!(
            checked <= FREE_FAILURES as usize + CHECKS_AT_ONCE,
            "{checked} of 20 checked"
        );
    }
}
