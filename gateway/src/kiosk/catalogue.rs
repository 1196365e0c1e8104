//! What kiosks ask, answered from the master data replica in memory: service items by keyword
//! (Chinese text by character n-grams, item codes exactly or by prefix), by code, department or
//! life event; the grid containing a point; grids by name; a grid's staff and party
//! organisation; the organisation tree.
//!
//! The index is built once per replica version and swapped in whole, so a query never sees
//! half of an update.

use std::collections::HashMap;
use std::sync::Arc;

use firmware_config::masterdata::address::{self, Covered};
use firmware_config::masterdata::{Dataset, GridUnit, Level, PartyOrg, ServiceItem};
use serde::Serialize;

/// Field weights: a hit in the name counts most.
const NAME: f32 = 10.0;
const KEYWORDS: f32 = 6.0;
const LIFE_EVENTS: f32 = 4.0;
const DEPARTMENT: f32 = 2.0;
const MATERIALS: f32 = 1.0;

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xf900..=0xfaff)
}

/// The terms of a text: every CJK character and pair of neighbouring CJK characters, and
/// every run of ASCII letters and digits (lower-cased).
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev: Option<char> = None;
    let mut word = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            out.push(c.to_string());
            if let Some(p) = prev {
                out.push(format!("{p}{c}"));
            }
            prev = Some(c);
        } else {
            prev = None;
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A found item and how well it matched.
#[derive(Debug, Clone, Serialize)]
pub struct Hit<'a> {
    pub score: f32,
    #[serde(flatten)]
    pub item: &'a ServiceItem,
}

pub struct Catalogue {
    pub version: u64,
    data: Dataset,
    /// term → (item index, weight), summed per item at build time.
    index: HashMap<String, Vec<(u32, f32)>>,
    /// Each grid's addresses, read (aligned with `data.grids`).
    addresses: Vec<Vec<Covered>>,
}

/// A grid found by name or address, and what matched.
#[derive(Debug, Clone, Serialize)]
pub struct GridFound<'a> {
    pub score: u32,
    /// The address entry or name that matched.
    pub matched: String,
    #[serde(flatten)]
    pub grid: &'a GridUnit,
}

impl Catalogue {
    pub fn build(version: u64, data: Dataset) -> Arc<Self> {
        let mut acc: HashMap<String, HashMap<u32, f32>> = HashMap::new();
        for (i, item) in data.items.iter().enumerate() {
            let mut add = |text: &str, w: f32| {
                for t in terms(text) {
                    // A single character says less than a pair.
                    let w = if t.chars().count() == 1 && t.chars().all(is_cjk) {
                        w * 0.2
                    } else {
                        w
                    };
                    *acc.entry(t).or_default().entry(i as u32).or_default() += w;
                }
            };
            add(&item.name, NAME);
            item.keywords.iter().for_each(|k| add(k, KEYWORDS));
            item.life_events.iter().for_each(|k| add(k, LIFE_EVENTS));
            add(&item.department, DEPARTMENT);
            item.materials.iter().for_each(|m| add(m, MATERIALS));
        }
        let index = acc
            .into_iter()
            .map(|(t, m)| (t, m.into_iter().collect()))
            .collect();
        // Validated at central; an entry that does not read is simply not searchable.
        let addresses = data
            .grids
            .iter()
            .map(|g| {
                g.addresses
                    .iter()
                    .filter_map(|a| address::parse(a).ok())
                    .collect()
            })
            .collect();
        Arc::new(Self {
            version,
            data,
            index,
            addresses,
        })
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Items for a query, best first: an item code exactly (or as a prefix), then text.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit<'_>> {
        let q = query.trim();
        if q.is_empty() {
            return Vec::new();
        }
        let upper = q.to_ascii_uppercase();
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (i, item) in self.data.items.iter().enumerate() {
            if item.code == upper {
                *scores.entry(i as u32).or_default() += 1000.0;
            } else if upper.len() >= 2 && item.code.starts_with(&upper) {
                *scores.entry(i as u32).or_default() += 500.0;
            }
            if item.name.contains(q) {
                *scores.entry(i as u32).or_default() += 50.0;
            }
        }
        let qterms = terms(q);
        // A query of several characters must match at least one pair of them (or a word):
        // single characters alone (保 in 低保 and 医保) are too common to count.
        let single = |t: &String| t.chars().count() == 1 && t.chars().all(is_cjk);
        let needs_pair = qterms.iter().any(|t| !single(t));
        let mut paired: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for t in &qterms {
            if let Some(postings) = self.index.get(t) {
                for (i, w) in postings {
                    *scores.entry(*i).or_default() += w;
                    if !single(t) {
                        paired.insert(*i);
                    }
                }
            }
        }
        let mut hits: Vec<(u32, f32)> = scores
            .into_iter()
            .filter(|(i, s)| *s >= 1.0 && (!needs_pair || *s >= 50.0 || paired.contains(i)))
            .collect();
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1).then_with(|| {
                self.data.items[a.0 as usize]
                    .code
                    .cmp(&self.data.items[b.0 as usize].code)
            })
        });
        hits.into_iter()
            .take(limit)
            .map(|(i, score)| Hit {
                score: (score * 10.0).round() / 10.0,
                item: &self.data.items[i as usize],
            })
            .collect()
    }

    pub fn item(&self, code: &str) -> Option<&ServiceItem> {
        self.data.items.iter().find(|i| i.code == code)
    }

    pub fn items_where(
        &self,
        department: Option<&str>,
        life_event: Option<&str>,
    ) -> Vec<&ServiceItem> {
        self.data
            .items
            .iter()
            .filter(|i| department.is_none_or(|d| i.department == d))
            .filter(|i| life_event.is_none_or(|e| i.life_events.iter().any(|x| x == e)))
            .collect()
    }

    /// The base grid containing (longitude, latitude).
    pub fn grid_at(&self, p: [f64; 2]) -> Option<&GridUnit> {
        self.data
            .grids
            .iter()
            .filter(|g| g.level == Level::Base)
            .find(|g| {
                g.boundary.as_ref().is_some_and(|b| {
                    let bb = b.bbox();
                    p[0] >= bb[0]
                        && p[0] <= bb[2]
                        && p[1] >= bb[1]
                        && p[1] <= bb[3]
                        && b.contains(p)
                })
            })
    }

    /// Grids whose name (which carries the roads and estates) contains every term of `q`.
    /// Grids by address text (`红星路12号3单元`: the grid whose range holds number 12 on that
    /// side of 红星路; `纺织新村5幢`: the grid of that estate), by name words, or by code; best
    /// first.
    pub fn grids_found(&self, q: &str) -> Vec<GridFound<'_>> {
        let wanted = address::read_query(q);
        let words: Vec<&str> = q.split_whitespace().collect();
        let mut found: Vec<GridFound<'_>> = Vec::new();
        for (g, covered) in self.data.grids.iter().zip(&self.addresses) {
            let by_address = covered
                .iter()
                .filter_map(|c| c.covers(&wanted).map(|s| (s, c)))
                .max_by_key(|(s, _)| *s)
                .map(|(s, c)| (if s == 2 { 100 } else { 80 }, c.to_string()));
            let by_name = if g.code == q.trim() {
                Some((100, g.code.clone()))
            } else if !words.is_empty() && words.iter().all(|w| g.name.contains(w)) {
                Some((50, g.name.clone()))
            } else {
                None
            };
            if let Some((score, matched)) = by_address
                .into_iter()
                .chain(by_name)
                .max_by_key(|(s, _)| *s)
            {
                found.push(GridFound {
                    score,
                    matched,
                    grid: g,
                });
            }
        }
        found.sort_by(|a, b| b.score.cmp(&a.score).then(a.grid.code.cmp(&b.grid.code)));
        found
    }

    pub fn grid(&self, code: &str) -> Option<&GridUnit> {
        self.data.grids.iter().find(|g| g.code == code)
    }

    /// The party organisations covering a grid (the most local first).
    pub fn party_of(&self, grid: &str) -> Vec<&PartyOrg> {
        let mut v: Vec<&PartyOrg> = self
            .data
            .party
            .iter()
            .filter(|p| p.grids.iter().any(|g| g == grid))
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.code.len()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Arc<Catalogue> {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data");
        let d = firmware_config::masterdata::load_dir(&dir)
            .unwrap()
            .read()
            .unwrap();
        Catalogue::build(1, d)
    }

    #[test]
    fn chinese_queries_find_the_expected_items_first() {
        let c = catalogue();
        for (q, want) in [
            ("低保", "MZ110199-0001"),
            ("最低生活保障", "MZ110199-0001"),
            ("身份证换领", "GA110199-0002"),
            ("养老保险", "RS110199-0003"),
            ("生育登记", "WJ110199-0001"),
            ("残疾人证", "CL110199-0001"),
            ("邻里纠纷", "SF110199-0002"),
            ("公租房", "ZJ110199-0001"),
            ("营业执照", "SJ110199-0001"),
            ("mz110199-0003", "MZ110199-0003"),
            ("GA110199", "GA110199-0001"),
        ] {
            let hits = c.search(q, 5);
            assert!(!hits.is_empty(), "{q}: nothing");
            assert_eq!(
                hits[0].item.code,
                want,
                "{q}: {:?}",
                hits.iter()
                    .map(|h| (&h.item.name, h.score))
                    .collect::<Vec<_>>()
            );
        }
        // Only items about 低保 itself (by name, keyword or a required material), not every
        // item with 保 in it.
        let low = c.search("低保", 10);
        let about = |i: &ServiceItem| {
            i.name.contains("最低生活保障")
                || i.keywords
                    .iter()
                    .chain(&i.materials)
                    .any(|k| k.contains("低保"))
        };
        assert!(
            low.iter().all(|h| about(h.item)),
            "{:?}",
            low.iter().map(|h| &h.item.name).collect::<Vec<_>>()
        );
        assert!(c.search("", 5).is_empty());
        assert!(c.search("zzqqxx", 5).is_empty());
    }

    #[test]
    fn grids_by_point_and_name_with_staff_and_party() {
        let c = catalogue();
        // The middle of 光明社区's first grid.
        let g = c.grid_at([120.154 + 0.002, 30.27 + 0.0015]).unwrap();
        assert_eq!(g.code, "11019900100002001");
        assert_eq!(g.staff.len(), 3);
        assert!(c.grid_at([121.0, 31.0]).is_none());
        let named = c.grids_found("和平家园");
        assert_eq!(named.len(), 1);
        let party = c.party_of(&named[0].grid.code);
        assert_eq!(party[0].kind, "党支部");
        assert_eq!(c.items_where(Some("街道民政办"), None).len(), 5);
        assert_eq!(c.items_where(None, Some("生育")).len(), 2);
    }

    #[test]
    fn grids_by_address_text() {
        let c = catalogue();
        let code = |q: &str| {
            c.grids_found(q)
                .first()
                .map(|f| (f.grid.code.clone(), f.matched.clone()))
        };
        // Odd numbers of 红星路 are grid 1 up to 99, then grid 4; even ones grid 1, then grid 2.
        assert_eq!(
            code("红星路13号2单元"),
            Some(("11019900100001001".into(), "红星路1-99号单".into()))
        );
        assert_eq!(code("红星路64号").unwrap().0, "11019900100001002");
        assert_eq!(code("红星路101号").unwrap().0, "11019900100001004");
        assert_eq!(code("纺织新村5幢201").unwrap().0, "11019900100001003");
        assert_eq!(code("和平街160号").unwrap().0, "11019900100003002");
        assert_eq!(code("和平街151号"), None);
        assert_eq!(code("11019900100002003").unwrap().1, "11019900100002003");
        // A road's name alone finds the grids named after it.
        assert!(c.grids_found("光明").len() >= 3);
    }
}
