//! Cameras on the gateway's API: their health, their pictures and their alert clips.
//!
//! Pictures of a public-security camera are for the centre's video terminals and screens
//! only: they need the token of such a terminal, not of a kiosk or an event source.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::config::gateway::TerminalKind;

use super::ApiError;
use crate::camera::{CameraHealth, Snapshot};
use crate::Shared;

/// `GET /api/v1/cameras`: the health of every camera.
pub async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<CameraHealth>> {
    Json(with_viewers(&shared, shared.cameras.snapshot()))
}

fn with_viewers(shared: &Shared, mut cams: Vec<CameraHealth>) -> Vec<CameraHealth> {
    for c in &mut cams {
        if let Some(l) = shared.live(&c.id) {
            c.viewers = l.viewers();
            (c.h264_viewers, c.transcoding, c.transcodes) = l.h264_state();
        }
    }
    cams
}

/// `GET /api/v1/cameras/{id}`: the health of one camera.
pub async fn one(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<CameraHealth>, ApiError> {
    with_viewers(&shared, shared.cameras.snapshot())
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| unknown(&id))
}

/// `GET /api/v1/cameras/{id}/snapshot.jpg`: the latest picture.
pub async fn latest(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    viewer(&shared, &headers)?;
    let analysis = shared.analysis(&id).ok_or_else(|| unknown(&id))?;
    match analysis.latest() {
        Some(shot) => Ok(jpeg(shot)),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("camera {id:?} has no snapshot yet; it is taken from the next keyframe"),
        )),
    }
}

/// `GET /api/v1/cameras/{id}/snapshots/{ref}.jpg`: a picture a sensing event refers to.
pub async fn evidence(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    viewer(&shared, &headers)?;
    let analysis = shared.analysis(&id).ok_or_else(|| unknown(&id))?;
    let reference: u64 = file
        .strip_suffix(".jpg")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{file:?} is not a snapshot reference; expected <number>.jpg"
            ))
        })?;
    analysis.find(reference).map(jpeg).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("snapshot {reference} of camera {id:?} is no longer kept"),
        )
    })
}

/// `GET /api/v1/cameras/{id}/clips`: the camera's alert clips, newest first (those being
/// recorded too), for video terminals and screens.
pub async fn clips(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    viewer(&shared, &headers)?;
    if !shared.config().cameras.iter().any(|c| c.id == id) {
        return Err(unknown(&id));
    }
    let clips: Vec<serde_json::Value> = shared
        .clips
        .list(&id)
        .into_iter()
        .map(|c| {
            let path = c.path();
            let mut v = serde_json::json!(c);
            v["path"] = serde_json::json!(path);
            v
        })
        .collect();
    Ok(Json(serde_json::json!({ "camera": id, "clips": clips })))
}

/// `GET /api/v1/cameras/{id}/clips/{clip}.mp4`: a written clip (byte ranges served, so a
/// player can seek), for video terminals and screens. 425 while it is still recorded.
pub async fn clip_file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use tower::ServiceExt;
    viewer(&shared, request.headers())?;
    let clip: u64 = file
        .strip_suffix(".mp4")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{file:?} is not a clip; expected <number>.mp4"))
        })?;
    let info = shared.clips.get(&id, clip).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no clip {clip} of camera {id:?} (or no longer kept)"),
        )
    })?;
    let Some(path) = shared.clips.file(&id, clip) else {
        return Err(match info.state.as_str() {
            "recording" => ApiError::new(
                StatusCode::TOO_EARLY,
                format!(
                    "clip {clip} is still being recorded; it is ready {} ms after its alert",
                    info.until_ms - info.at_ms
                ),
            ),
            _ => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "clip {clip} was not written: {}",
                    info.error.unwrap_or_default()
                ),
            ),
        });
    };
    // Its type from the `.mp4` name.
    let served = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut response = served.map(axum::body::Body::new).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no enabled camera {id:?}"))
}

/// Only video terminals and screens may see camera pictures; their token comes in the
/// `Authorization` header or, for pages, as their device session.
pub(super) fn viewer(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let device = super::auth::terminal(shared, headers)?;
    let allowed = shared.config().terminals.iter().any(|t| {
        t.id == device && matches!(t.kind, TerminalKind::VideoTerminal | TerminalKind::Screen)
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} may not see camera pictures; only video terminals and screens may"),
        ))
    }
}

fn jpeg(shot: Snapshot) -> Response {
    let mut response = shot.jpeg.clone().into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&shot.id.to_string()) {
        h.insert("x-snapshot-time-ms", v);
    }
    response
}
