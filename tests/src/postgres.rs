//! A real PostgreSQL (Debian's `postgresql-15`) in a temporary folder, run as the unprivileged
//! user `nobody` on a free port of 127.0.0.1, with durable settings (fsync and synchronous
//! commit on): what a kill -9 test needs to mean anything.
//!
//! PostgreSQL refuses to run as root, so the cluster's folder belongs to `nobody` and every
//! PostgreSQL program runs through `setpriv`, which execs it in place: the fixture's child is
//! the postmaster itself, and killing its process group kills every backend with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ChildProcess;
use crate::{free_port, wait_for_port, FixtureDir, Result};

/// Where Debian's package puts the server's programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The user the server runs as.
const USER: &str = "nobody";

pub struct Postgres {
    pub port: u16,
    process: Option<ChildProcess>,
    data: PathBuf,
    dir: FixtureDir,
}

/// `cmd` run as `nobody`, with no supplementary groups.
/// `program` run as `nobody` (its group `nogroup`, no other groups).
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        USER,
        "--regid",
        "nogroup",
        "--clear-groups",
        "--",
    ])
    .arg(program);
    cmd
}

/// Gives `path` and everything under it to `nobody`.
pub fn chown_to_nobody(path: &Path) -> Result<()> {
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:nogroup")])
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "chown {} failed", path.display());
    Ok(())
}

impl Postgres {
    /// A new cluster (`initdb`, superuser `postgres`, trusted on 127.0.0.1 only), started.
    pub fn start() -> Result<Self> {
        let initdb = Path::new(BIN).join("initdb");
        anyhow::ensure!(
            initdb.exists(),
            "{} not found: run deploy/bootstrap.sh",
            initdb.display()
        );
        let dir = FixtureDir::new("postgres")?;
        // nobody must reach its folder through the fixture's (private) temporary folder.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let home = dir.join("pg");
        std::fs::create_dir(&home)?;
        chown_to_nobody(&home)?;
        let data = home.join("data");
        let out = as_nobody(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                // A throwaway cluster: its own files need not be synced at creation.
                "--no-sync",
                "--no-instructions",
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: free_port(),
            process: None,
            data,
            dir,
        };
        pg.launch()?;
        Ok(pg)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = as_nobody(&Path::new(BIN).join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(self.dir.join("pg"))
            .args(["-p", &self.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
            ]);
        let log = self.dir.join("postgres.log");
        let process = ChildProcess::spawn("postgres", cmd, &log)?;
        // The port opens before the server accepts sessions (crash recovery runs in between).
        let ready = wait_for_port(self.addr(), Duration::from_secs(20)).and_then(|_| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ok = Command::new(Path::new(BIN).join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    return Ok(());
                }
                anyhow::ensure!(Instant::now() < deadline, "not ready after 60 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        if let Err(e) = ready {
            anyhow::bail!("postgres did not start: {e}\n{}", process.log_text());
        }
        self.process = Some(process);
        Ok(())
    }

    /// The postmaster's process id (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildProcess::pid)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one SQL script with `psql` and returns what it printed (unaligned, tuples only).
    /// The replica holding `gateway`'s live lease, if one does.
    pub fn lease_owner(&self, gateway: &str) -> Option<String> {
        let o = self
            .psql(&format!(
                "SELECT owner FROM live_leases WHERE gateway = '{gateway}'"
            ))
            .ok()?;
        (!o.is_empty()).then_some(o)
    }

    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new(Path::new(BIN).join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .arg("-c")
            .arg(sql)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Kills the postmaster and every backend at once (SIGKILL), as a power cut would, and
    /// waits until they are gone; what was committed survives a restart. PostgreSQL puts each
    /// child in a session of its own, so killing the postmaster's group alone would leave
    /// backends serving their connections for a moment: the postmaster is stopped (it forks no
    /// more), then its children are killed, then it is.
    pub fn kill(&mut self) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        let children = match p.pid() {
            Some(pid) => {
                // SAFETY: kill(2) on our own child; no memory is involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
                crate::process::children_of(pid)
            }
            None => Vec::new(),
        };
        for child in &children {
            // SAFETY: as above, on the postmaster's own children.
            unsafe { libc::kill(*child as libc::pid_t, libc::SIGKILL) };
        }
        p.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|c| crate::process::is_alive(*c)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and data, after [`Self::kill`]: waits for the
    /// killed backends to be gone first (the server will not start while they hold its
    /// shared memory), then runs crash recovery.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(self.process.is_none(), "postgres is still running");
        let pid_file = self.data.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            // SAFETY: kill(2) with signal 0 only asks whether the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.launch()
    }

    pub fn log_text(&self) -> String {
        self.process
            .as_ref()
            .map(ChildProcess::log_text)
            .unwrap_or_default()
    }
}
