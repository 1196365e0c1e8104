//! Cameras on the gateway's API: their health and their pictures.
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
        c.viewers = shared.live(&c.id).map_or(0, |l| l.viewers());
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
