//! What newly stored events mean: the terminal and device boards, meeting answers and the
//! alert rules.
//!
//! It runs beside the link, in the order the link stored the batches, so a gateway's ack waits
//! only for its batch to be on disk. The link's task is central's ingest bottleneck:
//! perf under `bench-central` put these observers at over half of its time during a burst. Events
//! are stored before they get here, so nothing is lost to the queue; its bound holds the link
//! back (and with it the broker) when the observers fall behind.

use std::sync::Arc;

use firmware_config::ids::GatewayId;
use firmware_config::wire;
use tokio::sync::mpsc;

use crate::Shared;

/// New events of one stored batch: those the boards and rules act on.
pub struct Fresh {
    pub gateway: GatewayId,
    pub events: Vec<wire::Event>,
}

/// Groups of batches waiting for the observers; a group is what one disk flush stored.
const QUEUE: usize = 16;

/// Starts the observers; they stop when the sender is dropped, after what it had sent.
pub fn spawn(shared: Arc<Shared>) -> (mpsc::Sender<Vec<Fresh>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<Fresh>>(QUEUE);
    let task = tokio::spawn(async move {
        while let Some(group) = rx.recv().await {
            shared.metrics.observer_backlog.set(rx.len() as i64);
            for fresh in group {
                apply(&shared, &fresh);
            }
        }
    });
    (tx, task)
}

/// Feeds one batch's new events to every observer.
pub fn apply(shared: &Shared, fresh: &Fresh) {
    let gateway = fresh.gateway.as_str();
    let events = &fresh.events;
    if events.iter().any(|e| e.kind.starts_with("terminal.")) {
        let mut board = shared.terminal_board();
        for e in events {
            board.observe_event(gateway, e);
        }
    }
    {
        let mut devices = shared
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in events {
            devices.observe_event(gateway, e);
        }
    }
    for e in events.iter().filter(|e| e.kind == "meeting.answer") {
        if let Some(m) = shared.meetings.answered(gateway, e) {
            tracing::info!(meeting = %m.id, %gateway, "meeting answer");
        }
    }
    let observations: Vec<_> = events
        .iter()
        .flat_map(|e| crate::alerts::rules::from_event(gateway, e))
        .collect();
    if !observations.is_empty() {
        shared.alerts.observe(observations, shared.clock.now_utc());
    }
}
