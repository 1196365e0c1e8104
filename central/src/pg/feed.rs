//! Live changes between replicas, through PostgreSQL's LISTEN/NOTIFY: what one replica changed
//! in a shared table that the others hold in memory (an alert, the alert settings, the current
//! master data version), so an operator on any replica sees it within a second.
//!
//! A note names what changed, never its content: the receiver reads the row, so a note never
//! carries more than the database holds, and notes fit NOTIFY's 8,000 bytes. A note is sent
//! after the write it announces has committed. A listener that loses its connection reloads
//! everything when it is back, since notes sent meanwhile are gone.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{PgError, Pool};

/// The channel every replica listens on.
pub const CHANNEL: &str = "gridedge_feed";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Note {
    /// An alert's row.
    Alert { id: u64 },
    /// Maintenance windows and the duty roster.
    AlertSettings,
    /// A new master data version.
    MasterData,
    /// A resident's case: every replica's case index reads it again.
    Case { receipt: String },
    /// A video share revoked: its viewers on every replica are cut off.
    ShareRevoked { id: String },
    /// Events of a gateway's cameras and terminals, stored by its holder: every replica's
    /// device board takes them.
    Devices { gateway: String, seqs: Vec<u64> },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The replica that sent it (each ignores its own).
    from: String,
    #[serde(flatten)]
    note: Note,
}

/// Sends notes to the other replicas; cheap to clone, never waits.
#[derive(Clone)]
pub struct Announcer {
    tx: mpsc::UnboundedSender<Note>,
}

impl Announcer {
    pub fn send(&self, note: Note) {
        // The sender stops only with central.
        let _ = self.tx.send(note);
    }
}

/// What a replica does with another's notes.
pub trait Receiver: Send + Sync + 'static {
    /// Reads what `note` names again (a blocking call is fine: it runs off the async workers).
    fn changed(&self, note: Note);
    /// Notes may have been missed (the listener reconnected): reads everything again.
    fn resync(&self);
}

/// Starts the sender (on `pool`) and the listener (a connection of its own to `url`), for
/// replica `from`. Both stop with `token`.
pub fn start(
    pool: Pool,
    connect: Connect,
    from: &str,
    receiver: Arc<dyn Receiver>,
    token: CancellationToken,
) -> Announcer {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(send(pool, from.to_owned(), rx, token.clone()));
    tokio::spawn(listen(connect, from.to_owned(), receiver, token));
    Announcer { tx }
}

/// Sends the notes as they come, several at once when they queue up.
async fn send(
    pool: Pool,
    from: String,
    mut rx: mpsc::UnboundedReceiver<Note>,
    token: CancellationToken,
) {
    let mut waiting = Vec::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            n = rx.recv_many(&mut waiting, 256) => if n == 0 { return },
        }
        let payloads: Vec<String> = waiting
            .drain(..)
            .filter_map(|note| {
                serde_json::to_string(&Envelope {
                    from: from.clone(),
                    note,
                })
                .ok()
            })
            .collect();
        let sent = async {
            let client = pool.get().await?;
            client
                .execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS x(p, i)
                     ORDER BY i",
                    &[&CHANNEL, &payloads],
                )
                .await?;
            Ok::<_, PgError>(())
        };
        if let Err(e) = sent.await {
            // The others miss these until their next resync; the rows are stored.
            tracing::warn!(error = %e, notes = payloads.len(), "cannot tell the other replicas");
        }
    }
}

/// How the listener makes its own connection (LISTEN needs one that is not pooled).
#[derive(Clone)]
pub struct Connect {
    pub config: tokio_postgres::Config,
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// Listens, and hands every other replica's note to `receiver`; reconnects after a failure,
/// then resyncs.
async fn listen(
    connect: Connect,
    from: String,
    receiver: Arc<dyn Receiver>,
    token: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    let mut first = true;
    loop {
        let ran = tokio::select! {
            _ = token.cancelled() => return,
            r = listen_once(&connect, &from, &receiver, &mut first) => r,
        };
        if let Err(e) = ran {
            tracing::warn!(error = %e, retry_in = ?pause, "the replicas' feed is down");
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    connect: &Connect,
    from: &str,
    receiver: &Arc<dyn Receiver>,
    first: &mut bool,
) -> Result<(), PgError> {
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let (client, driving) = match &connect.tls {
        Some(tls) => {
            let (c, conn) = connect.config.connect(tls.clone()).await?;
            (c, tokio::spawn(drive(conn, notes_tx)))
        }
        None => {
            let (c, conn) = connect.config.connect(tokio_postgres::NoTls).await?;
            (c, tokio::spawn(drive(conn, notes_tx)))
        }
    };
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if !std::mem::take(first) {
        let r = receiver.clone();
        let _ = tokio::task::spawn_blocking(move || r.resync()).await;
    }
    tracing::info!("listening to the other replicas");
    while let Some(payload) = notes.recv().await {
        let Ok(env) = serde_json::from_str::<Envelope>(&payload) else {
            tracing::warn!("a note from another replica that this one cannot read");
            continue;
        };
        if env.from == from {
            continue;
        }
        let r = receiver.clone();
        let _ = tokio::task::spawn_blocking(move || r.changed(env.note)).await;
    }
    drop(client);
    match driving.await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Drives the connection and passes its notifications on.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notes: mpsc::UnboundedSender<String>,
) -> Result<(), PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(m) = messages.next().await {
        if let tokio_postgres::AsyncMessage::Notification(n) = m? {
            if notes.send(n.payload().to_owned()).is_err() {
                break;
            }
        }
    }
    Ok(())
}
