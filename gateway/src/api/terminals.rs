//! Terminals on the gateway's API: heartbeats in, health out, and each terminal's settings
//! bundle for it to fetch.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::Instant;

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
    let device = super::auth::terminal(&shared, &headers)?;
    let hb = crate::terminals::Heartbeat::parse(&body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    shared
        .terminals
        .heartbeat(&device, hb, Instant::now())
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
    let device = terminal_of(&shared, &headers)?;
    let bundle = shared.bundles.terminal(&device).ok_or_else(|| {
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

/// The terminal a request is from: 401 without a known token, 403 for another device's.
fn terminal_of(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let device = super::auth::terminal(shared, headers)?;
    if !shared.config().terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal"),
        ));
    }
    Ok(device)
}

#[derive(serde::Deserialize)]
pub struct MeetingsQuery {
    /// The version the terminal has seen; the answer waits for a newer one.
    #[serde(default)]
    since: u64,
    /// Seconds to wait for a change (long poll), 0 to 60. Default 0.
    #[serde(default)]
    wait: u64,
}

/// `GET /api/v1/terminals/meetings?since=V&wait=S`: the terminal's invitations that have not
/// ended, once the version passes `since` or `wait` seconds pass.
pub async fn meetings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<axum::extract::Query<MeetingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let terminal = terminal_of(&shared, &headers)?;
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("query: {e}; use ?since=…&wait=…")))?;
    if q.wait > 60 {
        return Err(ApiError::bad_request("wait: 0 to 60 seconds"));
    }
    shared
        .meetings
        .wait_past(q.since, std::time::Duration::from_secs(q.wait))
        .await;
    let (version, invitations) = shared.meetings.snapshot(&terminal, shared.clock.now_utc());
    Ok(Json(
        serde_json::json!({ "version": version, "invitations": invitations }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    answer: String,
}

/// `POST /api/v1/terminals/meetings/{meeting}/answer {"answer": accepted|declined|joined|left}`:
/// 202 once the answer is in the outbox, on its way to central.
pub async fn answer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Path(meeting): axum::extract::Path<String>,
    body: Result<Json<Answer>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let terminal = terminal_of(&shared, &headers)?;
    let Json(a) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if firmware_config::wire::MeetingAnswer::parse(&a.answer).is_none() {
        return Err(ApiError::bad_request(format!(
            "answer: {:?} is not one of accepted, declined, joined, left",
            a.answer
        )));
    }
    let inv = shared.meetings.get(&terminal, &meeting).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no invitation to {meeting:?} for {terminal:?}"),
        )
    })?;
    if inv.cancelled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("meeting {meeting:?} was cancelled"),
        ));
    }
    let payload = serde_json::json!({
        "meeting": meeting, "terminal": terminal, "answer": a.answer, "revision": inv.revision,
    });
    let event = crate::outbox::NewEvent::own(Kind::MeetingAnswer, &payload)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    shared
        .outbox
        .append(vec![event])
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}")))?;
    tracing::info!(%meeting, %terminal, answer = %a.answer, "meeting answer");
    Ok((StatusCode::ACCEPTED, Json(payload)))
}
