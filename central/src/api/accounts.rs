//! Operator accounts in the console: administrators only (the router's guard). Every change
//! is in the operators' audit trail; a disabled account's sessions end at their next request.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::session::Operator;
use super::ApiError;
use crate::operators::accounts::{AccountError, Change};
use crate::operators::Role;
use crate::Shared;

fn refused(e: AccountError) -> Response {
    let status = match e {
        AccountError::Invalid(_) => StatusCode::BAD_REQUEST,
        AccountError::NotFound(_) => StatusCode::NOT_FOUND,
        AccountError::Conflict(_) => StatusCode::CONFLICT,
        AccountError::Store(_) | AccountError::Encode(_) | AccountError::Hash(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string()).into_response()
}

/// A scope must be a grid the master data in force knows.
fn check_scope(shared: &Shared, scope: Option<&str>) -> Result<(), AccountError> {
    let Some(code) = scope else { return Ok(()) };
    let known = shared
        .masterdata
        .current()
        .is_some_and(|v| v.dataset.grids.iter().any(|g| g.code == code));
    if known {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "scope: {code:?} is not a grid of the master data"
        )))
    }
}

/// `GET /api/v1/operators`: every account, without its password.
pub async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "accounts": shared.operators.list_accounts() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    name: String,
    role: Role,
    #[serde(default)]
    scope: Option<String>,
    password: String,
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// `POST /api/v1/operators {"name","role","scope"?,"password"}` → 201 the account.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    b: Body<NewAccount>,
) -> Response {
    let a = match body(b) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let scope = a.scope.filter(|s| !s.is_empty());
    if let Err(e) = check_scope(&shared, scope.as_deref()) {
        return refused(e);
    }
    let s = shared.clone();
    let made = tokio::task::spawn_blocking(move || {
        s.operators
            .create_account(&a.name, a.role, scope, &a.password, &who.name)
    })
    .await;
    match made {
        Ok(Ok(v)) => (StatusCode::CREATED, Json(json!(v))).into_response(),
        Ok(Err(e)) => refused(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `PATCH /api/v1/operators/{name} {"role"?,"scope"?,"disabled"?}` → the account.
pub async fn change(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path(name): Path<String>,
    b: Body<Change>,
) -> Response {
    let c = match body(b) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if let Some(Some(scope)) = &c.scope {
        if let Err(e) = check_scope(&shared, Some(scope)) {
            return refused(e);
        }
    }
    let s = shared.clone();
    let done =
        tokio::task::spawn_blocking(move || s.operators.change_account(&name, &c, &who.name)).await;
    match done {
        Ok(Ok(v)) => Json(json!(v)).into_response(),
        Ok(Err(e)) => refused(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: String,
}

/// `PUT /api/v1/operators/{name}/password {"password"}` → 204.
pub async fn password(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path(name): Path<String>,
    b: Body<NewPassword>,
) -> Response {
    let p = match body(b) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let s = shared.clone();
    let done = tokio::task::spawn_blocking(move || {
        s.operators.set_password(&name, &p.password, &who.name)
    })
    .await;
    match done {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => refused(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
