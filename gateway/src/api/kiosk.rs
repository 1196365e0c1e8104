//! The kiosk API: service items, grids and party organisations, answered from the master data
//! replica — also when the WAN is down. Every request needs a terminal's token.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::kiosk::Catalogue;
use crate::Shared;

const MAX_QUERY_CHARS: usize = 64;

/// The catalogue, for a terminal; 503 before the first replica arrives.
fn catalogue(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Catalogue>, ApiError> {
    let tokens = shared.tokens();
    let device = tokens.authenticate(headers)?;
    if !shared.config().terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal; the kiosk API is for the centre's terminals"),
        ));
    }
    let c = shared.replica.catalogue();
    if c.version == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no master data yet: the gateway has not received it from central",
        ));
    }
    Ok(c)
}

#[derive(Deserialize)]
pub struct ItemsQuery {
    q: Option<String>,
    department: Option<String>,
    life_event: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    10
}

/// `GET /api/v1/kiosk/items?q=…` (ranked) or `?department=…` / `?life_event=…` (all).
pub async fn items(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    if !(1..=50).contains(&q.limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {} is out of range 1 to 50",
            q.limit
        )));
    }
    match (&q.q, &q.department, &q.life_event) {
        (Some(text), _, _) => {
            if text.chars().count() > MAX_QUERY_CHARS {
                return Err(ApiError::bad_request(format!(
                    "q: at most {MAX_QUERY_CHARS} characters"
                )));
            }
            let hits = c.search(text, q.limit);
            Ok(Json(
                json!({ "version": c.version, "query": text, "hits": hits }),
            ))
        }
        (None, None, None) => Err(ApiError::bad_request(
            "give q (keywords or an item code), department or life_event",
        )),
        (None, d, e) => {
            let items = c.items_where(d.as_deref(), e.as_deref());
            Ok(Json(json!({ "version": c.version, "items": items })))
        }
    }
}

/// `GET /api/v1/kiosk/items/{code}`.
pub async fn item(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    c.item(&code)
        .map(|i| Json(json!(i)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no service item {code:?}")))
}

#[derive(Deserialize)]
pub struct PointQuery {
    lon: f64,
    lat: f64,
}

fn grid_answer(c: &Catalogue, code: &str) -> Option<Value> {
    let g = c.grid(code)?;
    Some(json!({ "version": c.version, "grid": g, "party": c.party_of(code) }))
}

/// `GET /api/v1/kiosk/grids/at?lon=…&lat=…`: the base grid there, its staff and party.
pub async fn grid_at(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<PointQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    let Query(p) = q.map_err(|e| ApiError::bad_request(format!("query: {e}; use ?lon=…&lat=…")))?;
    if !(-180.0..=180.0).contains(&p.lon) || !(-90.0..=90.0).contains(&p.lat) {
        return Err(ApiError::bad_request(
            "lon/lat: not a longitude and latitude",
        ));
    }
    let g = c.grid_at([p.lon, p.lat]).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no base grid of this centre contains {}, {}", p.lon, p.lat),
        )
    })?;
    grid_answer(&c, &g.code)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "grid vanished"))
}

#[derive(Deserialize)]
pub struct NameQuery {
    q: String,
}

/// `GET /api/v1/kiosk/grids?q=…`: grids by name, road or estate.
pub async fn grids(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<NameQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {e}; use ?q=…")))?;
    if q.q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(format!(
            "q: at most {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(Json(
        json!({ "version": c.version, "grids": c.grids_named(&q.q) }),
    ))
}

/// `GET /api/v1/kiosk/grids/{code}`.
pub async fn grid(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    grid_answer(&c, &code)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no grid {code:?}")))
}

/// `GET /api/v1/kiosk/party`: the organisation tree (each with its parent).
pub async fn party(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    Ok(Json(
        json!({ "version": c.version, "party": c.data().party }),
    ))
}

/// `POST /api/v1/kiosk/submissions`: 201 with the receipt once the submission is on disk.
pub async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use crate::submissions::{receipt, NewSubmission, Status};
    let tokens = shared.tokens();
    let device = tokens.authenticate(&headers)?.to_owned();
    if !shared.config().terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal; submissions come from the centre's terminals"),
        ));
    }
    // Taken even before any master data has arrived: nothing a resident hands in is refused
    // for want of the catalogue (it is checked against it when there is one).
    let catalogue = shared.replica.catalogue();
    let s = NewSubmission::parse(&body, &catalogue).map_err(ApiError::bad_request)?;
    let mut payload = serde_json::to_value(&s).unwrap_or_default();
    payload["terminal"] = json!(device);
    let raw = serde_json::value::to_raw_value(&payload)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let seqs = shared
        .outbox
        .append(vec![crate::outbox::NewEvent {
            class: firmware_config::wire::EventClass::Submission,
            kind: "submission.created".to_owned(),
            payload: raw,
            time_ms: None,
        }])
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}")))?;
    let seq = seqs.first().copied().unwrap_or(0);
    let status = Status {
        receipt: receipt(shared.gateway_id.as_str(), seq),
        status: "submitted".to_owned(),
        station: s.grid.clone(),
        note: "waiting to reach the command centre".to_owned(),
        category: s.category,
        title: s.title.clone(),
        updated: time::OffsetDateTime::now_utc(),
    };
    let (sh, st) = (shared.clone(), status.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sh.statuses.put(&st)).await {
        // The submission itself is safe in the outbox; only the local status is missing.
        tracing::warn!(error = %e, "cannot note a submission's status");
    }
    tracing::info!(receipt = %status.receipt, category = ?s.category, "submission taken");
    Ok((StatusCode::CREATED, Json(json!(status))))
}

/// `GET /api/v1/kiosk/submissions/{receipt}`: where a submission is.
pub async fn submission(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(receipt): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tokens = shared.tokens();
    let device = tokens.authenticate(&headers)?;
    if !shared.config().terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal"),
        ));
    }
    shared
        .statuses
        .get(&receipt)
        .map(|s| Json(json!(s)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no submission {receipt:?}")))
}
