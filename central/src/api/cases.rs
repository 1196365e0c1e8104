//! Residents' cases on central's API, each operator reaching only the cases of their scope.
//! A case outside it answers as one that does not exist: its receipt says nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::session::Operator;
use super::ApiError;
use crate::cases::scope::{GridTree, Places};
use crate::cases::{Action, CaseError, Filter};
use crate::Shared;

/// The grid tree of the master data in force (empty before any: only the street's accounts
/// reach anything then).
fn places(shared: &Shared) -> GridTree {
    shared
        .masterdata
        .current()
        .map(|v| GridTree::new(&v.dataset))
        .unwrap_or_default()
}

fn refused(e: CaseError) -> Response {
    let status = match e {
        CaseError::Invalid(_) => StatusCode::BAD_REQUEST,
        CaseError::Forbidden(_) => StatusCode::FORBIDDEN,
        CaseError::NotFound(_) => StatusCode::NOT_FOUND,
        CaseError::Busy(_) => StatusCode::CONFLICT,
        CaseError::Store(_) | CaseError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string()).into_response()
}

/// `GET /api/v1/cases?status=&grid=&category=&overdue=&before=&limit=`: the queue, newest
/// first, `{"cases","total"}`.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(filter) = match q {
        Ok(q) => q,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let s = shared.clone();
    let found =
        tokio::task::spawn_blocking(move || s.cases.query(&filter, &who, &places(&s))).await;
    match found {
        Ok(Ok((cases, total))) => {
            let (fallback, now) = (shared.cases.fallback(), time::OffsetDateTime::now_utc());
            let cases: Vec<_> = cases
                .iter()
                .map(|c| {
                    let mut v = json!(c);
                    v["overdue"] = json!(c.is_overdue(fallback, now));
                    v
                })
                .collect();
            Json(json!({ "cases": cases, "total": total })).into_response()
        }
        Ok(Err(e)) => refused(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/v1/cases/{receipt}`: the case, and `actions` (what this operator may do now).
pub async fn one(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    Path(receipt): Path<String>,
) -> Response {
    let places = places(&shared);
    match shared.cases.get(&receipt) {
        Some(c) if places.reaches(who.scope.as_deref(), c.station.as_deref()) => {
            with_actions(&c, &who, &places).into_response()
        }
        _ => refused(CaseError::NotFound(receipt)),
    }
}

/// A case as the console shows it: with the actions this operator may take on it now.
fn with_actions(
    c: &crate::cases::Case,
    who: &crate::operators::Signed,
    places: &GridTree,
) -> Json<serde_json::Value> {
    let mut v = json!(c);
    v["actions"] = json!(crate::cases::workflow::available(c, who, places));
    Json(v)
}

/// An action as the API takes it: `by` names the person a tool acts for (recorded beside the
/// signed-in operator, never instead).
#[derive(serde::Deserialize)]
pub struct ActionRequest {
    #[serde(default)]
    by: String,
    #[serde(flatten)]
    action: Action,
}

/// `POST /api/v1/cases/{receipt}/actions {"action", …}`: one step of the case's work; the
/// resident's kiosk is told of each step they can follow.
pub async fn act(
    State(shared): State<Arc<Shared>>,
    op: Operator,
    Path(receipt): Path<String>,
    req: Result<Json<ActionRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(ActionRequest { by, action }) = match req {
        Ok(r) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let author = op.author(&by);
    let who = op.0.clone();
    let s = shared.clone();
    let done = tokio::task::spawn_blocking(move || {
        let places = places(&s);
        // Outside the scope: as if there were no such case.
        match s.cases.get(&receipt) {
            Some(c) if places.reaches(who.scope.as_deref(), c.station.as_deref()) => {}
            _ => return Err(CaseError::NotFound(receipt)),
        }
        let (case, step) = s.cases.act(&receipt, &action, &who, &author, &places)?;
        let shown = with_actions(&case, &who, &places);
        Ok((case, step, shown))
    })
    .await;
    match done {
        Ok(Ok((case, step, shown))) => {
            shared
                .operators
                .record(&op.0.name, &format!("case {}", step.action), &case.receipt);
            if step.tell_resident {
                crate::cases::tell_gateway(&shared.commands, &case);
                shared
                    .notifier
                    .notify("case.status", crate::cases::notice(&case, &step.note));
            } else if step.action == "supervise" {
                shared
                    .notifier
                    .notify("case.supervised", crate::cases::notice(&case, &step.note));
            }
            shown.into_response()
        }
        Ok(Err(e)) => refused(e),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
