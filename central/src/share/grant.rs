//! Share grants: an operator's permission for named viewers to watch one camera of one
//! gateway until a time. Each viewer gets its own token — the grant id, the viewer and the
//! expiry, signed with central's key (HMAC-SHA256) — so a token cannot be stretched to another
//! grant, viewer or time, and every watch is audited by name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub gateway: String,
    pub camera: String,
    pub viewers: Vec<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    pub issued_by: String,
}

/// What a viewer token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Grant id.
    pub g: String,
    /// Viewer.
    pub v: String,
    /// Expiry, Unix seconds.
    pub e: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a share token")]
    Malformed,
    #[error("the token's signature is not central's")]
    BadSignature,
    #[error("the share expired")]
    Expired,
}

/// Signs and checks viewer tokens.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn token(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let sig = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64.encode(sig.as_ref()))
    }

    /// The claims of a token signed by this key and not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.e <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hold_only_for_their_key_claims_and_time() {
        let s = Signer::new(b"k1");
        let c = Claims {
            g: "g1".into(),
            v: "ops-zhang".into(),
            e: 1000,
        };
        let t = s.token(&c);
        assert_eq!(s.verify(&t, 999), Ok(c.clone()));
        assert_eq!(s.verify(&t, 1000), Err(TokenError::Expired));
        assert_eq!(
            Signer::new(b"k2").verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        // Another viewer's claims under this signature.
        let forged_body = B64.encode(
            serde_json::to_vec(&Claims {
                v: "intruder".into(),
                ..c
            })
            .unwrap(),
        );
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(
            s.verify(&format!("{forged_body}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(s.verify("nonsense", 0), Err(TokenError::Malformed));
    }
}
