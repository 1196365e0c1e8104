//! The uplink on an in-memory link, in paused time: windowing, acknowledgement, rewind,
//! reconnect and dispatch, without a broker.

mod rig;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use firmware_config::topics::Channel;
use firmware_config::wire::{Ack, Command, LinkState, Message};
use rig::{Layout, Rig};
use serde_json::json;

async fn post_telemetry(rig: &Rig, n: usize) {
    let events = (0..n)
        .map(|i| json!({ "class": "telemetry", "kind": "hall.temperature", "payload": { "i": i } }))
        .collect();
    rig.post_events(events).await;
}

/// No terminals: none goes offline for want of heartbeats while time passes.
fn no_terminals() -> Layout {
    Layout {
        kiosks: 0,
        ..Layout::default()
    }
}

fn pending(rig: &Rig) -> u64 {
    rig.shared().outbox.summary().pending
}

/// Waits for the birth message and the first health report of a new session.
async fn connected(rig: &Rig) {
    let (channel, env, p) = rig.next().await;
    assert_eq!(channel, Channel::Status);
    assert!(p.retain && !p.will);
    assert!(matches!(env.message, Message::Status(s) if s.state == LinkState::Online));
}

#[tokio::test(start_paused = true)]
async fn events_leave_the_outbox_only_when_centrals_ack_names_them() {
    let mut rig = Rig::start(no_terminals()).await;
    connected(&rig).await;
    post_telemetry(&rig, 3).await;
    let (batch, events) = rig.next_batch().await;
    assert_eq!(events.len(), 3);
    // The broker has them; central has not said it stored them: they stay.
    rig.pass(Duration::from_secs(5)).await;
    assert_eq!(pending(&rig), 3);
    rig.ack(batch, &events);
    assert!(
        rig.until(Duration::from_secs(5), || pending(&rig) == 0)
            .await
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_overdue_ack_resends_everything_pending_once_and_counts_it() {
    let mut rig = Rig::start(no_terminals()).await;
    connected(&rig).await;
    post_telemetry(&rig, 2).await;
    let (first, events) = rig.next_batch().await;
    // No ack for the ack timeout: the same events go again, in a new batch.
    rig.pass(gateway::uplink::ACK_TIMEOUT).await;
    let (again, resent) = rig.next_batch().await;
    assert_ne!(first, again);
    let seqs = |e: &[firmware_config::wire::Event]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&resent), seqs(&events));
    assert_eq!(rig.shared().metrics.uplink_rewinds.get(), 1);
    // The ack of the first batch, late, still deletes them.
    rig.ack(first, &events);
    assert!(
        rig.until(Duration::from_secs(5), || pending(&rig) == 0)
            .await
    );
    rig.stop().await;
}

/// A central replica that has just taken the gateway over asks for everything pending: it
/// goes again at once, not after the ack timeout. An unsigned request (anyone on the broker)
/// moves nothing.
#[tokio::test(start_paused = true)]
async fn centrals_resend_request_resends_everything_pending_at_once_and_a_forged_one_does_not() {
    let mut rig = Rig::start(no_terminals()).await;
    connected(&rig).await;
    post_telemetry(&rig, 2).await;
    let (first, events) = rig.next_batch().await;
    let gateway = firmware_config::ids::GatewayId::new(rig::GATEWAY).unwrap();
    let topic = firmware_config::topics::Topic::gateway(&gateway, Channel::Ack).path();
    let forged =
        firmware_config::wire::Envelope::new(gateway, 99_999, Message::Ack(Ack::resend_request(0)))
            .encode()
            .unwrap();
    rig.broker.deliver(topic, forged);
    rig.pass(Duration::from_secs(2)).await;
    assert_eq!(
        rig.shared().metrics.uplink_rewinds.get(),
        0,
        "unsigned: refused"
    );
    rig.send(Channel::Ack, Message::Ack(Ack::resend_request(0)));
    let (again, resent) = tokio::time::timeout(Duration::from_secs(2), rig.next_batch())
        .await
        .expect("resent well before the ack timeout");
    assert_ne!(first, again);
    let seqs = |e: &[firmware_config::wire::Event]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&resent), seqs(&events));
    assert_eq!(rig.shared().metrics.uplink_rewinds.get(), 1);
    rig.ack(again, &resent);
    assert!(
        rig.until(Duration::from_secs(5), || pending(&rig) == 0)
            .await
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cut_fires_the_will_and_everything_pending_goes_again_after_reconnect() {
    let mut rig = Rig::start(no_terminals()).await;
    connected(&rig).await;
    post_telemetry(&rig, 1).await;
    let (_, before) = rig.next_batch().await;
    rig.broker.cut();
    // The broker publishes the last will: retained, offline.
    let (channel, env, p) = loop {
        let next = rig.next().await;
        if next.2.will {
            break next;
        }
    };
    assert_eq!(channel, Channel::Status);
    assert!(p.retain);
    assert!(matches!(env.message, Message::Status(s) if s.state == LinkState::Offline));
    post_telemetry(&rig, 2).await;
    rig.pass(Duration::from_secs(600)).await;
    assert_eq!(rig.broker.connects(), 1, "no session while cut");
    assert_eq!(pending(&rig), 3);
    rig.broker.restore();
    connected(&rig).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (batch, events) = rig.next_batch().await;
        seen.extend(events.iter().map(|e| e.seq));
        rig.ack(batch, &events);
    }
    assert_eq!(seen[0], before[0].seq, "the unacknowledged event first");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert!(
        rig.until(Duration::from_secs(5), || pending(&rig) == 0)
            .await
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forged_replayed_and_overreaching_acks_delete_nothing() {
    let mut rig = Rig::start(no_terminals()).await;
    connected(&rig).await;
    post_telemetry(&rig, 2).await;
    let (batch, events) = rig.next_batch().await;
    let all = rig::ranges(&[events[0].seq, events[1].seq]);
    // Unsigned: anyone on the broker could have sent it.
    let gateway = firmware_config::ids::GatewayId::new(rig::GATEWAY).unwrap();
    let topic = firmware_config::topics::Topic::gateway(&gateway, Channel::Ack).path();
    let unsigned = firmware_config::wire::Envelope::new(
        gateway,
        99_999,
        Message::Ack(Ack {
            watermark: 0,
            ranges: all.clone(),
            batch: Some(batch),
        }),
    )
    .encode()
    .unwrap();
    rig.broker.deliver(topic.clone(), unsigned);
    // Signed, but naming more than the batch carried.
    rig.send(
        Channel::Ack,
        Message::Ack(Ack {
            watermark: 0,
            ranges: vec![(events[0].seq, events[1].seq + 50)],
            batch: Some(batch),
        }),
    );
    // Signed, for a batch never sent.
    rig.send(
        Channel::Ack,
        Message::Ack(Ack {
            watermark: 0,
            ranges: all.clone(),
            batch: Some(batch + 1_000_000),
        }),
    );
    // A real ack, sent again word for word: the copy is a replay.
    let real = rig.central.seal(
        Channel::Ack,
        Message::Ack(Ack {
            watermark: 0,
            ranges: all,
            batch: Some(batch),
        }),
    );
    let refused = |reason: &str| {
        rig.shared()
            .metrics
            .downlink_refused
            .get_or_create(&gateway::metrics::ReasonLabel {
                reason: reason.to_owned(),
            })
            .get()
    };
    let settled = rig
        .until(Duration::from_secs(5), || {
            refused("unsigned") == 1 && refused("bad_ack") == 2
        })
        .await;
    assert!(settled, "{}", rig.metrics_text().await);
    assert_eq!(pending(&rig), 2);
    rig.broker.deliver(topic.clone(), real.clone());
    assert!(
        rig.until(Duration::from_secs(5), || pending(&rig) == 0)
            .await
    );
    rig.broker.deliver(topic, real);
    assert!(
        rig.until(Duration::from_secs(5), || refused("replayed") == 1)
            .await
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn master_data_and_commands_from_central_reach_their_parts() {
    let mut rig = Rig::start(Layout::default()).await;
    connected(&rig).await;
    let kiosk = rig::kiosk_token(0);
    let (status, _) = rig
        .call(Method::GET, "/api/v1/kiosk/items", Some(&kiosk), None)
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no master data yet"
    );
    let data = rig.central.masterdata();
    rig.send(Channel::Data, data);
    assert!(
        rig.until(Duration::from_secs(10), || rig
            .shared()
            .replica
            .report()
            .version
            == 1)
            .await
    );
    let (status, items) = rig
        .call(Method::GET, "/api/v1/kiosk/items", Some(&kiosk), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{items}");
    assert!(!items["items"].as_array().unwrap().is_empty(), "{items}");
    // A command answers on the reply channel, naming it.
    rig.send(
        Channel::Cmd,
        Message::Command(Command {
            id: "c-1".into(),
            name: "submission.status".into(),
            args: json!({ "nonsense": true }),
        }),
    );
    let reply = loop {
        let (channel, env, _) = rig.next().await;
        if let (Channel::Reply, Message::Reply(r)) = (channel, env.message) {
            break r;
        }
    };
    assert_eq!(reply.id, "c-1");
    assert!(!reply.ok, "bad arguments are refused: {reply:?}");
    // A command on the data channel is misplaced.
    rig.send(
        Channel::Data,
        Message::Command(Command {
            id: "c-2".into(),
            name: "submission.status".into(),
            args: json!({}),
        }),
    );
    let wrong = || {
        rig.shared()
            .metrics
            .downlink_refused
            .get_or_create(&gateway::metrics::ReasonLabel {
                reason: "wrong_kind".into(),
            })
            .get()
    };
    assert!(rig.until(Duration::from_secs(5), || wrong() == 1).await);
    rig.stop().await;
}
