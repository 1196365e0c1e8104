//! The embedded broker (the vendored rumqttd) survives what central's own session does to it:
//! a persistent session on a shared subscription that goes away with messages still
//! unacknowledged. Upstream's router panicked there (the group was removed with its last
//! member, then looked up with `expect`), taking the whole broker and every gateway with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use central::broker::{self, acl};
use firmware_config::config::central::EmbeddedBroker;
use firmware_config::runtime::mqtt::client_options;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

const CENTRAL: &str = "central-test";

async fn until<T>(
    ev: &mut EventLoop,
    mut want: impl FnMut(&Packet) -> Option<T>,
) -> anyhow::Result<T> {
    let wait = async {
        loop {
            if let Event::Incoming(p) = ev.poll().await? {
                if let Some(t) = want(&p) {
                    return Ok::<_, anyhow::Error>(t);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

fn central_session(handle: &broker::BrokerHandle) -> (AsyncClient, EventLoop) {
    let mut opts = client_options(
        &format!("mqtt://{}", handle.central_addr),
        None,
        CENTRAL,
        Duration::from_secs(10),
    )
    .unwrap();
    opts.set_credentials(acl::CENTRAL_USER, handle.central_password.clone());
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    AsyncClient::new(opts, 64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_shared_session_leaving_with_unacked_messages_does_not_stop_the_broker() {
    let cfg = EmbeddedBroker {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: None,
        tls: None,
        max_connections: 100,
        allow_plain_gateways: true,
    };
    let handle = broker::start(
        &cfg,
        CENTRAL,
        Arc::new(firmware_config::revocation::Revocations::none()),
        acl::Refusals::default(),
    )
    .await
    .unwrap();
    let filter = format!(
        "$share/gridedge-central/{}",
        firmware_config::topics::all_gateways(firmware_config::topics::Channel::Events)
    );
    let topic = "gridedge/v1/gw/gw-a/events";
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Central's session: persistent, on a shared subscription, acknowledging nothing.
    let (c, mut cev) = central_session(&handle);
    c.subscribe(&filter, QoS::AtLeastOnce).await.unwrap();
    until(&mut cev, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await
        .unwrap();
    let gw_opts = client_options(
        &format!("mqtt://{}", handle.local_addr),
        None,
        "gw-a",
        Duration::from_secs(10),
    )
    .unwrap();
    let (gw, mut gev) = AsyncClient::new(gw_opts, 64);
    let pump = tokio::spawn(async move { while gev.poll().await.is_ok() {} });
    for i in 0..5u8 {
        gw.publish(topic, QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    let mut got = HashMap::new();
    while got.len() < 5 {
        let p = until(&mut cev, |p| match p {
            Packet::Publish(p) => Some(p.payload.to_vec()),
            _ => None,
        })
        .await
        .unwrap();
        got.insert(p, ());
    }
    // It goes away, the five still unacknowledged.
    drop(cev);
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The broker still serves: a new client connects, and central's session comes back and
    // is given what it had not acknowledged.
    let probe = client_options(
        &format!("mqtt://{}", handle.local_addr),
        None,
        "gw-b",
        Duration::from_secs(10),
    )
    .unwrap();
    let (_b, mut bev) = AsyncClient::new(probe, 8);
    until(&mut bev, |p| matches!(p, Packet::ConnAck(_)).then_some(()))
        .await
        .expect("the broker answers a new client");
    let (c, mut cev) = central_session(&handle);
    c.subscribe(&filter, QoS::AtLeastOnce).await.unwrap();
    let mut again = 0;
    while again < 5 {
        let p = until(&mut cev, |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
        .expect("central's session is given its unacknowledged messages again");
        c.ack(&p).await.unwrap();
        again += 1;
    }
    gw.publish(topic, QoS::AtLeastOnce, false, vec![9])
        .await
        .unwrap();
    let fresh = until(&mut cev, |p| match p {
        Packet::Publish(p) if p.payload.as_ref() == [9] => Some(()),
        _ => None,
    })
    .await;
    assert!(fresh.is_ok(), "new messages flow again");
    pump.abort();
}
