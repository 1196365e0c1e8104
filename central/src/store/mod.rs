//! `EventStore`: central's durable store of every gateway's events, deduplicated on
//! `(gateway, seq)`. A batch is acknowledged to its gateway only after it is flushed here.

use std::path::Path;

use firmware_config::ids::GatewayId;
use firmware_config::wire::Event;

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub new: u64,
    pub duplicates: u64,
    /// The batch's sequence numbers as inclusive ranges, for the ack.
    pub ranges: Vec<(u64, u64)>,
    /// Highest sequence number stored for the gateway so far.
    pub high: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored event is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

pub struct EventStore {
    db: sled::Db,
    events: sled::Tree,
    high: sled::Tree,
}

fn key(gateway: &GatewayId, seq: u64) -> Vec<u8> {
    // Ids never contain '/', so the prefix is unambiguous.
    let mut k = Vec::with_capacity(gateway.as_str().len() + 9);
    k.extend_from_slice(gateway.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Sorted, merged inclusive ranges of `seqs`.
pub fn ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut v: Vec<u64> = seqs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

impl EventStore {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("events"))
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()?;
        let events = db.open_tree("events")?;
        let high = db.open_tree("high")?;
        Ok(Self { db, events, high })
    }

    /// Stores the events that are new, flushes, and says what to acknowledge.
    pub fn store_batch(&self, gateway: &GatewayId, events: &[Event]) -> Result<Stored, StoreError> {
        let mut batch = sled::Batch::default();
        let (mut new, mut duplicates) = (0, 0);
        let mut max = 0;
        let mut seen = std::collections::HashSet::new();
        for e in events {
            max = max.max(e.seq);
            let k = key(gateway, e.seq);
            if !seen.insert(e.seq) || self.events.contains_key(&k)? {
                duplicates += 1;
                continue;
            }
            batch.insert(k, serde_json::to_vec(e)?);
            new += 1;
        }
        self.events.apply_batch(batch)?;
        let prev = self.high(gateway)?;
        let high = prev.max(max);
        if high > prev {
            self.high
                .insert(gateway.as_str().as_bytes(), &high.to_be_bytes())?;
        }
        self.db.flush()?;
        Ok(Stored {
            new,
            duplicates,
            ranges: ranges(events.iter().map(|e| e.seq)),
            high,
        })
    }

    pub fn high(&self, gateway: &GatewayId) -> Result<u64, StoreError> {
        Ok(self
            .high
            .get(gateway.as_str().as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Up to `limit` stored events of `gateway` after `after`, in sequence order.
    pub fn events_after(
        &self,
        gateway: &GatewayId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = key(gateway, after.saturating_add(1));
        let end = key(gateway, u64::MAX);
        self.events
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (_, v) = item?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::EventClass;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            class: EventClass::Telemetry,
            kind: "t".into(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            payload: serde_json::value::RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap(),
        }
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            ranges([5, 1, 2, 3, 9, 10, 3]),
            vec![(1, 3), (5, 5), (9, 10)]
        );
        assert!(ranges([]).is_empty());
    }

    #[test]
    fn deduplicates_per_gateway_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20).unwrap();
        let a = GatewayId::new("a").unwrap();
        let b = GatewayId::new("a-b").unwrap();
        let r = s.store_batch(&a, &[ev(3), ev(1), ev(2)]).unwrap();
        assert_eq!(
            (r.new, r.duplicates, r.ranges.clone(), r.high),
            (3, 0, vec![(1, 3)], 3)
        );
        let r = s.store_batch(&a, &[ev(2), ev(4), ev(4)]).unwrap();
        assert_eq!((r.new, r.duplicates), (1, 2));
        let r = s.store_batch(&b, &[ev(1)]).unwrap();
        assert_eq!(r.new, 1, "another gateway's seq 1 is not a duplicate");
        let seqs: Vec<u64> = s
            .events_after(&a, 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        let seqs: Vec<u64> = s
            .events_after(&a, 2, 1)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![3]);
        assert_eq!(s.events_after(&b, 0, 10).unwrap().len(), 1);
        assert_eq!(
            s.events_after(&a, 0, 10).unwrap()[0].payload.get(),
            "{\"n\":1}"
        );
    }
}
