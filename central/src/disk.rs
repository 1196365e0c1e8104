//! Central's own disk, watched: a full disk stops acknowledging (the store refuses batches and
//! gateways keep their backlog), is an alert for the operators, and passes by itself once
//! there is room. A write that met the full disk all the same stops central for its service
//! manager to start it again (sled does not come back from it).

use std::sync::Arc;
use std::time::Duration;

use firmware_config::runtime::clock::Clock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::alerts::engine::{Observation, Severity};
use crate::alerts::Alerts;
use crate::store::{EventStore, StoreError};

/// How often the disk is looked at when no batch arrives (batches look at it themselves).
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The alert rule of central's own full disk.
pub const RULE: &str = "central.disk_full";

/// Watches the disk until `token` is cancelled; fails when the store has stopped.
pub async fn watch(
    store: Arc<EventStore>,
    alerts: Arc<Alerts>,
    central: String,
    clock: Clock,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let mut was_full = None;
    loop {
        let _ = store.room_for(0);
        if store.stopped() {
            return Err(StoreError::Stopped);
        }
        let disk = store.disk();
        let full = disk.full();
        if was_full != Some(full) {
            let free = disk.free_bytes.load(std::sync::atomic::Ordering::Relaxed);
            if full {
                tracing::error!(free_bytes = free, "central's disk is full: batches are not stored or acknowledged; gateways keep them");
            } else if was_full.is_some() {
                tracing::info!(free_bytes = free, "central's disk has room again");
            }
            alerts.observe(vec![observation(&central, full, free)], clock.now_utc());
            was_full = Some(full);
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

fn observation(central: &str, full: bool, free: u64) -> Observation {
    Observation {
        originator: central.to_owned(),
        gateway: central.to_owned(),
        rule: RULE.to_owned(),
        raised: full,
        severity: Severity::Critical,
        title: format!(
            "中心磁盘已满（剩余 {} MiB），暂停接收网关事件 {central}",
            free >> 20
        ),
        detail: json!({ "free_bytes": free }),
        hold_down: Duration::ZERO,
    }
}
