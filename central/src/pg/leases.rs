//! Per-gateway leases in PostgreSQL: which live replica does a gateway's single-writer work.
//!
//! A lease lives while its holder's row in `replicas` does: a replica renews that one row
//! well before it runs out, whatever the number of its gateways (renewing each gateway's row
//! cost PostgreSQL more than the events at a thousand gateways), timed by the database's
//! clock alone (replicas' clocks may disagree). A replica takes the lease of a gateway that has
//! none, was given back, or whose holder's row ran out. Each replica holds its share: the
//! gateways divided by the live replicas. A replica counts a lease as its own only until
//! the moment it sent the renewal plus the lease's time, by its own monotonic clock: never
//! later than the database lets another take it. When a replica dies, its gateways are taken by
//! another within the lease time plus one renewal period. `generation` grows each time a lease
//! changes hands, a fencing token for what the holder writes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{PgError, Pool};

/// A lease this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub generation: i64,
    /// Until when (this replica's monotonic clock) it counts as held.
    pub until: Instant,
}

pub struct Leases {
    pool: Pool,
    owner: String,
    /// Where other replicas reach this one's video relays.
    relay_url: String,
    ttl: Duration,
    held: Mutex<HashMap<String, Held>>,
}

impl Leases {
    /// Leases taken as `owner` (the replica's name), each lasting `ttl` from its last renewal.
    pub fn new(pool: Pool, owner: &str, ttl: Duration) -> Self {
        Self {
            pool,
            owner: owner.to_owned(),
            relay_url: String::new(),
            ttl,
            held: Mutex::default(),
        }
    }

    /// Tells the other replicas where this one's video relays are.
    pub fn with_relay_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.relay_url);
        self
    }

    /// Where the replica holding `gateway` serves its video relays, if a live one holds it.
    pub async fn owner_relay_url(&self, gateway: &str) -> Option<String> {
        let client = self.pool.get().await.ok()?;
        let row = client
            .query_opt(
                "SELECT r.relay_url FROM leases l JOIN replicas r ON r.name = l.owner
                 WHERE l.gateway = $1 AND r.expires_at > now() AND r.relay_url <> ''",
                &[&gateway],
            )
            .await
            .ok()??;
        Some(row.get(0))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews this replica's row among the live replicas, and with it every lease it holds;
    /// gives back those above its share (the gateways divided by the live replicas, rounded
    /// up) and takes gateways nobody holds up to it. Returns how many this replica holds now.
    /// A replica that starts beside others thus takes gateways as they give them back, and
    /// one that is left alone takes them all once the others' rows run out.
    pub async fn refresh(&self, gateways: &[String]) -> Result<usize, PgError> {
        let sent = Instant::now();
        let until = sent + self.ttl;
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        // One row per replica, whatever the number of gateways: a lease lives while its
        // holder's row does.
        let beat = client
            .query_one(
                "WITH was AS (SELECT expires_at > now() AS alive FROM replicas WHERE name = $1),
                 beat AS (
                     INSERT INTO replicas (name, expires_at, relay_url)
                     VALUES ($1, now() + make_interval(secs => $2::bigint / 1000.0), $3)
                     ON CONFLICT (name) DO UPDATE
                     SET expires_at = excluded.expires_at, relay_url = excluded.relay_url)
                 SELECT COALESCE((SELECT alive FROM was), false),
                        (SELECT count(*) FROM replicas WHERE expires_at > now() AND name <> $1)",
                &[&self.owner, &ttl_ms, &self.relay_url],
            )
            .await?;
        let (alive, live): (bool, i64) = (beat.get(0), beat.get(1));
        let share = gateways
            .len()
            .div_ceil(usize::try_from(live).unwrap_or(0) + 1);
        let mut mine: Vec<String> = {
            let mut held = self.held();
            if alive {
                // Still alive when renewed: nobody could take what it held.
                held.retain(|_, h| h.until > sent);
                for h in held.values_mut() {
                    h.until = until;
                }
            } else {
                // Its row had run out: any of its gateways may be another's now.
                held.clear();
            }
            gateways
                .iter()
                .filter(|g| held.contains_key(*g))
                .cloned()
                .collect()
        };
        if mine.len() > share {
            let excess = mine.split_off(share);
            client
                .execute(
                    "UPDATE leases SET owner = '' WHERE owner = $1 AND gateway = ANY($2)",
                    &[&self.owner, &excess],
                )
                .await?;
            let mut held = self.held();
            for g in &excess {
                held.remove(g);
            }
        } else if mine.len() < share {
            // Spread over the replicas: each looks at the free ones in its own order.
            let free: Vec<String> = client
                .query(
                    "SELECT g FROM unnest($1::text[]) AS g
                     LEFT JOIN leases l ON l.gateway = g
                     LEFT JOIN replicas r ON r.name = l.owner AND r.expires_at > now()
                     WHERE l.gateway IS NULL OR l.owner = $2 OR r.name IS NULL
                     ORDER BY md5(g || $2) LIMIT $3",
                    &[
                        &gateways,
                        &self.owner,
                        &i64::try_from(share).unwrap_or(i64::MAX),
                    ],
                )
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
            let wanted: Vec<String> = {
                let held = self.held();
                free.into_iter()
                    .filter(|g| !held.contains_key(g))
                    .take(share - mine.len())
                    .collect()
            };
            let rows = client
                .query(
                    "INSERT INTO leases (gateway, owner, generation)
                     SELECT g, $2, 1 FROM unnest($1::text[]) AS g ORDER BY g
                     ON CONFLICT (gateway) DO UPDATE SET
                         owner = excluded.owner,
                         generation = CASE WHEN leases.owner = excluded.owner
                                           THEN leases.generation
                                           ELSE leases.generation + 1 END
                     WHERE leases.owner = '' OR leases.owner = excluded.owner
                        OR NOT EXISTS (SELECT 1 FROM replicas r
                                       WHERE r.name = leases.owner AND r.expires_at > now())
                     RETURNING gateway, generation",
                    &[&wanted, &self.owner],
                )
                .await?;
            let mut held = self.held();
            for row in rows {
                let (gateway, generation): (String, i64) = (row.get(0), row.get(1));
                held.insert(gateway, Held { generation, until });
            }
        }
        Ok(self.held().len())
    }

    /// The lease of `gateway`, if this replica holds it now.
    pub fn owns(&self, gateway: &str) -> Option<Held> {
        self.held()
            .get(gateway)
            .copied()
            .filter(|h| h.until > Instant::now())
    }

    /// The gateways whose lease this replica holds now.
    pub fn held_set(&self) -> std::collections::BTreeSet<String> {
        let now = Instant::now();
        self.held()
            .iter()
            .filter(|(_, h)| h.until > now)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Gives every lease back at once (a replica stopping cleanly), so that another takes its
    /// gateways without waiting for them to expire.
    pub async fn release_all(&self) -> Result<(), PgError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE leases SET owner = '' WHERE owner = $1",
                &[&self.owner],
            )
            .await?;
        client
            .execute("DELETE FROM replicas WHERE name = $1", &[&self.owner])
            .await?;
        self.held().clear();
        Ok(())
    }
}
