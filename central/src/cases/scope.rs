//! Which cases an operator reaches: those of the grid their account names and of every grid
//! below it, by the master data's tree (street → area → base grid). An account without a scope
//! is the street's and reaches every case; one naming a grid the data does not know reaches
//! none (it fails closed).

use std::collections::HashMap;

use firmware_config::masterdata::{Dataset, Level};

/// The grid tree as the workflow asks it.
pub trait Places {
    /// Whether an operator scoped to `scope` reaches a case at `station` (none: the street's).
    fn reaches(&self, scope: Option<&str>, station: Option<&str>) -> bool;
    /// Whether `scope` is the whole street.
    fn is_street(&self, scope: Option<&str>) -> bool;
    /// A base grid's name, if `code` is one.
    fn base_grid_name(&self, code: &str) -> Option<String>;
}

/// The grids of one master data version.
#[derive(Default)]
pub struct GridTree {
    grids: HashMap<String, (Level, Option<String>, String)>,
}

/// Deeper than any real tree (three levels): a cycle in bad data ends the walk.
const MAX_DEPTH: usize = 16;

impl GridTree {
    pub fn new(d: &Dataset) -> Self {
        Self {
            grids: d
                .grids
                .iter()
                .map(|g| (g.code.clone(), (g.level, g.parent.clone(), g.name.clone())))
                .collect(),
        }
    }

    /// `code` and the grids above it, nearest first.
    pub fn ancestry<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let mut at = Some(code);
        std::iter::from_fn(move || {
            let here = at?;
            at = self.grids.get(here).and_then(|(_, p, _)| p.as_deref());
            Some(here)
        })
        .take(MAX_DEPTH)
    }

    /// The base grids at or below `code` (none when it is not a grid).
    pub fn stations_under(&self, code: &str) -> std::collections::HashSet<&str> {
        self.grids
            .iter()
            .filter(|(g, (level, ..))| *level == Level::Base && self.ancestry(g).any(|a| a == code))
            .map(|(g, _)| g.as_str())
            .collect()
    }

    pub fn name(&self, code: &str) -> Option<&str> {
        self.grids.get(code).map(|(_, _, n)| n.as_str())
    }
}

impl Places for GridTree {
    fn reaches(&self, scope: Option<&str>, station: Option<&str>) -> bool {
        let Some(scope) = scope else { return true };
        if !self.grids.contains_key(scope) {
            return false;
        }
        match station {
            None => self.is_street(Some(scope)),
            Some(st) => self.is_street(Some(scope)) || self.ancestry(st).any(|g| g == scope),
        }
    }

    fn is_street(&self, scope: Option<&str>) -> bool {
        match scope {
            None => true,
            Some(g) => matches!(self.grids.get(g), Some((Level::Street, ..))),
        }
    }

    fn base_grid_name(&self, code: &str) -> Option<String> {
        match self.grids.get(code) {
            Some((Level::Base, _, name)) => Some(name.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use firmware_config::masterdata::GridUnit;

    /// A grid of the tree, with nothing but its place in it.
    pub(crate) fn grid(code: &str, level: Level, parent: Option<&str>) -> GridUnit {
        GridUnit {
            code: code.into(),
            name: format!("{code} 网格"),
            level,
            parent: parent.map(Into::into),
            households: None,
            boundary: None,
            staff: Vec::new(),
            addresses: Vec::new(),
        }
    }

    fn street() -> GridTree {
        GridTree::new(&Dataset {
            grids: vec![
                grid("S", Level::Street, None),
                grid("A1", Level::Area, Some("S")),
                grid("A2", Level::Area, Some("S")),
                grid("B11", Level::Base, Some("A1")),
                grid("B21", Level::Base, Some("A2")),
                // Bad data: a loop.
                grid("X", Level::Base, Some("Y")),
                grid("Y", Level::Area, Some("X")),
            ],
            ..Default::default()
        })
    }

    #[test]
    fn a_scope_reaches_its_grid_and_those_below_and_nothing_else() {
        let t = street();
        assert!(t.reaches(None, Some("B11")));
        assert!(t.reaches(None, None));
        assert!(
            t.reaches(Some("S"), Some("B21")),
            "the street reaches every grid"
        );
        assert!(t.reaches(Some("S"), None));
        assert!(t.reaches(Some("A1"), Some("B11")));
        assert!(!t.reaches(Some("A1"), Some("B21")), "another community's");
        assert!(t.reaches(Some("B11"), Some("B11")));
        assert!(!t.reaches(Some("B11"), Some("B21")), "another station's");
        assert!(
            !t.reaches(Some("B11"), None),
            "a station never reaches the street's own"
        );
        assert!(
            !t.reaches(Some("nowhere"), Some("B11")),
            "an unknown scope reaches nothing"
        );
        assert!(!t.reaches(Some("A1"), Some("X")), "a loop ends");
        assert!(t.is_street(None) && t.is_street(Some("S")) && !t.is_street(Some("A1")));
        assert_eq!(t.base_grid_name("B11").as_deref(), Some("B11 网格"));
        assert_eq!(t.base_grid_name("A1"), None, "an area is not a station");
    }
}
