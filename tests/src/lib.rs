//! Real fixtures for GridEdge's system tests: a Mosquitto broker, an RTSP test camera served by
//! GStreamer, a test PKI, and central and gateways started in-process or as child processes.
//!
//! Every fixture takes free ports on 127.0.0.1, keeps its files and logs in a temporary folder,
//! and tears itself down on drop. When a test panics, the folder is kept and its path printed,
//! so the logs of a failed run can be read.

pub mod backbone;
pub mod bench;
pub mod bridge;
pub mod browser;
pub mod camera;
pub mod cgroup;
pub mod chaos;
pub mod disk;
pub mod live;
pub mod mosquitto;
pub mod nats;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod services;
pub mod terminals;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use camera::{camera_toml, CameraOptions, Codec, Pattern, TestCamera};
pub use mosquitto::Mosquitto;
pub use pki::TestPki;

pub type Result<T> = anyhow::Result<T>;

/// A port that was free a moment ago on 127.0.0.1, taken below the kernel's ephemeral range
/// (32768 and up by default) so that a fixture restarted on it does not find it taken by some
/// client's outgoing connection. It stays this test process's own until it exits (see
/// [`claim_port`]), so a camera stopped and started again gets its port back.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread test processes apart: each starts at an offset from its pid.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..12_000 {
        let mut port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port >= 32_000 {
            NEXT.store(20_000, Ordering::SeqCst);
            port = 20_000;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && claim_port(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between 20000 and 32000")
}

/// Claims `port` for this process among every test process on the machine: an exclusive
/// `flock` on `$TMPDIR/gridedge-ports/PORT`, held until the process exits (the kernel lets go
/// of it then, even after SIGKILL). Checking that a port binds is not enough: a fixture stopped
/// in the middle of a test (a camera power cut) leaves its port free for a moment, and another
/// test process running beside it took it (CI: "Address already in use" on the restart).
fn claim_port(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("gridedge-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        // No place for claims: fall back to the bind check alone.
        return true;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return true;
    };
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(file);
    true
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A temporary folder for one fixture that survives a failing test.
#[derive(Debug)]
pub struct FixtureDir {
    dir: Option<tempfile::TempDir>,
    /// Where the folder is once kept.
    kept: Option<PathBuf>,
    what: String,
}

impl FixtureDir {
    pub fn new(what: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gridedge-{what}-"))
            .tempdir()?;
        Ok(Self {
            dir: Some(dir),
            kept: None,
            what: what.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        match (&self.dir, &self.kept) {
            (Some(d), _) => d.path(),
            (None, Some(kept)) => kept,
            (None, None) => Path::new("/nonexistent"),
        }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path().join(p)
    }

    /// Keeps the folder after the fixture is gone (a benchmark that found a fault keeps its
    /// logs); its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            self.kept = Some(d.keep());
        }
        self.path().to_owned()
    }
}

impl Drop for FixtureDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!(
                    "test failed: {} files and logs kept in {}",
                    self.what,
                    kept.display()
                );
            }
        }
    }
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Installs a test log subscriber once (`RUST_LOG` to see more).
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// `GET url` and its body as text; panics (failing the test) when the request fails.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    let url = url.as_str().to_owned();
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}")),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// `GET url` as JSON, or `None` when anything fails (for polling with [`eventually`]).
pub async fn try_json(url: impl reqwest::IntoUrl) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// [`try_json`] with central's test API token (for central's operator endpoints).
pub async fn try_json_api(url: impl reqwest::IntoUrl) -> Option<serde_json::Value> {
    services::api_client()
        .get(url)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// `GET url` as text, or `None` when anything fails (for polling with [`eventually`]).
pub async fn try_text(url: impl reqwest::IntoUrl) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// Width and height of a baseline or progressive JPEG, read from its frame header; `None` when
/// the bytes are not a complete JPEG (no start or end marker, or no frame header).
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) || !jpeg.ends_with(&[0xFF, 0xD9]) {
        return None;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(marker, 0xC0..=0xC3) {
            let h = u16::from_be_bytes([*jpeg.get(i + 5)?, *jpeg.get(i + 6)?]);
            let w = u16::from_be_bytes([*jpeg.get(i + 7)?, *jpeg.get(i + 8)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_given_out_stays_claimed_against_other_processes() {
        let port = free_port();
        assert!(!claim_port(port), "claimed twice in one process");
        // Another process (util-linux flock) cannot take the claim either.
        let file = std::env::temp_dir()
            .join("gridedge-ports")
            .join(port.to_string());
        let other = std::process::Command::new("flock")
            .args(["-n", "-E", "75"])
            .arg(&file)
            .arg("true")
            .status()
            .unwrap();
        assert_eq!(other.code(), Some(75), "another process took port {port}");
        assert_ne!(free_port(), port);
    }
}
