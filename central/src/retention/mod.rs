//! Retention: events are kept for their class's time (counted from when central received
//! them), then written to the archive, if there is one, and deleted a bucket at a time (see
//! `store::buckets`). The pruner runs in the background, off the ingest path: it reads a
//! bucket in pages of a few hundred chunks (a handful while the disk is full), each page its
//! own blocking task, and dropping the tree is one short step, so batches and
//! acknowledgements never wait long for it. Nothing is dropped that the archive could not
//! take.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::central::Retention;
use firmware_config::runtime::clock::Clock;
use firmware_config::wire::EventClass;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ClassLabel, Metrics};
use crate::pg::events::{self as pg_events, PgEvents};
use crate::store::{Bucket, EventBackend, EventStore, Expired, StoreError};

pub mod archive;

/// Chunks per archive page while the disk has room, and while it is full (each page is one
/// file, written whole before anything is dropped).
const PAGE: usize = 256;
const PAGE_ON_FULL_DISK: usize = 8;

fn label(class: EventClass) -> ClassLabel {
    ClassLabel {
        class: class.as_str().to_owned(),
    }
}

/// Prunes every `settings.prune_every` until `token` is cancelled; fails when the store has
/// stopped on a full disk.
pub async fn run(
    events: EventBackend,
    settings: Retention,
    metrics: Arc<Metrics>,
    clock: Clock,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let mut last_failure: Option<std::time::Instant> = None;
    loop {
        let pruned = match &events {
            EventBackend::Sled(store) => prune_once(store, &settings, &metrics, clock).await,
            EventBackend::Postgres(pg) => prune_once_pg(pg, &settings, &metrics, clock).await,
        };
        match pruned {
            Ok(()) => last_failure = None,
            Err(StoreError::Stopped) => return Err(StoreError::Stopped),
            Err(e) => {
                // One line a minute while it goes on, not one per pass.
                if last_failure.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!(error = %e, "retention: pruning failed; nothing was deleted that was not archived, it is tried again");
                    last_failure = Some(std::time::Instant::now());
                }
            }
        }
        match &events {
            EventBackend::Sled(store) => refresh_gauges(store, &metrics).await,
            EventBackend::Postgres(pg) => refresh_gauges_pg(pg, &metrics).await,
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(settings.prune_every) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
}

impl From<PruneError> for StoreError {
    fn from(e: PruneError) -> Self {
        match e {
            PruneError::Store(e) => e,
            PruneError::Archive(e) => StoreError::Flush(e.to_string()),
        }
    }
}

/// Prunes every class down to its time: each bucket whose every event is past it is written
/// to the archive page by page, then dropped whole.
pub async fn prune_once(
    store: &Arc<EventStore>,
    settings: &Retention,
    metrics: &Metrics,
    clock: Clock,
) -> Result<(), StoreError> {
    for class in crate::store::CLASSES {
        let before = cutoff(settings, class, clock);
        let (mut events, mut files) = (0u64, 0usize);
        for bucket in store.expired_buckets(class, before) {
            if let Some(dir) = &settings.archive_dir {
                files += archive_bucket(store, &bucket, dir, metrics).await?;
            }
            let s = store.clone();
            let (n, dropped) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                let n = s.bucket_events(&bucket)?;
                Ok((n, s.drop_bucket(&bucket)?))
            })
            .await
            .map_err(|e| StoreError::Flush(format!("pruning task: {e}")))??;
            if !dropped {
                // The disk is at its last bytes: the next pass tries again.
                break;
            }
            metrics.events_pruned.get_or_create(&label(class)).inc_by(n);
            events += n;
        }
        log_pruned(class, events, files, settings);
    }
    Ok(())
}

/// When the newest event of `class` past its time was received (Unix ms).
fn cutoff(settings: &Retention, class: EventClass, clock: Clock) -> i64 {
    let keep = i64::try_from(settings.keep(class).as_millis()).unwrap_or(i64::MAX);
    clock.unix_ms().saturating_sub(keep)
}

fn log_pruned(class: EventClass, events: u64, files: usize, settings: &Retention) {
    if events > 0 {
        tracing::info!(
            class = %label(class).class,
            events,
            archive_files = files,
            kept_for = %format!("{:?}", settings.keep(class)),
            "retention: pruned events past their time"
        );
    }
}

/// Prunes every class down to its time in PostgreSQL, a page of rows per transaction, each
/// page archived before its delete commits.
pub async fn prune_once_pg(
    pg: &PgEvents,
    settings: &Retention,
    metrics: &Metrics,
    clock: Clock,
) -> Result<(), StoreError> {
    for class in crate::store::CLASSES {
        let before = cutoff(settings, class, clock);
        let (mut events, mut files) = (0usize, 0usize);
        loop {
            let page = match pg
                .prune_page(class, before, PAGE, settings.archive_dir.as_deref())
                .await
            {
                Ok(page) => page,
                Err(pg_events::PruneError::Archive(e)) => {
                    metrics.archive_failures.inc();
                    return Err(StoreError::Flush(e.to_string()));
                }
                Err(pg_events::PruneError::Store(e)) => return Err(e),
            };
            if let Some((_, bytes)) = &page.file {
                metrics.archive_bytes.inc_by(*bytes);
                files += 1;
            }
            metrics
                .events_pruned
                .get_or_create(&label(class))
                .inc_by(page.events as u64);
            events += page.events;
            if page.events < PAGE {
                break;
            }
        }
        log_pruned(class, events as u64, files, settings);
    }
    Ok(())
}

async fn refresh_gauges_pg(pg: &PgEvents, metrics: &Metrics) {
    for class in crate::store::CLASSES {
        match pg.oldest(class).await {
            Ok(Some(ms)) => {
                metrics
                    .events_oldest_received
                    .get_or_create(&label(class))
                    .set(ms / 1000);
            }
            Ok(None) => {
                metrics.events_oldest_received.remove(&label(class));
            }
            Err(_) => return,
        }
    }
    if let Ok(bytes) = pg.size_on_disk().await {
        metrics
            .store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Writes every page of `bucket` to the archive under `dir`; returns the files written.
async fn archive_bucket(
    store: &Arc<EventStore>,
    bucket: &Bucket,
    dir: &std::path::Path,
    metrics: &Metrics,
) -> Result<usize, StoreError> {
    let mut after: Option<Vec<u8>> = None;
    let mut files = 0;
    loop {
        let max = if store.disk().full() {
            PAGE_ON_FULL_DISK
        } else {
            PAGE
        };
        let (s, dir, b, from) = (store.clone(), dir.to_owned(), *bucket, after.take());
        let page = tokio::task::spawn_blocking(move || -> Result<_, PruneError> {
            let page: Expired = s.read_bucket(&b, from.as_deref(), max)?;
            let file = archive::write(&dir, &page)?;
            Ok((page.chunks.len(), page.last_key().map(<[u8]>::to_vec), file))
        })
        .await
        .map_err(|e| StoreError::Flush(format!("pruning task: {e}")))?;
        let (chunks, last, file) = match page {
            Err(PruneError::Archive(e)) => {
                metrics.archive_failures.inc();
                return Err(PruneError::Archive(e).into());
            }
            other => other?,
        };
        if let Some((_, bytes)) = &file {
            metrics.archive_bytes.inc_by(*bytes);
            files += 1;
        }
        if chunks < max {
            return Ok(files);
        }
        after = last;
    }
}

async fn refresh_gauges(store: &Arc<EventStore>, metrics: &Metrics) {
    let s = store.clone();
    let Ok(Ok((oldest, bytes))) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let oldest = crate::store::CLASSES
            .iter()
            .map(|c| Ok((*c, s.oldest(*c)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((oldest, s.size_on_disk()?))
    })
    .await
    else {
        return;
    };
    for (class, at) in oldest {
        match at {
            Some(ms) => {
                metrics
                    .events_oldest_received
                    .get_or_create(&label(class))
                    .set(ms / 1000);
            }
            None => {
                metrics.events_oldest_received.remove(&label(class));
            }
        }
    }
    metrics.store_bytes.set(bytes as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retention_tests::ev;
    use firmware_config::ids::GatewayId;
    use std::io::Read;

    fn metrics() -> Arc<Metrics> {
        let config: firmware_config::config::central::CentralConfig =
            firmware_config::config::parse_elsewhere(
                firmware_config::examples::CENTRAL,
                std::path::Path::new("/"),
            )
            .unwrap();
        Arc::new(Metrics::new(&config))
    }

    fn settings(archive: Option<std::path::PathBuf>) -> Retention {
        Retention {
            telemetry: Duration::from_secs(3600),
            archive_dir: archive,
            ..Retention::default()
        }
    }

    /// 600 telemetry events received two hours ago (more than one pass), one alert, and
    /// one telemetry event just now.
    fn store(dir: &std::path::Path) -> Arc<EventStore> {
        let gw = GatewayId::new("gw-a").unwrap();
        std::fs::create_dir_all(dir).unwrap();
        {
            let s = EventStore::open(dir, 1 << 20, 0, crate::store::retention_tests::hourly())
                .unwrap()
                .with_clock(Clock::system().skewed(-time::Duration::hours(2)));
            for i in 0..300 {
                s.store_batch(
                    &gw,
                    &[
                        ev(2 * i + 1, EventClass::Telemetry),
                        ev(2 * i + 2, EventClass::Telemetry),
                    ],
                )
                .unwrap();
            }
            s.store_batch(&gw, &[ev(601, EventClass::Alert)]).unwrap();
        }
        let s = EventStore::open(dir, 1 << 20, 0, crate::store::retention_tests::hourly()).unwrap();
        s.store_batch(&gw, &[ev(602, EventClass::Telemetry)])
            .unwrap();
        Arc::new(s)
    }

    fn kept(s: &EventStore) -> Vec<u64> {
        let gw = GatewayId::new("gw-a").unwrap();
        s.events_after(&gw, 0, 10_000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[tokio::test]
    async fn a_pass_archives_then_deletes_what_is_past_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let s = store(&dir.path().join("store"));
        let m = metrics();
        prune_once(&s, &settings(Some(archive.clone())), &m, Clock::system())
            .await
            .unwrap();
        assert_eq!(kept(&s), vec![601, 602]);
        assert_eq!(
            m.events_pruned
                .get_or_create(&label(EventClass::Telemetry))
                .get(),
            600
        );
        // Every pruned event is in the archive once, with its gateway and receipt.
        let mut lines = Vec::new();
        for day in std::fs::read_dir(archive.join("telemetry")).unwrap() {
            for file in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                assert!(path.to_string_lossy().ends_with(".jsonl.gz"), "{path:?}");
                let mut text = String::new();
                flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
                    .read_to_string(&mut text)
                    .unwrap();
                lines.extend(
                    text.lines()
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
                );
            }
        }
        let mut seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
        assert_eq!(lines[0]["gateway"], "gw-a");
        assert_eq!(lines[0]["class"], "telemetry");
        assert!(lines[0]["payload"]["n"].is_u64());
        assert!(lines[0]["received"].as_str().unwrap().len() > 10);
        assert!(m.archive_bytes.get() > 0);
        // Nothing more to do on the next pass.
        prune_once(&s, &settings(Some(archive)), &m, Clock::system())
            .await
            .unwrap();
        assert_eq!(kept(&s), vec![601, 602]);
    }

    #[tokio::test]
    async fn nothing_is_deleted_that_the_archive_did_not_take() {
        let dir = tempfile::tempdir().unwrap();
        // The archive's place is a file: no folder can be made there.
        let archive = dir.path().join("archive");
        std::fs::write(&archive, b"not a folder").unwrap();
        let s = store(&dir.path().join("store"));
        let m = metrics();
        let r = prune_once(&s, &settings(Some(archive)), &m, Clock::system()).await;
        assert!(r.is_err());
        assert_eq!(kept(&s).len(), 602);
        assert_eq!(m.archive_failures.get(), 1);
        // Without an archive, they are discarded.
        prune_once(&s, &settings(None), &m, Clock::system())
            .await
            .unwrap();
        assert_eq!(kept(&s), vec![601, 602]);
    }
}
