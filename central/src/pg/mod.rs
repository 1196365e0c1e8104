//! Central on PostgreSQL (`[storage] postgres`): the connection pool, the schema and its
//! migrations, and the stores kept there so that several central replicas share one state.
//!
//! Migrations are SQL files in `central/migrations/`, compiled in and applied in order at
//! start, each in its own transaction under an advisory lock: replicas starting together apply
//! each once, and a replica never runs on a schema older than its code.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod events;
pub mod feed;
pub mod leases;
pub mod state;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres: no connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres connection string: {0}")]
    Url(String),
    #[error("postgres TLS: {0}")]
    Tls(String),
    #[error("postgres schema migration {version} ({name}): {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("sequence number {0} is past what the database keeps (2^63 - 1)")]
    SeqTooLarge(u64),
    #[error("cannot encode an event: {0}")]
    Encode(String),
    #[error("the database's schema is at version {found}, newer than this central knows ({known}): run the newer central")]
    SchemaTooNew { found: i32, known: i32 },
}

/// One step of the schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every step, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "state",
        sql: include_str!("../../migrations/0002_state.sql"),
    },
    Migration {
        version: 3,
        name: "leases",
        sql: include_str!("../../migrations/0003_leases.sql"),
    },
    Migration {
        version: 4,
        name: "replicas",
        sql: include_str!("../../migrations/0004_replicas.sql"),
    },
];

/// Any number, as long as nothing else takes the same advisory lock.
const MIGRATION_LOCK: i64 = 0x6772_6964_6564_6765; // "gridedge"

pub type Pool = deadpool_postgres::Pool;

/// How long a caller waits for a connection, or for one to be made, before failing (the batch
/// is then not acknowledged and its gateway sends it again).
const WAIT: Duration = Duration::from_secs(5);

/// How to reach the database at `url` (a `postgresql://` URL or `key=value` pairs). With
/// `ca_file`, connections use TLS and verify the server against it; without, they are plain
/// (for a database on the same host or a private link).
pub fn connect(url: &str, ca_file: Option<&Path>) -> Result<feed::Connect, PgError> {
    // The parser's message never repeats the string, which may hold a password.
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    let tls = ca_file.map(tls).transpose()?;
    Ok(feed::Connect { config, tls })
}

/// A pool of up to `size` connections made as `connect` says.
pub fn pool(connect: &feed::Connect, size: usize) -> Result<Pool, PgError> {
    let manager_config = deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    };
    let config = connect.config.clone();
    let manager = match &connect.tls {
        Some(tls) => deadpool_postgres::Manager::from_config(config, tls.clone(), manager_config),
        None => {
            deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .recycle_timeout(Some(WAIT))
        .build()
        .map_err(|e| PgError::Url(e.to_string()))
}

fn tls(ca_file: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = firmware_config::runtime::mqtt::read_certs(ca_file)
        .map_err(|e| PgError::Tls(e.to_string()))?;
    for cert in certs {
        roots.add(cert).map_err(|e| PgError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Brings the schema up to [`MIGRATIONS`]; returns how many steps it applied.
pub async fn migrate(pool: &Pool) -> Result<usize, PgError> {
    let mut client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .or_else(|e| {
            // Two replicas creating it at once: one wins, the other's is a duplicate.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = 0;
    for m in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let found: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        if found > known {
            return Err(PgError::SchemaTooNew { found, known });
        }
        if found >= m.version {
            continue;
        }
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| PgError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "postgres schema migrated"
        );
        applied += 1;
    }
    Ok(applied)
}
