//! The operators' health view on central's API: every device, rolled up.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::session::Operator;
use super::ApiError;
use crate::Shared;

/// `GET /api/v1/health`: every gateway, camera and terminal, rolled up per centre, per area
/// and for the street.
pub async fn health(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    Json(json!(view(&shared))).into_response()
}

/// The street's health as operators see it (the console's overview and its map).
pub(crate) fn view(shared: &Shared) -> crate::registry::health::HealthView {
    use crate::registry::health;
    let gateways = shared.gateway_views(firmware_config::runtime::clock::Instant::now());
    let cameras = shared
        .devices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .cameras();
    let terminals = shared.terminal_board().list(None, None);
    let area_names: std::collections::BTreeMap<String, String> = shared
        .masterdata
        .current()
        .map(|v| {
            v.dataset
                .grids
                .iter()
                .filter(|g| g.level == firmware_config::masterdata::Level::Area)
                .map(|g| (g.code.clone(), g.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    health::view(gateways, &cameras, &terminals, &area_names)
}

/// `GET /api/v1/health/{gateway}/{kind}/{id}/history`: a camera's or terminal's last changes.
pub async fn device_history(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    Path((gateway, kind, id)): Path<(String, String, String)>,
) -> Response {
    if kind != "camera" && kind != "terminal" {
        return ApiError::new(StatusCode::BAD_REQUEST, "kind: camera or terminal").into_response();
    }
    let history = shared
        .devices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .history(&gateway, &kind, &id);
    Json(json!({ "gateway": gateway, "kind": kind, "id": id, "history": history })).into_response()
}

#[derive(serde::Deserialize)]
pub struct Period {
    #[serde(default = "seven")]
    days: u32,
}

fn seven() -> u32 {
    7
}

/// `GET /api/v1/assessment?days=N`: each centre's points over the last N days (1 to 366), with
/// the figures and the evidence behind them.
pub async fn assessment(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    q: Result<axum::extract::Query<Period>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(p)) = q else {
        return ApiError::new(StatusCode::BAD_REQUEST, "days: a whole number of days")
            .into_response();
    };
    if !(1..=366).contains(&p.days) {
        return ApiError::new(StatusCode::BAD_REQUEST, "days: 1 to 366").into_response();
    }
    let now = shared.clock.now_utc();
    let since = now - time::Duration::days(i64::from(p.days));
    let a = &shared.config.alerts;
    let targets = crate::assessment::Targets {
        ack_within: a.ack_within,
        resolve_within: a.resolve_within,
        case_limit: a.case_limit,
    };
    // The alerts the scores count: those opened in the period (not every one kept).
    let alerts = shared
        .alerts
        .matching(|a| a.opened >= since && a.opened <= now);
    let s = shared.clone();
    let cases = tokio::task::spawn_blocking(move || s.cases.created_since(since))
        .await
        .unwrap_or_default();
    // Cameras and terminals each gateway reports, for its devices' uptime.
    let devices: std::collections::BTreeMap<String, u32> = shared
        .registry()
        .views(firmware_config::runtime::clock::Instant::now())
        .into_iter()
        .filter_map(|v| {
            v.health
                .map(|h| (v.id, h.cameras_configured + h.terminals_configured))
        })
        .collect();
    let scores = crate::assessment::assess(&alerts, &cases, &devices, since, now, targets);
    let stations = crate::assessment::assess_stations(&cases, since, now, targets);
    Json(json!({
        "since": since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "targets": {
            "ack_within_secs": targets.ack_within.as_secs(),
            "resolve_within_secs": targets.resolve_within.as_secs(),
            "case_limit_secs": targets.case_limit.as_secs(),
        },
        "centres": scores,
        "stations": stations,
    }))
    .into_response()
}
