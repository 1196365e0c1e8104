//! Meetings on central's API: book, list, reschedule, cancel; the invitees' answers come back
//! from their terminals.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::meetings::{self, Booking};
use crate::Shared;

fn error(status: StatusCode, m: impl Into<String>) -> Response {
    (status, Json(json!({ "error": m.into() }))).into_response()
}

fn refusal(e: String) -> Response {
    let status = if e.starts_with("no meeting") {
        StatusCode::NOT_FOUND
    } else if e.contains("was cancelled") {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, e)
}

/// `GET /api/v1/meetings`: every meeting, soonest first, with each invitee's state.
pub async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "meetings": shared.meetings.list() })).into_response()
}

/// `GET /api/v1/meetings/{id}`.
pub async fn one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.meetings.get(&id) {
        Some(m) => Json(json!(m)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no meeting {id:?}")),
    }
}

/// `POST /api/v1/meetings {"kind","title","starts","ends","room","invitees":[{"gateway","terminal"}],"by"}`:
/// 201; each invited terminal's gateway is sent the invitation.
pub async fn book(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<Booking>, JsonRejection>,
) -> Response {
    let b = match req {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let s = shared.clone();
    let booked =
        tokio::task::spawn_blocking(move || s.meetings.book(b, OffsetDateTime::now_utc())).await;
    match booked {
        Ok(Ok(m)) => {
            meetings::dispatch(&shared, &m);
            tracing::info!(meeting = %m.id, invitees = m.invitees.len(), "meeting booked");
            (StatusCode::CREATED, Json(json!(m))).into_response()
        }
        Ok(Err(e)) => refusal(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    by: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    starts: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    ends: Option<OffsetDateTime>,
    #[serde(default)]
    room: Option<String>,
}

/// `POST /api/v1/meetings/{id}/reschedule {"starts","ends","room"?,"by"}` and
/// `POST /api/v1/meetings/{id}/cancel {"by"}`: the change reaches every invited terminal.
pub async fn change(
    State(shared): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    req: Result<Json<Change>, JsonRejection>,
) -> Response {
    let c = match req {
        Ok(Json(c)) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if c.by.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "by: who changes it");
    }
    let now = OffsetDateTime::now_utc();
    let s = shared.clone();
    let changed = tokio::task::spawn_blocking(move || {
        s.meetings.change(
            &id,
            &c.by,
            |m| match action.as_str() {
                "reschedule" => match (c.starts, c.ends) {
                    (Some(a), Some(b)) => meetings::reschedule(m, a, b, c.room, now),
                    _ => Err("starts and ends: the new times".into()),
                },
                "cancel" => {
                    m.cancelled = true;
                    Ok("cancelled".into())
                }
                other => Err(format!(
                    "{other:?} is not an action; use reschedule or cancel"
                )),
            },
            now,
        )
    })
    .await;
    match changed {
        Ok(Ok(m)) => {
            meetings::dispatch(&shared, &m);
            Json(json!(m)).into_response()
        }
        Ok(Err(e)) => refusal(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
