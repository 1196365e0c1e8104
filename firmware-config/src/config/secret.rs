//! References to secrets (camera passwords, device tokens). A config file never holds a secret
//! itself: it names an environment variable or a file, and the service reads it when it needs it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a secret comes from: exactly one of `env` or `file`.
/// In TOML: `password = { env = "CAM_HALL_PASSWORD" }` or `token = { file = "secrets/kiosk-1" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline ignored); relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret reference names neither `env` nor `file`")]
    Unset,
    #[error("secret is empty")]
    Empty,
}

impl SecretRef {
    pub fn env(name: &str) -> Self {
        Self {
            env: Some(name.to_owned()),
            file: None,
        }
    }

    /// Reads the secret now. Services call this when they need it, so a secret can be rotated
    /// without a restart and one device's missing secret does not stop the others.
    pub fn read(&self) -> Result<String, SecretError> {
        let value = match (&self.env, &self.file) {
            (Some(name), _) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => return Err(SecretError::Unset),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(value)
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.file {
            *f = super::resolve(base, f);
        }
    }

    pub(crate) fn validate(&self, path: &str, v: &mut super::Validator) {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => v.error(path, "give either `env` or `file`, not both"),
            (None, None) => v.error(path, "give `env` (a variable name) or `file` (a path)"),
            (Some(name), None) => {
                let ok = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    v.error(
                        &format!("{path}.env"),
                        format!("{name:?} is not a valid environment variable name"),
                    );
                }
            }
            (None, Some(file)) => v.file_exists(&format!("{path}.file"), file),
        }
    }
}
