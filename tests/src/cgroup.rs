//! A memory cgroup made by a test (as root), as systemd's `MemoryMax=` makes one for a unit:
//! cgroup v2 (`memory.max`) where the memory controller is there, else v1
//! (`memory.limit_in_bytes`). Swap is kept out of it, so the limit is the limit. Removed when
//! dropped, once its processes are gone.

use std::path::{Path, PathBuf};

use crate::Result;

pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        })
}

impl MemoryCgroup {
    /// A new cgroup `name` limited to `bytes` of memory (page cache included, as the kernel
    /// counts it: reclaimed under the limit before anything is killed).
    pub fn create(name: &str, bytes: u64) -> Result<Self> {
        let (dir, v2) = match v2_root() {
            Some(root) => {
                // The controller must be enabled for children of the root.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                (root.join(name), true)
            }
            None => (PathBuf::from("/sys/fs/cgroup/memory").join(name), false),
        };
        anyhow::ensure!(
            dir.parent().is_some_and(Path::exists),
            "no memory cgroup controller under {} (the tests run as root on Linux)",
            dir.display()
        );
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)?;
        let g = Self { dir, v2 };
        if v2 {
            g.write("memory.max", &bytes.to_string())?;
            let _ = g.write("memory.swap.max", "0");
        } else {
            g.write("memory.limit_in_bytes", &bytes.to_string())?;
            let _ = g.write("memory.memsw.limit_in_bytes", &bytes.to_string());
            let _ = g.write("memory.swappiness", "0");
        }
        Ok(g)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.dir.join(file).display()))
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Processes the kernel's OOM killer killed in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Times the cgroup reached its limit (and the kernel reclaimed to stay under it).
    pub fn limit_hits(&self) -> u64 {
        if self.v2 {
            self.read("memory.events")
                .lines()
                .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                .unwrap_or(0)
        } else {
            self.read("memory.failcnt").trim().parse().unwrap_or(0)
        }
    }

    /// The most memory charged to the cgroup, page cache included.
    pub fn peak_bytes(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).trim().parse().unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
