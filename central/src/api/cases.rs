//! Cases from residents' submissions on central's API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::cases::CaseError;
use crate::Shared;

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

/// `GET /api/v1/cases[?status=…]`.
pub async fn list(State(shared): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Response {
    Json(json!({ "cases": shared.cases.list(q.status.as_deref()) })).into_response()
}

/// `GET /api/v1/cases/{receipt}`.
pub async fn one(State(shared): State<Arc<Shared>>, Path(receipt): Path<String>) -> Response {
    match shared.cases.get(&receipt) {
        Some(c) => Json(json!(c)).into_response(),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no case {receipt:?}")).into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    status: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    by: String,
}

/// `POST /api/v1/cases/{receipt}/status {"status","note","by"}`: the change goes back to the
/// kiosk's gateway.
pub async fn set_status(
    State(shared): State<Arc<Shared>>,
    op: super::session::Operator,
    Path(receipt): Path<String>,
    req: Result<Json<StatusChange>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let by = op.author(&req.by);
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        s.cases.set_status(&receipt, &req.status, &by, &req.note)
    })
    .await;
    match result {
        Ok(Ok(case)) => {
            crate::cases::tell_gateway(&shared.commands, &case);
            Json(json!(case)).into_response()
        }
        Ok(Err(e)) => {
            let status = match e {
                CaseError::Invalid(_) => StatusCode::BAD_REQUEST,
                CaseError::NotFound(_) => StatusCode::NOT_FOUND,
                CaseError::Store(_) | CaseError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
