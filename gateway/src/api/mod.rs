//! The gateway's HTTP API on the centre's LAN. Errors map to statuses in one place
//! ([`ApiError`]) and always carry a message saying what was wrong.

pub mod auth;
pub mod cameras;
pub mod device_session;
pub mod events;
pub mod kiosk;
pub mod live;
pub mod terminals;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::Shared;

pub use firmware_config::runtime::api_error::ApiError;

/// Why an append to the outbox was refused, as an HTTP answer: 507 when there is no room
/// (the budget holds only what is never evicted, or the disk itself is full: counted, retried
/// later), 503 otherwise. Nothing was stored either way.
pub(crate) fn not_stored(shared: &Shared, e: crate::outbox::OutboxError) -> ApiError {
    use crate::outbox::OutboxError;
    use axum::http::StatusCode;
    match e {
        OutboxError::Full { .. } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        e if e.is_out_of_space() => {
            shared.metrics.refuse_event("disk_full");
            // Sources retry all along: one line a minute (the count is in the metrics).
            static LOGGED: std::sync::Mutex<Option<std::time::Instant>> =
                std::sync::Mutex::new(None);
            let mut logged = LOGGED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                *logged = Some(std::time::Instant::now());
                tracing::warn!(error = %e, "the disk is full; appends refused until there is space");
            }
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the gateway's disk is full; nothing was stored (retry once central has taken the backlog, or space is freed)",
            )
            .retry_after(60)
        }
        other => {
            tracing::error!(error = %other, "cannot append to the outbox");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored: {other}"),
            )
        }
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/device-session",
            get(device_session::whoami)
                .post(device_session::create)
                .delete(device_session::remove)
                .layer(DefaultBodyLimit::max(4096)),
        )
        .route("/api/v1/cameras", get(cameras::list))
        .route("/api/v1/cameras/{id}", get(cameras::one))
        .route("/api/v1/cameras/{id}/snapshot.jpg", get(cameras::latest))
        .route("/api/v1/cameras/{id}/live", get(live::live_ws))
        .route("/viewer", get(live::viewer_page))
        .route("/player.js", get(live::player_js))
        .route("/device-session.js", get(live::device_session_js))
        .route(
            "/api/v1/cameras/{id}/snapshots/{file}",
            get(cameras::evidence),
        )
        .route("/api/v1/cameras/{id}/clips", get(cameras::clips))
        .route("/api/v1/cameras/{id}/clips/{file}", get(cameras::clip_file))
        .route(
            "/api/v1/terminals/heartbeat",
            post(terminals::heartbeat).layer(DefaultBodyLimit::max(terminals::MAX_HEARTBEAT_BYTES)),
        )
        .route("/api/v1/terminals", get(terminals::list))
        .route("/api/v1/masterdata", get(masterdata))
        .route("/api/v1/kiosk/items", get(kiosk::items))
        .route("/api/v1/kiosk/items/{code}", get(kiosk::item))
        .route("/api/v1/kiosk/grids", get(kiosk::grids))
        .route("/api/v1/kiosk/grids/at", get(kiosk::grid_at))
        .route("/api/v1/kiosk/grids/{code}", get(kiosk::grid))
        .route("/api/v1/kiosk/party", get(kiosk::party))
        .route("/kiosk", get(kiosk::page))
        .route("/assets/{name}", get(firmware_config::web::serve))
        .route("/api/v1/kiosk/openapi.json", get(kiosk::openapi))
        .route("/api/v1/kiosk/content", get(kiosk::content_list))
        .route("/api/v1/kiosk/content/{id}", get(kiosk::content_file))
        .route(
            "/api/v1/kiosk/submissions",
            post(kiosk::submit).layer(DefaultBodyLimit::max(
                crate::kiosk::submissions::MAX_BODY_BYTES,
            )),
        )
        .route(
            "/api/v1/kiosk/submissions/{receipt}",
            get(kiosk::submission),
        )
        .route("/api/v1/terminals/config", get(terminals::config))
        .route("/api/v1/terminals/meetings", get(terminals::meetings))
        .route(
            "/api/v1/terminals/meetings/{meeting}/answer",
            post(terminals::answer),
        )
        .route("/api/v1/terminals/{id}", get(terminals::one))
        .route(
            "/api/v1/events",
            post(events::post_events).layer(DefaultBodyLimit::max(events::MAX_BODY_BYTES)),
        )
        .with_state(shared)
}

/// Liveness: 200 while the process serves. The edge keeps working without central, so a lost
/// uplink is reported here but does not make the gateway unhealthy.
async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let connected = shared.metrics.uplink_connected.get() == 1;
    let disk = shared.outbox.disk();
    Json(json!({
        "status": "ok",
        "gateway": shared.gateway_id.as_str(),
        "site": shared.config().site.id,
        "version": crate::VERSION,
        "uptime_secs": shared.started.elapsed().as_secs(),
        "uplink": if connected { "connected" } else { "disconnected" },
        "outbox": shared.outbox.summary(),
        "disk": {
            "free_bytes": disk.free_bytes.load(Ordering::Relaxed),
            "total_bytes": disk.total_bytes.load(Ordering::Relaxed),
            "full": disk.full(),
            "limit_bytes": disk.limit_bytes.load(Ordering::Relaxed),
            "reserve_held": disk.reserve_held.load(Ordering::Relaxed),
        },
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    firmware_config::runtime::metrics_response(&shared.metrics.registry)
}

/// `GET /api/v1/masterdata`: the replica's version, hash and contents in brief.
async fn masterdata(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let r = shared.replica.current();
    let report = shared.replica.report();
    Json(json!({
        "version": r.version,
        "hash": r.hash,
        "summary": r.dataset.summary(),
        "areas": report.areas,
        "need_snapshot": report.need_snapshot,
        "last_update": shared.replica.last_update(),
    }))
}
