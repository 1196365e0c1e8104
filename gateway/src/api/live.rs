//! Live video to the centre's video terminals: fragmented MP4 over a WebSocket, for Media
//! Source Extensions, and the viewer page that plays it.
//!
//! Protocol, per message: text messages carry JSON — a track description
//! (`{"codec","mime","width","height","generation"}`) before its init segment, or
//! `{"error": …}`; binary messages carry the init segment, then one fragment per frame.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};

use super::ApiError;
use crate::Shared;
use firmware_config::runtime::video_hub;

/// `GET /api/v1/cameras/{id}/live` (WebSocket): the camera's live video, for a video
/// terminal or screen (its bearer token, or its device session cookie from a page).
/// What the player says it can decode.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plays {
    /// `false`: the player cannot decode H.265, and an H.265 camera comes as H.264.
    #[serde(default = "yes")]
    h265: bool,
}

fn yes() -> bool {
    true
}

pub async fn live_ws(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    plays: Result<axum::extract::Query<Plays>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    super::cameras::viewer(&shared, &headers)?;
    let plays = plays
        .map_err(|e| ApiError::bad_request(format!("{}; h265: true or false", e.body_text())))?
        .0;
    let camera = shared.live(&id).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no enabled camera {id:?}"),
        )
    })?;
    // An H.265 camera for a player without H.265: the camera's H.264, transcoded (shared).
    let live = if camera.is_h265() && !plays.h265 {
        let width = shared.config().video.transcode_width;
        camera.h264(&id, width).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot transcode camera {id:?}: {e}"),
            )
        })?
    } else {
        camera
    };
    tracing::info!(camera = %id, viewers = live.viewers() + 1, "live viewer joined");
    Ok(ws
        .on_upgrade(move |socket| async move {
            live.prepare();
            video_hub::serve_viewer(socket, live.hub().clone(), std::future::pending()).await;
            tracing::info!(camera = %id, "live viewer left");
        })
        .into_response())
}

/// `GET /viewer`: the wall of the centre's cameras, live, with their health (the terminal
/// signs in once with its token, kept as a device session cookie).
pub async fn viewer_page() -> Html<&'static str> {
    Html(include_str!("viewer.html"))
}

/// `GET /device-session.js`: how a terminal's page signs in (its token for a session cookie).
pub async fn device_session_js() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("device-session.js"),
    )
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
