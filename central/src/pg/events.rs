//! Gateways' events in PostgreSQL: one row per `(gateway, seq)`, and per gateway the set of
//! sequence numbers held (pruned ones included), the same deduplication as the sled store's.
//!
//! A group of batches is one transaction. It locks the seen sets of the group's gateways (in
//! name order, so two replicas never wait on each other in a circle), keeps the events they do
//! not hold, inserts those, writes the sets back and commits; only then are the batches
//! acknowledged. Two replicas given the same batch (a gateway that sent it again after a
//! failover) take turns on the gateway's row: the second finds every event held. The primary
//! key catches anything that would slip past.

use std::collections::HashMap;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use firmware_config::wire::{Event, EventClass};

use super::{PgError, Pool};
use crate::retention::archive::{self, ArchiveError};
use crate::store::{self, BatchIn, Expired, ExpiredChunk, StoreError, Stored, StoredEvent};

pub struct PgEvents {
    pool: Pool,
    clock: Clock,
}

/// The columns of the events a group inserts.
#[derive(Default)]
struct Rows {
    gateway: Vec<String>,
    seq: Vec<i64>,
    class: Vec<&'static str>,
    kind: Vec<String>,
    body: Vec<String>,
}

/// An upsert that changes nothing: it makes the rows of new gateways and locks every row of
/// the group (in name order), returning what each holds.
const LOCK_SEEN: &str = "INSERT INTO event_seen (gateway, ranges)
     SELECT g, ''::bytea FROM unnest($1::text[]) AS g ORDER BY g
     ON CONFLICT (gateway) DO UPDATE SET ranges = event_seen.ranges
     RETURNING gateway, ranges";

/// The new events and the seen sets they change, in one statement.
const WRITE_EVENTS: &str = "WITH stored AS (
         INSERT INTO events (gateway, seq, class, kind, received, body)
         SELECT g, s, c, k, $5, b
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $6::text[])
             AS t(g, s, c, k, b)
         ON CONFLICT DO NOTHING)
     UPDATE event_seen SET ranges = t.r
     FROM unnest($7::text[], $8::bytea[]) AS t(g, r)
     WHERE event_seen.gateway = t.g";

impl PgEvents {
    pub fn new(pool: Pool, clock: Clock) -> Self {
        Self { pool, clock }
    }

    /// Stores several batches in one transaction; each result says what to acknowledge. When
    /// the transaction fails, every batch fails (nothing of the group is stored) and is not
    /// acknowledged: its gateway sends it again.
    pub async fn store_batches(&self, batches: &[BatchIn<'_>]) -> Vec<Result<Stored, StoreError>> {
        match self.store_group(batches).await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = e.to_string();
                batches
                    .iter()
                    .map(|_| Err(StoreError::Flush(e.clone())))
                    .collect()
            }
        }
    }

    async fn store_group(&self, batches: &[BatchIn<'_>]) -> Result<Vec<Stored>, PgError> {
        let mut gateways: Vec<&str> = batches.iter().map(|(g, ..)| g.as_str()).collect();
        gateways.sort_unstable();
        gateways.dedup();
        let received = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(self.clock.unix_ms()) * 1_000_000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);

        let client = self.pool.get().await?;
        // Prepared once per connection: a prepared statement is sent on its first poll, so
        // each pair below (polled in order: `biased`) leaves together and in order; an
        // unprepared one would wait for its own round trip first, and the COMMIT behind it
        // would overtake it.
        let (lock, write) = tokio::try_join!(
            client.prepare_cached(LOCK_SEEN),
            client.prepare_cached(WRITE_EVENTS),
        )?;
        // Two round trips in all: BEGIN with the locking read, then the writes with COMMIT.
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&gateways];
        let (_, locked) = tokio::try_join!(
            biased;
            client.batch_execute("BEGIN"),
            client.query(&lock, &lock_params),
        )
        .inspect_err(|_| rollback(&client))?;
        let mut seen: HashMap<String, store::SeenSet> = locked
            .into_iter()
            .map(|row| {
                let ranges: Vec<u8> = row.get(1);
                (row.get(0), store::decode_ranges(&ranges))
            })
            .collect();

        let mut rows = Rows::default();
        let mut changed: Vec<String> = Vec::new();
        let mut out = Vec::with_capacity(batches.len());
        for (gateway, events, raw) in batches {
            let set = seen.entry(gateway.as_str().to_owned()).or_default();
            let fresh = store::fresh_events(set, events);
            // Each event's JSON as the gateway sent it, when the payload holds exactly these
            // events: no encoding again.
            let sent = raw.and_then(|r| raw_events(r, events.len()));
            // `fresh` is a subsequence of `events`, in order.
            let mut next = fresh.iter().peekable();
            for (i, e) in events.iter().enumerate() {
                if next.next_if(|f| std::ptr::eq(**f, e)).is_some() {
                    let json = sent.as_ref().and_then(|sent| sent.get(i).copied());
                    rows.push(gateway, e, json)?;
                }
            }
            let new = fresh.len() as u64;
            if new > 0 {
                *set = store::merge(set, &store::ranges(fresh.iter().map(|e| e.seq)));
                changed.push(gateway.as_str().to_owned());
            }
            out.push(Stored {
                fresh: fresh.iter().map(|e| e.seq).collect(),
                new,
                duplicates: events.len() as u64 - new,
                ranges: store::ranges(events.iter().map(|e| e.seq)),
                high: set.last().map_or(0, |r| r.1),
            });
        }
        if rows.seq.is_empty() {
            client
                .batch_execute("COMMIT")
                .await
                .inspect_err(|_| rollback(&client))?;
            return Ok(out);
        }
        changed.sort_unstable();
        changed.dedup();
        let sets: Vec<Vec<u8>> = changed
            .iter()
            .map(|g| store::encode_ranges(seen.get(g).map_or(&[][..], Vec::as_slice)))
            .collect();
        // The events and the seen sets in one statement, COMMIT right behind it. Should the
        // statement fail, the COMMIT ends the failed transaction as a rollback.
        let write_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &rows.gateway,
            &rows.seq,
            &rows.class,
            &rows.kind,
            &received,
            &rows.body,
            &changed,
            &sets,
        ];
        let (written, committed) = tokio::join!(
            biased;
            client.execute(&write, &write_params),
            client.batch_execute("COMMIT"),
        );
        written.and(committed).inspect_err(|_| rollback(&client))?;
        Ok(out)
    }

    /// Whether the database answers within `within`.
    pub async fn reachable(&self, within: std::time::Duration) -> bool {
        let ping = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(within, ping).await, Ok(Some(_)))
    }

    /// Up to `limit` stored events of `gateway` after `after`, in sequence order.
    pub async fn events_after(
        &self,
        gateway: &GatewayId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await.map_err(PgError::from)?;
        let rows = client
            .query(
                "SELECT body, received FROM events
                 WHERE gateway = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&gateway.as_str(), &after, &limit],
            )
            .await
            .map_err(PgError::from)?;
        rows.iter().map(stored_event).collect()
    }

    /// The events of `gateway` numbered `seqs` that are held, in order.
    pub async fn events_by_seq(
        &self,
        gateway: &GatewayId,
        seqs: &[u64],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let seqs: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        let client = self.pool.get().await.map_err(PgError::from)?;
        let rows = client
            .query(
                "SELECT body, received FROM events
                 WHERE gateway = $1 AND seq = ANY($2) ORDER BY seq",
                &[&gateway.as_str(), &seqs],
            )
            .await
            .map_err(PgError::from)?;
        rows.iter().map(stored_event).collect()
    }

    /// The highest sequence number held of `gateway` (0 when none).
    pub async fn high(&self, gateway: &GatewayId) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(PgError::from)?;
        let row = client
            .query_opt(
                "SELECT ranges FROM event_seen WHERE gateway = $1",
                &[&gateway.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row
            .map(|r| store::decode_ranges(&r.get::<_, Vec<u8>>(0)))
            .and_then(|set| set.last().map(|r| r.1))
            .unwrap_or(0))
    }
}

/// Ends whatever transaction a failed group left open on `client`, so that the pool hands out
/// a connection in no transaction (a connection that cannot even do that is broken, and the
/// pool drops it).
fn rollback(client: &deadpool_postgres::Object) {
    if client.is_closed() {
        return;
    }
    // Sent now (the request is queued on the connection when first polled); the answer does
    // not matter.
    let rollback = client.batch_execute("ROLLBACK");
    futures::FutureExt::now_or_never(rollback);
}

/// One page of pruning: how many events went, and the archive file written for them.
pub struct Pruned {
    pub events: usize,
    pub file: Option<(std::path::PathBuf, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl From<PgError> for PruneError {
    fn from(e: PgError) -> Self {
        Self::Store(e.into())
    }
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

impl PgEvents {
    /// Deletes up to `max` events of `class` received before `before_ms`, oldest first, and
    /// writes them to the archive under `archive_dir` (when there is one) before the delete
    /// commits: a crash between writes the same file again. Replicas pruning at once take
    /// different rows (`SKIP LOCKED`).
    pub async fn prune_page(
        &self,
        class: EventClass,
        before_ms: i64,
        max: usize,
        archive_dir: Option<&std::path::Path>,
    ) -> Result<Pruned, PruneError> {
        let before =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(before_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut client = self.pool.get().await.map_err(PgError::from)?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let rows = tx
            .query(
                "DELETE FROM events WHERE (gateway, seq) IN (
                     SELECT gateway, seq FROM events WHERE class = $1 AND received < $2
                     ORDER BY received, gateway, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING gateway, seq, received, body",
                &[&class.as_str(), &before, &limit],
            )
            .await
            .map_err(PgError::from)?;
        let mut found: Vec<(i64, String, i64, String)> = rows
            .into_iter()
            .map(|r| {
                let received: time::OffsetDateTime = r.get(2);
                (unix_ms(received), r.get(0), r.get(1), r.get(3))
            })
            .collect();
        found.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        let events = found.len();
        let mut file = None;
        if let (Some(dir), false) = (archive_dir, found.is_empty()) {
            let mut expired = Expired {
                class,
                chunks: Vec::with_capacity(found.len()),
            };
            for (received_ms, gateway, _, body) in found {
                let event: Event = serde_json::from_str(&body).map_err(StoreError::from)?;
                expired
                    .chunks
                    .push(ExpiredChunk::new(gateway, received_ms, vec![event]));
            }
            let dir = dir.to_owned();
            file = tokio::task::spawn_blocking(move || archive::write(&dir, &expired))
                .await
                .map_err(|e| StoreError::Flush(format!("archive task: {e}")))??;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(Pruned { events, file })
    }

    /// When the oldest kept event of `class` was received (Unix ms), if any is kept.
    pub async fn oldest(&self, class: EventClass) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await.map_err(PgError::from)?;
        let row = client
            .query_one(
                "SELECT min(received) FROM events WHERE class = $1",
                &[&class.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.get::<_, Option<time::OffsetDateTime>>(0).map(unix_ms))
    }

    /// Bytes the events take in the database, with their indexes.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(PgError::from)?;
        let row = client
            .query_one(
                "SELECT pg_total_relation_size('events') + pg_total_relation_size('event_seen')",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

impl Rows {
    fn push(&mut self, gateway: &GatewayId, e: &Event, json: Option<&str>) -> Result<(), PgError> {
        self.seq
            .push(i64::try_from(e.seq).map_err(|_| PgError::SeqTooLarge(e.seq))?);
        self.gateway.push(gateway.as_str().to_owned());
        self.class.push(e.class.as_str());
        self.kind.push(e.kind.clone());
        self.body.push(match json {
            Some(json) => json.to_owned(),
            None => serde_json::to_string(e).map_err(|e| PgError::Encode(e.to_string()))?,
        });
        Ok(())
    }
}

/// The JSON of each event in a batch payload (`{"events":[…]}`), as sent; None unless it holds
/// exactly `n`.
fn raw_events(raw: &[u8], n: usize) -> Option<Vec<&str>> {
    #[derive(serde::Deserialize)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let batch: RawBatch<'_> = serde_json::from_slice(raw).ok()?;
    (batch.events.len() == n).then(|| batch.events.iter().map(|e| e.get()).collect())
}

/// A row of `SELECT body, received`.
fn stored_event(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let body: String = row.get(0);
    let received: time::OffsetDateTime = row.get(1);
    Ok(StoredEvent {
        event: serde_json::from_str(&body)?,
        received: Some(received),
    })
}
