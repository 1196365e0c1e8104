//! Master data on central's API: publish a data set, read the versions, fetch content.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use firmware_config::masterdata::Sources;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiError;
use crate::masterdata::ImportError;
use crate::Shared;

/// Largest data set accepted in one request (content included, base64).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// `POST /api/v1/masterdata`: the data set's files by name, content files base64 by path.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub texts: BTreeMap<String, String>,
    #[serde(default)]
    pub blobs: BTreeMap<String, String>,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub note: String,
}

impl ImportRequest {
    pub fn from_sources(s: &Sources, by: &str, note: &str) -> Self {
        Self {
            texts: s.texts.clone(),
            blobs: s
                .blobs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
            by: by.to_owned(),
            note: note.to_owned(),
        }
    }
}

/// 201 with the new version; 200 when the data equals the current version; 422 with every
/// problem (file, line, field, message, text) when it is refused — then nothing is published.
pub async fn import(
    State(shared): State<Arc<Shared>>,
    op: super::session::Operator,
    req: Result<Json<ImportRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let mut sources = Sources {
        texts: req.texts,
        blobs: BTreeMap::new(),
    };
    for (path, b64) in req.blobs {
        match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(b) => {
                sources.blobs.insert(path, b);
            }
            Err(_) => {
                return ApiError::new(StatusCode::BAD_REQUEST, format!("blobs.{path}: not base64"))
                    .into_response()
            }
        }
    }
    let by = op.author(&req.by);
    let s = shared.clone();
    let result =
        tokio::task::spawn_blocking(move || s.masterdata.import(&sources, &by, &req.note)).await;
    match result {
        Ok(Ok(imported)) => {
            if imported.new {
                shared.replication.offer_all();
            }
            let status = if imported.new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!(imported))).into_response()
        }
        Ok(Err(ImportError::Invalid(problems))) => {
            let list: Vec<_> = problems
                .iter()
                .map(|p| json!({ "file": p.file, "line": p.line, "field": p.field, "message": p.message, "text": p.to_string() }))
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": format!("{} problem(s); nothing was published", list.len()), "problems": list })),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/v1/masterdata`: the current version (without its data), 404 before any.
pub async fn current(State(shared): State<Arc<Shared>>) -> Response {
    match shared.masterdata.current() {
        Some(v) => Json(json!(v.info)).into_response(),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "no master data published yet").into_response()
        }
    }
}

/// `GET /api/v1/masterdata/versions`: every version, newest first, with what changed.
pub async fn versions(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({ "versions": shared.masterdata.versions() }))
}

/// `GET /api/v1/masterdata/versions/{n}`: a version with its whole data set.
pub async fn version(State(shared): State<Arc<Shared>>, Path(n): Path<u64>) -> Response {
    match shared.masterdata.version(n) {
        Some(v) => Json(json!(v)).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no master data version {n}"))
            .into_response(),
    }
}

/// `GET /api/v1/masterdata/content/{sha256}`: a content file's bytes.
pub async fn content(State(shared): State<Arc<Shared>>, Path(sha): Path<String>) -> Response {
    match shared.masterdata.blob(&sha) {
        Some(b) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            b,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no content {sha:?}")).into_response(),
    }
}
