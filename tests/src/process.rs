//! A child process owned by a fixture: output to a log file, killed on drop with every
//! process it started.
//!
//! Each child leads a process group of its own, and killing it kills the group: a peer that
//! forks (nginx's worker, Chromium under Playwright) leaves nothing running behind it.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        anyhow::ensure!(
            rc == 0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and every process it started at once (SIGKILL), as a crash or power
    /// cut would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The log so far (for assertions and failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills (SIGKILL) the process group led by `leader`, a child spawned with
/// `process_group(0)`: the leader and every process it started that did not leave the group.
pub fn kill_group(leader: u32) {
    // A group id of 0 or 1 would name the caller's own group or init's: never signalled.
    if leader > 1 {
        // SAFETY: killpg(2) on a group our own child leads; no memory is involved.
        unsafe { libc::killpg(leader as libc::pid_t, libc::SIGKILL) };
    }
}

/// CPU time (user + system, all threads) a process has used so far, in seconds; `None` once
/// it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// CPU seconds of a process and of its children, living (each read now) and gone (what the
/// process waited for): a server that forks a process per connection, such as PostgreSQL.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let waited = (|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        let (cu, cs): (f64, f64) = (f.get(13)?.parse().ok()?, f.get(14)?.parse().ok()?);
        // SAFETY: sysconf only reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some((cu + cs) / ticks.max(1.0))
    })()
    .unwrap_or(0.0);
    let children: f64 = children_of(pid).into_iter().filter_map(cpu_seconds).sum();
    cpu_seconds(pid).unwrap_or(0.0) + waited + children
}

/// Whether process `pid` still runs (a zombie, dead but not yet reaped, does not).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Resident memory now (VmRSS) of a process, in MiB; 0 when it is gone.
pub fn rss_mib(pid: u32) -> f64 {
    proc_field(pid, "status", "VmRSS:").unwrap_or(0.0) / 1024.0
}

/// The most resident memory a process has used (VmHWM), in MiB; NaN when unknown.
pub fn peak_rss_mib(pid: u32) -> f64 {
    proc_field(pid, "status", "VmHWM:").map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Bytes a process has had written to storage (`write_bytes` in `/proc/PID/io`: what reached
/// the block layer, a store's log rewrites and compaction included); 0 when unknown.
pub fn written_bytes(pid: u32) -> u64 {
    proc_field(pid, "io", "write_bytes:").map_or(0, |b| b as u64)
}

/// The number after `label` in `/proc/PID/file` (a trailing `kB` dropped).
fn proc_field(pid: u32, file: &str, label: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie (state Z) has exited; only its parent's wait is missing.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_killed_child_takes_the_processes_it_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        // The shell starts a grandchild (as nginx starts its worker) and waits on it.
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "sleep 300 & echo $! > {}; wait",
            pid_file.display()
        ));
        let mut p = ChildProcess::spawn("forking", cmd, &dir.path().join("log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the grandchild never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(alive(grandchild));
        p.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) {
            assert!(
                Instant::now() < deadline,
                "the grandchild {grandchild} outlived its parent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
