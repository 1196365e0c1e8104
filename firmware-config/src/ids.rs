//! Identifiers of sites, gateways, cameras and terminals.
//!
//! Ids appear in MQTT topics, URLs and store keys, so they are kept to a small, safe alphabet:
//! lower-case ASCII letters, digits, `-` and `_`, starting with a letter or digit, at most 64 bytes.
//! That rules out the MQTT wildcards `+` and `#`, the level separator `/` and anything needing
//! escaping in a URL path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("must start with a lower-case letter or digit")]
    BadStart,
    #[error("contains {0:?}; only a-z, 0-9, '-' and '_' are allowed")]
    BadChar(char),
}

/// Checks that `s` is a valid id (see the module documentation).
pub fn check_id(s: &str) -> Result<(), IdError> {
    let first = s.chars().next().ok_or(IdError::Empty)?;
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(IdError::BadStart);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

/// A gateway's id: one per community service centre gateway, bound to its TLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GatewayId(String);

impl GatewayId {
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_id(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GatewayId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<GatewayId> for String {
    fn from(id: GatewayId) -> String {
        id.0
    }
}

/// Maps keyed by id can be looked up by a plain `&str` (the derived `Hash` is the string's).
impl std::borrow::Borrow<str> for GatewayId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for ok in ["gw-1", "cam_hall", "0a", "a"] {
            assert_eq!(check_id(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_topic_and_url_metacharacters() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("-a"), Err(IdError::BadStart));
        assert_eq!(check_id("Gw"), Err(IdError::BadStart));
        assert_eq!(check_id("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(check_id("a+"), Err(IdError::BadChar('+')));
        assert_eq!(check_id("a#"), Err(IdError::BadChar('#')));
        assert_eq!(check_id("网格"), Err(IdError::BadStart));
        assert!(matches!(
            check_id(&"a".repeat(65)),
            Err(IdError::TooLong(65))
        ));
    }

    #[test]
    fn gateway_id_rejects_bad_input_when_deserialized() {
        let err = serde_json::from_str::<GatewayId>("\"gw/+\"").unwrap_err();
        assert!(err.to_string().contains("only a-z"), "{err}");
        let ok: GatewayId = serde_json::from_str("\"gw-1\"").unwrap();
        assert_eq!(ok.as_str(), "gw-1");
    }
}
