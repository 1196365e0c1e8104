//! Live video to the centre's video terminals: fragmented MP4 over a WebSocket, for Media
//! Source Extensions, and the viewer page that plays it.
//!
//! Protocol, per message: text messages carry JSON — a track description
//! (`{"codec","mime","width","height","generation"}`) before its init segment, or
//! `{"error": …}`; binary messages carry the init segment, then one fragment per frame.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::video::{live, Live, Piece, Track};
use crate::Shared;

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
    let live = shared.lives.get(&id).cloned().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no enabled camera {id:?}"),
        )
    })?;
    tracing::info!(camera = %id, viewers = live.viewers() + 1, "live viewer joined");
    Ok(ws
        .on_upgrade(move |socket| async move {
            serve(socket, live).await;
            tracing::info!(camera = %id, "live viewer left");
        })
        .into_response())
}

async fn send_track(socket: &mut WebSocket, track: &Track, init: bytes::Bytes) -> bool {
    let Ok(json) = serde_json::to_string(track) else {
        return false;
    };
    socket.send(Message::Text(json.into())).await.is_ok()
        && socket.send(Message::Binary(init)).await.is_ok()
}

async fn serve(mut socket: WebSocket, live: Live) {
    let joined = live.join();
    let mut rx = joined.rx;
    // Until there is a track, wait for one; then start on the last keyframe.
    let mut skipping = joined.track.is_none();
    if let Some((track, init)) = joined.track {
        if !send_track(&mut socket, &track, init).await {
            return;
        }
        for fragment in joined.gop {
            if socket.send(Message::Binary(fragment)).await.is_err() {
                return;
            }
        }
    }
    loop {
        tokio::select! {
            piece = live::next_piece(&mut rx, &mut skipping) => {
                let sent = match piece {
                    None => break,
                    Some(Piece::Init(track, init)) => send_track(&mut socket, &track, init).await,
                    Some(Piece::Fragment { bytes, .. }) => socket.send(Message::Binary(bytes)).await.is_ok(),
                };
                if !sent {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `GET /viewer?token=…`: the wall of the centre's cameras, live, with their health.
pub async fn viewer_page() -> Html<&'static str> {
    Html(include_str!("viewer.html"))
}
