//! Central's link on an in-memory transport: what it stores, acknowledges and refuses,
//! without a broker. The test plays the gateways.

use std::time::Duration;

use central::{RunningCentral, Seams};
use firmware_config::ids::GatewayId;
use firmware_config::runtime::transport::memory::{self, MemoryBroker};
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{
    self, Envelope, Event, EventBatch, EventClass, GatewayHealth, LinkState, Message, Status,
};
use tokio_util::sync::CancellationToken;

struct Rig {
    central: Option<RunningCentral>,
    broker: MemoryBroker,
    token: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[central]\nid = \"central-link\"\nname = \"Link test\"\n\
             [broker.external]\nurl = \"mqtt://127.0.0.1:9\"\n\
             [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        );
        let config = firmware_config::config::parse(&text, dir.path()).unwrap();
        let (transport, broker) = memory::link();
        let token = CancellationToken::new();
        let seams = Seams {
            clock: Default::default(),
            transport: Some(transport),
        };
        let central = central::start_with(config, token.clone(), seams)
            .await
            .unwrap();
        let rig = Rig {
            central: Some(central),
            broker,
            token,
            _dir: dir,
        };
        rig.wait("central subscribed", || {
            rig.broker.subscriptions().len() == 5
        })
        .await;
        rig
    }

    fn shared(&self) -> &central::Shared {
        &self.central.as_ref().unwrap().shared
    }

    async fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 5 s");
    }

    /// What gateway `on` sends on its `channel` topic, in an envelope claiming `claims`.
    fn send(&self, on: &str, claims: &str, channel: Channel, seq: u64, message: Message) {
        let payload = Envelope::new(GatewayId::new(claims).unwrap(), seq, message)
            .encode()
            .unwrap();
        self.broker.deliver(topic_of(on, channel), payload);
    }

    /// The next ack central published, with the topic it went to.
    async fn next_ack(&self) -> (String, wire::Ack) {
        let p = tokio::time::timeout(Duration::from_secs(5), self.broker.next())
            .await
            .expect("no ack within 5 s");
        let env = wire::decode(&p.payload).unwrap();
        match env.message {
            Message::Ack(a) => (p.topic, a),
            other => panic!("central published {other:?}"),
        }
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.shared()
            .metrics
            .messages_rejected
            .get_or_create(&central::metrics::ReasonLabel {
                reason: reason.to_owned(),
            })
            .get()
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(c) = self.central.take() {
            c.wait().await.unwrap();
        }
    }
}

fn topic_of(gateway: &str, channel: Channel) -> String {
    Topic::gateway(&GatewayId::new(gateway).unwrap(), channel).path()
}

fn events(seqs: std::ops::RangeInclusive<u64>) -> Message {
    Message::Events(EventBatch {
        events: seqs
            .map(|seq| Event {
                seq,
                class: EventClass::Telemetry,
                kind: "hall.air".into(),
                time: time::OffsetDateTime::now_utc(),
                payload: serde_json::value::to_raw_value(&serde_json::json!({ "seq": seq }))
                    .unwrap(),
                source: Some("sensors".into()),
            })
            .collect(),
    })
}

#[tokio::test]
async fn a_batch_is_stored_before_it_is_acknowledged_and_once_when_it_comes_again() {
    let rig = Rig::start().await;
    rig.send("gw-a", "gw-a", Channel::Events, 77, events(1..=3));
    let (topic, ack) = rig.next_ack().await;
    assert_eq!(topic, topic_of("gw-a", Channel::Ack));
    assert_eq!(ack.batch, Some(77));
    assert_eq!(ack.ranges, vec![(1, 3)]);
    // Stored before the ack went out, and the broker's copy acknowledged after.
    let m = &rig.shared().metrics;
    assert_eq!(m.events_stored.get(), 3);
    rig.wait("the broker's copy acknowledged", || rig.broker.acked() == 1)
        .await;
    // The same batch again (the gateway's ack was lost): acked again, stored once.
    rig.send("gw-a", "gw-a", Channel::Events, 78, events(1..=3));
    let (_, again) = rig.next_ack().await;
    assert_eq!(again.batch, Some(78));
    assert_eq!(again.ranges, vec![(1, 3)]);
    assert_eq!(m.events_stored.get(), 3);
    assert_eq!(m.events_duplicate.get(), 3);
    rig.stop().await;
}

#[tokio::test]
async fn a_gateway_speaking_for_another_or_garbling_is_refused_and_still_released() {
    let rig = Rig::start().await;
    // On gw-a's topic, claiming to be gw-b.
    rig.send("gw-a", "gw-b", Channel::Events, 5, events(1..=2));
    rig.broker.deliver(
        topic_of("gw-a", Channel::Events),
        b"not an envelope".to_vec(),
    );
    rig.broker.deliver("somewhere/else", b"{}".to_vec());
    rig.wait("three refusals", || {
        rig.rejected("gateway_mismatch") == 1
            && rig.rejected("bad_envelope") == 1
            && rig.rejected("bad_topic") == 1
    })
    .await;
    // Refused messages are acknowledged to the broker (they would only come back), not to
    // anyone else, and nothing was stored.
    rig.wait("all three released", || rig.broker.acked() == 3)
        .await;
    assert_eq!(rig.broker.try_next(), None);
    assert_eq!(rig.shared().metrics.events_stored.get(), 0);
    rig.stop().await;
}

#[tokio::test]
async fn an_older_status_or_health_report_is_a_replay() {
    let rig = Rig::start().await;
    let status = |state| {
        Message::Status(Status {
            state,
            version: "1".into(),
            site: "site-a".into(),
            will_seq: None,
        })
    };
    rig.send(
        "gw-a",
        "gw-a",
        Channel::Status,
        100,
        status(LinkState::Online),
    );
    rig.wait("gw-a online", || {
        rig.shared()
            .registry()
            .views(tokio::time::Instant::now())
            .len()
            == 1
    })
    .await;
    // A recorded `offline` from before, played again.
    rig.send(
        "gw-a",
        "gw-a",
        Channel::Status,
        99,
        status(LinkState::Offline),
    );
    let health = |seq| {
        Message::Health(GatewayHealth {
            version: "1".into(),
            site: "site-a".into(),
            uptime_secs: seq,
            cameras_configured: 0,
            terminals_configured: 0,
            outbox: None,
            terminals: None,
            config: None,
            masterdata: None,
            certificate_expires: None,
        })
    };
    rig.send("gw-a", "gw-a", Channel::Health, 200, health(200));
    rig.send("gw-a", "gw-a", Channel::Health, 150, health(150));
    rig.wait("two replays refused", || {
        rig.rejected("replayed_status") + rig.rejected("replayed_health") == 2
    })
    .await;
    let views = rig.shared().registry().views(tokio::time::Instant::now());
    assert_eq!(views[0].presence, central::registry::Presence::Online);
    rig.stop().await;
}
