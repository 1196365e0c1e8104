//! Console accounts kept at central: made, changed, disabled and given new passwords by
//! administrators in the console, in the state table `operator_accounts` (shared by replicas).
//! An account here stands over one of the same name in central.toml, so an administrator can
//! also disable or rescope an account the file made; the file's accounts remain the way in for
//! a new installation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Role;
use crate::state::{StateError, Table};

/// An account as central keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub role: Role,
    #[serde(default)]
    pub scope: Option<String>,
    /// Argon2id PHC string.
    pub hash: String,
    #[serde(default)]
    pub disabled: bool,
    pub updated_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

/// An account as the console lists it (never its hash).
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub name: String,
    pub role: Role,
    pub scope: Option<String>,
    pub disabled: bool,
    /// `central` (kept here) or `config` (central.toml, never changed here).
    pub source: &'static str,
    pub updated_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated: Option<OffsetDateTime>,
}

/// A change of an account; a field left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub role: Option<Role>,
    /// `null` (or `""`) for the whole street.
    #[serde(default, deserialize_with = "some_scope")]
    pub scope: Option<Option<String>>,
    pub disabled: Option<bool>,
}

fn some_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(Some(v.filter(|s| !s.is_empty())))
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field is wrong; the text names it.
    #[error("{0}")]
    Invalid(String),
    #[error("no account {0:?}")]
    NotFound(String),
    /// Not allowed as things are (a name taken, an administrator locking themselves out).
    #[error("{0}")]
    Conflict(String),
    #[error("accounts store: {0}")]
    Store(#[from] StateError),
    #[error("accounts store: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("password hashing: {0}")]
    Hash(String),
}

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD: usize = 10;

pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "name: 1 to 32 letters, digits, '-', '_' or '.'".into(),
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD || password.len() > 256 {
        return Err(AccountError::Invalid(format!(
            "password: {MIN_PASSWORD} to 256 characters"
        )));
    }
    Ok(())
}

/// The table of accounts kept at central.
pub struct Accounts {
    table: Arc<dyn Table>,
}

impl Accounts {
    pub fn new(table: Arc<dyn Table>) -> Self {
        Self { table }
    }

    pub fn get(&self, name: &str) -> Option<Stored> {
        match self.table.get(name.as_bytes()) {
            Ok(v) => serde_json::from_slice(&v?).ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read an operator account");
                None
            }
        }
    }

    pub fn all(&self) -> Vec<(String, Stored)> {
        self.table
            .scan(b"")
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                Some((String::from_utf8(k).ok()?, serde_json::from_slice(&v).ok()?))
            })
            .collect()
    }

    /// Writes a new account unless the name is taken here.
    pub fn create(&self, name: &str, a: &Stored) -> Result<(), AccountError> {
        let v = serde_json::to_vec(a)?;
        let held = self.table.insert_if_absent(name.as_bytes(), v.clone())?;
        if held != v {
            return Err(AccountError::Conflict(format!("name: {name:?} is taken")));
        }
        self.table.flush()?;
        Ok(())
    }

    /// Changes an account with `f` by compare-and-set, starting from `base` when central
    /// keeps none of that name yet (an account from central.toml).
    pub fn update(
        &self,
        name: &str,
        base: Option<Stored>,
        mut f: impl FnMut(&mut Stored) -> Result<(), AccountError>,
    ) -> Result<Stored, AccountError> {
        for _ in 0..8 {
            match self.table.get(name.as_bytes())? {
                Some(held) => {
                    let mut a: Stored = serde_json::from_slice(&held)?;
                    f(&mut a)?;
                    if self
                        .table
                        .replace_if(name.as_bytes(), &held, serde_json::to_vec(&a)?)?
                    {
                        self.table.flush()?;
                        return Ok(a);
                    }
                }
                None => {
                    let mut a = base
                        .clone()
                        .ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
                    f(&mut a)?;
                    let v = serde_json::to_vec(&a)?;
                    if self.table.insert_if_absent(name.as_bytes(), v.clone())? == v {
                        self.table.flush()?;
                        return Ok(a);
                    }
                }
            }
        }
        Err(AccountError::Conflict(format!(
            "{name:?} changed meanwhile; try again"
        )))
    }
}
