//! The pages' shared scripts, bundled in both binaries so that a kiosk draws its grid with the
//! WAN down: Leaflet 1.9.4 (BSD-2-Clause, `web/leaflet/LICENSE`, from the npm package
//! `leaflet-1.9.4.tgz`, sha256 84c65a25…0b77, its source map reference removed) and the grid
//! drawing both the console's map and the kiosk's "my grid" use.

/// `(content type, body)` of an asset by its name under `/assets/`.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Some(match name {
        "leaflet.js" => (JS, include_str!("../web/leaflet/leaflet.js")),
        "leaflet.css" => (CSS, include_str!("../web/leaflet/leaflet.css")),
        "gridmap.js" => (JS, include_str!("../web/gridmap.js")),
        "gridmap.css" => (CSS, include_str!("../web/gridmap.css")),
        _ => return None,
    })
}

/// `GET /assets/{name}`: a bundled asset (open: nothing in them is secret), cached for an hour.
#[cfg(feature = "runtime")]
pub async fn serve(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    match asset(&name) {
        Some((kind, body)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        None => crate::runtime::api_error::ApiError::new(StatusCode::NOT_FOUND, "no such asset")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_assets_are_there_and_nothing_else_is_served() {
        let (kind, leaflet) = super::asset("leaflet.js").unwrap();
        assert!(kind.starts_with("text/javascript"));
        assert!(leaflet.contains("t.version=\"1.9.4\""));
        assert!(!leaflet.contains("sourceMappingURL"));
        assert!(super::asset("gridmap.js")
            .unwrap()
            .1
            .contains("class GridMap"));
        assert!(super::asset("../Cargo.toml").is_none());
        assert!(super::asset("LICENSE").is_none());
    }
}
