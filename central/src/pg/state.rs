//! Central's state tables (`crate::state::Table`) in PostgreSQL: one table `state` of
//! `(tbl, key) → value`, keys ordered bytewise as sled orders them, each write committed on its
//! own (so `flush` has nothing left to do).
//!
//! The parts of central that use tables call them synchronously, from async tasks and blocking
//! threads alike, as they call sled. A call here hands its query to a runtime of this store's
//! own (its own threads) and waits for the answer, so it never needs the caller's runtime and
//! cannot stall it by blocking inside it.

use std::sync::Arc;
use std::time::Duration;

use super::Pool;
use crate::state::{Entries, Entry, StateError, StateStore, Table};

/// How long one call waits for the database before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgState {
    pool: Pool,
    runtime: Arc<OwnRuntime>,
}

/// The store's runtime, shut down without waiting when the last table goes: it may be dropped
/// inside another runtime, where waiting is not allowed.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl OwnRuntime {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.0 {
            rt.spawn(task);
        }
    }
}

impl PgState {
    /// Tables on `pool`, whose connections should be this store's alone (they live on its
    /// runtime).
    pub fn new(pool: Pool) -> Result<Self, StateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg-state")
            .enable_all()
            .build()
            .map_err(|e| StateError::Postgres(format!("cannot start its runtime: {e}")))?;
        Ok(Self {
            pool,
            runtime: Arc::new(OwnRuntime(Some(runtime))),
        })
    }
}

impl StateStore for PgState {
    fn table(&self, name: &str) -> Result<Arc<dyn Table>, StateError> {
        Ok(Arc::new(PgTable {
            name: name.to_owned(),
            pool: self.pool.clone(),
            runtime: self.runtime.clone(),
        }))
    }

    fn ids(&self, name: &str) -> Option<crate::alerts::engine::IdSource> {
        let sequence = PgTable {
            name: name.to_owned(),
            pool: self.pool.clone(),
            runtime: self.runtime.clone(),
        };
        Some(Arc::new(move || {
            let id = sequence.call(|c, name| async move {
                let row = c
                    .query_one("SELECT nextval($1::text::regclass)", &[&name])
                    .await?;
                Ok(row.get::<_, i64>(0))
            });
            match id {
                Ok(id) => u64::try_from(id).ok(),
                Err(e) => {
                    tracing::error!(sequence = %sequence.name, error = %e, "cannot draw an id");
                    None
                }
            }
        }))
    }
}

struct PgTable {
    name: String,
    pool: Pool,
    runtime: Arc<OwnRuntime>,
}

fn error(e: impl std::fmt::Display) -> StateError {
    StateError::Postgres(e.to_string())
}

/// The first key after every key that starts with `prefix`; None when there is none (all
/// 0xFF, or empty: no upper bound).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgTable {
    /// Runs `query` on this store's runtime with a pooled connection, and waits for it.
    fn call<T, F, Fut>(&self, query: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (pool, name) = (self.pool.clone(), self.name.clone());
        self.runtime.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => query(client, name).await.map_err(error),
                Err(e) => Err(error(e)),
            };
            let _ = tx.send(result);
        });
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| error("no answer from the database in time"))?
    }

    fn scan_ordered(&self, prefix: &[u8], descending: bool) -> Result<Vec<Entry>, StateError> {
        let (from, to) = (prefix.to_vec(), after_prefix(prefix));
        self.call(move |c, name| async move {
            let order = if descending { "DESC" } else { "ASC" };
            let rows = c
                .query(
                    &format!(
                        "SELECT key, value FROM state WHERE tbl = $1 AND key >= $2
                         AND ($3::bytea IS NULL OR key < $3) ORDER BY key {order}"
                    ),
                    &[&name, &from, &to],
                )
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

impl Table for PgTable {
    fn insert_if_absent(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StateError> {
        let key = key.to_vec();
        self.call(move |c, name| async move {
            let row = c
                .query_opt(
                    "WITH put AS (
                         INSERT INTO state (tbl, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (tbl, key) DO NOTHING RETURNING value)
                     SELECT value FROM put
                     UNION ALL
                     SELECT value FROM state WHERE tbl = $1 AND key = $2
                     LIMIT 1",
                    &[&name, &key, &value],
                )
                .await?;
            if let Some(row) = row {
                return Ok(row.get(0));
            }
            // Another replica's insert committed while this one waited on it: its row is newer
            // than this statement's snapshot, and the next statement sees it.
            let row = c
                .query_one(
                    "SELECT value FROM state WHERE tbl = $1 AND key = $2",
                    &[&name, &key],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let key = key.to_vec();
        self.call(move |c, name| async move {
            let row = c
                .query_opt(
                    "SELECT value FROM state WHERE tbl = $1 AND key = $2",
                    &[&name, &key],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StateError> {
        let key = key.to_vec();
        self.call(move |c, name| async move {
            c.execute(
                "INSERT INTO state (tbl, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value",
                &[&name, &key, &value],
            )
            .await
            .map(drop)
        })
    }

    fn replace_if(&self, key: &[u8], expected: &[u8], value: Vec<u8>) -> Result<bool, StateError> {
        let (key, expected) = (key.to_vec(), expected.to_vec());
        self.call(move |c, name| async move {
            c.execute(
                "UPDATE state SET value = $3 WHERE tbl = $1 AND key = $2 AND value = $4",
                &[&name, &key, &value, &expected],
            )
            .await
            .map(|n| n == 1)
        })
    }

    fn remove(&self, key: &[u8]) -> Result<(), StateError> {
        let key = key.to_vec();
        self.call(move |c, name| async move {
            c.execute(
                "DELETE FROM state WHERE tbl = $1 AND key = $2",
                &[&name, &key],
            )
            .await
            .map(drop)
        })
    }

    fn scan(&self, prefix: &[u8]) -> Entries<'_> {
        match self.scan_ordered(prefix, false) {
            Ok(v) => Box::new(v.into_iter().map(Ok)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn scan_rev(&self, prefix: &[u8]) -> Entries<'_> {
        match self.scan_ordered(prefix, true) {
            Ok(v) => Box::new(v.into_iter().map(Ok)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn last(&self) -> Result<Option<Entry>, StateError> {
        self.call(move |c, name| async move {
            let row = c
                .query_opt(
                    "SELECT key, value FROM state WHERE tbl = $1 ORDER BY key DESC LIMIT 1",
                    &[&name],
                )
                .await?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn len(&self) -> usize {
        self.call(move |c, name| async move {
            let row = c
                .query_one("SELECT count(*) FROM state WHERE tbl = $1", &[&name])
                .await?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .unwrap_or(0)
    }

    fn flush(&self) -> Result<(), StateError> {
        // Every write above committed on its own.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn the_bound_after_a_prefix_is_the_first_key_past_all_that_start_with_it() {
        assert_eq!(after_prefix(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(after_prefix(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(after_prefix(&[0xFF, 0xFF]), None);
        assert_eq!(after_prefix(b""), None);
    }
}
