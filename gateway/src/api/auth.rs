//! Who may call the gateway's API: event sources and terminals, each with its own token.
//!
//! Tokens are read from the environment or files named in the config when the gateway starts
//! (and when a bundle changes them); a device whose token cannot be read is logged and left
//! out, without stopping the others. A request proves who it is with `Authorization: Bearer
//! <token>`, or — for the pages a terminal's browser shows (`/kiosk`, `/viewer`) — with the
//! device session cookie it got in exchange for its token once (`device_session`), so that the
//! token never sits in a page's address.
//!
//! A source's token may post events (`POST /api/v1/events`) and nothing else; a terminal's may
//! do what its kind may, and never post events.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use firmware_config::config::{GatewayConfig, SecretRef};

use super::ApiError;
use crate::Shared;

/// Who holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// One of the centre's systems that hand events to the gateway (`[[sources]]`).
    Source(String),
    /// A kiosk, video terminal or screen (`[[terminals]]`).
    Terminal(String),
}

impl Holder {
    pub fn id(&self) -> &str {
        match self {
            Holder::Source(id) | Holder::Terminal(id) => id,
        }
    }
}

#[derive(Debug, Default)]
pub struct DeviceTokens {
    by_token: HashMap<String, Holder>,
    /// Each terminal's token, by id: a device session is valid only with the token it was
    /// made from (a new token ends the terminal's sessions).
    terminal_tokens: HashMap<String, String>,
}

type Named<'a> = Vec<(Holder, &'a SecretRef)>;

fn named(config: &GatewayConfig) -> Named<'_> {
    config
        .sources
        .iter()
        .map(|s| (Holder::Source(s.id.clone()), &s.token))
        .chain(config.terminals.iter().filter_map(|t| {
            t.token
                .as_ref()
                .map(|tok| (Holder::Terminal(t.id.clone()), tok))
        }))
        .collect()
}

impl DeviceTokens {
    fn insert(&mut self, holder: Holder, token: String) {
        if let Holder::Terminal(id) = &holder {
            self.terminal_tokens.insert(id.clone(), token.clone());
        }
        self.by_token.insert(token, holder);
    }

    pub fn from_config(config: &GatewayConfig) -> Self {
        let mut tokens = Self::default();
        for (holder, secret) in named(config) {
            match secret.read() {
                Ok(token) => tokens.insert(holder, token),
                Err(e) => {
                    tracing::warn!(device = holder.id(), error = %e, "device token unavailable; its requests will be refused")
                }
            }
        }
        tokens
    }

    /// Every token `config` names, or the list of those that cannot be read.
    pub fn try_from_config(config: &GatewayConfig) -> Result<Self, Vec<String>> {
        let mut tokens = Self::default();
        let mut problems = Vec::new();
        for (holder, secret) in named(config) {
            match secret.read() {
                Ok(token) => tokens.insert(holder, token),
                Err(e) => problems.push(format!("token of {}: {e}", holder.id())),
            }
        }
        if problems.is_empty() {
            Ok(tokens)
        } else {
            Err(problems)
        }
    }

    /// Who a bare token belongs to.
    pub fn holder(&self, token: &str) -> Result<&Holder, ApiError> {
        self.by_token
            .get(token.trim())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown device token"))
    }

    /// A terminal's token, for its device sessions.
    pub fn terminal_token(&self, id: &str) -> Option<&str> {
        self.terminal_tokens.get(id).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Authorization must be Bearer <device token>",
                )
            }),
    )
}

/// Who is calling: the holder of the bearer token, or of the device session cookie.
pub fn holder(shared: &Shared, headers: &HeaderMap) -> Result<Holder, ApiError> {
    if let Some(token) = bearer(headers) {
        return shared.tokens().holder(token?).cloned();
    }
    if let Some(terminal) = shared.device_sessions.terminal(&shared.tokens(), headers) {
        return Ok(Holder::Terminal(terminal));
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing Authorization: Bearer <device token> (or a device session: POST /api/v1/device-session)",
    ))
}

/// The terminal calling; 403 for a source.
pub fn terminal(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    match holder(shared, headers)? {
        Holder::Terminal(id) => Ok(id),
        Holder::Source(id) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{id:?} is an event source, not a terminal"),
        )),
    }
}

/// The event source calling, by its bearer token only; 403 for a terminal.
pub fn source(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <source token>",
        )
    })??;
    match shared.tokens().holder(token)? {
        Holder::Source(id) => Ok(id.clone()),
        Holder::Terminal(id) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{id:?} is a terminal; only the centre's event sources ([[sources]]) post events"
            ),
        )),
    }
}
