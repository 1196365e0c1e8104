//! Which pending events go into the next batch, and which batches await central's ack.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firmware_config::wire::{Event, EventClass};

use crate::outbox::{class_index, Outbox};

/// Limits of one batch and of the window.
#[derive(Debug, Clone, Copy)]
pub struct BatchPlan {
    pub max_events: usize,
    /// Payload bytes (approximate, before the envelope); well under the 1 MiB message limit.
    pub max_bytes: usize,
    /// Batches sent and not yet acknowledged.
    pub window: usize,
}

impl Default for BatchPlan {
    fn default() -> Self {
        Self {
            max_events: 2000,
            max_bytes: 512 * 1024,
            window: 8,
        }
    }
}

/// The send cursor per class and the batches in flight.
#[derive(Debug)]
pub struct Window {
    plan: BatchPlan,
    /// Highest sequence number sent, per class.
    cursors: [u64; 4],
    inflight: BTreeMap<u64, Instant>,
}

impl Window {
    pub fn new(plan: BatchPlan) -> Self {
        Self {
            plan,
            cursors: [0; 4],
            inflight: BTreeMap::new(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.inflight.len() < self.plan.window
    }

    /// The next batch: the most urgent classes first, each in sequence order after its cursor.
    pub fn next_batch(&self, outbox: &Outbox) -> Vec<Event> {
        let mut events = Vec::new();
        let mut bytes = 0;
        for class in EventClass::BY_URGENCY {
            let room = self.plan.max_events - events.len();
            if room == 0 || bytes >= self.plan.max_bytes {
                break;
            }
            for e in outbox.pending(class, self.cursors[class_index(class)], room) {
                bytes += e.payload.get().len() + e.kind.len() + 96;
                events.push(e);
                if bytes >= self.plan.max_bytes {
                    break;
                }
            }
        }
        events
    }

    /// Records a batch as sent: cursors move past its events.
    pub fn sent(&mut self, batch: u64, events: &[Event]) {
        for e in events {
            let c = &mut self.cursors[class_index(e.class)];
            *c = (*c).max(e.seq);
        }
        self.inflight.insert(batch, Instant::now());
    }

    pub fn acked(&mut self, batch: u64) {
        self.inflight.remove(&batch);
    }

    /// True when the oldest batch in flight has waited longer than `timeout`.
    pub fn overdue(&self, timeout: Duration) -> bool {
        self.inflight
            .values()
            .min()
            .is_some_and(|t| t.elapsed() > timeout)
    }

    /// Forgets what was sent: everything still pending goes again.
    pub fn rewind(&mut self) {
        self.cursors = [0; 4];
        self.inflight.clear();
    }
}
