//! Operators of the console: their logins (Argon2id hashes from central's config), sessions
//! (a random cookie and a CSRF token each, ended after `IDLE` without use), roles, and the
//! audit trail of everything they do.
//!
//! Sessions live in memory on one central. On PostgreSQL they are rows of a shared table, so
//! that any replica takes a session another opened, and a logout ends it everywhere at once.
//! A row is keyed by the SHA-256 of its cookie: whoever reads the database cannot present it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use firmware_config::config::central::{ApiToken, OperatorAccount};
use firmware_config::runtime::clock::{Clock, Instant};
use serde::{Deserialize, Serialize};

use crate::state::{StateError, StateStore, Table};
use time::OffsetDateTime;

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(4 * 3600);
/// A session ends this long after its login, however much it is used.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
pub const COOKIE: &str = "gridedge_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Supervisor,
    Administrator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Role::Operator),
            "supervisor" => Some(Role::Supervisor),
            "administrator" => Some(Role::Administrator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Administrator => "administrator",
        }
    }
}

/// Who is signed in on a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

#[derive(Debug)]
struct Session {
    signed: Signed,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_used) < IDLE
            && now.saturating_duration_since(self.created) < LIFETIME
    }
}

/// A session as replicas share it: its times on the wall clock (replicas share no other).
#[derive(Debug, Serialize, Deserialize)]
struct SharedSession {
    signed: Signed,
    /// Unix seconds.
    created: i64,
    last_used: i64,
}

fn session_key(cookie: &str) -> [u8; 32] {
    sha256(cookie.as_bytes())
}

impl SharedSession {
    fn live(&self, now: i64) -> bool {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        now - self.last_used < secs(IDLE) && now - self.created < secs(LIFETIME)
    }

    fn get(table: &dyn Table, cookie: &str) -> Option<Self> {
        match table.get(&session_key(cookie)) {
            Ok(v) => serde_json::from_slice(&v?).ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a session");
                None
            }
        }
    }

    fn put(&self, table: &dyn Table, cookie: &str) {
        let stored = serde_json::to_vec(self)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                table
                    .insert(&session_key(cookie), v)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot keep a session");
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub who: String,
    pub action: String,
    pub target: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("wrong name or password")]
    Refused,
}

/// Why operators' accounts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("password hashing: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("operators' audit store: {0}")]
    Store(#[from] StateError),
}

/// Hashes a password for central's config (`central operator hash`).
pub fn hash_password(password: &str) -> Result<String, OperatorsError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(OperatorsError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(OperatorsError::Hash)
}

pub struct Operators {
    accounts: HashMap<String, (Role, String)>,
    /// API tokens: name, role, SHA-256 of the token.
    tokens: Vec<(String, Role, [u8; 32])>,
    /// Checked against when the name is unknown, so names cannot be probed by timing.
    dummy: String,
    next: std::sync::atomic::AtomicU64,
    sessions: Mutex<HashMap<String, Session>>,
    /// Sessions shared by replicas, instead of `sessions`.
    shared: Option<std::sync::Arc<dyn Table>>,
    audit: std::sync::Arc<dyn Table>,
    /// Dates the audit trail.
    clock: Clock,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new API token and the SHA-256 (hex) that central.toml keeps of it.
pub fn new_api_token() -> (String, String) {
    let t = format!("ge_{}", token());
    let hex = api_token_sha256(&t);
    (t, hex)
}

/// The SHA-256 (hex) of a token, for a config entry.
pub fn api_token_sha256(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Operators {
    pub fn new(
        accounts: &[OperatorAccount],
        tokens: &[ApiToken],
        state: &dyn StateStore,
        clock: Clock,
    ) -> Result<Self, OperatorsError> {
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                Some((
                    t.name.clone(),
                    Role::parse(&t.role)?,
                    unhex(&t.token_sha256)?,
                ))
            })
            .collect();
        let accounts = accounts
            .iter()
            .filter_map(|a| {
                Some((
                    a.name.clone(),
                    (Role::parse(&a.role)?, a.password_hash.clone()),
                ))
            })
            .collect();
        Ok(Self {
            accounts,
            tokens,
            dummy: hash_password(&token())?,
            // From a random point: two replicas' entries in the same nanosecond differ.
            next: std::sync::atomic::AtomicU64::new(u64::from(rand::random::<u32>()) << 32),
            sessions: Mutex::default(),
            shared: None,
            audit: state.table("operator_audit")?,
            clock,
        })
    }

    /// Who an API token (an `Authorization: Bearer` value) belongs to. A token has no session
    /// and no CSRF token: browsers never send it on their own.
    pub fn by_token(&self, token: &str) -> Option<Signed> {
        let digest = sha256(token.as_bytes());
        // Every entry compared in full: the time taken says nothing about which one matched.
        let mut found = None;
        for (name, role, hash) in &self.tokens {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some((name, role));
            }
        }
        found.map(|(name, role)| Signed {
            name: name.clone(),
            role: *role,
            csrf: String::new(),
        })
    }

    pub fn has_accounts(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// Checks a password (deliberately slow: call off the async workers, one of few at a time
    /// — see `logins`): the account's role, or a refusal that says nothing of why.
    pub fn verify(&self, name: &str, password: &str) -> Result<Role, LoginError> {
        let (role, hash) = match self.accounts.get(name) {
            Some((r, h)) => (Some(*r), h.as_str()),
            None => (None, self.dummy.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match (ok, role) {
            (true, Some(role)) => Ok(role),
            _ => Err(LoginError::Refused),
        }
    }

    /// Keeps sessions in `table`, shared with other replicas, rather than in memory.
    pub fn share_sessions(&mut self, table: std::sync::Arc<dyn Table>) {
        self.shared = Some(table);
    }

    /// Opens a session for `name`, checked: its cookie value and who it is.
    pub fn open_session(&self, name: &str, role: Role, now: Instant) -> (String, Signed) {
        let signed = Signed {
            name: name.to_owned(),
            role,
            csrf: token(),
        };
        let cookie = token();
        if let Some(table) = &self.shared {
            let now = self.clock.now_utc().unix_timestamp();
            self.sweep(table.as_ref(), now);
            let row = SharedSession {
                signed: signed.clone(),
                created: now,
                last_used: now,
            };
            row.put(table.as_ref(), &cookie);
            self.record(name, "login", role.as_str());
            return (cookie, signed);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.live(now));
        sessions.insert(
            cookie.clone(),
            Session {
                signed: signed.clone(),
                created: now,
                last_used: now,
            },
        );
        drop(sessions);
        self.record(name, "login", role.as_str());
        (cookie, signed)
    }

    /// Checks a password and opens a session (for tools and tests; the console's login goes
    /// through `logins` first).
    pub fn login(
        &self,
        name: &str,
        password: &str,
        now: Instant,
    ) -> Result<(String, Signed), LoginError> {
        match self.verify(name, password) {
            Ok(role) => Ok(self.open_session(name, role, now)),
            Err(e) => {
                self.record(name, "login refused", "");
                Err(e)
            }
        }
    }

    /// The session of a cookie value, if it is live (and marks it used).
    pub fn session(&self, cookie: &str, now: Instant) -> Option<Signed> {
        if let Some(table) = &self.shared {
            let now = self.clock.now_utc().unix_timestamp();
            let mut row = SharedSession::get(table.as_ref(), cookie)?;
            if !row.live(now) {
                let _ = table.remove(&session_key(cookie));
                return None;
            }
            // Marked used once a minute, not on every request.
            if now - row.last_used >= 60 {
                row.last_used = now;
                row.put(table.as_ref(), cookie);
            }
            return Some(row.signed);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let s = sessions.get_mut(cookie)?;
        if !s.live(now) {
            sessions.remove(cookie);
            return None;
        }
        s.last_used = now;
        Some(s.signed.clone())
    }

    pub fn logout(&self, cookie: &str) {
        if let Some(table) = &self.shared {
            if let Some(row) = SharedSession::get(table.as_ref(), cookie) {
                if let Err(e) = table.remove(&session_key(cookie)) {
                    tracing::error!(error = %e, "cannot end a session");
                }
                self.record(&row.signed.name, "logout", "");
            }
            return;
        }
        let removed = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(cookie);
        if let Some(s) = removed {
            self.record(&s.signed.name, "logout", "");
        }
    }

    /// Removes the shared sessions that have ended.
    fn sweep(&self, table: &dyn Table, now: i64) {
        let ended: Vec<Vec<u8>> = table
            .scan(b"")
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                serde_json::from_slice::<SharedSession>(v).map_or(true, |s| !s.live(now))
            })
            .map(|(k, _)| k)
            .collect();
        for k in ended {
            let _ = table.remove(&k);
        }
    }

    /// Appends to the operators' audit trail; returns the entry's key.
    pub fn record(&self, who: &str, action: &str, target: &str) -> Vec<u8> {
        let e = AuditEntry {
            at: self.clock.now_utc(),
            who: who.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
        };
        // Time first (entries in order), then a counter (two in the same nanosecond).
        let mut key = (e.at.unix_timestamp_nanos() as u128).to_be_bytes().to_vec();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        key.extend_from_slice(&n.to_be_bytes());
        self.write_audit(&key, &e);
        key
    }

    /// Records a burst of refused logins as one entry under the burst's key: written at its
    /// first failure, rewritten in place as it grows.
    pub fn record_refusals(
        &self,
        name: &str,
        from: std::net::IpAddr,
        burst: &crate::logins::Burst,
    ) {
        let target = format!(
            "{} failed since {} from {from}",
            burst.count,
            burst
                .first
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        let e = AuditEntry {
            at: self.clock.now_utc(),
            who: name.to_owned(),
            action: "login refused".to_owned(),
            target,
        };
        self.write_audit(&burst.audit_key, &e);
    }

    fn write_audit(&self, key: &[u8], e: &AuditEntry) {
        match serde_json::to_vec(e) {
            Ok(v) => {
                if let Err(err) = self.audit.insert(key, v) {
                    tracing::error!(error = %err, "cannot record an operator action");
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot encode an operator action"),
        }
    }

    /// The newest `limit` entries, newest first.
    pub fn audit(&self, limit: usize) -> Vec<AuditEntry> {
        self.audit
            .scan_rev(b"")
            .take(limit)
            .filter_map(|kv| kv.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operators() -> (Operators, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::SledState::new(sled::Config::new().path(dir.path()).open().unwrap());
        let accounts = vec![OperatorAccount {
            name: "wang".into(),
            role: "supervisor".into(),
            password_hash: hash_password("correct horse").unwrap(),
        }];
        let tokens = [ApiToken {
            name: "loader".into(),
            role: "administrator".into(),
            token_sha256: api_token_sha256("ge_secret-token"),
        }];
        (
            Operators::new(&accounts, &tokens, &db, Clock::system()).unwrap(),
            dir,
        )
    }

    #[test]
    fn an_api_token_names_its_holder_and_role_and_nothing_else_does() {
        let (ops, _dir) = operators();
        let s = ops.by_token("ge_secret-token").unwrap();
        assert_eq!((s.name.as_str(), s.role), ("loader", Role::Administrator));
        assert!(ops.by_token("ge_secret-tokem").is_none());
        assert!(ops.by_token("").is_none());
        let (t, hex) = new_api_token();
        assert!(t.starts_with("ge_") && t.len() > 40);
        assert_eq!(unhex(&hex), Some(sha256(t.as_bytes())));
    }

    #[test]
    fn a_password_opens_a_session_that_ends_when_idle_or_logged_out() {
        let (ops, _dir) = operators();
        let t0 = Instant::now();
        assert!(matches!(
            ops.login("wang", "wrong", t0),
            Err(LoginError::Refused)
        ));
        assert!(matches!(
            ops.login("nobody", "correct horse", t0),
            Err(LoginError::Refused)
        ));
        let (cookie, signed) = ops.login("wang", "correct horse", t0).unwrap();
        assert_eq!(signed.role, Role::Supervisor);
        assert!(signed.csrf.len() >= 40 && cookie.len() >= 40 && cookie != signed.csrf);
        assert_eq!(
            ops.session(&cookie, t0 + Duration::from_secs(60))
                .unwrap()
                .name,
            "wang"
        );
        assert!(ops
            .session(&cookie, t0 + Duration::from_secs(60) + IDLE)
            .is_none());
        // Used all the time, a session still ends at its lifetime.
        let (busy, _) = ops.login("wang", "correct horse", t0).unwrap();
        let mut t = t0;
        while t < t0 + LIFETIME - Duration::from_secs(3600) {
            t += Duration::from_secs(3600);
            assert!(ops.session(&busy, t).is_some());
        }
        assert!(ops.session(&busy, t0 + LIFETIME).is_none());
        let (cookie, _) = ops.login("wang", "correct horse", t0).unwrap();
        ops.logout(&cookie);
        assert!(ops.session(&cookie, t0).is_none());
        let actions: Vec<String> = ops.audit(10).into_iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                "logout",
                "login",
                "login",
                "login",
                "login refused",
                "login refused"
            ]
        );
        assert!(Role::Administrator > Role::Supervisor && Role::Supervisor > Role::Operator);
    }

    /// Two replicas on one table of sessions: a session opened on one is taken by the other,
    /// ends when idle on either, and a logout on one ends it on both. The table holds no
    /// cookie.
    #[tokio::test(start_paused = true)]
    async fn a_session_kept_in_a_shared_table_works_on_every_replica_and_ends_on_all() {
        let state = crate::state::MemoryState::default();
        let clock = Clock::following_tokio(time::macros::datetime!(2026-06-01 08:00 UTC));
        let accounts = vec![OperatorAccount {
            name: "wang".into(),
            role: "operator".into(),
            password_hash: hash_password("correct horse").unwrap(),
        }];
        let replica = || {
            let mut o = Operators::new(&accounts, &[], &state, clock).unwrap();
            o.share_sessions(state.table("sessions").unwrap());
            o
        };
        let (a, b) = (replica(), replica());
        let now = Instant::now();
        let (cookie, signed) = a.login("wang", "correct horse", now).unwrap();
        let on_b = b.session(&cookie, now).expect("b takes a's session");
        assert_eq!(
            (on_b.name.as_str(), on_b.csrf.as_str()),
            ("wang", signed.csrf.as_str())
        );
        let table = state.table("sessions").unwrap();
        assert!(
            table
                .scan(b"")
                .filter_map(Result::ok)
                .all(|(k, v)| k != cookie.as_bytes()
                    && !String::from_utf8_lossy(&v).contains(&cookie))
        );
        // Used on b within the idle time, it lives on a past a's idle time.
        tokio::time::advance(IDLE - Duration::from_secs(120)).await;
        assert!(b.session(&cookie, Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(240)).await;
        assert!(a.session(&cookie, Instant::now()).is_some());
        tokio::time::advance(IDLE).await;
        assert!(a.session(&cookie, Instant::now()).is_none(), "idle on both");
        let (cookie, _) = a.login("wang", "correct horse", Instant::now()).unwrap();
        b.logout(&cookie);
        assert!(
            a.session(&cookie, Instant::now()).is_none(),
            "logged out on b"
        );
        assert!(b.session("not-a-cookie", Instant::now()).is_none());
    }
}
