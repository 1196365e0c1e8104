//! The archive of pruned events: one gzip'd JSON-lines file per pruning pass, under
//! `class/YYYY-MM-DD/` (the UTC day central received the first of them), each line one event
//! with its gateway and when central received it. A file is written whole and synced before
//! its events are deleted; a pass tried again after a crash writes the same file again.

use std::io::Write;
use std::path::{Path, PathBuf};

use firmware_config::wire::Event;
use serde::Serialize;

use crate::store::Expired;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("archive line: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One line of the archive.
#[derive(Serialize)]
struct Line<'a> {
    gateway: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    received: time::OffsetDateTime,
    #[serde(flatten)]
    event: &'a Event,
}

/// Writes `expired` under `dir`; returns the file and its size.
pub fn write(dir: &Path, expired: &Expired) -> Result<Option<(PathBuf, u64)>, ArchiveError> {
    let Some(name) = expired.name() else {
        return Ok(None);
    };
    if expired.events() == 0 {
        return Ok(None);
    }
    let first = expired.chunks.first().map_or(0, |c| c.received_ms);
    let day = time::OffsetDateTime::from_unix_timestamp(first / 1000)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "undated".into());
    let folder = dir.join(expired.class.as_str()).join(day);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ArchiveError::Io { path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let file = folder.join(format!("{name}.jsonl.gz"));
    let part = folder.join(format!("{name}.jsonl.gz.part"));
    let out = std::fs::File::create(&part).map_err(io(&part))?;
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 16, out),
        flate2::Compression::fast(),
    );
    for chunk in &expired.chunks {
        let received = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(chunk.received_ms) * 1_000_000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        for event in &chunk.events {
            serde_json::to_writer(
                &mut gz,
                &Line {
                    gateway: &chunk.gateway,
                    received,
                    event,
                },
            )?;
            gz.write_all(b"\n").map_err(io(&part))?;
        }
    }
    let out = gz
        .finish()
        .map_err(io(&part))?
        .into_inner()
        .map_err(|e| io(&part)(e.into_error()))?;
    out.sync_all().map_err(io(&part))?;
    let bytes = out.metadata().map_err(io(&part))?.len();
    drop(out);
    std::fs::rename(&part, &file).map_err(io(&file))?;
    std::fs::File::open(&folder)
        .and_then(|d| d.sync_all())
        .map_err(io(&folder))?;
    Ok(Some((file, bytes)))
}
