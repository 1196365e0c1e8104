//! `POST /api/v1/events`: other systems of the centre (its `[[sources]]`, each with its own
//! token) hand events to the gateway. The answer names the assigned sequence numbers only once
//! the events are on disk; a refused request stores nothing.
//!
//! Who may post what:
//! - only a source's token, checked before the body is read (a terminal's token, or none, is
//!   refused without reading what it sent);
//! - never one of the gateway's own kinds (`camera.*`, `terminal.*`, `config.*`,
//!   `submission.*`, `meeting.*`, `gateway.*`, …), and only the kinds the source's `kinds`
//!   name when it names any;
//! - within the source's quota of alerts and submissions waiting for central (507 beyond it),
//!   so that one source never crowds out the gateway's own alerts or residents' submissions.
//!
//! Every event is stored with its source's id, and central believes device kinds only from the
//! gateway itself.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
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

/// How long a request's body may take to arrive, once its source is known.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The earliest and latest `time_ms` an event may carry: 0001-01-01 and 9999-12-31 (what an
/// RFC 3339 time can say).
const MIN_TIME_MS: i64 = -62_135_596_800_000;
const MAX_TIME_MS: i64 = 253_402_300_799_999;

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

pub async fn post_events(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Who first: nothing of the body is read for a request that may not post.
    let source = match super::auth::source(&shared, &parts.headers) {
        Ok(s) => s,
        Err(e) => {
            if e.status == StatusCode::FORBIDDEN {
                shared.metrics.refuse_event("not_a_source");
            }
            return e.into_response();
        }
    };
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: {e}; at most {MAX_BODY_BYTES} bytes"),
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "body: not sent in time")
                .into_response()
        }
    };
    match accept(&shared, &source, &parts.headers, &bytes).await {
        Ok(seqs) => (StatusCode::OK, Json(json!({ "seqs": seqs }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accept(
    shared: &Shared,
    source: &str,
    _headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<u64>, ApiError> {
    let config = shared.config();
    let Some(src) = config.sources.iter().find(|s| s.id == source) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{source:?} is no longer a source of this gateway"),
        ));
    };
    // Read plainly; only a body that fails is read again to say where (tracking the path
    // of every field slows every request that is fine).
    let events: Vec<InEvent> = match serde_json::from_slice(body) {
        Ok(events) => events,
        Err(plain) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let e = match serde_path_to_error::deserialize::<_, Vec<InEvent>>(&mut de) {
                // Only what follows the list is wrong (the path reader stops at its end).
                Ok(_) => return Err(ApiError::bad_request(format!("body: {plain}"))),
                Err(e) => e,
            };
            return Err(ApiError::bad_request(format!(
                "body{}: {}",
                path_suffix(&e.path().to_string()),
                e.inner()
            )));
        }
    };
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
        // Any time a clock can show is kept (central flags the implausible ones); only one no
        // timestamp can carry is refused.
        if let Some(ms) = e.time_ms {
            if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
                return Err(ApiError::bad_request(format!(
                    "[{i}].time_ms: {ms} is outside the years 0001 to 9999"
                )));
            }
        }
        if firmware_config::kinds::is_gateway_kind(&e.kind) {
            shared.metrics.refuse_event("gateway_kind");
            tracing::warn!(source, kind = %e.kind, "a source posted one of the gateway's own kinds; refused");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "[{i}].kind: {:?} is one of the gateway's own kinds, which no source may post",
                    e.kind
                ),
            ));
        }
        if !src.may_post(&e.kind) {
            shared.metrics.refuse_event("kind_not_allowed");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "[{i}].kind: source {source:?} may post only {}",
                    src.kinds.join(", ")
                ),
            ));
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
        .map(|e| {
            let payload = with_clip(shared, src, &e);
            NewEvent {
                class: e.class,
                kind: e.kind,
                payload: payload.unwrap_or(e.payload),
                time_ms: e.time_ms,
                source: Some(source.to_owned()),
            }
        })
        .collect();
    let quota = src
        .max_pending
        .map_or(config.storage.disk_budget.bytes() / 8, |q| q.bytes());
    let seqs = shared
        .outbox
        .append_from_source(new, quota)
        .await
        .map_err(|e| match e {
            OutboxError::SourceQuota { .. } => {
                shared.metrics.refuse_event("quota");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()).retry_after(60)
            }
            other => super::not_stored(shared, other),
        })?;
    tracing::debug!(
        source,
        events = n,
        first = seqs.first().copied(),
        "events accepted"
    );
    Ok(seqs)
}

/// An alert naming one of the source's cameras (`payload.camera`) takes a clip of it, as a
/// sensing alert does; its payload then names the clip (`clip`, `clip_path`).
fn with_clip(
    shared: &Shared,
    src: &firmware_config::config::gateway::EventSource,
    e: &InEvent,
) -> Option<Box<RawValue>> {
    if e.class != EventClass::Alert || src.cameras.is_empty() {
        return None;
    }
    let mut payload: serde_json::Value = serde_json::from_str(e.payload.get()).ok()?;
    let camera = payload.get("camera")?.as_str()?.to_owned();
    if !src.cameras.contains(&camera) {
        return None;
    }
    let at = e
        .time_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or_else(std::time::SystemTime::now, |ms| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
        });
    let clip = match shared.clips.take(&camera, &e.kind, at) {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(camera, kind = %e.kind, error = %err, "no clip of a source's alert");
            return None;
        }
    };
    payload["clip"] = json!(format!("{camera}/{}", clip.id));
    payload["clip_path"] = json!(clip.path());
    serde_json::value::to_raw_value(&payload).ok()
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
