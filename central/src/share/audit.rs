//! The audit trail of video sharing: who granted, revoked and watched what, when. One JSON
//! line per entry in `audit.jsonl` in central's storage folder, synced to disk as written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Value};

pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Audit {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("audit.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Records `what` with its details; a failure to record is logged, not fatal.
    pub fn record(&self, what: &str, details: Value) {
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut line = json!({ "at": at, "what": what });
        if let (Some(l), Value::Object(d)) = (line.as_object_mut(), details) {
            l.extend(d);
        }
        let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let written = writeln!(f, "{line}").and_then(|_| f.sync_data());
        if let Err(e) = written {
            tracing::error!(error = %e, what, "cannot write the audit trail");
        }
    }

    /// The last `n` entries, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
