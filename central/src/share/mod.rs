//! Video sharing through central: grants, and the relay that fans a shared camera out to its
//! viewers.
//!
//! A camera is pulled from its gateway only while someone watches it: the first viewer starts
//! a keeper for the camera's [`Relay`], which asks the gateway (a `video.upstream.start`
//! command with a one-time token) to push the camera's video to central over a connection the
//! gateway opens. The keeper asks again whenever the push drops while viewers remain (a camera
//! or gateway that reconnects), and ends the push 10 s after the last viewer left. Viewers of
//! the camera — under any grant — share one push.
//!
//! With replicas, grants and the token key are kept in a shared table, so a share granted on
//! one replica plays on any other, and a revocation reaches every replica at once (a note on the
//! feed). Only the replica holding the gateway's lease has it push; another replica with
//! viewers of the camera pulls the owner's relay (`/api/v1/relay/pull/…`, with a token only
//! replicas can make) and fans it out to its own viewers. When the owner dies, the pull ends,
//! and the keeper pulls from the new owner or, holding the gateway now, has it push here.

pub mod audit;
pub mod grant;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::video_hub::{Hub, WsMessage};
use ring::rand::SecureRandom;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use grant::{Claims, Grant, Signer, TokenError};

/// How long a relay keeps its push after the last viewer left.
const LINGER: Duration = Duration::from_secs(10);
/// How long the keeper waits for a push it asked for before asking again.
const PUSH_WAIT: Duration = Duration::from_secs(5);

/// One shared camera at central.
pub struct Relay {
    pub gateway: String,
    pub camera: String,
    pub hub: Hub,
    /// The token the next push must present.
    expected: Mutex<Option<String>>,
    /// The current push: its number, and what ends it (the keeper, when nobody watches).
    push: Mutex<Option<(u64, CancellationToken)>>,
    keeper: AtomicBool,
    /// Pushes accepted since central started.
    pub pushes: std::sync::atomic::AtomicU64,
}

impl Relay {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn pushing(&self) -> bool {
        Self::lock(&self.push).is_some()
    }

    /// Accepts a push presenting `token` (once); returns its number and what ends it.
    pub fn accept_push(&self, token: &str) -> Option<(u64, CancellationToken)> {
        let mut expected = Self::lock(&self.expected);
        // Compared in constant time: the token is a secret.
        let ok = expected.as_deref().is_some_and(|e| {
            e.len() == token.len()
                && e.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return None;
        }
        *expected = None;
        Some(self.begin())
    }

    /// A new upstream (a push, or a pull from another replica) replaces any other: its number
    /// and what ends it.
    fn begin(&self) -> (u64, CancellationToken) {
        let n = self.pushes.fetch_add(1, Ordering::Relaxed) + 1;
        let end = CancellationToken::new();
        if let Some((_, old)) = Self::lock(&self.push).replace((n, end.clone())) {
            old.cancel();
        }
        (n, end)
    }

    /// Push `n` ended; a newer one, if any, stays.
    pub fn push_ended(&self, n: u64) {
        let mut push = Self::lock(&self.push);
        if push.as_ref().is_some_and(|(current, _)| *current == n) {
            *push = None;
            drop(push);
            self.hub.pause();
        }
    }
}

struct GrantState {
    grant: Grant,
    revoked: watch::Sender<bool>,
}

/// A grant as the API shows it.
#[derive(Debug, Serialize)]
pub struct GrantView {
    #[serde(flatten)]
    pub grant: Grant,
    pub revoked: bool,
    pub viewers_watching: usize,
    pub pushing: bool,
}

/// Grants, relays and the audit trail.
pub struct Shares {
    pub signer: Signer,
    pub audit: audit::Audit,
    pub relay_url: String,
    pub max_share: Duration,
    grants: Mutex<HashMap<String, GrantState>>,
    relays: Mutex<HashMap<(String, String), Arc<Relay>>>,
    /// With replicas: grants kept for all of them, and who to tell of a revocation.
    table: Option<Arc<dyn crate::state::Table>>,
    announcer: std::sync::OnceLock<crate::pg::feed::Announcer>,
}

/// A grant as replicas keep it.
#[derive(Serialize, serde::Deserialize)]
struct StoredGrant {
    grant: Grant,
    revoked: bool,
}

/// How long a replica's pull token lasts: it is made for each pull.
const PULL_TOKEN_LIFE: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{0}")]
    Invalid(String),
    #[error("no share {0:?}")]
    Unknown(String),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the share was revoked")]
    Revoked,
    #[error("{0:?} is not a viewer of this share")]
    NotAViewer(String),
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Central's key for share tokens: made once, kept in `share.key` (owner-only).
fn load_key(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("share.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => Ok(k),
        _ => {
            let mut key = vec![0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| std::io::Error::other("no randomness"))?;
            firmware_config::durable::write(
                &path,
                &key,
                firmware_config::durable::Access::OwnerOnly,
            )?;
            Ok(key)
        }
    }
}

impl Shares {
    pub fn open(dir: &Path, relay_url: String, max_share: Duration) -> std::io::Result<Self> {
        Ok(Self {
            signer: Signer::new(&load_key(dir)?),
            audit: audit::Audit::open(dir)?,
            relay_url,
            max_share,
            grants: Mutex::default(),
            relays: Mutex::default(),
            table: None,
            announcer: Default::default(),
        })
    }

    /// Keeps grants in `table`, shared with other replicas, and signs tokens with the key
    /// kept there (the first replica's).
    pub fn keep_in(
        &mut self,
        table: Arc<dyn crate::state::Table>,
    ) -> Result<(), crate::state::StateError> {
        let mine = random_hex(32).into_bytes();
        let key = table.insert_if_absent(b"key", mine)?;
        self.signer = Signer::new(&key);
        self.table = Some(table);
        Ok(())
    }

    /// Tells the other replicas of revocations.
    pub fn share(&self, announcer: crate::pg::feed::Announcer) {
        let _ = self.announcer.set(announcer);
    }

    fn store_grant(&self, grant: &Grant, revoked: bool) {
        let Some(table) = &self.table else { return };
        let row = StoredGrant {
            grant: grant.clone(),
            revoked,
        };
        let stored = serde_json::to_vec(&row)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                table
                    .insert(format!("grant/{}", grant.id).as_bytes(), v)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = stored {
            tracing::error!(grant = %grant.id, error = %e, "cannot keep a share grant");
        }
    }

    /// A grant another replica made, read into this one's.
    fn load_grant(&self, id: &str) {
        let Some(table) = &self.table else { return };
        if let Ok(Some(v)) = table.get(format!("grant/{id}").as_bytes()) {
            self.take_grant(&v);
        }
    }

    /// A stored grant, taken unless this replica holds it already.
    fn take_grant(&self, stored: &[u8]) {
        let Ok(row) = serde_json::from_slice::<StoredGrant>(stored) else {
            return;
        };
        self.grants()
            .entry(row.grant.id.clone())
            .or_insert_with(|| GrantState {
                grant: row.grant,
                revoked: watch::channel(row.revoked).0,
            });
    }

    /// Another replica revoked grant `id`: its viewers here are cut off too.
    pub fn revoked_elsewhere(&self, id: &str) {
        if let Some(state) = self.grants().get(id) {
            state.revoked.send_replace(true);
        }
    }

    /// A token with which another replica pulls this one's relay of `camera` of `gateway`.
    pub fn pull_token(&self, gateway: &str, camera: &str) -> String {
        self.signer.token(&Claims {
            g: format!("relay:{gateway}/{camera}"),
            v: "replica".to_owned(),
            e: now() + PULL_TOKEN_LIFE,
        })
    }

    /// Checks a replica's pull token for `camera` of `gateway`.
    pub fn check_pull(&self, token: &str, gateway: &str, camera: &str) -> Result<(), ShareError> {
        let claims = self.signer.verify(token, now())?;
        if claims.g != format!("relay:{gateway}/{camera}") || claims.v != "replica" {
            return Err(ShareError::Token(TokenError::Malformed));
        }
        Ok(())
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, GrantState>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Grants `viewers` `camera` of `gateway` for `duration`; returns the grant and a token
    /// per viewer.
    pub fn grant(
        &self,
        gateway: &str,
        camera: &str,
        viewers: Vec<String>,
        duration: Duration,
        by: &str,
    ) -> Result<(Grant, Vec<(String, String)>), ShareError> {
        GatewayId::new(gateway.to_owned())
            .map_err(|e| ShareError::Invalid(format!("gateway: {e}")))?;
        firmware_config::ids::check_id(camera)
            .map_err(|e| ShareError::Invalid(format!("camera: {e}")))?;
        if viewers.is_empty() || viewers.iter().any(|v| v.trim().is_empty() || v.len() > 64) {
            return Err(ShareError::Invalid(
                "viewers: name 1 to 64 viewers by non-empty names of up to 64 bytes".into(),
            ));
        }
        if duration.is_zero() || duration > self.max_share {
            return Err(ShareError::Invalid(format!(
                "duration: {}s is out of range; at most {}s",
                duration.as_secs(),
                self.max_share.as_secs()
            )));
        }
        if by.trim().is_empty() {
            return Err(ShareError::Invalid("by: say who grants the share".into()));
        }
        let t = now();
        let grant = Grant {
            id: random_hex(8),
            gateway: gateway.to_owned(),
            camera: camera.to_owned(),
            viewers,
            issued_at: t,
            expires_at: t + duration.as_secs().max(1) as i64,
            issued_by: by.to_owned(),
        };
        let tokens = grant
            .viewers
            .iter()
            .map(|v| {
                let claims = Claims {
                    g: grant.id.clone(),
                    v: v.clone(),
                    e: grant.expires_at,
                };
                (v.clone(), self.signer.token(&claims))
            })
            .collect();
        self.audit
            .record("share.granted", json!({ "grant": grant }));
        self.store_grant(&grant, false);
        self.grants().insert(
            grant.id.clone(),
            GrantState {
                grant: grant.clone(),
                revoked: watch::channel(false).0,
            },
        );
        Ok((grant, tokens))
    }

    /// Revokes a grant: its viewers are cut off at once.
    pub fn revoke(&self, id: &str, by: &str) -> Result<Grant, ShareError> {
        self.load_grant(id);
        let grants = self.grants();
        let state = grants
            .get(id)
            .ok_or_else(|| ShareError::Unknown(id.to_owned()))?;
        state.revoked.send_replace(true);
        let grant = state.grant.clone();
        drop(grants);
        self.store_grant(&grant, true);
        if let Some(a) = self.announcer.get() {
            a.send(crate::pg::feed::Note::ShareRevoked { id: id.to_owned() });
        }
        self.audit
            .record("share.revoked", json!({ "grant": id, "by": by }));
        Ok(grant)
    }

    /// Checks a viewer's token: the grant, and a signal that fires when it is revoked.
    pub fn admit(&self, token: &str) -> Result<(Grant, String, watch::Receiver<bool>), ShareError> {
        let claims = self.signer.verify(token, now())?;
        if !self.grants().contains_key(&claims.g) {
            self.load_grant(&claims.g);
        }
        let grants = self.grants();
        let state = grants
            .get(&claims.g)
            .ok_or_else(|| ShareError::Unknown(claims.g.clone()))?;
        if *state.revoked.borrow() {
            return Err(ShareError::Revoked);
        }
        if !state.grant.viewers.contains(&claims.v) {
            return Err(ShareError::NotAViewer(claims.v));
        }
        Ok((state.grant.clone(), claims.v, state.revoked.subscribe()))
    }

    /// The relay of a camera, made on first use.
    pub fn relay(&self, gateway: &str, camera: &str) -> Arc<Relay> {
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        relays
            .entry((gateway.to_owned(), camera.to_owned()))
            .or_insert_with(|| {
                Arc::new(Relay {
                    gateway: gateway.to_owned(),
                    camera: camera.to_owned(),
                    hub: Hub::new(),
                    expected: Mutex::default(),
                    push: Mutex::default(),
                    keeper: AtomicBool::new(false),
                    pushes: Default::default(),
                })
            })
            .clone()
    }

    /// An existing relay.
    pub fn existing_relay(&self, gateway: &str, camera: &str) -> Option<Arc<Relay>> {
        self.relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(gateway.to_owned(), camera.to_owned()))
            .cloned()
    }

    pub fn list(&self) -> Vec<GrantView> {
        // Those other replicas made, too.
        if let Some(table) = &self.table {
            for (_, v) in table.scan(b"grant/").filter_map(Result::ok) {
                self.take_grant(&v);
            }
        }
        let grants = self.grants();
        let mut v: Vec<GrantView> = grants
            .values()
            .map(|s| {
                let relay = self.existing_relay(&s.grant.gateway, &s.grant.camera);
                GrantView {
                    grant: s.grant.clone(),
                    revoked: *s.revoked.borrow(),
                    viewers_watching: relay.as_ref().map_or(0, |r| r.hub.viewers()),
                    pushing: relay.as_ref().is_some_and(|r| r.pushing()),
                }
            })
            .collect();
        v.sort_by_key(|g| std::cmp::Reverse(g.grant.issued_at));
        v
    }
}

/// Keeps `relay` pushed while anyone watches it (see the module documentation). At most one
/// keeper runs per relay.
pub fn keep(shared: Arc<crate::Shared>, relay: Arc<Relay>, stop: CancellationToken) {
    if relay.keeper.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        let gateway = match GatewayId::new(relay.gateway.clone()) {
            Ok(g) => g,
            Err(_) => return,
        };
        let mut idle_since: Option<tokio::time::Instant> = None;
        let mut wait = Duration::from_millis(500);
        loop {
            if stop.is_cancelled() {
                break;
            }
            if relay.hub.viewers() == 0 {
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= LINGER {
                    break;
                }
            } else {
                idle_since = None;
                let here = shared
                    .leases
                    .get()
                    .is_none_or(|l| l.owns(&relay.gateway).is_some());
                if !relay.pushing() && !here {
                    // Another replica holds the gateway: follow its relay.
                    match follow(&shared, &relay).await {
                        Ok(()) => wait = Duration::from_millis(500),
                        Err(e) => {
                            tracing::warn!(gateway = %relay.gateway, camera = %relay.camera, error = %e, "cannot follow the owner's relay");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                    continue;
                }
                if !relay.pushing() {
                    let token = random_hex(16);
                    *Relay::lock(&relay.expected) = Some(token.clone());
                    let url = format!(
                        "{}/api/v1/relay/push/{}/{}?token={token}",
                        shared.shares.relay_url, relay.gateway, relay.camera
                    );
                    let asked = shared
                        .commands
                        .send(
                            &gateway,
                            "video.upstream.start",
                            json!({ "camera": relay.camera, "url": url }),
                            PUSH_WAIT,
                        )
                        .await;
                    match asked {
                        Ok(_) => {
                            // Wait for the push to arrive.
                            let deadline = tokio::time::Instant::now() + PUSH_WAIT;
                            while !relay.pushing() && tokio::time::Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            wait = Duration::from_millis(500);
                        }
                        Err(e) => {
                            tracing::warn!(gateway = %relay.gateway, camera = %relay.camera, error = %e, "cannot start the push");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some((_, p)) = Relay::lock(&relay.push).take() {
            p.cancel();
        }
        // A follower only stops following; the gateway's push is its owner's to end.
        if shared
            .leases
            .get()
            .is_none_or(|l| l.owns(&relay.gateway).is_some())
        {
            let _ = shared
                .commands
                .send(
                    &gateway,
                    "video.upstream.stop",
                    json!({ "camera": relay.camera }),
                    Duration::from_secs(2),
                )
                .await;
        }
        relay.hub.pause();
        relay.keeper.store(false, Ordering::Release);
        tracing::info!(gateway = %relay.gateway, camera = %relay.camera, "nobody watches: push ended");
        // A viewer who came while this keeper was ending needs a keeper of its own.
        if relay.hub.viewers() > 0 && !stop.is_cancelled() {
            keep(shared, relay, stop);
        }
    });
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("no live replica holds the gateway")]
    NoOwner,
    #[error("the owner's relay: {0}")]
    Connect(String),
}

/// Follows the relay of the replica holding `relay`'s gateway: starts a task that feeds this
/// replica's hub from it until it ends (the owner died, or nobody watches here), and waits for
/// the connection.
async fn follow(shared: &Arc<crate::Shared>, relay: &Arc<Relay>) -> Result<(), FollowError> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Tm;
    let leases = shared.leases.get().ok_or(FollowError::NoOwner)?;
    let base = leases
        .owner_relay_url(&relay.gateway)
        .await
        .ok_or(FollowError::NoOwner)?;
    let token = shared.shares.pull_token(&relay.gateway, &relay.camera);
    let url = format!(
        "{}/api/v1/relay/pull/{}/{}?token={token}",
        base.replacen("http", "ws", 1),
        relay.gateway,
        relay.camera
    );
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, None);
    let (mut socket, _) = tokio::time::timeout(PUSH_WAIT, connecting)
        .await
        .map_err(|_| FollowError::Connect("timed out".into()))?
        .map_err(|e| FollowError::Connect(e.to_string()))?;
    let (n, end) = relay.begin();
    let (shared, relay) = (shared.clone(), relay.clone());
    shared.shares.audit.record(
        "share.pull_started",
        json!({ "gateway": relay.gateway, "camera": relay.camera, "from": base }),
    );
    tokio::spawn(async move {
        let mut reader = firmware_config::runtime::video_hub::UpstreamReader::default();
        loop {
            let msg = tokio::select! {
                _ = end.cancelled() => break,
                m = socket.next() => m,
            };
            let msg = match msg {
                Some(Ok(Tm::Text(t))) => WsMessage::Text(t.to_string()),
                Some(Ok(Tm::Binary(b))) => WsMessage::Binary(b),
                Some(Ok(Tm::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            match reader.read(msg) {
                Ok(Some(piece)) => relay.hub.push(piece),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(gateway = %relay.gateway, camera = %relay.camera, error = %e, "bad message from the owner's relay");
                    break;
                }
            }
        }
        let _ = socket.close(None).await;
        let _ = socket.flush().await;
        relay.push_ended(n);
        shared.shares.audit.record(
            "share.pull_ended",
            json!({ "gateway": relay.gateway, "camera": relay.camera }),
        );
    });
    Ok(())
}
