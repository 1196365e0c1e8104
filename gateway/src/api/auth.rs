//! Device tokens: who may call the gateway's API. Tokens are read from the environment or files
//! named in the config when the gateway starts; a device whose token cannot be read is logged
//! and left out, without stopping the others.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use firmware_config::config::{GatewayConfig, SecretRef};

use super::ApiError;

#[derive(Debug, Default)]
pub struct DeviceTokens {
    by_token: HashMap<String, String>,
}

impl DeviceTokens {
    pub fn from_config(config: &GatewayConfig) -> Self {
        let mut tokens = Self::default();
        let named: Vec<(&str, &SecretRef)> = config
            .sources
            .iter()
            .map(|s| (s.id.as_str(), &s.token))
            .chain(
                config
                    .terminals
                    .iter()
                    .filter_map(|t| t.token.as_ref().map(|tok| (t.id.as_str(), tok))),
            )
            .collect();
        for (id, secret) in named {
            match secret.read() {
                Ok(token) => {
                    tokens.by_token.insert(token, id.to_owned());
                }
                Err(e) => {
                    tracing::warn!(device = id, error = %e, "device token unavailable; its requests will be refused")
                }
            }
        }
        tokens
    }

    /// Every token `config` names, or the list of those that cannot be read.
    pub fn try_from_config(config: &GatewayConfig) -> Result<Self, Vec<String>> {
        let mut tokens = Self::default();
        let mut problems = Vec::new();
        let sources = config.sources.iter().map(|s| (s.id.as_str(), &s.token));
        let terminals = config
            .terminals
            .iter()
            .filter_map(|t| t.token.as_ref().map(|tok| (t.id.as_str(), tok)));
        for (id, secret) in sources.chain(terminals) {
            match secret.read() {
                Ok(token) => {
                    tokens.by_token.insert(token, id.to_owned());
                }
                Err(e) => problems.push(format!("token of {id}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(tokens)
        } else {
            Err(problems)
        }
    }

    /// The device a request's `Authorization: Bearer …` belongs to.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_owned());
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <device token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("Authorization must be Bearer <device token>"))?;
        self.device(token)
    }

    /// The device a bare token belongs to (browsers cannot set headers on a WebSocket, so
    /// viewer pages pass it as `?token=`).
    pub fn device(&self, token: &str) -> Result<&str, ApiError> {
        self.by_token
            .get(token.trim())
            .map(String::as_str)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown device token"))
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}
