//! Live video to the centre's video terminals: fragmented MP4 over a WebSocket, for Media
//! Source Extensions, and the viewer page that plays it.
//!
//! Protocol, per message: text messages carry JSON — a track description
//! (`{"codec","mime","width","height","generation"}`) before its init segment, or
//! `{"error": …}`; binary messages carry the init segment, then one fragment per frame.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::Shared;
use firmware_config::runtime::video_hub;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /api/v1/cameras/{id}/live` (WebSocket): the camera's live video.
pub async fn live_ws(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::cameras::viewer(&shared, &headers, q.token.as_deref())?;
    let live = shared.live(&id).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no enabled camera {id:?}"),
        )
    })?;
    tracing::info!(camera = %id, viewers = live.viewers() + 1, "live viewer joined");
    Ok(ws
        .on_upgrade(move |socket| async move {
            live.prepare();
            video_hub::serve_viewer(socket, live.hub().clone(), std::future::pending()).await;
            tracing::info!(camera = %id, "live viewer left");
        })
        .into_response())
}

/// `GET /viewer?token=…`: the wall of the centre's cameras, live, with their health.
pub async fn viewer_page() -> Html<&'static str> {
    Html(include_str!("viewer.html"))
}

/// `GET /player.js`: the Media Source player the pages share.
pub async fn player_js() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        video_hub::PLAYER_JS,
    )
}
