//! Grid boundaries: polygons in WGS 84 longitude/latitude (as GeoJSON has them), their checks,
//! and which polygon contains a point.

use super::Malformed;

use serde::{Deserialize, Serialize};

/// An outer ring and any holes; each ring closed (first point = last point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Polygon {
    pub rings: Vec<Vec<[f64; 2]>>,
}

/// Twice the signed area of a ring (shoelace), in square degrees.
fn area2(ring: &[[f64; 2]]) -> f64 {
    ring.windows(2)
        .map(|w| w[0][0] * w[1][1] - w[1][0] * w[0][1])
        .sum()
}

fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Whether segments ab and cd cross or touch (other than at a shared end of neighbours).
fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (d1, d2) = (orient(c, d, a), orient(c, d, b));
    let (d3, d4) = (orient(a, b, c), orient(a, b, d));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    let on = |p: [f64; 2], q: [f64; 2], r: [f64; 2], o: f64| {
        o == 0.0
            && r[0] >= p[0].min(q[0])
            && r[0] <= p[0].max(q[0])
            && r[1] >= p[1].min(q[1])
            && r[1] <= p[1].max(q[1])
    };
    on(c, d, a, d1) || on(c, d, b, d2) || on(a, b, c, d3) || on(a, b, d, d4)
}

impl Polygon {
    /// What is wrong with it, if anything: rings closed, at least 4 positions, coordinates in
    /// range, an area, and edges that do not cross.
    pub fn check(&self) -> Result<(), Malformed> {
        if self.rings.is_empty() {
            return Err(Malformed("a polygon needs an outer ring".to_owned()));
        }
        for (i, ring) in self.rings.iter().enumerate() {
            let which = if i == 0 {
                "outer ring".to_owned()
            } else {
                format!("hole {i}")
            };
            if ring.len() < 4 {
                return Err(Malformed(format!(
                    "{which}: {} position(s); a ring needs at least 4",
                    ring.len()
                )));
            }
            if ring.first() != ring.last() {
                return Err(Malformed(format!(
                    "{which}: not closed (the last position must repeat the first)"
                )));
            }
            for p in ring {
                if !(-180.0..=180.0).contains(&p[0]) || !(-90.0..=90.0).contains(&p[1]) {
                    return Err(Malformed(format!(
                        "{which}: [{}, {}] is not a longitude/latitude",
                        p[0], p[1]
                    )));
                }
            }
            if area2(ring).abs() < 1e-14 {
                return Err(Malformed(format!("{which}: has no area")));
            }
            let n = ring.len() - 1;
            for a in 0..n {
                for b in a + 1..n {
                    // Neighbouring edges share a point by construction.
                    if b == a + 1 || (a == 0 && b == n - 1) {
                        continue;
                    }
                    if segments_meet(ring[a], ring[a + 1], ring[b], ring[b + 1]) {
                        return Err(Malformed(format!(
                            "{which}: edges {} and {} cross; the boundary must not cross itself",
                            a + 1,
                            b + 1
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `p` (longitude, latitude) lies inside: in the outer ring and in no hole.
    pub fn contains(&self, p: [f64; 2]) -> bool {
        let inside = |ring: &[[f64; 2]]| {
            let mut c = false;
            for w in ring.windows(2) {
                let (a, b) = (w[0], w[1]);
                if (a[1] > p[1]) != (b[1] > p[1])
                    && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
                {
                    c = !c;
                }
            }
            c
        };
        match self.rings.split_first() {
            Some((outer, holes)) => inside(outer) && !holes.iter().any(|h| inside(h)),
            None => false,
        }
    }

    /// The bounding box: (min lon, min lat, max lon, max lat).
    pub fn bbox(&self) -> [f64; 4] {
        let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for p in self.rings.first().into_iter().flatten() {
            b[0] = b[0].min(p[0]);
            b[1] = b[1].min(p[1]);
            b[2] = b[2].max(p[0]);
            b[3] = b[3].max(p[1]);
        }
        b
    }

    /// A point inside the polygon (for examples and map pins): the middle of its box when that
    /// is inside, else the centre of the first fan triangle that is.
    pub fn inner_point(&self) -> Option<[f64; 2]> {
        let b = self.bbox();
        let centre = [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
        if self.contains(centre) {
            return Some(centre);
        }
        let outer = self.rings.first()?;
        let v0 = *outer.first()?;
        outer.windows(2).skip(1).find_map(|w| {
            let p = [
                (v0[0] + w[0][0] + w[1][0]) / 3.0,
                (v0[1] + w[0][1] + w[1][1]) / 3.0,
            ];
            self.contains(p).then_some(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(points: &[[f64; 2]]) -> Polygon {
        Polygon {
            rings: vec![points.to_vec()],
        }
    }

    #[test]
    fn checks_and_containment() {
        let square = poly(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]);
        assert!(square.check().is_ok());
        assert!(square.contains([0.5, 0.5]));
        assert!(!square.contains([1.5, 0.5]));
        let bowtie = poly(&[[0.0, 0.0], [2.0, 2.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]);
        assert!(bowtie.check().unwrap_err().0.contains("cross"));
        let open = poly(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        assert!(open.check().unwrap_err().0.contains("not closed"));
        let flat = poly(&[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]);
        assert!(flat.check().is_err());
        let far = poly(&[[0.0, 0.0], [200.0, 0.0], [1.0, 1.0], [0.0, 0.0]]);
        assert!(far.check().unwrap_err().0.contains("longitude"));
        let mut holed = square.clone();
        holed.rings.push(vec![
            [0.4, 0.4],
            [0.6, 0.4],
            [0.6, 0.6],
            [0.4, 0.6],
            [0.4, 0.4],
        ]);
        assert!(holed.check().is_ok());
        assert!(!holed.contains([0.5, 0.5]));
        assert!(holed.contains([0.2, 0.2]));
    }

    #[test]
    fn an_inner_point_is_inside_even_for_a_hollow_shape() {
        let square = poly(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]);
        assert_eq!(square.inner_point(), Some([0.5, 0.5]));
        // An L: the middle of its box is outside it.
        let l = poly(&[
            [0.0, 0.0],
            [2.0, 0.0],
            [2.0, 0.5],
            [0.5, 0.5],
            [0.5, 2.0],
            [0.0, 2.0],
            [0.0, 0.0],
        ]);
        assert!(!l.contains([1.0, 1.0]));
        assert!(l.contains(l.inner_point().unwrap()));
    }
}
