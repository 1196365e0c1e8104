//! Where central keeps gateways' events: its own sled store (one machine, the default) or
//! PostgreSQL (`[storage] postgres`, where several replicas share them). Ingest, the events API
//! and retention go through this; each backend deduplicates on `(gateway, seq)` and says what to
//! acknowledge only once the batch is durable.

use std::sync::Arc;

use firmware_config::ids::GatewayId;

use super::{EventStore, StoreError, StoredEvent};
use crate::pg::events::PgEvents;

#[derive(Clone)]
pub enum EventBackend {
    Sled(Arc<EventStore>),
    Postgres(Arc<PgEvents>),
}

impl EventBackend {
    /// Up to `limit` stored events of `gateway` after `after`, in sequence order.
    pub async fn events_after(
        &self,
        gateway: GatewayId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Self::Sled(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.events_after(&gateway, after, limit))
                    .await
                    .map_err(|e| StoreError::Flush(format!("read task: {e}")))?
            }
            Self::Postgres(pg) => pg.events_after(&gateway, after, limit).await,
        }
    }
}
