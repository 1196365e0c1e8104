//! The operators' health view on central's API: every device, rolled up.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::session::Operator;
use crate::Shared;

fn error(status: StatusCode, m: impl Into<String>) -> Response {
    (status, Json(json!({ "error": m.into() }))).into_response()
}

/// `GET /api/v1/health`: every gateway, camera and terminal, rolled up per centre, per area
/// and for the street.
pub async fn health(State(shared): State<Arc<Shared>>, _op: Operator) -> Response {
    use crate::registry::health;
    let gateways = shared.registry().views(std::time::Instant::now());
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
    Json(json!(health::view(
        gateways,
        &cameras,
        &terminals,
        &area_names
    )))
    .into_response()
}

/// `GET /api/v1/health/{gateway}/{kind}/{id}/history`: a camera's or terminal's last changes.
pub async fn device_history(
    State(shared): State<Arc<Shared>>,
    _op: Operator,
    Path((gateway, kind, id)): Path<(String, String, String)>,
) -> Response {
    if kind != "camera" && kind != "terminal" {
        return error(StatusCode::BAD_REQUEST, "kind: camera or terminal");
    }
    let history = shared
        .devices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .history(&gateway, &kind, &id);
    Json(json!({ "gateway": gateway, "kind": kind, "id": id, "history": history })).into_response()
}
