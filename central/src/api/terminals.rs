//! Terminals and configuration bundles on central's API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::bundle::SignedBundle;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Instant;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::bundles::{BundleRequest, BundleSendError};
use crate::link::commands::CommandError;
use crate::Shared;

#[derive(Deserialize)]
pub struct TerminalsQuery {
    gateway: Option<String>,
    state: Option<String>,
}

/// `GET /api/v1/terminals[?gateway=ID][&state=offline]`: every terminal central knows of, the
/// counts per state, and each gateway's presence (a terminal of a silent gateway is not known
/// to be working, whatever it last said).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TerminalsQuery>,
) -> Json<serde_json::Value> {
    let board = shared.terminal_board();
    let terminals = board.list(q.gateway.as_deref(), q.state.as_deref());
    let counts = board.counts(q.gateway.as_deref());
    drop(board);
    let presence: serde_json::Map<String, serde_json::Value> = shared
        .registry()
        .views(Instant::now())
        .into_iter()
        .map(|v| (v.id, json!(v.presence)))
        .collect();
    Json(json!({ "counts": counts, "gateways": presence, "terminals": terminals }))
}

/// `GET /api/v1/bundles`: every bundle sent, newest first, with the gateway's answer.
pub async fn history(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({ "bundles": shared.bundles.history() }))
}

fn gateway_id(s: &str) -> Result<GatewayId, Box<Response>> {
    GatewayId::new(s.to_owned()).map_err(|e| {
        Box::new(
            ApiError::new(StatusCode::BAD_REQUEST, format!("gateway: {s:?} {e}")).into_response(),
        )
    })
}

fn outcome(result: Result<crate::bundles::Sent, BundleSendError>) -> Response {
    match result {
        Ok(sent) => Json(json!(sent)).into_response(),
        Err(e @ (BundleSendError::NoKey | BundleSendError::Invalid(_))) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response()
        }
        Err(BundleSendError::Command(e @ CommandError::Refused { .. })) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(BundleSendError::Command(e @ CommandError::Timeout { .. })) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `POST /api/v1/bundles`: build, sign and send a bundle. 200 once applied; 409 with the
/// gateway's reason when refused; 422 when central itself finds it invalid.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<BundleRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let gateway = match gateway_id(&req.gateway) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let (target, content) = match req.content() {
        Ok(c) => c,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let reported = shared
        .registry()
        .views(Instant::now())
        .into_iter()
        .find(|v| v.id == req.gateway)
        .and_then(|v| v.health)
        .and_then(|h| h.config)
        .map_or(0, |c| match &req.terminal {
            None => c.gateway,
            Some(t) => c.terminals.get(t).copied().unwrap_or(0),
        });
    let bundle = match shared
        .bundles
        .build(target, content, req.note, req.version, reported)
    {
        Ok(b) => b,
        Err(e) => return outcome(Err(e)),
    };
    outcome(
        shared
            .bundles
            .send(&shared.commands, &gateway, bundle, true)
            .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    gateway: String,
    bundle: SignedBundle,
}

/// `POST /api/v1/bundles/signed`: forward a bundle signed by hand (`fwcfg sign`) as it is; the
/// gateway checks it.
pub async fn forward(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<SignedRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let gateway = match gateway_id(&req.gateway) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    outcome(
        shared
            .bundles
            .send(&shared.commands, &gateway, req.bundle, false)
            .await,
    )
}
