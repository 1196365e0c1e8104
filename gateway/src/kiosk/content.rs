//! Learning-content files for kiosks: the replica names each file by its SHA-256; the bytes
//! are fetched from central over the uplink in pieces (`fetch` → `chunk`), each piece checked
//! against its own hash and appended to `<storage>/content/<sha256>.part` on disk, so a transfer
//! cut off by the WAN resumes where it stopped. A file is kept (renamed to `<sha256>`) only when
//! its whole hash is the one the signed replica names. Files no version names any more are
//! removed.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use firmware_config::masterdata::ContentFile;
use firmware_config::wire::{ContentChunk, ContentFetch, MAX_CHUNK_BYTES};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::replica::Replicas;

/// How long to wait for central's answer to one request before asking again.
const PIECE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed file, how long before the next try (unless something changes first).
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer from central within {0:?}")]
    Timeout(Duration),
    #[error("central: {0}")]
    Central(String),
    #[error("a piece is damaged: {0}")]
    BadPiece(String),
    #[error("the whole file's hash is {got}, not the {want} the replica names")]
    HashMismatch { want: String, got: String },
    #[error("content store: {0}")]
    Io(#[from] std::io::Error),
    #[error("the uplink is down")]
    NoUplink,
    #[error("stopping")]
    Stopped,
}

/// The content folder and the channels between the fetcher and the uplink.
pub struct ContentStore {
    dir: PathBuf,
    /// Wakes the fetcher: the replica changed, or the uplink came up.
    pub wake: Notify,
    chunks: mpsc::UnboundedSender<ContentChunk>,
    /// The file being fetched now, and how far along (for operators).
    progress: Mutex<Option<(String, u64, u64)>>,
}

/// The fetcher's ends: pieces from the uplink in, requests to the uplink out.
pub struct FetcherPorts {
    pub chunks: mpsc::UnboundedReceiver<ContentChunk>,
    pub fetches: mpsc::UnboundedSender<ContentFetch>,
}

impl ContentStore {
    /// Opens (creates) `<storage>/content`; returns the uplink's receiver of requests too.
    pub fn open(
        storage: &Path,
    ) -> std::io::Result<(Self, FetcherPorts, mpsc::UnboundedReceiver<ContentFetch>)> {
        let dir = storage.join("content");
        std::fs::create_dir_all(&dir)?;
        let (chunk_tx, chunk_rx) = mpsc::unbounded_channel();
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
        Ok((
            Self {
                dir,
                wake: Notify::new(),
                chunks: chunk_tx,
                progress: Mutex::new(None),
            },
            FetcherPorts {
                chunks: chunk_rx,
                fetches: fetch_tx,
            },
            fetch_rx,
        ))
    }

    /// A piece arrived from central.
    pub fn deliver(&self, chunk: ContentChunk) {
        let _ = self.chunks.send(chunk);
    }

    /// The path of a complete file, when the gateway has it.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if !is_sha256(sha256) {
            return None;
        }
        let p = self.dir.join(sha256);
        p.is_file().then_some(p)
    }

    /// `(sha256, bytes so far, total)` of the file being fetched.
    pub fn progress(&self) -> Option<(String, u64, u64)> {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_progress(&self, p: Option<(String, u64, u64)>) {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = p;
    }

    /// Removes complete and partial files that `keep` does not name.
    fn sweep(&self, keep: &HashSet<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let sha = name.strip_suffix(".part").unwrap_or(&name);
            if !keep.contains(sha) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %name, "content file no version names any more removed")
                    }
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "cannot remove an old content file")
                    }
                }
            }
        }
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the fetcher uses: the store it fills, the replica that names the files, whether the
/// uplink is up, and its counters.
pub struct Fetcher {
    pub store: Arc<ContentStore>,
    pub replica: Arc<Replicas>,
    pub uplink_connected: Gauge,
    pub files_fetched: Counter,
    pub bytes_fetched: Counter,
    pub fetch_errors: Counter,
}

/// Fetches what the replica names and the folder lacks, one file at a time, until `token`.
pub async fn run(f: Fetcher, mut ports: FetcherPorts, token: CancellationToken) {
    let store = &f.store;
    loop {
        let replica = f.replica.current();
        let files = &replica.dataset.content;
        if replica.version > 0 {
            let keep: HashSet<&str> = files.iter().map(|f| f.sha256.as_str()).collect();
            store.sweep(&keep);
        }
        let missing: Vec<ContentFile> = files
            .iter()
            .filter(|f| store.path_of(&f.sha256).is_none())
            .cloned()
            .collect();
        let mut failed = false;
        let mut done = true;
        for file in &missing {
            match fetch_file(&f, &mut ports, file, &token).await {
                Ok(()) => {
                    f.files_fetched.inc();
                    tracing::info!(id = %file.id, title = %file.title, bytes = file.bytes, "content file fetched");
                }
                Err(FetchError::Stopped) => return,
                // The uplink wakes the fetcher when it is back.
                Err(FetchError::NoUplink) => {
                    done = false;
                    break;
                }
                Err(e) => {
                    failed = true;
                    done = false;
                    f.fetch_errors.inc();
                    tracing::warn!(id = %file.id, error = %e, "content file not fetched yet; will try again");
                    break;
                }
            }
        }
        store.set_progress(None);
        if done && !missing.is_empty() {
            // Fetched everything: look again (the replica may have changed meanwhile).
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = store.wake.notified() => {}
            _ = tokio::time::sleep(RETRY_AFTER), if failed => {}
        }
    }
}

async fn fetch_file(
    f: &Fetcher,
    ports: &mut FetcherPorts,
    file: &ContentFile,
    token: &CancellationToken,
) -> Result<(), FetchError> {
    let store = &f.store;
    let part = store.dir.join(format!("{}.part", file.sha256));
    let mut offset = match std::fs::metadata(&part) {
        Ok(m) if m.len() <= file.bytes => m.len(),
        Ok(_) => {
            std::fs::remove_file(&part)?;
            0
        }
        Err(_) => 0,
    };
    if offset == 0 {
        // An empty file, too, is a file.
        std::fs::File::create(&part)?;
    }
    if offset > 0 {
        tracing::info!(id = %file.id, offset, total = file.bytes, "resuming a content file");
    }
    while offset < file.bytes {
        store.set_progress(Some((file.sha256.clone(), offset, file.bytes)));
        let ask = ContentFetch {
            sha256: file.sha256.clone(),
            offset,
            len: (file.bytes - offset).min(MAX_CHUNK_BYTES),
        };
        if f.uplink_connected.get() != 1 {
            return Err(FetchError::NoUplink);
        }
        if ports.fetches.send(ask).is_err() {
            return Err(FetchError::Stopped);
        }
        let deadline = tokio::time::Instant::now() + PIECE_TIMEOUT;
        let piece = loop {
            let chunk = tokio::select! {
                _ = token.cancelled() => return Err(FetchError::Stopped),
                c = tokio::time::timeout_at(deadline, ports.chunks.recv()) => match c {
                    Ok(Some(c)) => c,
                    Ok(None) => return Err(FetchError::Stopped),
                    Err(_) => return Err(FetchError::Timeout(PIECE_TIMEOUT)),
                },
            };
            // An answer to an earlier request (resent after a timeout) is not this one.
            if chunk.sha256 == file.sha256 && chunk.offset == offset {
                break chunk;
            }
        };
        let bytes = check_piece(&piece, file)?;
        let n = bytes.len() as u64;
        let path = part.clone();
        tokio::task::spawn_blocking(move || append(&path, &bytes))
            .await
            .map_err(|e| FetchError::Io(std::io::Error::other(e)))??;
        f.bytes_fetched.inc_by(n);
        offset += n;
    }
    let (path, want) = (part.clone(), file.sha256.clone());
    let got = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|e| FetchError::Io(std::io::Error::other(e)))??;
    if got != want {
        // Start over: whatever is in the partial file cannot be trusted.
        let _ = std::fs::remove_file(&part);
        return Err(FetchError::HashMismatch { want, got });
    }
    std::fs::rename(&part, store.dir.join(&file.sha256))?;
    if let Ok(d) = std::fs::File::open(&store.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The piece's bytes, when it is what was asked for and intact.
fn check_piece(piece: &ContentChunk, file: &ContentFile) -> Result<Vec<u8>, FetchError> {
    if let Some(e) = &piece.error {
        return Err(FetchError::Central(e.clone()));
    }
    if piece.total != file.bytes {
        return Err(FetchError::BadPiece(format!(
            "central's file has {} bytes, the replica says {}",
            piece.total, file.bytes
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(piece.data.as_bytes())
        .map_err(|e| FetchError::BadPiece(format!("not base64: {e}")))?;
    if bytes.is_empty() || bytes.len() as u64 > MAX_CHUNK_BYTES {
        return Err(FetchError::BadPiece(format!("{} bytes", bytes.len())));
    }
    let sha = firmware_config::masterdata::sha256_hex(&bytes);
    if sha != piece.chunk_sha256 {
        return Err(FetchError::BadPiece(format!(
            "its hash is {sha}, the piece says {}",
            piece.chunk_sha256
        )));
    }
    Ok(bytes)
}

/// Appends and makes it durable: the file's length is how far a resumed transfer starts.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    firmware_config::masterdata::sha256_hex_of(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::masterdata::ContentKind;

    fn file(bytes: &[u8]) -> ContentFile {
        ContentFile {
            id: "guide".into(),
            kind: ContentKind::Document,
            title: "办事指南".into(),
            file_name: "guide.txt".into(),
            sha256: firmware_config::masterdata::sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }

    fn piece(f: &ContentFile, data: &[u8]) -> ContentChunk {
        ContentChunk {
            sha256: f.sha256.clone(),
            offset: 0,
            total: f.bytes,
            chunk_sha256: firmware_config::masterdata::sha256_hex(data),
            data: base64::engine::general_purpose::STANDARD.encode(data),
            error: None,
        }
    }

    #[test]
    fn a_piece_is_taken_only_when_intact() {
        let f = file(b"hello kiosk");
        assert_eq!(check_piece(&piece(&f, b"hello"), &f).unwrap(), b"hello");
        let mut bad = piece(&f, b"hello");
        bad.data = base64::engine::general_purpose::STANDARD.encode(b"hellO");
        assert!(matches!(
            check_piece(&bad, &f),
            Err(FetchError::BadPiece(_))
        ));
        let mut other = piece(&f, b"hello");
        other.total = 99;
        assert!(matches!(
            check_piece(&other, &f),
            Err(FetchError::BadPiece(_))
        ));
        let mut missing = piece(&f, b"");
        missing.error = Some("no such content file".into());
        assert!(matches!(
            check_piece(&missing, &f),
            Err(FetchError::Central(_))
        ));
        assert!(matches!(
            check_piece(&piece(&f, b""), &f),
            Err(FetchError::BadPiece(_))
        ));
    }

    #[test]
    fn a_file_hash_is_its_bytes_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.part");
        append(&p, b"hello ").unwrap();
        append(&p, b"kiosk").unwrap();
        assert_eq!(
            hash_file(&p).unwrap(),
            firmware_config::masterdata::sha256_hex(b"hello kiosk")
        );
        assert!(is_sha256(&hash_file(&p).unwrap()));
        assert!(!is_sha256("../../etc/passwd"));
    }
}
