//! The Mosquitto fixture is a real broker: clients publish to and receive from it, over plain
//! MQTT and over TLS with client certificates, and it survives a kill -9 and restart.

use std::time::Duration;

use firmware_config::runtime::mqtt::client_options;
use gridedge_tests::Mosquitto;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

async fn connect(
    url: &str,
    tls: Option<&firmware_config::config::TlsFiles>,
    id: &str,
) -> (AsyncClient, EventLoop) {
    let opts = client_options(url, tls, id, Duration::from_secs(10)).unwrap();
    AsyncClient::new(opts, 16)
}

/// Polls until a publish arrives on `topic`, answering the protocol on the way.
async fn receive(ev: &mut EventLoop, topic: &str) -> anyhow::Result<Vec<u8>> {
    let wait = async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = ev.poll().await? {
                if p.topic == topic {
                    return Ok::<_, anyhow::Error>(p.payload.to_vec());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

/// Polls until the connection is acknowledged (or fails).
async fn connected(ev: &mut EventLoop) -> anyhow::Result<()> {
    let wait = async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = ev.poll().await? {
                return Ok::<_, anyhow::Error>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

async fn round_trip(
    m: &Mosquitto,
    url: &str,
    tls_sub: Option<&firmware_config::config::TlsFiles>,
    tls_pub: Option<&firmware_config::config::TlsFiles>,
    topic: &str,
) {
    let (sub, mut sub_ev) = connect(url, tls_sub, "smoke-sub").await;
    connected(&mut sub_ev)
        .await
        .unwrap_or_else(|e| panic!("subscriber: {e}\n{}", m.log_text()));
    sub.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    // Let the SUBACK come back before publishing.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = sub_ev.poll().await {
                break;
            }
        }
    })
    .await;
    let (publ, mut pub_ev) = connect(url, tls_pub, "smoke-pub").await;
    publ.publish(
        topic,
        QoS::AtLeastOnce,
        false,
        "网格 hello".as_bytes().to_vec(),
    )
    .await
    .unwrap();
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    let got = receive(&mut sub_ev, topic).await.unwrap();
    assert_eq!(got, "网格 hello".as_bytes());
}

#[tokio::test]
async fn plain_listener_delivers_a_publish() {
    let m = Mosquitto::start().unwrap();
    round_trip(&m, &m.url(), None, None, "smoke/hello").await;
}

#[tokio::test]
async fn tls_listener_delivers_a_gateway_publish_to_central() {
    let m = Mosquitto::start().unwrap();
    let central = m.pki.client("central").unwrap();
    let gw = m.pki.client("gw-a").unwrap();
    round_trip(
        &m,
        &m.tls_url(),
        Some(&central),
        Some(&gw),
        "gridedge/v1/gw/gw-a/health",
    )
    .await;
}

#[tokio::test]
async fn the_shipped_acl_keeps_a_gateway_off_another_gateways_topics() {
    let m = Mosquitto::start().unwrap();
    let (sub, mut sub_ev) = connect(
        &m.tls_url(),
        Some(&m.pki.client("central").unwrap()),
        "acl-central",
    )
    .await;
    connected(&mut sub_ev).await.unwrap();
    sub.subscribe("gridedge/v1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (publ, mut pub_ev) =
        connect(&m.tls_url(), Some(&m.pki.client("gw-b").unwrap()), "gw-b").await;
    connected(&mut pub_ev).await.unwrap();
    // gw-b speaks for gw-a: dropped by the broker. Then for itself: delivered.
    publ.publish(
        "gridedge/v1/gw/gw-a/events",
        QoS::AtLeastOnce,
        false,
        b"spoof".to_vec(),
    )
    .await
    .unwrap();
    publ.publish(
        "gridedge/v1/gw/gw-b/events",
        QoS::AtLeastOnce,
        false,
        b"own".to_vec(),
    )
    .await
    .unwrap();
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    let wait = async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = sub_ev.poll().await {
                return p;
            }
        }
    };
    let first = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap();
    assert_eq!(
        first.topic, "gridedge/v1/gw/gw-b/events",
        "the spoofed publish got through"
    );
    assert_eq!(&first.payload[..], b"own");
}

#[tokio::test]
async fn tls_listener_refuses_a_certificate_from_another_ca() {
    let m = Mosquitto::start().unwrap();
    // Trusts the broker, but is not trusted by it.
    let files = m.pki.foreign_client("gw-rogue").unwrap();
    let (_c, mut ev) = connect(&m.tls_url(), Some(&files), "gw-rogue").await;
    assert!(
        connected(&mut ev).await.is_err(),
        "a client with a foreign certificate got in"
    );
}

#[tokio::test]
async fn broker_keeps_retained_messages_across_a_restart_and_recovers_from_kill_9() {
    let mut m = Mosquitto::start().unwrap();
    let (c, mut ev) = connect(&m.url(), None, "smoke-retain").await;
    c.publish("smoke/retained", QoS::AtLeastOnce, true, b"kept".to_vec())
        .await
        .unwrap();
    let acked = async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = ev.poll().await {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .unwrap();
    drop((c, ev));
    // Mosquitto writes its persistence file on a clean stop (or periodically): restart cleanly,
    // then crash it and start it again on the same port and data.
    m.restart().unwrap();
    m.kill();
    m.start_again().unwrap();
    let (c, mut ev) = connect(&m.url(), None, "smoke-retain-2").await;
    c.subscribe("smoke/retained", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(receive(&mut ev, "smoke/retained").await.unwrap(), b"kept");
}
