//! The gateway's metrics, named `gridedge_gateway_<part>_<what>`, exposed on `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use firmware_config::config::GatewayConfig;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::Ordering;

use crate::outbox::{class_index, Outbox, CLASSES};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl Metrics {
    /// Counts a refused message from central.
    pub fn refuse_downlink(&self, reason: &str) {
        self.downlink_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an event refused at the events API.
    pub fn refuse_event(&self, reason: &str) {
        self.events_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
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
    /// Events sent in batches (resends included).
    pub uplink_events_sent: Counter,
    /// Events central acknowledged as stored.
    pub uplink_events_acked: Counter,
    /// Times everything pending was resent because an ack was overdue.
    pub uplink_rewinds: Counter,
    /// Messages from central refused, by reason (unsigned, bad_signature, other_gateway,
    /// stale, replayed, wrong_kind, bad_ack).
    pub downlink_refused: Family<ReasonLabel, Counter>,
    /// Events refused at `POST /api/v1/events`, by reason (gateway_kind, kind_not_allowed,
    /// quota, not_a_source, disk_full).
    pub events_refused: Family<ReasonLabel, Counter>,
    cameras_configured: Gauge,
    terminals_configured: Gauge,
    /// Version of the gateway bundle in force (0: the config file).
    pub config_version: Gauge,
    /// Bundles applied, refused and rolled back.
    pub bundles: Family<KindLabel, Counter>,
    /// Content files fetched whole and checked.
    pub content_files_fetched: Counter,
    /// Bytes of content pieces taken.
    pub content_bytes_fetched: Counter,
    /// Content fetches that failed (and will be tried again).
    pub content_fetch_errors: Counter,
    /// Kiosk requests refused for going over a terminal's rate.
    pub kiosk_rate_limited: Counter,
}

impl Metrics {
    /// Exposes the outbox's counters, read at every scrape.
    pub fn register_outbox(&mut self, outbox: Outbox) {
        self.registry
            .register_collector(Box::new(OutboxCollector(outbox)));
    }

    /// Exposes every camera's health, read at every scrape.
    pub fn register_cameras(&mut self, cameras: crate::camera::Cameras) {
        self.registry
            .register_collector(Box::new(CameraCollector(cameras)));
    }

    /// Exposes terminal counts per state, read at every scrape (not one series per terminal:
    /// a gateway may have thousands).
    pub fn register_terminals(&mut self, terminals: crate::terminals::Terminals) {
        self.registry
            .register_collector(Box::new(TerminalCollector(terminals)));
    }

    pub fn set_configured(&self, config: &GatewayConfig) {
        self.cameras_configured.set(config.cameras.len() as i64);
        self.terminals_configured.set(config.terminals.len() as i64);
    }

    pub fn count_bundle(&self, outcome: &str) {
        self.bundles
            .get_or_create(&KindLabel {
                kind: outcome.to_owned(),
            })
            .inc();
    }

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
        registry.register(
            "cameras_configured",
            "Cameras in the config",
            cameras.clone(),
        );
        let terminals: Gauge = Gauge::default();
        terminals.set(config.terminals.len() as i64);
        registry.register(
            "terminals_configured",
            "Terminals in the config",
            terminals.clone(),
        );
        let config_version = Gauge::default();
        registry.register(
            "config_version",
            "Version of the gateway bundle in force (0: the config file)",
            config_version.clone(),
        );
        let bundles = Family::default();
        registry.register(
            "bundles",
            "Configuration bundles by outcome (applied, refused, rolled_back)",
            bundles.clone(),
        );

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
        let uplink_events_sent = Counter::default();
        registry.register(
            "uplink_events_sent",
            "Events sent in batches, resends included",
            uplink_events_sent.clone(),
        );
        let uplink_events_acked = Counter::default();
        registry.register(
            "uplink_events_acked",
            "Events central acknowledged as stored",
            uplink_events_acked.clone(),
        );
        let uplink_rewinds = Counter::default();
        registry.register(
            "uplink_rewinds",
            "Resends of everything pending after an overdue ack",
            uplink_rewinds.clone(),
        );
        let downlink_refused = Family::default();
        registry.register(
            "downlink_refused",
            "Messages from central refused, by reason",
            downlink_refused.clone(),
        );
        let events_refused = Family::default();
        registry.register(
            "events_refused",
            "Events refused at POST /api/v1/events, by reason",
            events_refused.clone(),
        );
        let content_files_fetched = Counter::default();
        registry.register(
            "content_files_fetched",
            "Content files fetched whole and checked",
            content_files_fetched.clone(),
        );
        let content_bytes_fetched = Counter::default();
        registry.register(
            "content_bytes_fetched",
            "Bytes of content pieces taken",
            content_bytes_fetched.clone(),
        );
        let content_fetch_errors = Counter::default();
        registry.register(
            "content_fetch_errors",
            "Content fetches that failed and will be tried again",
            content_fetch_errors.clone(),
        );
        let kiosk_rate_limited = Counter::default();
        registry.register(
            "kiosk_rate_limited",
            "Kiosk requests refused for going over a terminal's rate",
            kiosk_rate_limited.clone(),
        );
        Self {
            content_files_fetched,
            content_bytes_fetched,
            content_fetch_errors,
            kiosk_rate_limited,
            registry,
            uplink_connected,
            uplink_reconnects,
            uplink_errors,
            uplink_published,
            uplink_events_sent,
            uplink_events_acked,
            uplink_rewinds,
            downlink_refused,
            events_refused,
            cameras_configured: cameras,
            terminals_configured: terminals,
            config_version,
            bundles,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

struct OutboxCollector(Outbox);

impl std::fmt::Debug for OutboxCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxCollector")
    }
}

impl Collector for OutboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let per_class = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         ty: MetricType,
                         values: &[std::sync::atomic::AtomicU64; 4]| {
            let mut family = encoder.encode_descriptor(name, help, None, ty)?;
            for class in CLASSES {
                let v = values[class_index(class)].load(Ordering::Relaxed);
                let label = ClassLabel {
                    class: class.as_str(),
                };
                let m = family.encode_family(&label)?;
                match ty {
                    MetricType::Counter => ConstCounter::new(v).encode(m)?,
                    _ => ConstGauge::new(v as i64).encode(m)?,
                }
            }
            Ok::<(), std::fmt::Error>(())
        };
        per_class(
            &mut encoder,
            "outbox_appended",
            "Events durably appended, by class",
            MetricType::Counter,
            &s.appended,
        )?;
        per_class(
            &mut encoder,
            "outbox_evicted",
            "Events evicted to keep the disk budget, by class",
            MetricType::Counter,
            &s.evicted,
        )?;
        per_class(
            &mut encoder,
            "outbox_pending",
            "Events waiting for central's acknowledgement, by class",
            MetricType::Gauge,
            &s.pending,
        )?;
        let counters = [
            (
                "outbox_acked",
                "Events deleted after central acknowledged them",
                &s.acked,
            ),
            (
                "outbox_refused",
                "Events refused because the disk budget held only alerts and submissions",
                &s.refused,
            ),
            (
                "outbox_corrupt",
                "Stored records that failed their checksum",
                &s.corrupt,
            ),
            (
                "outbox_flushes",
                "Group commits flushed to disk",
                &s.flushes,
            ),
        ];
        for (name, help, v) in counters {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v.load(Ordering::Relaxed)).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "outbox_pending_bytes",
            "Bytes of pending events counted against the disk budget",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.pending_bytes.load(Ordering::Relaxed) as i64).encode(m)?;
        let m = encoder.encode_descriptor(
            "outbox_disk_bytes",
            "Bytes the store uses on disk",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.size_on_disk() as i64).encode(m)?;
        let d = self.0.disk();
        let gauges = [
            (
                "disk_free_bytes",
                "Free bytes of the filesystem under the store",
                d.free_bytes.load(Ordering::Relaxed),
            ),
            (
                "disk_total_bytes",
                "Size of the filesystem under the store",
                d.total_bytes.load(Ordering::Relaxed),
            ),
            (
                "disk_full",
                "1 while the disk is full: the store keeps to what it holds",
                u64::from(d.full()),
            ),
            (
                "outbox_disk_limit_bytes",
                "Most bytes the store may hold while the disk is full (0: no such limit)",
                d.limit_bytes.load(Ordering::Relaxed),
            ),
            (
                "disk_reserve_held",
                "1 while the reserve file is set aside for a full disk",
                u64::from(d.reserve_held.load(Ordering::Relaxed)),
            ),
            (
                "outbox_stopped",
                "1 once a write met a full disk; the gateway restarts the store",
                u64::from(s.stopped.load(Ordering::Relaxed)),
            ),
        ];
        for (name, help, v) in gauges {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraLabel {
    camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraStateLabel {
    camera: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensingLabel {
    camera: String,
    condition: String,
}

struct CameraCollector(crate::camera::Cameras);

/// A metric read off a camera's health: name, help, and how to read it.
type CameraMetric<T> = (
    &'static str,
    &'static str,
    fn(&crate::camera::CameraHealth) -> T,
);

impl std::fmt::Debug for CameraCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CameraCollector")
    }
}

impl Collector for CameraCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::camera::CameraState;
        let cams = self.0.snapshot();
        let mut state = encoder.encode_descriptor(
            "camera_state",
            "1 for the state each camera is in",
            None,
            MetricType::Gauge,
        )?;
        for c in &cams {
            for s in CameraState::ALL {
                let label = CameraStateLabel {
                    camera: c.id.clone(),
                    state: s.as_str(),
                };
                ConstGauge::new(i64::from(c.state == s)).encode(state.encode_family(&label)?)?;
            }
        }
        let counters: [CameraMetric<u64>; 6] = [
            ("camera_frames", "Frames received", |c| c.frames),
            (
                "camera_keyframes_decoded",
                "Keyframes decoded for snapshots and sensing",
                |c| c.decoded,
            ),
            (
                "camera_keyframes_skipped",
                "Due keyframes skipped because every decoder was busy",
                |c| c.keyframes_skipped,
            ),
            (
                "camera_decode_errors",
                "Keyframes that did not decode",
                |c| c.decode_errors,
            ),
            ("camera_frames_lost", "Frames lost in transport", |c| {
                c.frames_lost
            }),
            (
                "camera_reconnects",
                "Sessions re-established after the first",
                |c| c.reconnects,
            ),
        ];
        for (name, help, get) in counters {
            let mut fam = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in &cams {
                ConstCounter::new(get(c)).encode(fam.encode_family(&CameraLabel {
                    camera: c.id.clone(),
                })?)?;
            }
        }
        {
            let mut sensing = encoder.encode_descriptor(
                "camera_sensing_raised",
                "1 while a sensing condition (covered, frozen, motion:<zone>) is raised",
                None,
                MetricType::Gauge,
            )?;
            for c in &cams {
                for condition in &c.sensing {
                    let label = SensingLabel {
                        camera: c.id.clone(),
                        condition: condition.clone(),
                    };
                    ConstGauge::new(1i64).encode(sensing.encode_family(&label)?)?;
                }
            }
        }
        let gauges: [CameraMetric<Option<f64>>; 4] = [
            (
                "camera_fps",
                "Frames per second over the last seconds",
                |c| c.fps,
            ),
            (
                "camera_bitrate_kbps",
                "Video bitrate over the last seconds",
                |c| c.bitrate_kbps,
            ),
            (
                "camera_keyframe_interval_seconds",
                "Time between the last two keyframes",
                |c| c.keyframe_interval_secs,
            ),
            (
                "camera_last_frame_age_seconds",
                "Time since the last frame",
                |c| c.last_frame_age_ms.map(|ms| ms as f64 / 1000.0),
            ),
        ];
        for (name, help, get) in gauges {
            let mut fam = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in &cams {
                if let Some(v) = get(c) {
                    ConstGauge::new(v).encode(fam.encode_family(&CameraLabel {
                        camera: c.id.clone(),
                    })?)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

struct TerminalCollector(crate::terminals::Terminals);

impl std::fmt::Debug for TerminalCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TerminalCollector")
    }
}

impl Collector for TerminalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "terminals",
            "Terminals per health state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in self.0.counts() {
            ConstGauge::new(n as i64).encode(family.encode_family(&StateLabel { state })?)?;
        }
        Ok(())
    }
}
