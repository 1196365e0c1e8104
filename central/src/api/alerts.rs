//! Sensing alerts on central's API: the queue, one alert with its audit trail, what operators
//! do to them (acknowledge, assign, note, resolve), maintenance windows and the duty roster.

use std::collections::HashSet;
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
use crate::alerts::{Alert, AlertError, Duty};
use crate::operators::{Role, Signed};
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

/// The alerts an operator reaches. The street's accounts: every one. A scoped account: a
/// case's alert when the case's station is within the scope, and any other alert of a centre
/// serving the scope (central's own alerts are the street's). The cases rule is the case
/// queue's; the centres are the map's (`serving`).
pub(crate) struct Reach {
    scope: Option<String>,
    /// The cases within the scope, by receipt: their stations as they are now, not as an
    /// alert raised long ago recorded them.
    cases: HashSet<String>,
    gateways: HashSet<String>,
}

impl Reach {
    pub(crate) fn of(shared: &Shared, who: &Signed) -> Self {
        let current = shared.masterdata.current();
        let empty = firmware_config::masterdata::Dataset::default();
        let d = current.as_ref().map_or(&empty, |v| &v.dataset);
        let gateways = match who.scope {
            None => HashSet::new(),
            Some(ref s) => {
                let health = super::health::view(shared);
                super::map::serving(d, Some(s), &health.centres)
                    .into_iter()
                    .map(|c| c.gateway.clone())
                    .collect()
            }
        };
        let cases = match who.scope {
            None => HashSet::new(),
            Some(ref s) => {
                use crate::cases::scope::Places;
                let tree = crate::cases::scope::GridTree::new(d);
                shared
                    .cases
                    .receipts_of_stations(|st| tree.reaches(Some(s), st))
            }
        };
        Self {
            scope: who.scope.clone(),
            cases,
            gateways,
        }
    }

    /// Whether the operator reaches gateway `gateway`'s centre (its cameras, clips, pictures).
    pub(crate) fn reaches_gateway(&self, gateway: &str) -> bool {
        self.scope.is_none() || self.gateways.contains(gateway)
    }

    pub(crate) fn reaches(&self, a: &Alert) -> bool {
        if self.scope.is_none() {
            return true;
        }
        if a.rule.starts_with("case.") {
            return a
                .detail
                .get("receipt")
                .and_then(|v| v.as_str())
                .is_some_and(|r| self.cases.contains(r));
        }
        self.gateways.contains(&a.gateway)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
    limit: Option<usize>,
    #[serde(default)]
    sort: Sort,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Sort {
    #[default]
    Newest,
    /// Unacknowledged before acknowledged, then the most severe, then the newest: what a
    /// queue cut to its first page must not hide.
    Pressing,
}

const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/alerts[?all=true][&limit=N][&sort=newest|pressing]`: the open alerts the
/// operator reaches (or every one), with counts of all of them; `limit` cuts the list (the
/// counts stay whole).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; all: true or false, limit: 1 to {MAX_LIMIT}, sort: newest or pressing",
                    e.body_text()
                ),
            )
            .into_response()
        }
    };
    if q.limit.is_some_and(|n| n == 0 || n > MAX_LIMIT) {
        return ApiError::new(StatusCode::BAD_REQUEST, format!("limit: 1 to {MAX_LIMIT}"))
            .into_response();
    }
    let reach = Reach::of(&shared, &who);
    let engine = shared.alerts.engine();
    let open: Vec<&Alert> = engine
        .list(false)
        .into_iter()
        .filter(|a| reach.reaches(a))
        .collect();
    let counts = json!({
        "open": open.len(),
        "unacknowledged": open.iter().filter(|a| !a.acknowledged).count(),
        "critical": open.iter().filter(|a| a.severity == crate::alerts::Severity::Critical).count(),
        "silenced": open.iter().filter(|a| a.silenced_by.is_some() || a.inhibited_by.is_some()).count(),
        "held_down": engine.held_down,
    });
    let mut alerts: Vec<&Alert> = if q.all {
        engine
            .list(true)
            .into_iter()
            .filter(|a| reach.reaches(a))
            .collect()
    } else {
        open
    };
    if q.sort == Sort::Pressing {
        // Stable: the newest first within each rank.
        alerts.sort_by_key(|a| (a.acknowledged, std::cmp::Reverse(a.severity)));
    }
    alerts.truncate(q.limit.unwrap_or(usize::MAX));
    Json(json!({ "counts": counts, "alerts": alerts })).into_response()
}

/// `GET /api/v1/alerts/{id}`.
pub async fn one(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path(id): Path<u64>,
) -> Response {
    if !reached(&shared, &who, id) {
        return alert_error(AlertError::NoSuchAlert(id));
    }
    alert_response(&shared, id)
}

/// Whether alert `id` exists and `who` reaches it: one beyond their reach answers as unknown.
fn reached(shared: &Shared, who: &Signed, id: u64) -> bool {
    let reach = Reach::of(shared, who);
    shared
        .alerts
        .engine()
        .get(id)
        .is_some_and(|a| reach.reaches(a))
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
    // A bad request is told as such before whether the alert is theirs.
    if !["ack", "assign", "note", "resolve"].contains(&action.as_str()) {
        return alert_error(AlertError::Invalid(format!(
            "{action:?} is not an action; use ack, assign, note or resolve"
        )));
    }
    if !reached(&shared, &op.0, id) {
        return alert_error(AlertError::NoSuchAlert(id));
    }
    let by = op.0.name.clone();
    let now = shared.clock.now_utc();
    let result = shared.alerts.apply(|e| {
        let r = match action.as_str() {
            "ack" => e.acknowledge(id, &by, now),
            "assign" => e.assign(id, &a.to, &by, now),
            "note" => e.note(id, &a.note, &by, now),
            _ => e.resolve(id, &by, &a.note, now),
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
pub async fn stream(State(shared): State<Arc<Shared>>, Operator(who): Operator) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = shared.alerts.changes.subscribe();
    // The reach as the stream starts (a console opens a new one when it signs in again).
    let reach = Arc::new(Reach::of(&shared, &who));
    let events = futures::stream::unfold((rx, shared), move |(mut rx, shared)| {
        let reach = reach.clone();
        async move {
            loop {
                // Central stopping ends the stream, so that its HTTP server can shut down.
                let next = tokio::select! {
                    _ = shared.token.cancelled() => return None,
                    n = rx.recv() => n,
                };
                let event = match next {
                    Ok(change) => {
                        let alert = shared.alerts.engine().get(change.id()).cloned();
                        // An alert gone from the engine is the street's news only.
                        let seen = match &alert {
                            Some(a) => reach.reaches(a),
                            None => reach.scope.is_none(),
                        };
                        if !seen {
                            continue;
                        }
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
                return Some((Ok::<_, std::convert::Infallible>(event), (rx, shared)));
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}
