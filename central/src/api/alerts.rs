//! Sensing alerts on central's API: the queue, one alert with its audit trail, what operators
//! do to them (acknowledge, assign, note, resolve), maintenance windows and the duty roster.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::session::Operator;
use super::ApiError;
use crate::alerts::{AlertError, Duty};
use crate::operators::Role;
use crate::Shared;

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        let status = match e {
            AlertError::NoSuchAlert(_) => StatusCode::NOT_FOUND,
            AlertError::Resolved(_) => StatusCode::CONFLICT,
            AlertError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

fn alert_error(e: AlertError) -> Response {
    ApiError::from(e).into_response()
}

fn body<T>(req: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    req.map(|Json(b)| b)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/alerts[?all=true]`: open alerts (or every one), newest first, with counts.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return ApiError::new(StatusCode::BAD_REQUEST, "all: true or false").into_response();
    };
    let engine = shared.alerts.engine();
    let alerts = engine.list(q.all);
    let open: Vec<_> = engine.list(false);
    let counts = json!({
        "open": open.len(),
        "unacknowledged": open.iter().filter(|a| !a.acknowledged).count(),
        "critical": open.iter().filter(|a| a.severity == crate::alerts::Severity::Critical).count(),
        "silenced": open.iter().filter(|a| a.silenced_by.is_some() || a.inhibited_by.is_some()).count(),
        "held_down": engine.held_down,
    });
    Json(json!({ "counts": counts, "alerts": alerts })).into_response()
}

/// `GET /api/v1/alerts/{id}`.
pub async fn one(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    Path(id): Path<u64>,
) -> Response {
    alert_response(&shared, id)
}

fn alert_response(shared: &Shared, id: u64) -> Response {
    match shared.alerts.engine().get(id) {
        Some(a) => Json(json!(a)).into_response(),
        None => alert_error(AlertError::NoSuchAlert(id)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// `assign`: to whom.
    #[serde(default)]
    to: String,
    /// `note`, `resolve`: the text.
    #[serde(default)]
    note: String,
}

/// `POST /api/v1/alerts/{id}/{ack|assign|note|resolve}` with `{"to"?, "note"?}`, by the
/// signed-in operator.
pub async fn act(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    Path((id, action)): Path<(u64, String)>,
    req: Result<Json<Action>, JsonRejection>,
) -> Response {
    let a = match body(req) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let by = op.0.name.clone();
    let now = shared.clock.now_utc();
    let result = shared.alerts.apply(|e| {
        let r = match action.as_str() {
            "ack" => e.acknowledge(id, &by, now),
            "assign" => e.assign(id, &a.to, &by, now),
            "note" => e.note(id, &a.note, &by, now),
            "resolve" => e.resolve(id, &by, &a.note, now),
            other => Err(AlertError::Invalid(format!(
                "{other:?} is not an action; use ack, assign, note or resolve"
            ))),
        };
        match r {
            Ok(c) => (Ok(()), vec![c]),
            Err(e) => (Err(e), Vec::new()),
        }
    });
    match result {
        Ok(()) => {
            shared
                .operators
                .record(&by, &format!("alert.{action}"), &id.to_string());
            alert_response(&shared, id)
        }
        Err(e) => alert_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWindow {
    scope: String,
    #[serde(with = "time::serde::rfc3339")]
    from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
    #[serde(default)]
    reason: String,
}

/// `GET /api/v1/alerts/maintenance`.
pub async fn maintenance(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    Json(json!({ "maintenance": shared.alerts.engine().maintenance() })).into_response()
}

/// `POST /api/v1/alerts/maintenance {"scope","from","until","reason"}` (supervisors): silences the
/// alerts of a gateway (and its devices) or of one device for that time.
pub async fn add_maintenance(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    req: Result<Json<NewWindow>, JsonRejection>,
) -> Response {
    let by = match op.require(Role::Supervisor) {
        Ok(s) => s.name.clone(),
        Err(r) => return r.into_response(),
    };
    let w = match body(req) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let added = shared
        .alerts
        .engine()
        .add_maintenance(&w.scope, w.from, w.until, &w.reason, &by);
    match added {
        Ok(m) => {
            shared.alerts.store_settings();
            shared
                .operators
                .record(&by, "maintenance.add", &format!("{} {}", m.id, m.scope));
            tracing::info!(scope = %m.scope, id = m.id, by = %by, "maintenance window");
            (StatusCode::CREATED, Json(json!(m))).into_response()
        }
        Err(e) => alert_error(e),
    }
}

/// `DELETE /api/v1/alerts/maintenance/{id}`: ends a window now.
pub async fn end_maintenance(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    Path(id): Path<u64>,
) -> Response {
    let by = match op.require(Role::Supervisor) {
        Ok(s) => s.name.clone(),
        Err(r) => return r.into_response(),
    };
    if shared.alerts.engine().end_maintenance(id) {
        shared.alerts.store_settings();
        shared
            .operators
            .record(&by, "maintenance.end", &id.to_string());
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, format!("no maintenance window {id}")).into_response()
    }
}

/// `GET /api/v1/alerts/roster`.
pub async fn roster(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    Json(json!({ "roster": shared.alerts.engine().roster() })).into_response()
}

/// `PUT /api/v1/alerts/roster [{"scope": gateway | "command", "name", "phone", "from_minute",
/// "until_minute"}]`: replaces the duty roster.
pub async fn set_roster(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    req: Result<Json<Vec<Duty>>, JsonRejection>,
) -> Response {
    let by = match op.require(Role::Supervisor) {
        Ok(s) => s.name.clone(),
        Err(r) => return r.into_response(),
    };
    let roster = match body(req) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    for (i, d) in roster.iter().enumerate() {
        if d.scope.trim().is_empty() || d.name.trim().is_empty() || d.phone.trim().is_empty() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("[{i}]: scope, name and phone are required"),
            )
            .into_response();
        }
        if d.from_minute >= 1440 || d.until_minute >= 1440 {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("[{i}]: from_minute and until_minute are 0 to 1439"),
            )
            .into_response();
        }
    }
    let n = roster.len();
    shared.alerts.engine().set_roster(roster);
    shared.alerts.store_settings();
    shared
        .operators
        .record(&by, "roster.set", &format!("{n} duties"));
    roster_response(&shared)
}

fn roster_response(shared: &Shared) -> Response {
    Json(json!({ "roster": shared.alerts.engine().roster() })).into_response()
}

/// `GET /api/v1/alerts/stream`: server-sent events, one per alert change (`event: alert`,
/// `data`: the change and the alert as it is now), so a console updates without reloading.
/// A client that falls behind is told (`event: lagged`) and should reload the list. The stream
/// ends when central stops.
pub async fn stream(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = shared.alerts.changes.subscribe();
    let events = futures::stream::unfold((rx, shared), |(mut rx, shared)| async move {
        // Central stopping ends the stream, so that its HTTP server can shut down.
        let next = tokio::select! {
            _ = shared.token.cancelled() => return None,
            n = rx.recv() => n,
        };
        let event = match next {
            Ok(change) => {
                let alert = shared.alerts.engine().get(change.id()).cloned();
                Event::default()
                    .event("alert")
                    .json_data(json!({ "change": change, "alert": alert }))
                    .unwrap_or_else(|_| Event::default().event("alert"))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), (rx, shared)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}
