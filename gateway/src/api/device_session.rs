//! Device sessions: a terminal's browser (a kiosk, the security room's camera wall) exchanges
//! its token once for an HttpOnly cookie, so that the token never sits in a page's address,
//! its history or a server log.
//!
//! The cookie is `<terminal>.<expiry>.<mac>`: an HMAC-SHA256, under a key the gateway keeps in
//! its storage folder (`device-sessions.key`), over the terminal, the expiry and the terminal's
//! token. It needs no state, so it survives restarts; it ends at its expiry (an absolute
//! lifetime of [`LIFETIME`]), or at once when the terminal's token changes.
//!
//! | endpoint | who |
//! | --- | --- |
//! | `POST /api/v1/device-session` `{"token"}` | a terminal, with its token once: sets the cookie |
//! | `GET /api/v1/device-session` | a terminal with the cookie: who it is |
//! | `DELETE /api/v1/device-session` | anyone: clears the cookie |

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ring::hmac;
use serde::Deserialize;
use serde_json::json;

use super::auth::{DeviceTokens, Holder};
use super::ApiError;
use crate::Shared;

/// The cookie's name.
pub const COOKIE: &str = "gridedge_device";

/// How long a device session lasts, however much it is used.
pub const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The key device sessions are signed with.
pub struct DeviceSessions {
    key: hmac::Key,
    /// Whether the gateway serves HTTPS (the cookie is then `Secure`).
    secure: bool,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn message(terminal: &str, expiry: i64, token: &str) -> Vec<u8> {
    let mut m = b"gridedge-device-session-v1\0".to_vec();
    m.extend_from_slice(terminal.as_bytes());
    m.push(0);
    m.extend_from_slice(&expiry.to_be_bytes());
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    m
}

impl DeviceSessions {
    /// The key in `dir/device-sessions.key`, made (mode 0600) when there is none.
    pub fn open(dir: &Path, secure: bool) -> std::io::Result<Self> {
        let path = dir.join("device-sessions.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            _ => {
                let fresh: [u8; 32] = rand::random();
                write_secret(&path, &fresh)?;
                fresh.to_vec()
            }
        };
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            secure,
        })
    }

    /// A cookie value for `terminal` holding `token`, valid until `expiry` (Unix seconds).
    pub fn make(&self, terminal: &str, token: &str, expiry: i64) -> String {
        let tag = hmac::sign(&self.key, &message(terminal, expiry, token));
        format!(
            "{}.{expiry}.{}",
            b64().encode(terminal),
            b64().encode(tag.as_ref())
        )
    }

    /// The terminal a cookie value names, if it is valid for its current token at `now`.
    pub fn check(
        &self,
        value: &str,
        now: i64,
        token_of: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let mut parts = value.trim().split('.');
        let (id, expiry, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let terminal = String::from_utf8(b64().decode(id).ok()?).ok()?;
        let expiry: i64 = expiry.parse().ok()?;
        if expiry <= now {
            return None;
        }
        let tag = b64().decode(tag).ok()?;
        let token = token_of(&terminal)?;
        hmac::verify(&self.key, &message(&terminal, expiry, &token), &tag).ok()?;
        Some(terminal)
    }

    /// The terminal of a request's session cookie, if it has a valid one.
    pub fn terminal(&self, tokens: &DeviceTokens, headers: &HeaderMap) -> Option<String> {
        let value = cookie(headers)?;
        self.check(&value, now(), |id| {
            tokens.terminal_token(id).map(str::to_owned)
        })
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    firmware_config::durable::write(path, bytes, firmware_config::durable::Access::OwnerOnly)
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    firmware_config::runtime::cookie(headers, COOKIE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    token: String,
}

/// `POST /api/v1/device-session {"token"}`: a terminal's token, once, for a session cookie.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<Exchange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(x) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if x.token.len() > 512 {
        return Err(ApiError::bad_request("token: too long"));
    }
    let holder = shared.tokens().holder(&x.token)?.clone();
    let Holder::Terminal(terminal) = holder else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "an event source has no pages; device sessions are for terminals",
        ));
    };
    let expiry = now() + LIFETIME.as_secs() as i64;
    let value = shared
        .device_sessions
        .make(&terminal, x.token.trim(), expiry);
    let set = shared
        .device_sessions
        .set_cookie(&value, LIFETIME.as_secs());
    tracing::info!(%terminal, "device session opened");
    Ok((
        [(header::SET_COOKIE, set)],
        Json(json!({ "terminal": terminal, "expires": expiry })),
    )
        .into_response())
}

/// `GET /api/v1/device-session`: which terminal this browser's session belongs to.
pub async fn whoami(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let terminal = shared
        .device_sessions
        .terminal(&shared.tokens(), &headers)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no device session: POST /api/v1/device-session with the terminal's token",
            )
        })?;
    let kind = shared
        .config()
        .terminals
        .iter()
        .find(|t| t.id == terminal)
        .map(|t| t.kind);
    Ok(Json(json!({ "terminal": terminal, "kind": kind })))
}

/// `DELETE /api/v1/device-session`: forgets this browser's session.
pub async fn remove(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::SET_COOKIE, shared.device_sessions.set_cookie("", 0))],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_terminal_until_it_expires_or_the_token_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = DeviceSessions::open(dir.path(), false).unwrap();
        let token_of = |t: &str| (t == "kiosk-1").then(|| "secret-1".to_owned());
        let v = s.make("kiosk-1", "secret-1", 1000);
        assert_eq!(s.check(&v, 999, token_of).as_deref(), Some("kiosk-1"));
        assert_eq!(s.check(&v, 1000, token_of), None, "expired");
        let rotated = |t: &str| (t == "kiosk-1").then(|| "secret-2".to_owned());
        assert_eq!(s.check(&v, 999, rotated), None, "token changed");
        // Tampered: another terminal's name, a later expiry, a cut tag.
        let parts: Vec<&str> = v.split('.').collect();
        let other = format!("{}.{}.{}", b64().encode("kiosk-2"), parts[1], parts[2]);
        let both = |_: &str| Some("secret-1".to_owned());
        assert_eq!(s.check(&other, 999, both), None);
        let later = format!("{}.{}.{}", parts[0], 99_999, parts[2]);
        assert_eq!(s.check(&later, 999, token_of), None);
        assert_eq!(s.check(&v[..v.len() - 2], 999, token_of), None);
        assert_eq!(s.check("garbage", 999, token_of), None);
        // The key survives a restart; another gateway's does not verify.
        let again = DeviceSessions::open(dir.path(), false).unwrap();
        assert_eq!(again.check(&v, 999, token_of).as_deref(), Some("kiosk-1"));
        let other_dir = tempfile::tempdir().unwrap();
        let foreign = DeviceSessions::open(other_dir.path(), false).unwrap();
        assert_eq!(foreign.check(&v, 999, token_of), None);
    }
}
