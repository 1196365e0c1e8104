//! Pages in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/browser/watch.mjs`, installed by `deploy/bootstrap.sh`).

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use anyhow::Context as _;

use crate::{workspace_root, Result};

/// One `<video data-camera>` of a page.
#[derive(Debug, Clone, Deserialize)]
pub struct VideoState {
    pub camera: String,
    /// `currentTime`, seconds.
    pub time: f64,
    pub width: u32,
    pub height: u32,
}

/// The page's videos, looked at twice, and the notes it shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Watched {
    pub first: Vec<VideoState>,
    pub second: Vec<VideoState>,
    pub notes: Vec<String>,
    /// Whether every video played past the minimum time before the timeout.
    #[serde(skip)]
    pub played: bool,
}

/// Runs `tests/browser/<script>` with `args` under Node; (whether it succeeded, the JSON report
/// it printed last).
fn node(script: &str, args: &[String]) -> Result<(bool, serde_json::Value)> {
    let dir = workspace_root().join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run deploy/bootstrap.sh"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(line).map_err(|e| {
        anyhow::anyhow!(
            "{script} printed no report ({e}); stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.success(), report))
}

/// Opens `url` in headless Chromium, waits until every video has played past `min_time`
/// seconds (at most `timeout`), then reads them twice, `gap` apart.
pub fn watch(url: &str, min_time: f64, timeout: Duration, gap: Duration) -> Result<Watched> {
    let (played, report) = node(
        "watch.mjs",
        &[
            url.to_owned(),
            min_time.to_string(),
            timeout.as_millis().to_string(),
            gap.as_millis().to_string(),
        ],
    )?;
    let mut watched: Watched = serde_json::from_value(report)?;
    watched.played = played;
    Ok(watched)
}

/// [`watch`] from async code, for a page that must play: panics (with what the page showed)
/// unless every video played past `min_time`.
pub async fn watch_playing(url: String, min_time: f64, timeout: Duration) -> Watched {
    let w = tokio::task::spawn_blocking(move || {
        watch(&url, min_time, timeout, Duration::from_millis(1500))
    })
    .await
    .expect("the browser task")
    .expect("the browser ran");
    assert!(w.played, "the video never played: {w:?}");
    let (a, b) = (&w.first[0], &w.second[0]);
    assert!(
        b.time > a.time + 0.5,
        "the video's time does not advance: {w:?}"
    );
    w
}

/// Uses the kiosk page at `url` as a resident would (`tests/browser/kiosk.mjs`): search, grid by
/// address, a report, its progress until `wait_for`, learning content. What the page showed.
pub fn use_kiosk(url: &str, wait_for: &str, timeout: Duration) -> Result<serde_json::Value> {
    let (_, report) = node(
        "kiosk.mjs",
        &[
            url.to_owned(),
            wait_for.to_owned(),
            timeout.as_millis().to_string(),
        ],
    )?;
    Ok(report)
}

/// The operator console in headless Chromium, driven step by step (`tests/browser/console.mjs`)
/// so that a test can change the world between steps.
pub struct ConsoleDriver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ConsoleDriver {
    pub fn start() -> Result<Self> {
        let dir = workspace_root().join("tests/browser");
        anyhow::ensure!(
            dir.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed: run deploy/bootstrap.sh"
        );
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg("console.mjs")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            // Its own group, so that Chromium goes with it (see Drop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        use tokio::io::AsyncBufReadExt as _;
        Ok(Self {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// One step; its answer (`ok` false with an `error` when it failed).
    pub async fn step(&mut self, command: serde_json::Value) -> Result<serde_json::Value> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        let line = tokio::time::timeout(Duration::from_secs(90), self.lines.next_line())
            .await
            .context("the console driver did not answer")??
            .context("the console driver ended")?;
        Ok(serde_json::from_str(&line)?)
    }

    /// A step that must succeed.
    pub async fn must(&mut self, command: serde_json::Value) -> serde_json::Value {
        let what = command.to_string();
        let v = self.step(command).await.expect("the console driver runs");
        assert_eq!(v["ok"], true, "{what}: {v}");
        v
    }

    /// Closes the browser (the script prints nothing for `quit`: it just ends).
    pub async fn quit(mut self) {
        use tokio::io::AsyncWriteExt as _;
        let _ = self.stdin.write_all(b"{\"do\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for ConsoleDriver {
    /// Node and the Chromium it launched: a failed test leaves no browser running.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            crate::process::kill_group(pid);
        }
    }
}
