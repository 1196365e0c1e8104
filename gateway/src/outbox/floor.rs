//! The sequence floor: a small file beside the store holding a number no sequence number has
//! reached yet. Sequence numbers are reserved in blocks and the floor written (and synced)
//! before any number of a new block is used, so even when the store itself is lost and started
//! fresh, numbering continues above every number ever handed out — central deduplicates on
//! `(gateway, seq)` and would otherwise drop new events as repeats of old ones.

use std::path::{Path, PathBuf};

/// Numbers reserved per write of the floor file.
pub const BLOCK: u64 = 10_000;

#[derive(Debug)]
pub struct SeqFloor {
    path: PathBuf,
    reserved: u64,
    block: u64,
}

impl SeqFloor {
    /// Reads the outbox's floor under `dir` (0 when there is none or it is unreadable).
    pub fn open(dir: &Path) -> Self {
        Self::named(dir, "outbox.seq", BLOCK)
    }

    /// Reads the floor in `dir/name`, reserving `block` numbers per write.
    pub fn named(dir: &Path, name: &str, block: u64) -> Self {
        let path = dir.join(name);
        let reserved = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Self {
            path,
            reserved,
            block,
        }
    }

    /// The lowest number that may be used next.
    pub fn floor(&self) -> u64 {
        self.reserved
    }

    /// Makes sure every number below `upto` is covered by the floor file on disk.
    pub fn reserve(&mut self, upto: u64) -> std::io::Result<()> {
        if upto <= self.reserved {
            return Ok(());
        }
        let target = upto.saturating_add(self.block);
        firmware_config::durable::write(
            &self.path,
            format!("{target}\n").as_bytes(),
            firmware_config::durable::Access::Default,
        )?;
        self.reserved = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_in_blocks_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SeqFloor::open(dir.path());
        assert_eq!(f.floor(), 0);
        f.reserve(10).unwrap();
        assert_eq!(f.floor(), 10 + BLOCK);
        f.reserve(20).unwrap();
        assert_eq!(f.floor(), 10 + BLOCK, "no write needed inside the block");
        assert_eq!(SeqFloor::open(dir.path()).floor(), 10 + BLOCK);
    }
}
