//! The kiosk API: service items, grids and party organisations, answered from the master data
//! replica — also when the WAN is down. Every request needs a terminal's token.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::Instant;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::kiosk::Catalogue;
use crate::Shared;

const MAX_QUERY_CHARS: usize = 64;

/// The terminal making the request: 401 without a known token, 403 for a token that is not a
/// terminal's, 429 (with Retry-After) beyond its rate.
fn terminal(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let device = super::auth::terminal(shared, headers)?;
    let config = shared.config();
    if !config.terminals.iter().any(|t| t.id == device) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{device:?} is not a terminal; the kiosk API is for the centre's terminals"),
        ));
    }
    let l = &config.kiosk;
    shared
        .kiosk_requests
        .take(&device, l.requests_per_second, l.burst, Instant::now())
        .map_err(|wait| {
            shared.metrics.kiosk_rate_limited.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{device:?} is over its {} requests a second; wait {} ms",
                    l.requests_per_second,
                    wait.as_millis()
                ),
            )
            .retry_after(wait.as_secs_f64().ceil() as u64)
        })?;
    Ok(device)
}

/// The catalogue, for a terminal; 503 before the first replica arrives.
fn catalogue(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Catalogue>, ApiError> {
    terminal(shared, headers)?;
    let c = shared.replica.catalogue();
    if c.version == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no master data yet: the gateway has not received it from central",
        )
        .retry_after(30));
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
        // Nothing asked: every item, for browsing.
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
    q: Option<String>,
}

/// `GET /api/v1/kiosk/grids?q=…`: grids by address (road and house number, estate), name
/// or code; best first, each with what matched. Without `q`: every grid unit.
pub async fn grids(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<NameQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {e}; use ?q=…")))?;
    let Some(q) = q.q else {
        return Ok(Json(
            json!({ "version": c.version, "grids": c.data().grids }),
        ));
    };
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(format!(
            "q: at most {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(Json(
        json!({ "version": c.version, "query": q, "grids": c.grids_found(&q) }),
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
    use crate::kiosk::submissions::{new_check, NewSubmission, Status};
    use firmware_config::wire::receipt;
    let device = terminal(&shared, &headers)?;
    let per_hour = shared.config().kiosk.submissions_per_hour;
    shared
        .kiosk_submissions
        .take(&device, f64::from(per_hour) / 3600.0, per_hour, Instant::now())
        .map_err(|wait| {
            shared.metrics.kiosk_rate_limited.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{device:?} made its {per_hour} submissions of the hour; ask the staff of the service hall"),
            )
            .retry_after(wait.as_secs_f64().ceil() as u64)
        })?;
    // Taken even before any master data has arrived: nothing a resident hands in is refused
    // for want of the catalogue (it is checked against it when there is one).
    let catalogue = shared.replica.catalogue();
    let s = NewSubmission::parse(&body, &catalogue)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut payload = serde_json::to_value(&s).unwrap_or_default();
    payload["terminal"] = json!(device);
    let check = new_check();
    payload["check"] = json!(check);
    let event = crate::outbox::NewEvent::own(Kind::SubmissionCreated, &payload)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let seqs = shared
        .outbox
        .append(vec![event])
        .await
        .map_err(|e| super::not_stored(&shared, e))?;
    let seq = seqs.first().copied().unwrap_or(0);
    let status = Status {
        receipt: receipt(shared.gateway_id.as_str(), seq, &check),
        status: "submitted".to_owned(),
        station: s.grid.clone(),
        note: "waiting to reach the command centre".to_owned(),
        category: s.category,
        title: s.title.clone(),
        updated: shared.clock.now_utc(),
        version: 0,
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
    terminal(&shared, &headers)?;
    shared
        .statuses
        .get(&receipt)
        .map(|s| Json(json!(s)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no submission {receipt:?}")))
}

/// `GET /api/v1/kiosk/content`: the learning content, and whether each file is here yet.
pub async fn content_list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let c = catalogue(&shared, &headers)?;
    let files: Vec<Value> = c
        .data()
        .content
        .iter()
        .map(|f| {
            let mut v = json!(f);
            v["available"] = json!(shared.content.path_of(&f.sha256).is_some());
            v
        })
        .collect();
    Ok(Json(json!({ "version": c.version, "files": files })))
}

/// `GET /api/v1/kiosk/content/{id}`: the file, whole or one byte range (`Range: bytes=…`),
/// with its hash as a strong ETag. 503 while it is still being fetched from central.
pub async fn content_file(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse as _;
    use firmware_config::runtime::range::{content_range, wanted, Wanted};
    let c = catalogue(&shared, &headers)?;
    let f = c
        .data()
        .content
        .iter()
        .find(|f| f.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no content {id:?}")))?;
    let path = shared.content.path_of(&f.sha256).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{id:?} is not here yet: the gateway is fetching it from central"),
        )
        .retry_after(30)
    })?;
    let etag = format!("\"{}\"", f.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let len = f.bytes;
    // A range is honoured only for this very file (If-Range with another ETag: the whole).
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let (status, part) = match wanted(range, len) {
        Wanted::Whole => (StatusCode::OK, 0..len),
        Wanted::Part(p) => (StatusCode::PARTIAL_CONTENT, p),
        Wanted::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{id:?} has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let body = file_body(path, part.clone())
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{id:?}: {e}")))?;
    let disposition = format!("inline; filename*=UTF-8''{}", percent_encode(&f.file_name));
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, media_type(&f.file_name).to_owned()),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
            (header::ETAG, etag),
            (header::CONTENT_LENGTH, (part.end - part.start).to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response();
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = content_range(&part, len).parse() {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

/// Streams `part` of the file in 64 KiB pieces (videos need not fit in memory).
async fn file_body(
    path: std::path::PathBuf,
    part: std::ops::Range<u64>,
) -> std::io::Result<axum::body::Body> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(part.start)).await?;
    let left = part.end - part.start;
    let stream = futures::stream::unfold((file, left), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    Ok(axum::body::Body::from_stream(stream))
}

fn media_type(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" => "text/plain; charset=utf-8",
        "pdf" => "application/pdf",
        "html" | "htm" => "text/html; charset=utf-8",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" => "audio/ogg",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// RFC 5987 encoding of a file name for Content-Disposition (Chinese names included).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /kiosk`: the service hall's self-service page (opened as `/kiosk?token=…`).
pub async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("kiosk.html"))
}

/// `GET /api/v1/kiosk/openapi.json`: this API's OpenAPI document (no token needed), filled
/// with this centre's data: the grid and item codes a submission may name, and an example of
/// each path parameter, so a client (or a fuzzer) can reach real answers.
pub async fn openapi(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    static DOC: std::sync::OnceLock<Result<Value, Arc<serde_json::Error>>> =
        std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        serde_json::from_str(include_str!("../../openapi/kiosk.json")).map_err(Arc::new)
    });
    let mut doc = doc
        .clone()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let c = shared.replica.catalogue();
    let data = c.data();
    if c.version > 0 {
        // A nullable field's enum must name null too (OpenAPI 3.0).
        let codes = |codes: Vec<&String>, nullable: bool| {
            let mut v: Vec<Value> = codes.into_iter().map(|c| json!(c)).collect();
            if nullable {
                v.push(Value::Null);
            }
            Value::Array(v)
        };
        for (kind, item_nullable) in [("ReportSubmission", true), ("ApplicationSubmission", false)]
        {
            let sub = &mut doc["components"]["schemas"][kind]["properties"];
            sub["grid"]["enum"] = codes(data.grids.iter().map(|g| &g.code).collect(), true);
            sub["item_code"]["enum"] =
                codes(data.items.iter().map(|i| &i.code).collect(), item_nullable);
        }
        let paths = &mut doc["paths"];
        let mut example = |path: &str, at: usize, value: Value| {
            paths[path]["get"]["parameters"][at]["example"] = value;
        };
        if let Some(i) = data.items.first() {
            example("/api/v1/kiosk/items/{code}", 0, json!(i.code));
        }
        if let Some(f) = data.content.first() {
            example("/api/v1/kiosk/content/{id}", 0, json!(f.id));
        }
        let base = data.grids.iter().find(|g| g.boundary.is_some());
        if let Some(g) = base {
            example("/api/v1/kiosk/grids/{code}", 0, json!(g.code));
            if let Some([lon, lat]) = g.boundary.as_ref().and_then(|b| b.inner_point()) {
                example("/api/v1/kiosk/grids/at", 0, json!(lon));
                example("/api/v1/kiosk/grids/at", 1, json!(lat));
            }
        }
    }
    Ok(Json(doc))
}
