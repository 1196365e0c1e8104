//! A small real filesystem for full-disk tests: a tmpfs the test mounts (as root) in a folder
//! of its own, resized or filled while services run on it, unmounted on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`24m`, as mount(8) takes it).
    pub fn mount(size: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("gridedge-tmpfs-")
            .tempdir()?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()))
        .map_err(|e| anyhow::anyhow!("cannot mount a tmpfs (the test needs root): {e}"))?;
        Ok(Self { dir })
    }

    /// Gives the filesystem a new size; what it holds stays.
    pub fn resize(&self, size: &str) -> Result<()> {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path()))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free on it.
    pub fn free(&self) -> Result<u64> {
        Ok(firmware_config::runtime::disk::space(self.path())?.0)
    }

    /// Takes every free byte into a file `name` of its own (as another program filling the
    /// disk would); returns the file, to remove to give the space back.
    pub fn fill(&self, name: &str) -> Result<PathBuf> {
        let path = self.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let block = vec![0u8; 64 << 10];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The last bytes, smaller than a block.
        let byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {}
        Ok(path)
    }
}

/// "No space left on device".
const ENOSPC: i32 = 28;

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold a file on it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
