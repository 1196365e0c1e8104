//! `POST /api/v1/events`: other systems of the centre hand events to the gateway. The answer
//! names the assigned sequence numbers only once the events are on disk; a refused request
//! stores nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::wire::EventClass;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiError;
use crate::outbox::{
    NewEvent, OutboxError, MAX_EVENTS_PER_APPEND, MAX_KIND_BYTES, MAX_PAYLOAD_BYTES,
};
use crate::Shared;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InEvent {
    class: EventClass,
    kind: String,
    payload: Box<RawValue>,
    /// When it happened, Unix milliseconds; the time of arrival when absent.
    #[serde(default)]
    time_ms: Option<i64>,
}

pub async fn post_events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match accept(&shared, &headers, &body).await {
        Ok(seqs) => (StatusCode::OK, Json(json!({ "seqs": seqs }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accept(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u64>, ApiError> {
    let tokens = shared.tokens();
    let source = tokens.authenticate(headers)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let events: Vec<InEvent> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::bad_request(format!(
            "body{}: {}",
            path_suffix(&e.path().to_string()),
            e.inner()
        ))
    })?;
    if events.is_empty() {
        return Err(ApiError::bad_request("body: give at least one event"));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body: {} events; at most {MAX_EVENTS_PER_APPEND} per request",
                events.len()
            ),
        ));
    }
    for (i, e) in events.iter().enumerate() {
        if e.kind.is_empty()
            || e.kind.len() > MAX_KIND_BYTES
            || e.kind.chars().any(char::is_control)
        {
            return Err(ApiError::bad_request(format!(
                "[{i}].kind: 1 to {MAX_KIND_BYTES} bytes, no control characters"
            )));
        }
        if e.payload.get().len() > MAX_PAYLOAD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "[{i}].payload: {} bytes; at most {MAX_PAYLOAD_BYTES}",
                    e.payload.get().len()
                ),
            ));
        }
    }
    let n = events.len();
    let new = events
        .into_iter()
        .map(|e| NewEvent {
            class: e.class,
            kind: e.kind,
            payload: e.payload,
            time_ms: e.time_ms,
        })
        .collect();
    let seqs = shared.outbox.append(new).await.map_err(|e| match e {
        OutboxError::Full { .. } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        other => {
            tracing::error!(error = %other, "cannot append events");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
        }
    })?;
    tracing::debug!(
        source,
        events = n,
        first = seqs.first().copied(),
        "events accepted"
    );
    Ok(seqs)
}

fn path_suffix(path: &str) -> String {
    if path == "." {
        String::new()
    } else if path.starts_with('[') {
        path.to_owned()
    } else {
        format!(".{path}")
    }
}
