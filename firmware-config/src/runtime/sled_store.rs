//! Opening the services' sled databases.
//!
//! sled lets go of its file lock a moment after the last handle of a database is dropped (its
//! I/O threads finish first; spacejam/sled#1234), so a database opened again at once — a part
//! restarted inside the same process, a test reopening a store — can find it still locked.
//! [`open`] waits a bounded time for the lock; a database another process holds is still
//! refused once that time is up.

use std::time::{Duration, Instant};

/// How long [`open`] waits for a lock being let go.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the database `config` describes, waiting up to [`LOCK_WAIT`] for its file lock.
pub fn open(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        match config.open() {
            Err(e) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Whether opening failed because the database's file lock is held.
pub fn is_locked(e: &sled::Error) -> bool {
    match e {
        // sled reports it as `Other` with the OS error (EAGAIN) in its text.
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_closed_a_moment_ago_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new()
            .path(dir.path().join("db"))
            .flush_every_ms(None);
        for i in 0u32..50 {
            let db = open(&config).unwrap();
            db.insert(i.to_be_bytes(), &[1u8][..]).unwrap();
            db.flush().unwrap();
        }
        assert_eq!(open(&config).unwrap().len(), 50);
    }

    #[test]
    fn a_database_held_open_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        // A separate path config: sled shares nothing between the two opens but the file.
        let path = dir.path().join("db");
        let held = open(&sled::Config::new().path(&path)).unwrap();
        let started = Instant::now();
        let e = open(&sled::Config::new().path(&path)).unwrap_err();
        assert!(is_locked(&e), "{e}");
        assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
        drop(held);
    }
}
