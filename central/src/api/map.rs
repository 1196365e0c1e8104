//! The console's map of the street: the grids, the centres and their devices where they
//! stand, open alerts at what raised them, and open cases by grid. Any operator; a scoped
//! operator's map holds the grids of their scope, the centres serving them (or the whole
//! street), those centres' alerts, and the cases they reach.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::masterdata::Dataset;
use serde_json::{json, Value};

use super::session::Operator;
use super::ApiError;
use crate::cases::scope::{GridTree, Places};
use crate::map::Layout;
use crate::operators::Signed;
use crate::registry::health::CentreView;
use crate::Shared;

/// `GET /api/v1/map`: `{"version","tiles","attribution","grids","centres","alerts","cases"}`.
pub async fn map(State(shared): State<Arc<Shared>>, Operator(who): Operator) -> Response {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || drawn(&s, &who)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The centres that serve an operator scoped to `scope`: those serving a grid they reach, one
/// above their scope, or the whole street (every centre for the street's accounts; none for a
/// scope the data does not know).
pub(crate) fn serving<'a>(
    d: &Dataset,
    scope: Option<&str>,
    centres: &'a [CentreView],
) -> Vec<&'a CentreView> {
    let Some(s) = scope else {
        return centres.iter().collect();
    };
    let tree = GridTree::new(d);
    if tree.name(s).is_none() {
        return Vec::new();
    }
    let mut codes: HashSet<&str> = d
        .grids
        .iter()
        .filter(|g| tree.ancestry(&g.code).any(|a| a == s))
        .map(|g| g.code.as_str())
        .collect();
    codes.extend(tree.ancestry(s));
    centres
        .iter()
        .filter(|c| c.areas.is_empty() || c.areas.iter().any(|a| codes.contains(a.as_str())))
        .collect()
}

fn drawn(shared: &Shared, who: &Signed) -> Value {
    let current = shared.masterdata.current();
    let empty = Dataset::default();
    let d = current.as_ref().map_or(&empty, |v| &v.dataset);
    let tree = GridTree::new(d);
    let scope = who.scope.as_deref();
    let grids = super::grids::in_reach(d, scope);
    let layout = Layout::new(d);
    let health = super::health::view(shared);
    let mut gateways = HashSet::new();
    let mut centres = Vec::new();
    for c in serving(d, scope, &health.centres) {
        gateways.insert(c.gateway.clone());
        let spot = layout.centre(&c.gateway, &c.areas);
        let n = c.cameras.len() + c.terminals.len();
        let devices: Vec<Value> = c
            .cameras
            .iter()
            .map(|d| ("camera", d))
            .chain(c.terminals.iter().map(|d| ("terminal", d)))
            .enumerate()
            .map(|(i, (kind, dev))| {
                let path = format!("{kind}/{}", dev.id);
                let at = spot.map(|s| layout.device(&c.gateway, &path, s.at, i, n));
                json!({
                    "key": format!("{}/{path}", c.gateway),
                    "kind": kind,
                    "id": dev.id,
                    "name": dev.name,
                    "state": dev.state,
                    "at": at.map(|s| s.at),
                    "placed": at.is_some_and(|s| s.placed),
                })
            })
            .collect();
        centres.push(json!({
            "gateway": c.gateway,
            "site": c.site,
            "presence": c.presence,
            "areas": c.areas,
            "at": spot.map(|s| s.at),
            "placed": spot.is_some_and(|s| s.placed),
            "devices": devices,
        }));
    }
    let reach = super::alerts::Reach::of(shared, who);
    let alerts: Vec<Value> = shared
        .alerts
        .engine()
        .list(false)
        .into_iter()
        .filter(|a| gateways.contains(&a.gateway) && reach.reaches(a))
        .map(|a| {
            json!({ "id": a.id, "key": a.key, "originator": a.originator, "gateway": a.gateway,
                    "severity": a.severity, "title": a.title, "acknowledged": a.acknowledged })
        })
        .collect();
    // Open cases by their grid station, within reach (from the case index).
    let cases = shared
        .cases
        .open_counts(|e| tree.reaches(scope, e.station.as_deref()));
    let cases: Vec<Value> = cases
        .into_iter()
        .map(|(grid, (open, overdue))| json!({ "grid": grid, "open": open, "overdue": overdue }))
        .collect();
    json!({
        "version": current.as_ref().map(|v| v.info.version),
        "tiles": shared.config.map.tiles,
        "attribution": shared.config.map.attribution,
        "grids": grids,
        "centres": centres,
        "alerts": alerts,
        "cases": cases,
    })
}
