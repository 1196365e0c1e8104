//! Operator sessions on central's API: log in and out, and the extractor every console
//! endpoint uses — a live session cookie, the CSRF token on anything that changes state, and
//! a role at least the one asked for.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::operators::{Role, Signed, COOKIE};
use crate::Shared;

/// A refusal: its status and what was wrong.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

/// The signed-in operator of a request.
pub struct Operator(pub Signed);

impl Operator {
    /// Who a record names as its author: always the signed-in operator (or API token), with
    /// the person a tool says it acts for (`by` in a body) beside it, never instead of it.
    pub fn author(&self, claimed: &str) -> String {
        let claimed = claimed.trim();
        if claimed.is_empty() || claimed == self.0.name {
            self.0.name.clone()
        } else {
            format!("{} for {claimed}", self.0.name)
        }
    }
}

impl Operator {
    /// 403 unless the operator's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<&Signed, Refusal> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(Refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is {}; this needs {}",
                    self.0.name,
                    self.0.role.as_str(),
                    role.as_str()
                ),
            ))
        }
    }
}

impl FromRequestParts<Arc<Shared>> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, Refusal> {
        // A tool with an API token: no cookie, so no cross-site request to guard against.
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            return shared
                .operators
                .by_token(token.trim())
                .map(Operator)
                .ok_or_else(|| {
                    Refusal(
                        StatusCode::UNAUTHORIZED,
                        "unknown API token (see [[api_tokens]] in central.toml)".into(),
                    )
                });
        }
        let signed = cookie(&parts.headers)
            .and_then(|c| shared.operators.session(&c, Instant::now()))
            .ok_or_else(|| {
                Refusal(
                    StatusCode::UNAUTHORIZED,
                    "log in first: POST /api/v1/session".into(),
                )
            })?;
        let changes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if given != signed.csrf {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    "the X-CSRF-Token header is missing or not this session's".into(),
                ));
            }
        }
        Ok(Operator(signed))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    name: String,
    password: String,
}

/// `POST /api/v1/session {"name","password"}`: sets the session cookie and answers
/// `{"name","role","csrf"}` — send `csrf` as `X-CSRF-Token` with every change.
pub async fn login(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<Login>, JsonRejection>,
) -> Response {
    let Json(l) = match req {
        Ok(l) => l,
        Err(e) => return Refusal(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    if l.name.len() > 64 || l.password.len() > 1024 {
        return Refusal(StatusCode::BAD_REQUEST, "name or password too long".into())
            .into_response();
    }
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        s.operators.login(&l.name, &l.password, Instant::now())
    })
    .await;
    match result {
        Ok(Ok((cookie, signed))) => {
            let secure = if shared.config.http.tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let set = format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict{secure}");
            (
                [(header::SET_COOKIE, set)],
                Json(json!({ "name": signed.name, "role": signed.role, "csrf": signed.csrf })),
            )
                .into_response()
        }
        Ok(Err(e)) => Refusal(StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        Err(e) => Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/v1/session`: who is signed in (and the CSRF token again, for a reloaded page).
pub async fn whoami(op: Operator) -> Response {
    Json(json!({ "name": op.0.name, "role": op.0.role, "csrf": op.0.csrf })).into_response()
}

/// `DELETE /api/v1/session`: logs out.
pub async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    _op: Operator,
) -> Response {
    if let Some(c) = cookie(&headers) {
        shared.operators.logout(&c);
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

/// `GET /api/v1/operators/audit`: the operators' audit trail (administrators).
pub async fn audit(State(shared): State<Arc<Shared>>, op: Operator) -> Result<Response, Refusal> {
    op.require(Role::Administrator)?;
    Ok(Json(json!({ "audit": shared.operators.audit(500) })).into_response())
}

/// Route middleware: the request must come from an operator (a session or an API token) with
/// at least `read` to look and at least `write` to change anything.
pub async fn guard(
    State((shared, read, write)): State<(Arc<Shared>, Role, Role)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let op = match Operator::from_request_parts(&mut parts, &shared).await {
        Ok(op) => op,
        Err(r) => return r.into_response(),
    };
    let looks = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let Err(r) = op.require(if looks { read } else { write }) {
        return r.into_response();
    }
    if !looks {
        let what = format!("{} {}", parts.method, parts.uri.path());
        shared.operators.record(&op.0.name, "api", &what);
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}
