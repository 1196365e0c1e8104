//! What the queue, the map's counts and the reminders ask of every case, kept in memory: a
//! case's place, category, status and times, newest first. A queue page then reads from the
//! table only the cases it shows, whatever the number of cases. Kept up to date by each write
//! of this replica, and by other replicas' notes (a note names a receipt; the case is read
//! again).

use std::collections::{BTreeMap, HashMap};

use time::OffsetDateTime;

use super::{Case, Category};

/// A case as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub receipt: String,
    pub station: Option<String>,
    pub category: Category,
    pub status: String,
    pub open: bool,
    pub created: OffsetDateTime,
    /// Its own deadline (none: its creation plus the fallback).
    pub due: Option<OffsetDateTime>,
    pub remind_at: Option<OffsetDateTime>,
    pub reminded: bool,
    pub gateway: String,
    /// When it stopped being open, if it did (what figures count as finished).
    pub finished: Option<OffsetDateTime>,
}

impl Entry {
    pub fn of(c: &Case) -> Self {
        Self {
            receipt: c.receipt.clone(),
            station: c.station.clone(),
            category: c.category(),
            status: c.status.clone(),
            open: c.is_open(),
            created: c.created,
            due: c.due,
            remind_at: c.remind_at,
            reminded: c.reminded,
            gateway: c.gateway.clone(),
            finished: crate::figures::finished_at(c),
        }
    }

    pub fn is_overdue(&self, fallback: std::time::Duration, now: OffsetDateTime) -> bool {
        self.open && now > self.due.unwrap_or(self.created + fallback)
    }
}

/// Ordered newest first by (creation, receipt), as the queue shows them.
type Key = (std::cmp::Reverse<i128>, std::cmp::Reverse<String>);

#[derive(Default)]
pub struct Index {
    entries: BTreeMap<Key, Entry>,
    keys: HashMap<String, Key>,
    /// Each station's cases (none: ""), so that a station's or an area's queue reads only
    /// its own.
    by_station: HashMap<String, std::collections::BTreeSet<Key>>,
}

impl Index {
    fn key(e: &Entry) -> Key {
        (
            std::cmp::Reverse(e.created.unix_timestamp_nanos()),
            std::cmp::Reverse(e.receipt.clone()),
        )
    }

    /// Puts a case's entry in (or in place of its old one).
    pub fn put(&mut self, e: Entry) {
        self.remove(&e.receipt);
        let k = Self::key(&e);
        self.keys.insert(e.receipt.clone(), k.clone());
        self.by_station
            .entry(e.station.clone().unwrap_or_default())
            .or_default()
            .insert(k.clone());
        self.entries.insert(k, e);
    }

    pub fn remove(&mut self, receipt: &str) {
        let Some(old) = self.keys.remove(receipt) else {
            return;
        };
        if let Some(e) = self.entries.remove(&old) {
            let st = e.station.unwrap_or_default();
            if let Some(set) = self.by_station.get_mut(&st) {
                set.remove(&old);
                if set.is_empty() {
                    self.by_station.remove(&st);
                }
            }
        }
    }

    /// The cases of `stations`, newest first.
    pub fn of_stations<'a>(
        &'a self,
        stations: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&'a Entry> {
        let mut keys: Vec<&Key> = stations
            .into_iter()
            .filter_map(|s| self.by_station.get(s))
            .flatten()
            .collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.entries.get(k))
            .collect()
    }

    /// The receipts of the stations `keep` takes ("" for cases with none).
    pub fn receipts_of_stations(
        &self,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> std::collections::HashSet<String> {
        self.by_station
            .iter()
            .filter(|(st, _)| keep((!st.is_empty()).then_some(st.as_str())))
            .flat_map(|(_, keys)| keys.iter())
            .filter_map(|k| self.entries.get(k))
            .map(|e| e.receipt.clone())
            .collect()
    }

    pub fn contains(&self, receipt: &str) -> bool {
        self.keys.contains_key(receipt)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Open cases and how many of them are overdue, by station, of those `keep` takes.
    pub fn counts_by_station(
        &self,
        fallback: std::time::Duration,
        now: OffsetDateTime,
        keep: impl Fn(&Entry) -> bool,
    ) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.open && keep(e)) {
            if let Some(st) = &e.station {
                let c = out.entry(st.clone()).or_default();
                c.0 += 1;
                c.1 += usize::from(e.is_overdue(fallback, now));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(receipt: &str, secs: i64) -> Entry {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap();
        Entry {
            receipt: receipt.into(),
            station: Some("B1".into()),
            category: Category::Report,
            status: "registered".into(),
            open: true,
            created: at,
            due: Some(at + time::Duration::days(3)),
            remind_at: None,
            reminded: false,
            gateway: "gw-1".into(),
            finished: None,
        }
    }

    #[test]
    fn entries_come_newest_first_by_station_and_a_change_replaces_the_old() {
        let mut i = Index::default();
        for (r, s) in [("a", 1), ("b", 3), ("c", 2), ("d", 3)] {
            i.put(entry(r, s));
        }
        let order: Vec<_> = i.iter().map(|e| e.receipt.as_str()).collect();
        assert_eq!(
            order,
            ["d", "b", "c", "a"],
            "newest first, receipt breaking ties"
        );
        assert!(i.contains("b") && !i.contains("gone"));
        i.put(Entry {
            status: "closed".into(),
            open: false,
            ..entry("c", 2)
        });
        assert_eq!(i.len(), 4);
        assert_eq!(
            i.iter().find(|e| e.receipt == "c").unwrap().status,
            "closed"
        );
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000 + 4 * 86_400).unwrap();
        let fallback = std::time::Duration::from_secs(3600);
        assert_eq!(i.counts_by_station(fallback, now, |_| true)["B1"], (3, 3));
        i.put(Entry {
            station: Some("B2".into()),
            ..entry("e", 5)
        });
        let b1: Vec<_> = i
            .of_stations(["B1"])
            .iter()
            .map(|e| e.receipt.as_str())
            .collect();
        assert_eq!(b1, ["d", "b", "c", "a"]);
        let both: Vec<_> = i
            .of_stations(["B2", "B1"])
            .iter()
            .map(|e| e.receipt.as_str())
            .collect();
        assert_eq!(both, ["e", "d", "b", "c", "a"], "merged newest first");
        i.remove("a");
        assert_eq!(i.len(), 4);
        i.put(Entry {
            station: Some("B2".into()),
            ..entry("d", 3)
        });
        assert_eq!(i.of_stations(["B1"]).len(), 2, "moved to another station");
    }
}
