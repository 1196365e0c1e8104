//! A gateway in the test's process on the seams: an in-memory link to a stand-in for central
//! (which signs what it sends, as central does), a clock that follows tokio's time, and its
//! HTTP API called without sockets. Under `tokio::time::pause` days pass in seconds.
//!
//! Time moves only when the test says so ([`Rig::pass`]): tokio would otherwise jump its
//! paused clock ahead whenever every task waits, also while the outbox's writer thread is
//! writing to disk, and a heartbeat due in between would seem missed. A blocking task that
//! waits for the rig's end holds that jumping off (tokio does not auto-advance while a
//! blocking task runs).

#![allow(dead_code)] // each test file uses its own part of the rig

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use firmware_config::bundle::SigningKey;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use firmware_config::runtime::signing::DownlinkSigner;
use firmware_config::runtime::transport::memory::{self, MemoryBroker, Published};
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{self, Ack, Envelope, Event, Message};
use gateway::{RunningGateway, Seams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const GATEWAY: &str = "gw-rig";
pub const SOURCE_TOKEN: &str = "token-of-the-sensor-source-0001";

/// The token of kiosk `n` (`kiosk-{n}`).
pub fn kiosk_token(n: usize) -> String {
    format!("token-of-kiosk-number-{n:04}")
}

/// The token of video terminal `n` (`video-{n}`).
pub fn video_token(n: usize) -> String {
    format!("token-of-video-terminal-{n:04}")
}

/// What the rig's gateway has.
pub struct Layout {
    /// Cameras `camera-{n}`, playing the recording in [`Rig::cameras`].
    pub cameras: usize,
    pub kiosks: usize,
    pub video_terminals: usize,
    pub disk_budget: &'static str,
    pub health_interval: &'static str,
    pub reconnect_max: &'static str,
    /// `[bundles] confirm_within`: bundles from central are taken (without: refused).
    pub bundles: Option<&'static str>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            cameras: 0,
            kiosks: 1,
            video_terminals: 0,
            disk_budget: "64 MiB",
            health_interval: "30s",
            reconnect_max: "60s",
            bundles: None,
        }
    }
}

/// A stand-in for central: signs what it sends with the key the gateway trusts.
pub struct Central {
    signer: DownlinkSigner,
    key: SigningKey,
    clock: Clock,
    next: u64,
}

impl Central {
    /// An envelope for the rig's gateway, numbered and stamped now, signed for `channel`.
    pub fn seal(&mut self, channel: Channel, message: Message) -> Vec<u8> {
        self.next += 1;
        let env = Envelope::new(GatewayId::new(GATEWAY).unwrap(), self.next, message)
            .at(self.clock.now_utc());
        self.signer.encode(channel, &env).unwrap()
    }

    /// A bundle of `version` making the gateway's config `toml`, signed, issued now.
    pub fn bundle(&self, version: u64, toml: String) -> firmware_config::bundle::SignedBundle {
        use firmware_config::bundle::{BundleBody, Content, Target};
        self.key
            .sign(&BundleBody {
                target: Target {
                    gateway: GATEWAY.to_owned(),
                    terminal: None,
                },
                version,
                issued: self.clock.now_utc(),
                note: format!("version {version}"),
                content: Content::Gateway { toml },
            })
            .unwrap()
    }

    /// The street's sample master data as a signed snapshot (content files left out: there
    /// is nobody to fetch them from).
    pub fn masterdata(&mut self) -> Message {
        use firmware_config::masterdata::replica::{SignedUpdate, Update};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data");
        let mut dataset = firmware_config::masterdata::load_dir(&root)
            .unwrap()
            .read()
            .unwrap();
        dataset.content.clear();
        let update = Update::Snapshot {
            version: 1,
            hash: dataset.hash(),
            areas: Vec::new(),
            dataset,
        };
        Message::Data(SignedUpdate::sign(&self.key, &update).unwrap())
    }
}

/// A small H.264 keyframe (176x144), played once a second by every camera.
pub fn recording() -> gateway::camera::source::Recorded {
    let frame = include_bytes!("../../src/camera/testdata/key264-176x144.h264").to_vec();
    gateway::camera::source::Recorded::new(
        gateway::camera::VideoCodec::H264,
        vec![(frame, true)],
        1,
    )
}

pub struct Rig {
    /// The config file's text, to build bundles from.
    pub config_text: String,
    /// What the cameras play; switch one off with `set_on`.
    pub cameras: gateway::camera::source::Recorded,
    /// Holds tokio's auto-advance off while it is there.
    hold: Option<std::sync::mpsc::Sender<()>>,
    pub gateway: Option<RunningGateway>,
    pub broker: MemoryBroker,
    pub central: Central,
    pub clock: Clock,
    router: axum::Router,
    token: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start(layout: Layout) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (key, private) = SigningKey::generate().unwrap();
        let private_file = dir.path().join("central.key");
        std::fs::write(&private_file, private).unwrap();
        let key_file = dir.path().join("central.pub");
        std::fs::write(&key_file, key.public_pem()).unwrap();
        let config_text = config_text(dir.path(), &layout, &key_file);
        let config = firmware_config::config::parse(&config_text, dir.path()).unwrap();
        let clock = Clock::following_tokio(time::macros::datetime!(2026-06-01 08:00 UTC));
        let (transport, broker) = memory::link();
        let cameras = recording();
        let token = CancellationToken::new();
        let gateway = gateway::start_with(
            config,
            token.clone(),
            Seams {
                clock,
                transport,
                cameras: Arc::new(cameras.clone()),
            },
        )
        .await
        .unwrap();
        let router = gateway::api::router(gateway.shared.clone());
        let (hold, held) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        Rig {
            config_text,
            hold: Some(hold),
            cameras,
            gateway: Some(gateway),
            broker,
            central: Central {
                signer: DownlinkSigner::new(SigningKey::load(&private_file).unwrap()),
                key,
                clock,
                next: 1_000,
            },
            clock,
            router,
            token,
            dir,
        }
    }

    pub fn shared(&self) -> &Arc<gateway::Shared> {
        &self.gateway.as_ref().unwrap().shared
    }

    /// Calls the gateway's HTTP API (no socket): status and JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Posts `events` as the hall's sensors (the rig's event source); they must be taken.
    pub async fn post_events(&self, events: Vec<Value>) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/events",
                Some(SOURCE_TOKEN),
                Some(Value::Array(events)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The gateway's `/metrics`, lines about the uplink and downlink.
    pub async fn metrics_text(&self) -> String {
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains("link") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends the gateway a message from central on its `channel` topic.
    pub fn send(&mut self, channel: Channel, message: Message) {
        let payload = self.central.seal(channel, message);
        let topic = Topic::gateway(&GatewayId::new(GATEWAY).unwrap(), channel).path();
        self.broker.deliver(topic, payload);
    }

    /// The next message the gateway published, decoded, with its channel. Fails the test
    /// when none comes within a simulated minute.
    pub async fn next(&self) -> (Channel, Envelope, Published) {
        let mut got = None;
        self.until(Duration::from_secs(60), || {
            got = self.broker.try_next();
            got.is_some()
        })
        .await;
        let p = got.expect("the gateway published nothing for a minute");
        (channel_of(&p.topic), wire::decode(&p.payload).unwrap(), p)
    }

    /// Lets time pass in small steps until `done` (checked between them) or `limit` has
    /// passed; returns whether `done` came true. Each step also gives threads outside the
    /// runtime (the outbox's writer) a moment of real time.
    pub async fn until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let step = Duration::from_millis(10);
        let mut passed = Duration::ZERO;
        loop {
            settle().await;
            if done() {
                return true;
            }
            if passed >= limit {
                return false;
            }
            let _ = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_micros(300)))
                .await;
            tokio::time::advance(step).await;
            passed += step;
        }
    }

    /// Waits for the next batch of events and returns its number and events (other messages
    /// are passed over).
    pub async fn next_batch(&self) -> (u64, Vec<Event>) {
        loop {
            let (channel, env, _) = self.next().await;
            if let (Channel::Events, Message::Events(batch)) = (channel, env.message) {
                return (env.seq, batch.events);
            }
        }
    }

    /// Acknowledges `events` of batch `batch`, as central does once it stored them.
    pub fn ack(&mut self, batch: u64, events: &[Event]) {
        let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        let ranges = ranges(&seqs);
        self.send(
            Channel::Ack,
            Message::Ack(Ack {
                watermark: 0,
                ranges,
                batch: Some(batch),
            }),
        );
    }

    /// Lets `d` of (paused) time pass, a second at a time, the gateway's tasks running at
    /// every step.
    pub async fn pass(&self, d: Duration) {
        let step = Duration::from_secs(1);
        let mut left = d;
        while !left.is_zero() {
            let s = left.min(step);
            tokio::time::advance(s).await;
            settle().await;
            left -= s;
        }
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(&mut self) {
        self.hold = None;
        self.token.cancel();
        if let Some(g) = self.gateway.take() {
            g.wait().await.unwrap();
        }
    }
}

/// Lets every task woken so far run.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

fn channel_of(topic: &str) -> Channel {
    match Topic::parse(topic) {
        Ok(Topic::Gateway { channel, .. }) => channel,
        other => panic!("the gateway published on {topic:?}: {other:?}"),
    }
}

/// Runs of consecutive numbers, as central's acks name them.
pub fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn config_text(dir: &Path, layout: &Layout, key_file: &Path) -> String {
    let secret = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        p.display().to_string()
    };
    let mut text = format!(
        "[site]\nid = \"rig-site\"\nname = \"The rig's centre\"\n\
         [gateway]\nid = \"{GATEWAY}\"\n\
         [uplink]\nbroker = \"mqtt://127.0.0.1:9\"\nhealth_interval = \"{}\"\n\
         reconnect_min = \"1s\"\nreconnect_max = \"{}\"\ncentral_key_file = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndir = \"{}\"\ndisk_budget = \"{}\"\ncache_size = \"4 MiB\"\n\
         [[sources]]\nid = \"sensors\"\nname = \"Hall sensors\"\ntoken = {{ file = \"{}\" }}\n",
        layout.health_interval,
        layout.reconnect_max,
        key_file.display(),
        dir.join("data").display(),
        layout.disk_budget,
        secret("sensors.token", SOURCE_TOKEN),
    );
    for n in 0..layout.cameras {
        text += &format!(
            "[[cameras]]\nid = \"camera-{n}\"\nname = \"Camera {n}\"\nurl = \"rtsp://127.0.0.1:9/recorded-{n}\"\n\
             snapshot = {{ interval = \"10m\", width = 176 }}\n\
             sensing = {{ covered = false, frozen = false, moved = false }}\n"
        );
    }
    for n in 0..layout.kiosks {
        text += &format!(
            "[[terminals]]\nid = \"kiosk-{n}\"\nname = \"Kiosk {n}\"\nkind = \"kiosk\"\n\
             health = {{ mode = \"heartbeat\", interval = \"30s\", misses_before_offline = 3 }}\n\
             token = {{ file = \"{}\" }}\n",
            secret(&format!("kiosk-{n}.token"), &kiosk_token(n)),
        );
    }
    for n in 0..layout.video_terminals {
        text += &format!(
            "[[terminals]]\nid = \"video-{n}\"\nname = \"Video terminal {n}\"\nkind = \"video_terminal\"\n\
             health = {{ mode = \"heartbeat\", interval = \"30s\", misses_before_offline = 3 }}\n\
             token = {{ file = \"{}\" }}\n",
            secret(&format!("video-{n}.token"), &video_token(n)),
        );
    }
    if let Some(within) = layout.bundles {
        text += &format!("[bundles]\nconfirm_within = \"{within}\"\n");
    }
    text
}
