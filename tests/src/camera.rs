//! A real RTSP test camera: GStreamer's RTSP server (Debian's packages), driven by
//! `tests/fixtures/rtsp_camera.py` under `/usr/bin/python3`.
//!
//! Live test patterns (moving, static, scene, turned, object, black) in H.264 or H.265 for functional tests; a replay
//! mode that loops a pre-encoded file with steadily increasing timestamps, for benchmarks where
//! the fixture must cost little CPU; optional digest authentication; stop and restart on the same
//! port to simulate a camera fault.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{free_port, workspace_root, FixtureDir, Result};

pub const PYTHON: &str = "/usr/bin/python3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    fn arg(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// A ball sweeping over the whole picture.
    Moving,
    /// Bars that never change: a frozen picture.
    Static,
    /// Bars with a live noise patch: a quiet scene seen by a live sensor.
    Scene,
    /// The scene upside down: the camera was turned.
    Turned,
    /// The scene with a ball moving in a box a quarter of the picture wide, its top-left
    /// corner at these fractions of the width and height.
    Object(f64, f64),
    Black,
}

impl Pattern {
    fn arg(self) -> &'static str {
        match self {
            Pattern::Moving => "moving",
            Pattern::Static => "static",
            Pattern::Scene => "scene",
            Pattern::Turned => "turned",
            Pattern::Object(..) => "object",
            Pattern::Black => "black",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub codec: Codec,
    pub pattern: Pattern,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames between keyframes; `fps` (one a second) by default.
    pub keyint: Option<u32>,
    /// Require digest authentication with this user and password.
    pub auth: Option<(String, String)>,
    /// Replay this pre-encoded Annex B file in a loop instead of encoding live.
    pub replay: Option<PathBuf>,
    /// `Pattern::Object`: the object shows only after this many seconds of streaming.
    pub object_after: Option<u32>,
}

impl Default for CameraOptions {
    fn default() -> Self {
        Self {
            codec: Codec::H264,
            pattern: Pattern::Moving,
            width: 640,
            height: 360,
            fps: 25,
            keyint: None,
            auth: None,
            replay: None,
            object_after: None,
        }
    }
}

impl CameraOptions {
    /// A 320×180 H.264 camera showing `pattern`: cheap to encode, enough for every test that
    /// does not care about the size.
    pub fn small(pattern: Pattern) -> Self {
        Self {
            pattern,
            width: 320,
            height: 180,
            ..Self::default()
        }
    }
}

/// A `[[cameras]]` table for a gateway config: camera `id` at `url`, a 2 s stall timeout, and
/// `extra` lines (its own keys first, then sub-tables).
pub fn camera_toml(id: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nurl = \"{url}\"\nstall_timeout = \"2s\"\n{extra}"
    )
}

pub struct TestCamera {
    pub port: u16,
    pub options: CameraOptions,
    child: Option<Child>,
    dir: FixtureDir,
    starts: u32,
}

impl TestCamera {
    pub fn start(options: CameraOptions) -> Result<Self> {
        let mut cam = Self {
            port: free_port(),
            options,
            child: None,
            dir: FixtureDir::new("camera")?,
            starts: 0,
        };
        cam.launch()?;
        Ok(cam)
    }

    fn script() -> PathBuf {
        workspace_root().join("tests/fixtures/rtsp_camera.py")
    }

    fn launch(&mut self) -> Result<()> {
        anyhow::ensure!(
            Path::new(PYTHON).exists(),
            "{PYTHON} not found: run deploy/bootstrap.sh"
        );
        let o = &self.options;
        let mut cmd = Command::new(PYTHON);
        cmd.arg(Self::script())
            .args(["--port", &self.port.to_string()])
            .args(["--codec", o.codec.arg(), "--pattern", o.pattern.arg()])
            .args([
                "--width",
                &o.width.to_string(),
                "--height",
                &o.height.to_string(),
            ])
            .args(["--fps", &o.fps.to_string()]);
        if let Pattern::Object(x, y) = o.pattern {
            cmd.args(["--object-at", &format!("{x},{y}")]);
            if let Some(after) = o.object_after {
                cmd.args(["--object-after", &after.to_string()]);
            }
        }
        if let Some(k) = o.keyint {
            cmd.args(["--keyint", &k.to_string()]);
        }
        if let Some((user, pass)) = &o.auth {
            cmd.args(["--user", user, "--password", pass]);
        }
        if let Some(file) = &o.replay {
            cmd.arg("--replay").arg(file);
        }
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("camera.log"))?;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start the test camera: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(_) => Ok(()),
            Err(_) => {
                self.stop();
                anyhow::bail!("test camera did not get ready:\n{}", self.log_text())
            }
        }
    }

    /// `rtsp://127.0.0.1:PORT/cam` (without credentials).
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("rtsp://127.0.0.1:{}/cam", self.port)).expect("a well-formed URL")
    }

    /// Stops the camera at once (SIGKILL), as a power cut would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child; a frozen process must be let go before it dies.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
            crate::process::kill_group(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the camera (SIGSTOP): its connections stay open but nothing more is sent, as a
    /// hung camera would behave.
    pub fn freeze(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a frozen camera run on (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, sig: i32) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow::anyhow!("camera not running"))?;
        // SAFETY: kill(2) on the child we spawned and still own.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        anyhow::ensure!(
            rc == 0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Starts the camera again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("camera.log")).unwrap_or_default()
    }

    /// Encodes `seconds` of the moving pattern to an Annex B file for replay, once per set of
    /// parameters (cached under `target/fixture-cache`).
    pub fn pre_encoded(
        codec: Codec,
        width: u32,
        height: u32,
        fps: u32,
        seconds: u32,
    ) -> Result<PathBuf> {
        let cache = workspace_root().join("target/fixture-cache");
        std::fs::create_dir_all(&cache)?;
        let file = cache.join(format!(
            "moving-{width}x{height}-{fps}fps-{seconds}s.{}",
            codec.arg()
        ));
        if file.exists() {
            return Ok(file);
        }
        let partial = file.with_extension("partial");
        let out = Command::new(PYTHON)
            .arg(Self::script())
            .args([
                "--codec",
                codec.arg(),
                "--width",
                &width.to_string(),
                "--height",
                &height.to_string(),
            ])
            .args(["--fps", &fps.to_string(), "--seconds", &seconds.to_string()])
            .arg("--encode-to")
            .arg(&partial)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "pre-encoding failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &file)?;
        Ok(file)
    }
}

impl Drop for TestCamera {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test camera log:\n{}", self.log_text());
        }
        self.stop();
    }
}
