//! Central's state besides the events — alerts, cases, meetings, bundles sent, master data,
//! the operators' audit — behind one small interface: named tables of ordered keys to bytes.
//!
//! Each part opens its own tables from a [`StateStore`] and knows nothing of the engine under
//! it. [`SledState`] keeps them in the sled database beside the events (one file, one lock);
//! [`MemoryState`] keeps them in memory, for tests and as the proof that a part runs on any
//! backend that keeps keys in order and makes writes durable on `flush`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("state store (postgres): {0}")]
    Postgres(String),
}

/// One entry: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Entries in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<Entry, StateError>> + 'a>;

/// One table: ordered keys to values. Writes are durable after [`Table::flush`].
pub trait Table: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StateError>;
    fn remove(&self, key: &[u8]) -> Result<(), StateError>;
    /// The entries whose key starts with `prefix` (all of them for an empty one), in key
    /// order.
    fn scan(&self, prefix: &[u8]) -> Entries<'_>;
    /// The same entries, highest key first.
    fn scan_rev(&self, prefix: &[u8]) -> Entries<'_>;
    /// The entry with the highest key.
    fn last(&self) -> Result<Option<Entry>, StateError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StateError>;
    /// Writes `value` over `key` if it still holds `expected`; false (nothing written) when
    /// it holds something else by now. Atomic where several replicas share the table, so two
    /// writers of one record never lose each other's change.
    fn replace_if(&self, key: &[u8], expected: &[u8], value: Vec<u8>) -> Result<bool, StateError>;
    /// Writes `value` unless `key` holds one already; returns what `key` holds after. Atomic
    /// where several replicas share the table (the first writer wins).
    fn insert_if_absent(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StateError> {
        if let Some(held) = self.get(key)? {
            return Ok(held);
        }
        self.insert(key, value.clone())?;
        Ok(value)
    }
}

/// Where central's state tables live.
pub trait StateStore: Send + Sync {
    /// The table `name`, created empty the first time.
    fn table(&self, name: &str) -> Result<Arc<dyn Table>, StateError>;
    /// Draws ids from the sequence `name`, shared by every replica on this store; none on a
    /// store of one machine (its parts count for themselves).
    fn ids(&self, _name: &str) -> Option<crate::alerts::engine::IdSource> {
        None
    }
}

/// Tables as trees of a sled database.
pub struct SledState {
    db: sled::Db,
}

impl SledState {
    pub fn new(db: sled::Db) -> Self {
        Self { db }
    }
}

impl StateStore for SledState {
    fn table(&self, name: &str) -> Result<Arc<dyn Table>, StateError> {
        Ok(Arc::new(SledTable(self.db.open_tree(name)?)))
    }
}

struct SledTable(sled::Tree);

fn entry((k, v): (sled::IVec, sled::IVec)) -> Entry {
    (k.to_vec(), v.to_vec())
}

impl Table for SledTable {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StateError> {
        self.0.insert(key, value)?;
        Ok(())
    }

    fn replace_if(&self, key: &[u8], expected: &[u8], value: Vec<u8>) -> Result<bool, StateError> {
        Ok(self
            .0
            .compare_and_swap(key, Some(expected), Some(value))?
            .is_ok())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StateError> {
        self.0.remove(key)?;
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(
            self.0
                .scan_prefix(prefix)
                .map(|r| r.map(entry).map_err(StateError::from)),
        )
    }

    fn scan_rev(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(
            self.0
                .scan_prefix(prefix)
                .rev()
                .map(|r| r.map(entry).map_err(StateError::from)),
        )
    }

    fn last(&self) -> Result<Option<Entry>, StateError> {
        Ok(self.0.last()?.map(entry))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn flush(&self) -> Result<(), StateError> {
        self.0.flush()?;
        Ok(())
    }
}

/// Tables in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryState {
    tables: Mutex<BTreeMap<String, Arc<MemoryTable>>>,
}

impl StateStore for MemoryState {
    fn table(&self, name: &str) -> Result<Arc<dyn Table>, StateError> {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.entry(name.to_owned()).or_default().clone())
    }
}

#[derive(Default)]
struct MemoryTable(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl MemoryTable {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy: the lock is not held while the caller walks the entries.
    fn prefixed(&self, prefix: &[u8]) -> Vec<Entry> {
        self.map()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Table for MemoryTable {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map().get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StateError> {
        self.map().insert(key.to_vec(), value);
        Ok(())
    }

    fn replace_if(&self, key: &[u8], expected: &[u8], value: Vec<u8>) -> Result<bool, StateError> {
        let mut map = self.map();
        match map.get_mut(key) {
            Some(held) if held.as_slice() == expected => {
                *held = value;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remove(&self, key: &[u8]) -> Result<(), StateError> {
        self.map().remove(key);
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(self.prefixed(prefix).into_iter().map(Ok))
    }

    fn scan_rev(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(self.prefixed(prefix).into_iter().rev().map(Ok))
    }

    fn last(&self) -> Result<Option<Entry>, StateError> {
        Ok(self
            .map()
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    fn flush(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checks on both backends: what a part may rely on.
    fn behaves(store: &dyn StateStore) {
        let t = store.table("cases").unwrap();
        assert!(t.is_empty());
        t.insert(b"b/2", b"two".to_vec()).unwrap();
        t.insert(b"a/1", b"one".to_vec()).unwrap();
        t.insert(b"b/1", b"one-b".to_vec()).unwrap();
        t.flush().unwrap();
        assert_eq!(t.get(b"a/1").unwrap().as_deref(), Some(&b"one"[..]));
        // Compare-and-set: only over what is still there.
        assert!(!t.replace_if(b"a/1", b"other", b"x".to_vec()).unwrap());
        assert!(
            !t.replace_if(b"zz", b"one", b"x".to_vec()).unwrap(),
            "absent"
        );
        assert!(t.replace_if(b"a/1", b"one", b"uno".to_vec()).unwrap());
        assert!(
            !t.replace_if(b"a/1", b"one", b"x".to_vec()).unwrap(),
            "changed"
        );
        t.insert(b"a/1", b"one".to_vec()).unwrap();
        let keys =
            |prefix: &[u8]| -> Vec<Vec<u8>> { t.scan(prefix).map(|e| e.unwrap().0).collect() };
        assert_eq!(keys(b"b/"), vec![b"b/1".to_vec(), b"b/2".to_vec()]);
        let back: Vec<Vec<u8>> = t.scan_rev(b"").map(|e| e.unwrap().0).collect();
        assert_eq!(back[0], b"b/2".to_vec());
        assert_eq!(keys(b"").len(), 3);
        assert_eq!(t.last().unwrap().unwrap().0, b"b/2".to_vec());
        t.remove(b"b/2").unwrap();
        assert_eq!(t.len(), 2);
        // Tables are apart, and the same name is the same table.
        assert!(store.table("meetings").unwrap().is_empty());
        assert_eq!(store.table("cases").unwrap().len(), 2);
    }

    #[test]
    fn sled_and_memory_tables_keep_keys_in_order_and_apart() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        behaves(&SledState::new(db));
        behaves(&MemoryState::default());
    }
}
