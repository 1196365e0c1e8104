//! The gateway's metrics, named `gridedge_gateway_<part>_<what>`, exposed on `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use firmware_config::config::GatewayConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub gateway: String,
    pub site: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// 1 while the MQTT session to central is up.
    pub uplink_connected: Gauge,
    /// Sessions established after the first one.
    pub uplink_reconnects: Counter,
    /// Failed connection attempts and dropped sessions.
    pub uplink_errors: Counter,
    /// Messages handed to the MQTT client, by kind.
    pub uplink_published: Family<KindLabel, Counter>,
}

impl Metrics {
    pub fn new(config: &GatewayConfig) -> Self {
        let mut registry = Registry::with_prefix("gridedge_gateway");
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION.to_owned(),
                gateway: config.gateway.id.clone(),
                site: config.site.id.clone(),
            })
            .set(1);
        registry.register("build_info", "Gateway version and identity", build);
        let cameras: Gauge = Gauge::default();
        cameras.set(config.cameras.len() as i64);
        registry.register("cameras_configured", "Cameras in the config", cameras);
        let terminals: Gauge = Gauge::default();
        terminals.set(config.terminals.len() as i64);
        registry.register("terminals_configured", "Terminals in the config", terminals);

        let uplink_connected = Gauge::default();
        registry.register(
            "uplink_connected",
            "1 while the MQTT session to central is up",
            uplink_connected.clone(),
        );
        let uplink_reconnects = Counter::default();
        registry.register(
            "uplink_reconnects",
            "MQTT sessions established after the first",
            uplink_reconnects.clone(),
        );
        let uplink_errors = Counter::default();
        registry.register(
            "uplink_errors",
            "Failed MQTT connection attempts and dropped sessions",
            uplink_errors.clone(),
        );
        let uplink_published = Family::default();
        registry.register(
            "uplink_published",
            "Messages handed to the MQTT client, by kind",
            uplink_published.clone(),
        );
        Self {
            registry,
            uplink_connected,
            uplink_reconnects,
            uplink_errors,
            uplink_published,
        }
    }
}
