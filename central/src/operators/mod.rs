//! Operators of the console: their logins (Argon2id hashes from central's config), sessions
//! (a random cookie and a CSRF token each, ended after `IDLE` without use), roles, and the
//! audit trail of everything they do.
//!
//! Sessions live in memory on one central. On PostgreSQL they are rows of a shared table, so
//! that any replica takes a session another opened, and a logout ends it everywhere at once.
//! A row is keyed by the SHA-256 of its cookie: whoever reads the database cannot present it.

pub mod accounts;

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
    /// The grid whose cases this operator reaches (with those below it); None: the street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// Role, password hash and scope by login name.
    accounts: HashMap<String, (Role, String, Option<String>)>,
    /// API tokens: name, role, SHA-256 of the token, scope.
    tokens: Vec<(String, Role, [u8; 32], Option<String>)>,
    /// Checked against when the name is unknown, so names cannot be probed by timing.
    dummy: String,
    next: std::sync::atomic::AtomicU64,
    sessions: Mutex<HashMap<String, Session>>,
    /// Sessions shared by replicas, instead of `sessions`.
    shared: Option<std::sync::Arc<dyn Table>>,
    /// Accounts made or changed in the console, over those of central.toml.
    stored: accounts::Accounts,
    audit: std::sync::Arc<dyn Table>,
    /// Dates the audit trail.
    clock: Clock,
}

fn view(name: &str, a: &accounts::Stored) -> accounts::View {
    accounts::View {
        name: name.to_owned(),
        role: a.role,
        scope: a.scope.clone(),
        disabled: a.disabled,
        source: "central",
        updated_by: Some(a.updated_by.clone()),
        updated: Some(a.updated),
    }
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
                    t.scope.clone(),
                ))
            })
            .collect();
        let accounts = accounts
            .iter()
            .filter_map(|a| {
                Some((
                    a.name.clone(),
                    (
                        Role::parse(&a.role)?,
                        a.password_hash.clone(),
                        a.scope.clone(),
                    ),
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
            stored: accounts::Accounts::new(state.table("operator_accounts")?),
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
        for (name, role, hash, scope) in &self.tokens {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some((name, role, scope));
            }
        }
        found.map(|(name, role, scope)| Signed {
            name: name.clone(),
            role: *role,
            csrf: String::new(),
            scope: scope.clone(),
        })
    }

    /// An account by name: role, password hash, scope and whether it is disabled; central's
    /// own record over central.toml's.
    fn account(&self, name: &str) -> Option<(Role, String, Option<String>, bool)> {
        if let Some(a) = self.stored.get(name) {
            return Some((a.role, a.hash, a.scope, a.disabled));
        }
        self.accounts
            .get(name)
            .map(|(r, h, s)| (*r, h.clone(), s.clone(), false))
    }

    /// Every account, central's and central.toml's, by name.
    pub fn list_accounts(&self) -> Vec<accounts::View> {
        let mut out: std::collections::BTreeMap<String, accounts::View> = self
            .accounts
            .iter()
            .map(|(name, (role, _, scope))| {
                (
                    name.clone(),
                    accounts::View {
                        name: name.clone(),
                        role: *role,
                        scope: scope.clone(),
                        disabled: false,
                        source: "config",
                        updated_by: None,
                        updated: None,
                    },
                )
            })
            .collect();
        for (name, a) in self.stored.all() {
            out.insert(name.clone(), view(&name, &a));
        }
        out.into_values().collect()
    }

    /// Makes an account (blocking: hashes the password).
    pub fn create_account(
        &self,
        name: &str,
        role: Role,
        scope: Option<String>,
        password: &str,
        by: &str,
    ) -> Result<accounts::View, accounts::AccountError> {
        accounts::check_name(name)?;
        accounts::check_password(password)?;
        if self.accounts.contains_key(name) {
            return Err(accounts::AccountError::Conflict(format!(
                "name: {name:?} is taken"
            )));
        }
        let a = accounts::Stored {
            role,
            scope,
            hash: hash_password(password)
                .map_err(|e| accounts::AccountError::Hash(e.to_string()))?,
            disabled: false,
            updated_by: by.to_owned(),
            updated: self.clock.now_utc(),
        };
        self.stored.create(name, &a)?;
        self.record(by, "account created", &format!("{name} {}", role.as_str()));
        Ok(view(name, &a))
    }

    /// Changes an account's role, scope or whether it is disabled. An administrator cannot
    /// disable or demote their own account (no one would be left to undo it).
    pub fn change_account(
        &self,
        name: &str,
        change: &accounts::Change,
        by: &str,
    ) -> Result<accounts::View, accounts::AccountError> {
        if name == by
            && (change.disabled == Some(true)
                || change.role.is_some_and(|r| r < Role::Administrator))
        {
            return Err(accounts::AccountError::Conflict(
                "you cannot disable or demote your own account".into(),
            ));
        }
        let base = self.config_account(name, by);
        let now = self.clock.now_utc();
        let a = self.stored.update(name, base, |a| {
            if let Some(r) = change.role {
                a.role = r;
            }
            if let Some(s) = &change.scope {
                a.scope = s.clone();
            }
            if let Some(d) = change.disabled {
                a.disabled = d;
            }
            a.updated_by = by.to_owned();
            a.updated = now;
            Ok(())
        })?;
        self.record(
            by,
            "account changed",
            &format!(
                "{name} {} scope {} {}",
                a.role.as_str(),
                a.scope.as_deref().unwrap_or("street"),
                if a.disabled { "disabled" } else { "enabled" }
            ),
        );
        Ok(view(name, &a))
    }

    /// Gives an account a new password (blocking: hashes it).
    pub fn set_password(
        &self,
        name: &str,
        password: &str,
        by: &str,
    ) -> Result<(), accounts::AccountError> {
        accounts::check_password(password)?;
        let hash =
            hash_password(password).map_err(|e| accounts::AccountError::Hash(e.to_string()))?;
        let base = self.config_account(name, by);
        let now = self.clock.now_utc();
        self.stored.update(name, base, |a| {
            a.hash = hash.clone();
            a.updated_by = by.to_owned();
            a.updated = now;
            Ok(())
        })?;
        self.record(by, "account password reset", name);
        Ok(())
    }

    /// central.toml's account of `name`, as central would start keeping it.
    fn config_account(&self, name: &str, by: &str) -> Option<accounts::Stored> {
        self.accounts
            .get(name)
            .map(|(role, hash, scope)| accounts::Stored {
                role: *role,
                scope: scope.clone(),
                hash: hash.clone(),
                disabled: false,
                updated_by: by.to_owned(),
                updated: self.clock.now_utc(),
            })
    }

    /// A session's account as it is now: its role and scope, or none when it is disabled or
    /// gone (the session ends).
    fn still(&self, mut signed: Signed) -> Option<Signed> {
        match self.account(&signed.name) {
            Some((role, _, scope, false)) => {
                signed.role = role;
                signed.scope = scope;
                Some(signed)
            }
            _ => None,
        }
    }

    /// Checks a password (deliberately slow: call off the async workers, one of few at a time
    /// — see `logins`): the account's role and scope, or a refusal that says nothing of why.
    pub fn verify(&self, name: &str, password: &str) -> Result<(Role, Option<String>), LoginError> {
        let account = self.account(name);
        let (role, hash) = match &account {
            // A disabled account is checked all the same: the answer takes as long.
            Some((r, h, scope, disabled)) => ((!disabled).then(|| (*r, scope.clone())), h.as_str()),
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
    pub fn open_session(
        &self,
        name: &str,
        (role, scope): (Role, Option<String>),
        now: Instant,
    ) -> (String, Signed) {
        let signed = Signed {
            name: name.to_owned(),
            role,
            csrf: token(),
            scope,
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
            Ok(account) => Ok(self.open_session(name, account, now)),
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
            let Some(signed) = self.still(row.signed.clone()) else {
                let _ = table.remove(&session_key(cookie));
                return None;
            };
            // Marked used once a minute, not on every request.
            if now - row.last_used >= 60 {
                row.last_used = now;
                row.put(table.as_ref(), cookie);
            }
            return Some(signed);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let s = sessions.get_mut(cookie)?;
        if !s.live(now) {
            sessions.remove(cookie);
            return None;
        }
        s.last_used = now;
        let signed = s.signed.clone();
        drop(sessions);
        let still = self.still(signed);
        if still.is_none() {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(cookie);
        }
        still
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
            scope: None,
        }];
        let tokens = [ApiToken {
            name: "loader".into(),
            role: "administrator".into(),
            token_sha256: api_token_sha256("ge_secret-token"),
            scope: None,
        }];
        (
            Operators::new(&accounts, &tokens, &db, Clock::system()).unwrap(),
            dir,
        )
    }

    #[test]
    fn accounts_made_in_the_console_log_in_and_a_change_reaches_open_sessions() {
        let (ops, _dir) = operators();
        let now = Instant::now();
        let made = ops
            .create_account(
                "li",
                Role::Operator,
                Some("B11".into()),
                "station pass 1",
                "admin",
            )
            .unwrap();
        assert_eq!(
            (made.source, made.scope.as_deref()),
            ("central", Some("B11"))
        );
        assert!(
            matches!(
                ops.create_account("wang", Role::Operator, None, "long enough 1", "admin"),
                Err(accounts::AccountError::Conflict(_))
            ),
            "central.toml's names are taken"
        );
        assert!(matches!(
            ops.create_account("zhao", Role::Operator, None, "short", "admin"),
            Err(accounts::AccountError::Invalid(m)) if m.contains("password")
        ));
        let (cookie, signed) = ops.login("li", "station pass 1", now).unwrap();
        assert_eq!(signed.scope.as_deref(), Some("B11"));
        // Rescoped and promoted: the open session follows at once.
        let change =
            |json: serde_json::Value| -> accounts::Change { serde_json::from_value(json).unwrap() };
        ops.change_account(
            "li",
            &change(serde_json::json!({"role": "supervisor", "scope": "A1"})),
            "admin",
        )
        .unwrap();
        let s = ops.session(&cookie, now).unwrap();
        assert_eq!((s.role, s.scope.as_deref()), (Role::Supervisor, Some("A1")));
        // Disabled: the session ends and the password opens nothing.
        ops.change_account(
            "li",
            &change(serde_json::json!({"disabled": true})),
            "admin",
        )
        .unwrap();
        assert!(ops.session(&cookie, now).is_none());
        assert_eq!(
            ops.login("li", "station pass 1", now).unwrap_err(),
            LoginError::Refused
        );
        // central.toml's account: disabled here too, and a new password from the console.
        let (wang, _) = ops.login("wang", "correct horse", now).unwrap();
        ops.set_password("wang", "a new horse 2", "admin").unwrap();
        assert!(ops.login("wang", "correct horse", now).is_err());
        assert!(ops.login("wang", "a new horse 2", now).is_ok());
        ops.change_account(
            "wang",
            &change(serde_json::json!({"disabled": true})),
            "admin",
        )
        .unwrap();
        assert!(ops.session(&wang, now).is_none());
        let all = ops.list_accounts();
        assert!(
            all.iter().all(|a| a.disabled && a.source == "central"),
            "{all:?}"
        );
        // No administrator locks themselves out.
        assert!(matches!(
            ops.change_account(
                "root",
                &change(serde_json::json!({"disabled": true})),
                "root"
            ),
            Err(accounts::AccountError::Conflict(_))
        ));
        let audit = ops.audit(50);
        assert!(audit
            .iter()
            .any(|e| e.action == "account changed" && e.who == "admin"));
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
            scope: None,
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
