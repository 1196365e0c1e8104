//! Central's HTTP API: liveness, metrics and the gateway registry.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Instant;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::{GatewayClassLabel, GatewayLabel, PresenceLabel};
use crate::registry::GatewayView;
use crate::Shared;

pub mod accounts;
pub mod alerts;
pub mod cases;
pub mod clips;
pub mod figures;
pub mod grids;
pub mod health;
pub mod map;
pub mod masterdata;
pub mod meetings;
pub mod session;
pub mod shares;
pub mod terminals;

pub use firmware_config::runtime::api_error::ApiError;

pub fn router(shared: Arc<Shared>) -> Router {
    use crate::operators::Role;
    use axum::routing::delete;
    let guard = |read: Role, write: Role| {
        axum::middleware::from_fn_with_state((shared.clone(), read, write), session::guard)
    };
    // Open: liveness, metrics, logging in, the pages, and what carries a token of its own
    // (a viewer's share token, a gateway's relay push).
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/session",
            get(session::whoami)
                .post(session::login)
                .delete(session::logout),
        )
        .route("/console", get(console_page))
        .route("/console/{script}", get(console_script))
        .route("/assets/{name}", get(firmware_config::web::serve))
        .route("/api/v1/shares/live", get(shares::live))
        .route("/api/v1/relay/push/{gateway}/{camera}", get(shares::push))
        .route("/api/v1/relay/pull/{gateway}/{camera}", get(shares::pull))
        .route("/share", get(shares::page))
        .route("/player.js", get(shares::player_js));
    // The console's own endpoints check the operator and role themselves.
    let console = Router::new()
        .route("/api/v1/operators/audit", get(session::audit))
        .route("/api/v1/meetings", get(meetings::list).post(meetings::book))
        .route("/api/v1/meetings/{id}", get(meetings::one))
        .route("/api/v1/meetings/{id}/{action}", post(meetings::change))
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/assessment", get(health::assessment))
        .route(
            "/api/v1/health/{gateway}/{kind}/{id}/history",
            get(health::device_history),
        )
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/stream", get(alerts::stream))
        .route(
            "/api/v1/alerts/maintenance",
            get(alerts::maintenance).post(alerts::add_maintenance),
        )
        .route(
            "/api/v1/alerts/maintenance/{id}",
            delete(alerts::end_maintenance),
        )
        .route(
            "/api/v1/alerts/roster",
            get(alerts::roster).put(alerts::set_roster),
        )
        .route("/api/v1/alerts/{id}", get(alerts::one))
        .route("/api/v1/alerts/{id}/{action}", post(alerts::act));
    // Operations: any operator looks and acts (cases, shares); every change is audited.
    let operations = Router::new()
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/events", get(events))
        .route("/api/v1/terminals", get(terminals::list))
        .route("/api/v1/grids", get(grids::list))
        .route("/api/v1/map", get(map::map))
        .route("/api/v1/figures", get(figures::json_figures))
        .route("/api/v1/figures.csv", get(figures::csv))
        .route("/api/v1/figures.xlsx", get(figures::xlsx))
        .route("/api/v1/cases", get(cases::list))
        .route("/api/v1/cases/{receipt}", get(cases::one))
        .route("/api/v1/cases/{receipt}/actions", post(cases::act))
        .route("/api/v1/shares", get(shares::list).post(shares::create))
        .route("/api/v1/shares/{id}", delete(shares::revoke))
        .route("/api/v1/audit", get(shares::audit))
        .route(
            "/api/v1/gateways/{gateway}/cameras/{camera}/snapshot.jpg",
            get(camera_snapshot),
        )
        .route(
            "/api/v1/gateways/{gateway}/cameras/{camera}/clips",
            get(clips::list).post(clips::take),
        )
        .route(
            "/api/v1/gateways/{gateway}/cameras/{camera}/clips/{file}",
            get(clips::file),
        )
        .route_layer(guard(Role::Operator, Role::Operator));
    // What gateways and kiosks are told: any operator reads it; administrators publish.
    let publishing = Router::new()
        .route(
            "/api/v1/masterdata",
            get(masterdata::current).post(masterdata::import).layer(
                axum::extract::DefaultBodyLimit::max(masterdata::MAX_BODY_BYTES),
            ),
        )
        .route("/api/v1/masterdata/versions", get(masterdata::versions))
        .route("/api/v1/masterdata/versions/{n}", get(masterdata::version))
        .route("/api/v1/masterdata/content/{sha}", get(masterdata::content))
        .route(
            "/api/v1/bundles",
            get(terminals::history).post(terminals::create),
        )
        .route("/api/v1/bundles/signed", post(terminals::forward))
        .route_layer(guard(Role::Operator, Role::Administrator));
    // Notices out: supervisors look (they carry residents' phone numbers).
    let notices = Router::new()
        .route("/api/v1/notices", get(notices))
        .route_layer(guard(Role::Supervisor, Role::Administrator));
    // Operator accounts: administrators only, to look as to change.
    let accounts = Router::new()
        .route(
            "/api/v1/operators",
            get(accounts::list).post(accounts::create),
        )
        .route(
            "/api/v1/operators/{name}",
            axum::routing::patch(accounts::change),
        )
        .route(
            "/api/v1/operators/{name}/password",
            axum::routing::put(accounts::password),
        )
        .route_layer(guard(Role::Administrator, Role::Administrator));
    open.merge(console)
        .merge(accounts)
        .merge(notices)
        .merge(operations)
        .merge(publishing)
        .with_state(shared)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/notices?state=pending|sent|failed&limit=N`: notices out, newest first.
async fn notices(
    State(shared): State<Arc<Shared>>,
    q: Result<axum::extract::Query<NoticeQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => {
            return ApiError::new(axum::http::StatusCode::BAD_REQUEST, e.body_text())
                .into_response()
        }
    };
    if let Some(s) = &q.state {
        if !["pending", "sent", "failed"].contains(&s.as_str()) {
            return ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!("state: {s:?}; use pending, sent or failed"),
            )
            .into_response();
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let s = shared.clone();
    let list = tokio::task::spawn_blocking(move || s.notifier.list(q.state.as_deref(), limit))
        .await
        .unwrap_or_default();
    Json(json!({ "notices": list })).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let disk = shared.store.disk();
    let store = match &shared.events {
        crate::store::EventBackend::Sled(_) => json!({ "backend": "sled", "reachable": true }),
        crate::store::EventBackend::Postgres(pg) => json!({
            "backend": "postgres",
            "reachable": pg.reachable(std::time::Duration::from_secs(1)).await,
        }),
    };
    Json(json!({
        "status": "ok",
        "central": shared.config.central.id,
        "version": crate::VERSION,
        "uptime_secs": shared.started.elapsed().as_secs(),
        "broker_link": if shared.metrics.link_connected.get() == 1 { "connected" } else { "disconnected" },
        "store": store,
        "replica": shared.leases.get().map(|l| json!({
            "name": shared.config.central.client_id(),
            "gateways_held": l.held_set().len(),
        })),
        "disk": {
            "free_bytes": disk.free_bytes.load(std::sync::atomic::Ordering::Relaxed),
            "total_bytes": disk.total_bytes.load(std::sync::atomic::Ordering::Relaxed),
            "full": disk.full(),
            "reserve_held": disk.reserve_held.load(std::sync::atomic::Ordering::Relaxed),
            "store_stopped": shared.store.stopped(),
        },
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let (online, silent, offline) = shared.registry().counts(now);
    let m = &shared.metrics;
    for view in shared.registry().views(now) {
        let Some(outbox) = view.health.and_then(|h| h.outbox) else {
            continue;
        };
        let gw = GatewayLabel {
            gateway: view.id.clone(),
        };
        m.gateway_outbox_pending
            .get_or_create(&gw)
            .set(outbox.pending as i64);
        m.gateway_outbox_refused
            .get_or_create(&gw)
            .set(outbox.refused as i64);
        for (class, n) in outbox.evicted {
            let label = GatewayClassLabel {
                gateway: view.id.clone(),
                class,
            };
            m.gateway_outbox_evicted.get_or_create(&label).set(n as i64);
        }
    }
    let disk = shared.store.disk();
    m.disk_free_bytes
        .set(disk.free_bytes.load(std::sync::atomic::Ordering::Relaxed) as i64);
    m.disk_full.set(i64::from(disk.full()));
    m.store_stopped.set(i64::from(shared.store.stopped()));
    for (presence, n) in [("online", online), ("silent", silent), ("offline", offline)] {
        shared
            .metrics
            .gateways
            .get_or_create(&PresenceLabel {
                presence: presence.to_owned(),
            })
            .set(n as i64);
    }
    firmware_config::runtime::metrics_response(&shared.metrics.registry)
}

async fn gateways(State(shared): State<Arc<Shared>>) -> Json<Vec<GatewayView>> {
    Json(shared.gateway_views(Instant::now()))
}

#[derive(Deserialize)]
struct EventsQuery {
    gateway: String,
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

const MAX_LIMIT: usize = 10_000;

/// `GET /api/v1/events?gateway=ID&after=SEQ&limit=N`: stored events in sequence order.
/// An event as the API gives it: the gateway's fields, when central received it, and a flag
/// on a time implausible beside that (kept all the same).
fn stored_event_json(e: &crate::store::StoredEvent) -> Value {
    let mut v = serde_json::to_value(&e.event).unwrap_or(Value::Null);
    if let (Some(at), Some(obj)) = (e.received, v.as_object_mut()) {
        if let Ok(text) = at.format(&time::format_description::well_known::Rfc3339) {
            obj.insert("received".into(), Value::String(text));
        }
        if e.time_suspect() {
            obj.insert("time_suspect".into(), Value::Bool(true));
        }
    }
    v
}

async fn events(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |m: String| ApiError::bad_request(m).into_response();
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad(format!("query: {e}; use ?gateway=ID&after=SEQ&limit=N")),
    };
    let gateway = match GatewayId::new(q.gateway.clone()) {
        Ok(g) => g,
        Err(e) => return bad(format!("gateway: {:?} {e}", q.gateway)),
    };
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return bad(format!(
            "limit: {} is out of range; use 1 to {MAX_LIMIT}",
            q.limit
        ));
    }
    match shared.events.events_after(gateway, q.after, q.limit).await {
        Ok(events) => {
            let next = events.last().map(|e| e.seq);
            let events: Vec<Value> = events.iter().map(stored_event_json).collect();
            Json(json!({ "events": events, "next_after": next })).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How long an operator waits for a gateway's picture.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /api/v1/gateways/{gateway}/cameras/{camera}/snapshot.jpg`: asks the gateway for the
/// camera's latest picture (a `camera.snapshot` command) and returns it.
async fn camera_snapshot(
    State(shared): State<Arc<Shared>>,
    session::Operator(who): session::Operator,
    Path((gateway, camera)): Path<(String, String)>,
) -> Response {
    use crate::link::commands::CommandError;
    use base64::Engine;
    // A centre beyond the operator's scope is as unknown as one that is not there.
    let gateway = match clips::reached(&shared, &who, &gateway) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let reply = shared
        .commands
        .send(
            &gateway,
            "camera.snapshot",
            json!({ "camera": camera }),
            SNAPSHOT_TIMEOUT,
        )
        .await;
    let reply = match reply {
        Ok(r) => r,
        Err(e @ CommandError::Timeout { .. }) => {
            return ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()).into_response()
        }
        Err(e @ CommandError::Refused { .. }) => {
            return ApiError::new(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    };
    let jpeg = reply
        .data
        .get("jpeg")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let Some(jpeg) = jpeg else {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the gateway's reply has no picture",
        )
        .into_response();
    };
    let taken = reply.data.get("id").and_then(Value::as_u64).unwrap_or(0);
    (
        [
            (axum::http::header::CONTENT_TYPE, "image/jpeg".to_owned()),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
            (
                axum::http::HeaderName::from_static("x-snapshot-time-ms"),
                taken.to_string(),
            ),
        ],
        jpeg,
    )
        .into_response()
}

/// `GET /console`: the operator console (it logs in through `/api/v1/session`).
async fn console_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("console/index.html"))
}

/// `GET /console/{script}`: the console's views, one script each, bundled in the binary.
async fn console_script(Path(script): Path<String>) -> Response {
    let body = match script.as_str() {
        "cases.js" => include_str!("console/cases.js"),
        "accounts.js" => include_str!("console/accounts.js"),
        "map.js" => include_str!("console/map.js"),
        "figures.js" => include_str!("console/figures.js"),
        _ => return ApiError::new(StatusCode::NOT_FOUND, "no such script").into_response(),
    };
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
