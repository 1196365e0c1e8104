//! Video sharing on central's API: grants for operators, live video for the viewers they name,
//! and the endpoint gateways push to.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use firmware_config::runtime::video_hub::{self, UpstreamReader, WsMessage};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::share::{self, ShareError};
use crate::Shared;

fn share_error(e: ShareError) -> Response {
    let status = match e {
        ShareError::Invalid(_) => StatusCode::BAD_REQUEST,
        ShareError::Unknown(_) => StatusCode::NOT_FOUND,
        ShareError::Token(_) | ShareError::Revoked | ShareError::NotAViewer(_) => {
            StatusCode::FORBIDDEN
        }
    };
    ApiError::new(status, e.to_string()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    gateway: String,
    camera: String,
    /// Who may watch: operators or terminals of other centres, by name.
    viewers: Vec<String>,
    /// How long, in minutes (or `seconds`).
    #[serde(default)]
    minutes: Option<u64>,
    #[serde(default)]
    seconds: Option<u64>,
    /// Whom a tool grants it for; the grant names the signed-in operator in any case.
    #[serde(default)]
    by: String,
}

/// `POST /api/v1/shares`: grants a share; answers the grant and a viewer URL per viewer.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    op: super::session::Operator,
    body: Result<Json<ShareRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let secs = match (req.minutes, req.seconds) {
        (Some(m), None) => m.saturating_mul(60),
        (None, Some(s)) => s,
        _ => {
            return ApiError::new(StatusCode::BAD_REQUEST, "give either minutes or seconds")
                .into_response()
        }
    };
    match shared.shares.grant(
        &req.gateway,
        &req.camera,
        req.viewers,
        Duration::from_secs(secs),
        &op.author(&req.by),
    ) {
        Ok((grant, tokens)) => {
            let viewers: Vec<Value> = tokens
                .into_iter()
                .map(|(viewer, token)| {
                    json!({
                        "viewer": viewer,
                        "page": format!("/share?token={token}"),
                        "live": format!("/api/v1/shares/live?token={token}"),
                        "token": token,
                    })
                })
                .collect();
            (
                StatusCode::CREATED,
                Json(json!({ "grant": grant, "viewers": viewers })),
            )
                .into_response()
        }
        Err(e) => share_error(e),
    }
}

/// `GET /api/v1/shares`: every grant, newest first, with who watches now.
pub async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<share::GrantView>> {
    Json(shared.shares.list())
}

#[derive(Debug, Deserialize)]
pub struct By {
    #[serde(default)]
    by: Option<String>,
}

/// `DELETE /api/v1/shares/{id}?by=…`: revokes a grant; its viewers are cut off at once.
pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    op: super::session::Operator,
    Path(id): Path<String>,
    Query(q): Query<By>,
) -> Response {
    match shared
        .shares
        .revoke(&id, &op.author(q.by.as_deref().unwrap_or_default()))
    {
        Ok(grant) => Json(json!({ "revoked": grant })).into_response(),
        Err(e) => share_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// `GET /api/v1/shares/live?token=…` (WebSocket): a viewer watches the shared camera until
/// it leaves, the grant is revoked, or it expires.
pub async fn live(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let (grant, viewer, mut revoked) = match shared.shares.admit(&q.token) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "refused a viewer");
            return share_error(e);
        }
    };
    let from = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let relay = shared.shares.relay(&grant.gateway, &grant.camera);
    ws.on_upgrade(move |socket| async move {
        let audit = |what: &str| {
            shared.shares.audit.record(
                what,
                json!({ "grant": grant.id, "viewer": viewer, "gateway": grant.gateway, "camera": grant.camera, "from": from }),
            )
        };
        audit("share.viewer_joined");
        let until = (grant.expires_at - shared.clock.now_utc().unix_timestamp()).max(0) as u64;
        let stop = async move {
            tokio::select! {
                _ = revoked.wait_for(|r| *r) => {}
                _ = tokio::time::sleep(Duration::from_secs(until)) => {}
            }
        };
        // The keeper waits out its linger for this viewer to join, so the order does not matter.
        share::keep(shared.clone(), relay.clone(), shared.token.clone());
        video_hub::serve_viewer(socket, relay.hub.clone(), stop).await;
        audit("share.viewer_left");
    })
}

/// `GET /api/v1/relay/push/{gateway}/{camera}?token=…` (WebSocket): a gateway pushes a
/// camera's video, with the one-time token central's command gave it.
pub async fn push(
    State(shared): State<Arc<Shared>>,
    Path((gateway, camera)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(relay) = shared.shares.existing_relay(&gateway, &camera) else {
        return ApiError::new(StatusCode::NOT_FOUND, "nobody asked for this camera")
            .into_response();
    };
    let Some((n, end)) = relay.accept_push(&q.token) else {
        return ApiError::new(StatusCode::FORBIDDEN, "not the token of an asked-for push")
            .into_response();
    };
    ws.on_upgrade(move |mut socket| async move {
        shared.shares.audit.record(
            "share.push_started",
            json!({ "gateway": gateway, "camera": camera }),
        );
        let mut reader = UpstreamReader::default();
        loop {
            let msg = tokio::select! {
                _ = end.cancelled() => break,
                m = socket.recv() => m,
            };
            let msg = match msg {
                Some(Ok(Message::Text(t))) => WsMessage::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => WsMessage::Binary(b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            match reader.read(msg) {
                Ok(Some(piece)) => relay.hub.push(piece),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%gateway, %camera, error = %e, "bad push message");
                    break;
                }
            }
        }
        let _ = socket.send(Message::Close(None)).await;
        relay.push_ended(n);
        shared.shares.audit.record(
            "share.push_ended",
            json!({ "gateway": gateway, "camera": camera }),
        );
    })
}

/// `GET /api/v1/relay/pull/{gateway}/{camera}?token=…` (WebSocket): another central replica
/// follows this one's relay of the camera, to fan it out to its own viewers. Only replicas can
/// make the token (the key they share); a viewer's token is refused.
pub async fn pull(
    State(shared): State<Arc<Shared>>,
    Path((gateway, camera)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = shared.shares.check_pull(&q.token, &gateway, &camera) {
        tracing::warn!(%gateway, %camera, error = %e, "refused a relay follower");
        return share_error(e);
    }
    let relay = shared.shares.relay(&gateway, &camera);
    ws.on_upgrade(move |socket| async move {
        shared.shares.audit.record(
            "share.follower_joined",
            json!({ "gateway": gateway, "camera": camera }),
        );
        share::keep(shared.clone(), relay.clone(), shared.token.clone());
        video_hub::serve_follower(socket, relay.hub.clone()).await;
        shared.shares.audit.record(
            "share.follower_left",
            json!({ "gateway": gateway, "camera": camera }),
        );
    })
}

#[derive(Debug, Deserialize)]
pub struct Limit {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /api/v1/audit?limit=N`: the last entries of the audit trail.
pub async fn audit(State(shared): State<Arc<Shared>>, Query(q): Query<Limit>) -> Json<Vec<Value>> {
    Json(shared.shares.audit.tail(q.limit.clamp(1, 10_000)))
}

/// `GET /share?token=…`: the page a viewer opens.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("share.html"))
}

/// `GET /player.js`.
pub async fn player_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        video_hub::PLAYER_JS,
    )
}
