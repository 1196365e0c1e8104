//! Alert clips through central: listed, asked for and played from the gateway that keeps them,
//! over the command channel (`camera.clips`, `camera.clip`, `camera.clip.read`), so nothing
//! but the gateway's own MQTT session is needed. Operators, for the centres serving their scope
//! (as on the map); a centre beyond it answers 404 like an unknown one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use firmware_config::ids::GatewayId;
use serde_json::{json, Value};

use super::alerts::Reach;
use super::session::Operator;
use super::ApiError;
use crate::link::commands::CommandError;
use crate::Shared;

/// How long one command to the gateway may take.
const WAIT: Duration = Duration::from_secs(10);
/// What one read asks for: the gateway's most (`camera.clip.read`).
const CHUNK: u64 = 512 * 1024;

/// The gateway, if the operator reaches it.
pub(super) fn reached(
    shared: &Shared,
    who: &crate::operators::Signed,
    gateway: &str,
) -> Result<GatewayId, ApiError> {
    let id = GatewayId::new(gateway.to_owned())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("gateway: {gateway:?} {e}")))?;
    if !Reach::of(shared, who).reaches_gateway(gateway) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no gateway {gateway:?} within your scope"),
        ));
    }
    Ok(id)
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        e @ CommandError::Timeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
        }
        e @ CommandError::Refused { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /api/v1/gateways/{gateway}/cameras/{camera}/clips`: the camera's clips, as the gateway
/// lists them, each with where central plays it (`url`).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path((gateway, camera)): Path<(String, String)>,
) -> Response {
    match ask(
        &shared,
        &who,
        &gateway,
        "camera.clips",
        json!({ "camera": camera }),
    )
    .await
    {
        Ok(r) => {
            let mut clips = r.data.get("clips").cloned().unwrap_or(json!([]));
            if let Some(list) = clips.as_array_mut() {
                for c in list {
                    let id = c["id"].as_u64().unwrap_or(0);
                    c["url"] = json!(url(&gateway, &camera, id));
                }
            }
            Json(json!({ "gateway": gateway, "camera": camera, "clips": clips })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Command `name` to `gateway`, if the operator reaches its centre; its reply.
async fn ask(
    shared: &Shared,
    who: &crate::operators::Signed,
    gateway: &str,
    name: &str,
    args: Value,
) -> Result<firmware_config::wire::CommandReply, ApiError> {
    let gw = reached(shared, who, gateway)?;
    shared
        .commands
        .send(&gw, name, args, WAIT)
        .await
        .map_err(command_error)
}

fn url(gateway: &str, camera: &str, id: u64) -> String {
    format!("/api/v1/gateways/{gateway}/cameras/{camera}/clips/{id}.mp4")
}

/// `POST /api/v1/gateways/{gateway}/cameras/{camera}/clips`: an operator's clip of the camera
/// now (what led up to this moment, and what follows), audited.
pub async fn take(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path((gateway, camera)): Path<(String, String)>,
) -> Response {
    let args = json!({ "camera": camera, "by": who.name });
    match ask(&shared, &who, &gateway, "camera.clip", args).await {
        Ok(r) => {
            let id = r.data["id"].as_u64().unwrap_or(0);
            shared
                .operators
                .record(&who.name, "clip.take", &format!("{gateway}/{camera}/{id}"));
            let mut clip = r.data;
            clip["url"] = json!(url(&gateway, &camera, id));
            (StatusCode::CREATED, Json(clip)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// One read of the clip from the gateway: its whole size and the bytes.
async fn read(
    shared: &Shared,
    gw: &GatewayId,
    camera: &str,
    clip: u64,
    offset: u64,
    length: u64,
) -> Result<(u64, Vec<u8>), ApiError> {
    let r = shared
        .commands
        .send(
            gw,
            "camera.clip.read",
            json!({ "camera": camera, "clip": clip, "offset": offset, "length": length.min(CHUNK) }),
            WAIT,
        )
        .await
        .map_err(command_error)?;
    let size = r.data.get("size").and_then(Value::as_u64);
    let data = r
        .data
        .get("data")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    match (size, data) {
        (Some(s), Some(d)) => Ok((s, d)),
        _ => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the gateway's reply has no clip data",
        )),
    }
}

/// `GET /api/v1/gateways/{gateway}/cameras/{camera}/clips/{clip}.mp4`: the clip, read from the
/// gateway a piece at a time as it is sent on (one byte range when asked, so a player can seek).
pub async fn file(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path((gateway, camera, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let gw = match reached(&shared, &who, &gateway) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let Some(clip) = file
        .strip_suffix(".mp4")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{file:?} is not a clip; expected <number>.mp4"),
        )
        .into_response();
    };
    // The clip's size first (a read of nothing), so the shared range reader decides.
    let size = match read(&shared, &gw, &camera, clip, 0, 0).await {
        Ok((size, _)) => size,
        Err(e) => return e.into_response(),
    };
    use firmware_config::runtime::range::{wanted, Wanted};
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (first, last, partial) = match wanted(asked, size) {
        Wanted::Part(r) => (r.start, r.end - 1, true),
        Wanted::Whole => (0, size.saturating_sub(1), false),
        Wanted::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response()
        }
    };
    let length = if size == 0 { 0 } else { last - first + 1 };
    let body = futures::stream::unfold(
        (first, shared.clone(), gw, camera.clone()),
        move |(at, shared, gw, camera)| async move {
            if length == 0 || at > last {
                return None;
            }
            let want = last - at + 1;
            match read(&shared, &gw, &camera, clip, at, want).await {
                Ok((_, mut d)) if !d.is_empty() => {
                    d.truncate(want.min(d.len() as u64) as usize);
                    let next = at + d.len() as u64;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(d)),
                        (next, shared, gw, camera),
                    ))
                }
                Ok(_) => None,
                Err(e) => Some((
                    Err(std::io::Error::other(e.message)),
                    (last + 1, shared, gw, camera),
                )),
            }
        },
    );
    let mut response = axum::body::Body::from_stream(body).into_response();
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if let Ok(v) = HeaderValue::from_str(&length.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if partial {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}
