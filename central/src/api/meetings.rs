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

use super::session::Operator;
use super::ApiError;
use crate::meetings::{self, Booking, MeetingError};
use crate::operators::Role;
use crate::Shared;

fn refusal(e: MeetingError) -> Response {
    let status = match e {
        MeetingError::Invalid(_) => StatusCode::BAD_REQUEST,
        MeetingError::NotFound(_) => StatusCode::NOT_FOUND,
        MeetingError::Cancelled(_) => StatusCode::CONFLICT,
        MeetingError::Store(_) | MeetingError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string()).into_response()
}

/// `GET /api/v1/meetings`: every meeting, soonest first, with each invitee's state.
pub async fn list(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    Json(json!({ "meetings": shared.meetings.list() })).into_response()
}

/// `GET /api/v1/meetings/{id}`.
pub async fn one(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    Path(id): Path<String>,
) -> Response {
    match shared.meetings.get(&id) {
        Some(m) => Json(json!(m)).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no meeting {id:?}")).into_response(),
    }
}

/// `POST /api/v1/meetings {"kind","title","starts","ends","room","invitees":[{"gateway","terminal"}]}`
/// (supervisors): 201; each invited terminal's gateway is sent the invitation.
pub async fn book(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    req: Result<Json<Booking>, JsonRejection>,
) -> Response {
    let by = match op.require(Role::Supervisor) {
        Ok(s) => s.name.clone(),
        Err(r) => return r.into_response(),
    };
    let b = match req {
        Ok(Json(b)) => b,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let s = shared.clone();
    let who = by.clone();
    let booked =
        tokio::task::spawn_blocking(move || s.meetings.book(b, &who, s.clock.now_utc())).await;
    match booked {
        Ok(Ok(m)) => {
            meetings::dispatch(&shared, &m);
            shared.operators.record(&by, "meeting.book", &m.id);
            tracing::info!(meeting = %m.id, invitees = m.invitees.len(), "meeting booked");
            (StatusCode::CREATED, Json(json!(m))).into_response()
        }
        Ok(Err(e)) => refusal(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default, with = "time::serde::rfc3339::option")]
    starts: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    ends: Option<OffsetDateTime>,
    #[serde(default)]
    room: Option<String>,
}

/// `POST /api/v1/meetings/{id}/reschedule {"starts","ends","room"?}` and
/// `POST /api/v1/meetings/{id}/cancel {}` (supervisors): the change reaches every invited
/// terminal.
pub async fn change(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    Path((id, action)): Path<(String, String)>,
    req: Result<Json<Change>, JsonRejection>,
) -> Response {
    let c = match req {
        Ok(Json(c)) => c,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let by = match op.require(Role::Supervisor) {
        Ok(s) => s.name.clone(),
        Err(r) => return r.into_response(),
    };
    let now = shared.clock.now_utc();
    let s = shared.clone();
    let who = by.clone();
    let target = format!("{id} {action}");
    let changed = tokio::task::spawn_blocking(move || {
        s.meetings.change(
            &id,
            &who,
            |m| match action.as_str() {
                "reschedule" => match (c.starts, c.ends) {
                    (Some(a), Some(b)) => meetings::reschedule(m, a, b, c.room, now),
                    _ => Err(MeetingError::Invalid(
                        "starts and ends: the new times".into(),
                    )),
                },
                "cancel" => {
                    m.cancelled = true;
                    Ok("cancelled".into())
                }
                other => Err(MeetingError::Invalid(format!(
                    "{other:?} is not an action; use reschedule or cancel"
                ))),
            },
            now,
        )
    })
    .await;
    match changed {
        Ok(Ok(m)) => {
            meetings::dispatch(&shared, &m);
            shared.operators.record(&by, "meeting.change", &target);
            Json(json!(m)).into_response()
        }
        Ok(Err(e)) => refusal(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
