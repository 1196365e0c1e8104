//! Central's metrics, named `gridedge_central_<part>_<what>`, exposed on `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use firmware_config::config::CentralConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PresenceLabel {
    pub presence: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabel {
    pub gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayClassLabel {
    pub gateway: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    central: String,
    /// This replica's name; empty on one central.
    replica: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// 1 while central's own MQTT session is up.
    pub link_connected: Gauge,
    /// Messages received from gateways, by kind.
    pub messages_received: Family<KindLabel, Counter>,
    /// Messages refused, by reason (bad topic, bad envelope, gateway mismatch).
    pub messages_rejected: Family<ReasonLabel, Counter>,
    /// Gateways by presence, refreshed on every scrape.
    pub gateways: Family<PresenceLabel, Gauge>,
    /// Events stored for the first time.
    pub events_stored: Counter,
    /// Free bytes of the filesystem under the store, refreshed on every scrape.
    pub disk_free_bytes: Gauge,
    /// 1 while the disk is full: batches are neither stored nor acknowledged.
    pub disk_full: Gauge,
    /// 1 once a write met the full disk (central then exits for its unit to restart it).
    pub store_stopped: Gauge,
    /// Events received again and dropped as duplicates of stored ones.
    pub events_duplicate: Counter,
    /// Event batches stored.
    pub batches: Counter,
    /// Acks published to gateways.
    pub acks_sent: Counter,
    /// Each gateway's outbox, as it last reported: events waiting for central.
    pub gateway_outbox_pending: Family<GatewayLabel, Gauge>,
    /// Each gateway's outbox, as it last reported: events evicted to keep its disk budget.
    pub gateway_outbox_evicted: Family<GatewayClassLabel, Gauge>,
    /// Each gateway's outbox, as it last reported: events refused because it was full.
    pub gateway_outbox_refused: Family<GatewayLabel, Gauge>,
    /// Bytes of content files sent to gateways.
    pub content_bytes_sent: Counter,
    /// Groups of stored batches waiting for the boards and alert rules.
    pub observer_backlog: Gauge,
    /// Notices out by what became of an attempt: `sent`, `retried`, `failed`.
    pub notices: Family<OutcomeLabel, Counter>,
    /// Notices waiting to be sent.
    pub notices_pending: Gauge,
    /// Gateways whose lease this replica holds (with replicas).
    pub leases_held: Gauge,
    /// Gateways this replica took over from none or from another replica.
    pub leases_taken: Counter,
    /// What the embedded broker refused, by action (connect, publish, subscribe).
    pub broker_refused: Family<crate::broker::acl::ActionLabel, Counter>,
    /// Certificates on the revocation list in force.
    pub certificates_revoked: Gauge,
    /// Events deleted by retention, by class.
    pub events_pruned: Family<ClassLabel, Counter>,
    /// When the oldest kept event of each class was received (Unix seconds; absent: none kept).
    pub events_oldest_received: Family<ClassLabel, Gauge>,
    /// Bytes the event store takes on disk.
    pub store_bytes: Gauge,
    /// Compressed bytes of pruned events written to the archive.
    pub archive_bytes: Counter,
    /// Pruning passes that could not write the archive (nothing was deleted).
    pub archive_failures: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

impl Metrics {
    pub fn new(config: &CentralConfig) -> Self {
        let mut registry = Registry::with_prefix("gridedge_central");
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION.to_owned(),
                central: config.central.id.clone(),
                replica: config.central.replica.clone().unwrap_or_default(),
            })
            .set(1);
        registry.register("build_info", "Central version and identity", build);
        let link_connected = Gauge::default();
        registry.register(
            "link_connected",
            "1 while central's MQTT session is up",
            link_connected.clone(),
        );
        let messages_received = Family::default();
        registry.register(
            "messages_received",
            "Messages received from gateways, by kind",
            messages_received.clone(),
        );
        let messages_rejected = Family::default();
        registry.register(
            "messages_rejected",
            "Messages refused, by reason",
            messages_rejected.clone(),
        );
        let gateways = Family::default();
        registry.register("gateways", "Gateways known, by presence", gateways.clone());
        let events_stored = Counter::default();
        registry.register(
            "events_stored",
            "Events stored for the first time",
            events_stored.clone(),
        );
        let disk_free_bytes = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Free bytes of the filesystem under central's store",
            disk_free_bytes.clone(),
        );
        let disk_full = Gauge::default();
        registry.register(
            "disk_full",
            "1 while the disk is full: batches are neither stored nor acknowledged",
            disk_full.clone(),
        );
        let store_stopped = Gauge::default();
        registry.register(
            "store_stopped",
            "1 once a write met the full disk; central exits for its unit to restart it",
            store_stopped.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Events received again and dropped as duplicates",
            events_duplicate.clone(),
        );
        let batches = Counter::default();
        registry.register("event_batches", "Event batches stored", batches.clone());
        let acks_sent = Counter::default();
        registry.register("acks_sent", "Acks published to gateways", acks_sent.clone());
        let gateway_outbox_pending = Family::default();
        registry.register(
            "gateway_outbox_pending",
            "Events waiting in each gateway's outbox, as last reported",
            gateway_outbox_pending.clone(),
        );
        let gateway_outbox_evicted = Family::default();
        registry.register(
            "gateway_outbox_evicted",
            "Events each gateway evicted to keep its disk budget, by class, as last reported",
            gateway_outbox_evicted.clone(),
        );
        let gateway_outbox_refused = Family::default();
        registry.register(
            "gateway_outbox_refused",
            "Events each gateway refused because its outbox was full, as last reported",
            gateway_outbox_refused.clone(),
        );
        let content_bytes_sent = Counter::default();
        registry.register(
            "content_bytes_sent",
            "Bytes of content files sent to gateways",
            content_bytes_sent.clone(),
        );
        let notices = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "notices",
            "Notice attempts by outcome (sent, retried, failed)",
            notices.clone(),
        );
        let notices_pending = Gauge::default();
        registry.register(
            "notices_pending",
            "Notices waiting to be sent",
            notices_pending.clone(),
        );
        let observer_backlog = Gauge::default();
        registry.register(
            "observer_backlog",
            "Groups of stored event batches waiting for the boards and alert rules",
            observer_backlog.clone(),
        );
        let leases_held = Gauge::default();
        registry.register(
            "leases_held",
            "Gateways whose lease this replica holds (replicas on PostgreSQL)",
            leases_held.clone(),
        );
        let leases_taken = Counter::default();
        registry.register(
            "leases_taken",
            "Gateways this replica took over, from no holder or another replica",
            leases_taken.clone(),
        );
        let broker_refused = Family::default();
        registry.register(
            "broker_refused",
            "What the embedded broker refused, by action: connect, publish, subscribe",
            broker_refused.clone(),
        );
        let certificates_revoked = Gauge::default();
        registry.register(
            "certificates_revoked",
            "Certificates on the revocation list in force",
            certificates_revoked.clone(),
        );
        let events_pruned = Family::default();
        registry.register(
            "events_pruned",
            "Events deleted by retention, by class",
            events_pruned.clone(),
        );
        let events_oldest_received = Family::default();
        registry.register(
            "events_oldest_received_seconds",
            "When the oldest kept event of each class was received, Unix seconds",
            events_oldest_received.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Bytes central's event store takes on disk",
            store_bytes.clone(),
        );
        let archive_bytes = Counter::default();
        registry.register(
            "archive_bytes",
            "Compressed bytes of pruned events written to the archive",
            archive_bytes.clone(),
        );
        let archive_failures = Counter::default();
        registry.register(
            "archive_failures",
            "Pruning passes that could not write the archive (nothing was deleted)",
            archive_failures.clone(),
        );
        Self {
            events_pruned,
            events_oldest_received,
            store_bytes,
            archive_bytes,
            archive_failures,
            broker_refused,
            certificates_revoked,
            observer_backlog,
            notices,
            notices_pending,
            leases_held,
            leases_taken,
            content_bytes_sent,
            registry,
            link_connected,
            messages_received,
            messages_rejected,
            gateways,
            events_stored,
            disk_free_bytes,
            disk_full,
            store_stopped,
            events_duplicate,
            batches,
            acks_sent,
            gateway_outbox_pending,
            gateway_outbox_evicted,
            gateway_outbox_refused,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.messages_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
