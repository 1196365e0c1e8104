//! Where the console's map draws each centre and device: at its place in the master data
//! (`places.geojson`), else a centre in the middle of the first area it serves that has a
//! boundary (else of the street), and a device on a small ring around its centre, so that
//! nothing is left off the map for want of coordinates.

use std::collections::HashMap;

use firmware_config::masterdata::{Dataset, Level};

/// A point, `[longitude, latitude]`.
pub type Point = [f64; 2];

/// About 20 m at the street's latitude: devices without a place stand this far from their
/// centre.
const RING: f64 = 0.0002;

pub struct Layout<'a> {
    places: HashMap<(&'a str, Option<&'a str>), Point>,
    middles: HashMap<&'a str, Point>,
    street: Option<Point>,
}

/// Where something is drawn, and whether the master data placed it (or the map guessed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spot {
    pub at: Point,
    pub placed: bool,
}

impl<'a> Layout<'a> {
    pub fn new(d: &'a Dataset) -> Self {
        let middles: HashMap<&str, Point> = d
            .grids
            .iter()
            .filter_map(|g| {
                let ring = g.boundary.as_ref()?.rings.first()?;
                Some((g.code.as_str(), middle(ring)?))
            })
            .collect();
        let street = d
            .grids
            .iter()
            .find(|g| g.level == Level::Street)
            .and_then(|g| middles.get(g.code.as_str()).copied())
            .or_else(|| middles.values().next().copied());
        Self {
            places: d
                .places
                .iter()
                .map(|p| ((p.gateway.as_str(), p.device.as_deref()), p.at))
                .collect(),
            middles,
            street,
        }
    }

    /// A centre: its place, else the middle of the first of its areas with a boundary, else
    /// the street's. None when the data has no boundary at all.
    pub fn centre(&self, gateway: &str, areas: &[String]) -> Option<Spot> {
        if let Some(at) = self.places.get(&(gateway, None)) {
            return Some(Spot {
                at: *at,
                placed: true,
            });
        }
        areas
            .iter()
            .find_map(|a| self.middles.get(a.as_str()).copied())
            .or(self.street)
            .map(|at| Spot { at, placed: false })
    }

    /// Device `device` (`camera/<id>`, …), the `i`th of `n` of its centre at `centre`.
    pub fn device(&self, gateway: &str, device: &str, centre: Point, i: usize, n: usize) -> Spot {
        if let Some(at) = self.places.get(&(gateway, Some(device))) {
            return Spot {
                at: *at,
                placed: true,
            };
        }
        let angle = std::f64::consts::TAU * i as f64 / n.max(1) as f64;
        Spot {
            at: [
                centre[0] + RING * angle.cos(),
                centre[1] + RING * angle.sin(),
            ],
            placed: false,
        }
    }
}

/// The centroid of a closed ring (by area), or of its corners when it has none.
fn middle(ring: &[Point]) -> Option<Point> {
    let corners = ring.get(..ring.len().saturating_sub(1))?;
    if corners.is_empty() {
        return None;
    }
    // Measured from the first corner: products of whole degrees (120 × 30) would drown a
    // small grid's area in rounding.
    let o = corners[0];
    let (mut a, mut cx, mut cy) = (0.0, 0.0, 0.0);
    for w in ring.windows(2) {
        let (p, q) = (
            [w[0][0] - o[0], w[0][1] - o[1]],
            [w[1][0] - o[0], w[1][1] - o[1]],
        );
        let cross = p[0] * q[1] - q[0] * p[1];
        a += cross;
        cx += (p[0] + q[0]) * cross;
        cy += (p[1] + q[1]) * cross;
    }
    if a.abs() > 1e-18 {
        return Some([o[0] + cx / (3.0 * a), o[1] + cy / (3.0 * a)]);
    }
    let n = corners.len() as f64;
    Some([
        corners.iter().map(|p| p[0]).sum::<f64>() / n,
        corners.iter().map(|p| p[1]).sum::<f64>() / n,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::masterdata::geo::Polygon;
    use firmware_config::masterdata::{GridUnit, Place};

    fn square(
        code: &str,
        level: Level,
        parent: Option<&str>,
        x: f64,
        y: f64,
        side: f64,
    ) -> GridUnit {
        GridUnit {
            boundary: Some(Polygon {
                rings: vec![vec![
                    [x, y],
                    [x + side, y],
                    [x + side, y + side],
                    [x, y + side],
                    [x, y],
                ]],
            }),
            ..crate::cases::scope::tests::grid(code, level, parent)
        }
    }

    fn data() -> Dataset {
        Dataset {
            grids: vec![
                square("S", Level::Street, None, 120.0, 30.0, 0.02),
                square("A1", Level::Area, Some("S"), 120.0, 30.0, 0.01),
                square("A2", Level::Area, Some("S"), 120.01, 30.0, 0.01),
            ],
            places: vec![
                Place {
                    gateway: "gw-1".into(),
                    device: None,
                    name: String::new(),
                    at: [120.001, 30.001],
                },
                Place {
                    gateway: "gw-1".into(),
                    device: Some("camera/door".into()),
                    name: String::new(),
                    at: [120.002, 30.002],
                },
            ],
            ..Default::default()
        }
    }

    fn near(a: Point, b: Point) -> bool {
        (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9
    }

    #[test]
    fn what_the_data_places_stands_there_and_the_rest_is_placed_by_its_grids() {
        let d = data();
        let l = Layout::new(&d);
        let c = l.centre("gw-1", &[]).unwrap();
        assert!(c.placed && near(c.at, [120.001, 30.001]));
        let cam = l.device("gw-1", "camera/door", c.at, 0, 3);
        assert!(cam.placed && near(cam.at, [120.002, 30.002]));
        // Not placed: a centre in the middle of its first area that has a boundary…
        let other = l.centre("gw-2", &["A9".into(), "A2".into()]).unwrap();
        assert!(
            !other.placed && near(other.at, [120.015, 30.005]),
            "{other:?}"
        );
        // …or of the street; its devices on a ring around it, apart from each other.
        let lone = l.centre("gw-3", &[]).unwrap();
        assert!(near(lone.at, [120.01, 30.01]), "{lone:?}");
        let a = l.device("gw-3", "camera/a", lone.at, 0, 2);
        let b = l.device("gw-3", "camera/b", lone.at, 1, 2);
        assert!(!a.placed && !near(a.at, b.at) && !near(a.at, lone.at));
        assert!((a.at[0] - lone.at[0]).hypot(a.at[1] - lone.at[1]) <= RING * 1.0001);
    }

    #[test]
    fn without_any_boundary_only_placed_centres_are_drawn() {
        let d = Dataset {
            grids: Vec::new(),
            ..data()
        };
        let l = Layout::new(&d);
        assert!(l.centre("gw-1", &[]).is_some());
        assert!(l.centre("gw-2", &["A1".into()]).is_none());
        assert_eq!(middle(&[]), None);
        assert_eq!(middle(&[[1.0, 1.0]]), None);
    }
}
