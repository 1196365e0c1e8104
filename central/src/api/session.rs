//! Operator sessions on central's API: log in and out, and the extractor every console
//! endpoint uses — a live session cookie, the CSRF token on anything that changes state, and
//! a role at least the one asked for.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::runtime::clock::Instant;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::operators::{Role, Signed, COOKIE};
use crate::Shared;

fn cookie(headers: &HeaderMap) -> Option<String> {
    firmware_config::runtime::cookie(headers, COOKIE)
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
    pub fn require(&self, role: Role) -> Result<&Signed, ApiError> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
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
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
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
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unknown API token (see [[api_tokens]] in central.toml)",
                    )
                });
        }
        let signed = cookie(&parts.headers)
            .and_then(|c| shared.operators.session(&c, Instant::now()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "log in first: POST /api/v1/session",
                )
            })?;
        let changes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !crate::broker::acl::same(given, &signed.csrf) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the X-CSRF-Token header is missing or not this session's",
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

/// The address a request came from (set by the HTTP server; unknown in tests that call the
/// router directly).
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// `POST /api/v1/session {"name","password"}`: sets the session cookie and answers
/// `{"name","role","csrf"}` — send `csrf` as `X-CSRF-Token` with every change. Anyone may try;
/// failures make the next attempt from the address or for the name wait (429 with
/// `Retry-After`, see `logins`), and few passwords are checked at once (503 beyond).
pub async fn login(
    State(shared): State<Arc<Shared>>,
    Peer(peer): Peer,
    req: Result<Json<Login>, JsonRejection>,
) -> Response {
    use crate::logins::Held;
    let Json(l) = match req {
        Ok(l) => l,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    if l.name.len() > 64 || l.password.len() > 1024 {
        return ApiError::new(StatusCode::BAD_REQUEST, "name or password too long").into_response();
    }
    let from = peer.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let held = |h: Held| {
        let (status, secs, why) = match h {
            Held::Throttled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                wait.as_secs_f64().ceil().max(1.0) as u64,
                "too many failed logins; wait before trying again".to_owned(),
            ),
            Held::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                1,
                "too many logins at once; try again in a moment".to_owned(),
            ),
        };
        let mut r = ApiError::new(status, why).into_response();
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
        r
    };
    if let Err(h) = shared.logins.admit(from, &l.name, Instant::now()) {
        return held(h);
    }
    let s = shared.clone();
    let name = l.name.clone();
    let password = l.password.clone();
    let verdict = match shared
        .logins
        .check(from, &l.name, move || s.operators.verify(&name, &password))
        .await
    {
        Ok(v) => v,
        Err(h) => return held(h),
    };
    match verdict {
        Ok(role) => {
            shared.logins.succeeded(from, &l.name);
            let (cookie, signed) = shared.operators.open_session(&l.name, role, Instant::now());
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
        Err(e) => {
            let burst = shared.logins.failed(from, &l.name, Instant::now());
            shared.operators.record_refusals(&l.name, from, &burst);
            tracing::warn!(name = %l.name, %from, failures = burst.count, "console login refused");
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response()
        }
    }
}

/// `GET /api/v1/session`: who is signed in (and the CSRF token again, for a reloaded page).
pub async fn whoami(op: Operator) -> Response {
    Json(json!({ "name": op.0.name, "role": op.0.role, "csrf": op.0.csrf, "scope": op.0.scope }))
        .into_response()
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
pub async fn audit(State(shared): State<Arc<Shared>>, op: Operator) -> Result<Response, ApiError> {
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
