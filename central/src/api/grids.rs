//! The street's grids as an operator's console draws them: those within the operator's scope,
//! with their level, parent, households and boundary (the map's vectors, no tile server).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::session::Operator;
use crate::cases::scope::GridTree;
use crate::Shared;

/// `GET /api/v1/grids`: `{"version","grids":[{"code","name","level","parent","households",
/// "boundary"}]}` — the grids the operator's scope reaches (all for the street's accounts;
/// none for a scope the master data does not know), parents before children.
pub async fn list(State(shared): State<Arc<Shared>>, Operator(who): Operator) -> Json<Value> {
    let Some(v) = shared.masterdata.current() else {
        return Json(json!({ "version": null, "grids": [] }));
    };
    let grids = in_reach(&v.dataset, who.scope.as_deref());
    Json(json!({ "version": v.info.version, "grids": grids }))
}

/// The grids `scope` reaches (every one for none), parents first, as the console draws them.
pub(crate) fn in_reach(
    d: &firmware_config::masterdata::Dataset,
    scope: Option<&str>,
) -> Vec<Value> {
    let tree = GridTree::new(d);
    let mut grids: Vec<_> = d
        .grids
        .iter()
        .filter(|g| scope.is_none_or(|s| tree.ancestry(&g.code).any(|a| a == s)))
        .collect();
    grids.sort_by_key(|g| (g.level, g.code.as_str()));
    grids
        .into_iter()
        .map(|g| {
            json!({
                "code": g.code,
                "name": g.name,
                "level": g.level,
                "parent": g.parent,
                "households": g.households,
                "boundary": g.boundary.as_ref().map(|p| &p.rings),
            })
        })
        .collect()
}
