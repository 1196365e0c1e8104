//! Terminals on the gateway's API: heartbeats in, health out, and each terminal's settings
//! bundle for it to fetch.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::ApiError;
use crate::terminals::{HeartbeatError, HeartbeatReply, TerminalView};
use crate::Shared;

pub use crate::terminals::report::MAX_HEARTBEAT_BYTES;

/// `POST /api/v1/terminals/heartbeat` with the terminal's token.
pub async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let tokens = shared.tokens();
    let device = tokens.authenticate(&headers)?;
    let hb = crate::terminals::Heartbeat::parse(&body).map_err(ApiError::bad_request)?;
    shared
        .terminals
        .heartbeat(device, hb, Instant::now())
        .map(Json)
        .map_err(|e| match e {
            HeartbeatError::NotATerminal(id) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{id:?} is not a terminal; only terminals send heartbeats"),
            ),
            HeartbeatError::NotHeartbeating(id) => ApiError::new(
                StatusCode::CONFLICT,
                format!("terminal {id:?} is probed by the gateway; its config has no heartbeat"),
            ),
        })
}

/// `GET /api/v1/terminals`: every terminal's health.
pub async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<TerminalView>> {
    Json(shared.terminals.views(Instant::now()))
}

/// `GET /api/v1/terminals/{id}`.
pub async fn one(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<TerminalView>, ApiError> {
    shared
        .terminals
        .views(Instant::now())
        .into_iter()
        .find(|t| t.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no terminal {id:?}")))
}

/// `GET /api/v1/terminals/config` with the terminal's token: its signed settings bundle.
/// Send `If-None-Match` with the last ETag to get 304 while it has not changed.
pub async fn config(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tokens = shared.tokens();
    let device = tokens.authenticate(&headers)?;
    if !shared.config().terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal"),
        ));
    }
    let bundle = shared.bundles.terminal(device).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no settings bundle for terminal {device:?} yet"),
        )
    })?;
    let etag = HeaderValue::from_str(&bundle.etag)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad etag"))?;
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == bundle.etag || t.trim() == "*");
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            bundle.json.to_string(),
        )
            .into_response()
    };
    response.headers_mut().insert(header::ETAG, etag);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
