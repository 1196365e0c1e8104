//! The disk under a store: its free space, and a reserve file kept against the day it fills.
//!
//! sled does not come back from running out of space: a write that fails with ENOSPC leaves
//! its log unable to become stable, and every later flush waits forever. So the services stop
//! writing before the filesystem is full ([`DiskGuard`]), and keep a file of their own that
//! they give back when something else fills the disk, so that the store still has room to
//! take acknowledgements, compact, and open again after a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Name of the reserve file inside a store's folder.
pub const RESERVE_FILE: &str = "space.reserve";

/// Free and total bytes of the filesystem holding `dir`, as an unprivileged writer sees them.
pub fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid C string and `st` is written by statvfs before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(unit),
        (st.f_blocks as u64).saturating_mul(unit),
    ))
}

/// What a guard last saw, shared with metrics and health reports.
#[derive(Debug, Default)]
pub struct DiskState {
    pub free_bytes: AtomicU64,
    pub total_bytes: AtomicU64,
    /// Most bytes the store may hold, as the disk allows.
    pub limit_bytes: AtomicU64,
    /// Whether the disk is (nearly) full: the store takes more only as it sheds.
    pub full: AtomicBool,
    /// Whether the reserve file is in place.
    pub reserve_held: AtomicBool,
}

impl DiskState {
    pub fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }
}

/// Keeps a store off a full disk. While there is room, it holds the reserve file, and lets the
/// store grow into half the room left above `stop`. When free space falls under `stop`, it
/// gives the reserve back (room for the store to delete and compact in: sled writes to delete
/// too) and the store's current size becomes its limit (sled reuses the room acknowledged
/// records leave, so it can go on taking what it sheds); while free space stays under `stop`
/// with the reserve given back, the store writes nothing at all ([`DiskGuard::critical`]: the
/// last `stop` bytes are for the other stores and for opening after a restart). Once there
/// is room for the reserve again above `stop`, the reserve is taken back and the limit lifted.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve_bytes: u64,
    stop: u64,
    limit: Option<u64>,
    /// Free space under `stop` at the last look, with the reserve already given back.
    critical: bool,
    state: Arc<DiskState>,
}

impl DiskGuard {
    /// A guard for the store in `dir` (which must exist), keeping up to `reserve` bytes aside
    /// (never more than an eighth of the filesystem, never under 2 MiB; 0 keeps none).
    pub fn new(dir: &Path, reserve: u64) -> std::io::Result<Self> {
        let (_, total) = space(dir)?;
        let reserve_bytes = match reserve {
            0 => 0,
            r => r.min(total / 8).max(2 << 20),
        };
        let guard = Self {
            dir: dir.to_owned(),
            reserve_bytes,
            stop: (reserve_bytes / 2).max(1 << 20),
            limit: None,
            critical: false,
            state: Arc::default(),
        };
        guard.state.total_bytes.store(total, Ordering::Relaxed);
        guard
            .state
            .reserve_held
            .store(guard.reserve_path().exists(), Ordering::Relaxed);
        Ok(guard)
    }

    pub fn state(&self) -> Arc<DiskState> {
        self.state.clone()
    }

    /// Whether the disk was nearly out of room at the last look, reserve given back and all:
    /// the store must not write at all (shedding old records to take new ones writes too,
    /// and sled does not always give the room back at once).
    pub fn critical(&self) -> bool {
        self.critical
    }

    /// Whether the disk was (nearly) full when last looked at.
    pub fn is_full(&self) -> bool {
        self.state.full()
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Before the store opens: on a full disk, gives the reserve back so that it can.
    pub fn before_open(&mut self) {
        if let Ok((free, _)) = space(&self.dir) {
            if free < self.stop && self.release() {
                tracing::warn!(
                    free_bytes = free,
                    reserve_bytes = self.reserve_bytes,
                    dir = %self.dir.display(),
                    "starting on a full disk: gave the reserve back so the store can open"
                );
            }
        }
    }

    /// Looks at the disk before a write, with the store holding `held` bytes; returns the
    /// most bytes it may hold now. While the disk has room that is what it holds plus half
    /// the room above `stop` (sled writes more than it keeps: its log, blobs written whole);
    /// once free space has fallen under `stop`, it is what it held then, for the store to
    /// reuse the room acknowledged records leave.
    pub fn check(&mut self, held: u64) -> u64 {
        let Ok((mut free, total)) = space(&self.dir) else {
            // Cannot tell: keep to what was decided last.
            return self.limit.unwrap_or(held);
        };
        if free < self.stop && self.release() {
            tracing::warn!(
                free_bytes = free,
                reserve_bytes = self.reserve_bytes,
                "the disk is full: gave the reserve back so the store keeps room to shed"
            );
            free = space(&self.dir).map(|s| s.0).unwrap_or(free);
            // The reserve is the store's room to delete in, not to grow into.
            self.limit.get_or_insert(held);
        }
        match self.limit {
            None if free < self.stop => {
                self.limit = Some(held);
                tracing::warn!(
                    free_bytes = free,
                    held_bytes = held,
                    "the disk is full: the store keeps to what it holds until there is space"
                );
            }
            Some(limit) if free < self.stop / 2 => self.limit = Some(limit.min(held)),
            Some(_) if free >= self.stop + self.reserve_bytes + (4 << 20) => {
                self.limit = None;
                self.hold();
                tracing::info!(free_bytes = free, "the disk has room again");
            }
            None if !self.state.reserve_held.load(Ordering::Relaxed)
                && self.reserve_bytes > 0
                && free >= self.stop + self.reserve_bytes + (4 << 20) =>
            {
                self.hold();
                free = space(&self.dir).map(|s| s.0).unwrap_or(free);
            }
            _ => {}
        }
        // The last `stop` bytes are the other stores' (a kiosk replica, a restart's opening):
        // the guarded store never writes into them.
        self.critical = free < self.stop;
        let limit = self
            .limit
            .unwrap_or_else(|| held + free.saturating_sub(self.stop) / 2);
        let full = self.limit.is_some() || free < 2 * self.stop;
        self.state.free_bytes.store(free, Ordering::Relaxed);
        self.state.total_bytes.store(total, Ordering::Relaxed);
        self.state.limit_bytes.store(limit, Ordering::Relaxed);
        self.state.full.store(full, Ordering::Relaxed);
        limit
    }

    /// Writes the reserve file (real blocks, not a sparse file); a half-written one is removed.
    fn hold(&self) {
        if self.reserve_bytes == 0 {
            return;
        }
        let path = self.reserve_path();
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            let block = vec![0u8; 1 << 20];
            let mut left = self.reserve_bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                f.write_all(&block[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match written {
            Ok(()) => self.state.reserve_held.store(true, Ordering::Relaxed),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                self.state.reserve_held.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot set the disk reserve aside");
            }
        }
    }

    /// Removes the reserve file; true when there was one.
    fn release(&self) -> bool {
        let gone = std::fs::remove_file(self.reserve_path()).is_ok();
        self.state.reserve_held.store(false, Ordering::Relaxed);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_of_a_real_folder_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert!(space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_guard_on_a_roomy_disk_holds_its_reserve_and_sets_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = DiskGuard::new(dir.path(), 2 << 20).unwrap();
        let limit = guard.check(1000);
        assert!(limit > 1000, "{limit}");
        let reserve = std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap();
        assert_eq!(reserve.len(), 2 << 20);
        assert!(guard.state().reserve_held.load(Ordering::Relaxed));
        assert!(!guard.state().full());
    }
}
