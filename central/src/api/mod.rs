//! Central's HTTP API: liveness, metrics and the gateway registry.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::metrics::PresenceLabel;
use crate::registry::GatewayView;
use crate::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/gateways", get(gateways))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "central": shared.config.central.id,
        "version": crate::VERSION,
        "uptime_secs": shared.started.elapsed().as_secs(),
        "broker_link": if shared.metrics.link_connected.get() == 1 { "connected" } else { "disconnected" },
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let (online, silent, offline) = shared.registry().counts(Instant::now());
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
    Json(shared.registry().views(Instant::now()))
}
