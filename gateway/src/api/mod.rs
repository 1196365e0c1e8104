//! The gateway's HTTP API on the centre's LAN. For now: liveness and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Liveness: 200 while the process serves. The edge keeps working without central, so a lost
/// uplink is reported here but does not make the gateway unhealthy.
async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let connected = shared.metrics.uplink_connected.get() == 1;
    Json(json!({
        "status": "ok",
        "gateway": shared.gateway_id.as_str(),
        "site": shared.config.site.id,
        "version": crate::VERSION,
        "uptime_secs": shared.started.elapsed().as_secs(),
        "uplink": if connected { "connected" } else { "disconnected" },
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    firmware_config::runtime::metrics_response(&shared.metrics.registry)
}
