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

/// True when `e` says the disk (or the user's quota) is full: a state of the disk, which
/// passes when space is freed, never damage to the store.
pub fn is_out_of_space(e: &sled::Error) -> bool {
    if let sled::Error::Io(io) = e {
        if matches!(io.raw_os_error(), Some(28) | Some(122)) {
            return true;
        }
    }
    // ENOSPC and EDQUOT; sled often keeps only the OS error's text (in `Unsupported` too).
    let text = e.to_string();
    ["os error 28", "os error 122", "No space left on device"]
        .iter()
        .any(|t| text.contains(t))
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
    fn a_full_disk_is_told_apart_from_damage_and_from_a_lock() {
        let enospc = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        let edquot = sled::Error::Io(std::io::Error::from_raw_os_error(122));
        // What sled returned on a full tmpfs: the OS error only as text.
        let as_text =
            sled::Error::Unsupported("IO error: No space left on device (os error 28)".into());
        for e in [&enospc, &edquot, &as_text] {
            assert!(is_out_of_space(e), "{e}");
            assert!(!is_locked(e), "{e}");
        }
        let damage = sled::Error::Corruption { at: None, bt: () };
        let other_io = sled::Error::Io(std::io::Error::from_raw_os_error(5));
        for e in [&damage, &other_io] {
            assert!(!is_out_of_space(e), "{e}");
        }
    }

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
