//! Configuration bundles on the rig, in paused time: applied live, kept once central's ack of
//! `config.applied` confirms them, rolled back when it never comes.

mod rig;

use std::time::Duration;

use firmware_config::topics::Channel;
use firmware_config::wire::{Command, Event, Message};
use rig::{Layout, Rig};
use serde_json::json;

const CONFIRM_WITHIN: Duration = Duration::from_secs(300);

/// The rig's config with one more kiosk, `kiosk-new`.
fn with_new_kiosk(rig: &Rig) -> String {
    let token = rig.dir.path().join("kiosk-new.token");
    std::fs::write(&token, rig::kiosk_token(99)).unwrap();
    format!(
        "{}[[terminals]]\nid = \"kiosk-new\"\nname = \"New kiosk\"\nkind = \"kiosk\"\n\
         health = {{ mode = \"heartbeat\", interval = \"1h\" }}\ntoken = {{ file = \"{}\" }}\n",
        rig.config_text,
        token.display()
    )
}

fn send_bundle(rig: &mut Rig, id: &str, version: u64, toml: String) {
    let bundle = rig.central.bundle(version, toml);
    rig.send(
        Channel::Cmd,
        Message::Command(Command {
            id: id.into(),
            name: "config.bundle".into(),
            args: json!({ "bundle": bundle }),
        }),
    );
}

/// The gateway's reply to command `id`, and the batches it sent meanwhile (not acked).
async fn reply(
    rig: &Rig,
    id: &str,
) -> (firmware_config::wire::CommandReply, Vec<(u64, Vec<Event>)>) {
    let mut batches = Vec::new();
    loop {
        let (channel, env, _) = rig.next().await;
        match (channel, env.message) {
            (Channel::Reply, Message::Reply(r)) if r.id == id => return (r, batches),
            (Channel::Events, Message::Events(b)) => batches.push((env.seq, b.events)),
            _ => {}
        }
    }
}

/// Waits for the batch carrying an event of `kind`; returns it (not acked).
async fn batch_with(rig: &Rig, kind: &str, seen: Vec<(u64, Vec<Event>)>) -> (u64, Vec<Event>) {
    if let Some(b) = seen
        .into_iter()
        .find(|(_, events)| events.iter().any(|e| e.kind == kind))
    {
        return b;
    }
    loop {
        let (batch, events) = rig.next_batch().await;
        if events.iter().any(|e| e.kind == kind) {
            return (batch, events);
        }
    }
}

fn version(rig: &Rig) -> u64 {
    rig.shared().bundles.versions().gateway
}

fn has_new_kiosk(rig: &Rig) -> bool {
    rig.shared()
        .config()
        .terminals
        .iter()
        .any(|t| t.id == "kiosk-new")
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_bundle_stays_and_one_central_never_confirms_goes_back_after_its_time() {
    let mut rig = Rig::start(Layout {
        kiosks: 0,
        bundles: Some("5m"),
        ..Layout::default()
    })
    .await;
    // Version 1 adds a kiosk; central acks its `config.applied`: confirmed.
    let toml = with_new_kiosk(&rig);
    send_bundle(&mut rig, "b-1", 1, toml);
    let (r, seen) = reply(&rig, "b-1").await;
    assert!(r.ok, "{r:?}");
    assert!(has_new_kiosk(&rig), "applied live");
    let (batch, events) = batch_with(&rig, "config.applied", seen).await;
    rig.ack(batch, &events);
    rig.pass(CONFIRM_WITHIN + Duration::from_secs(5)).await;
    assert_eq!(version(&rig), 1);
    assert!(has_new_kiosk(&rig), "confirmed: kept");

    // Version 2 takes the kiosk away; its `config.applied` never reaches central.
    let toml = rig.config_text.clone();
    send_bundle(&mut rig, "b-2", 2, toml);
    let (r, seen) = reply(&rig, "b-2").await;
    assert!(r.ok, "{r:?}");
    assert!(!has_new_kiosk(&rig));
    let (_, events) = batch_with(&rig, "config.applied", seen).await;
    let applied = events
        .iter()
        .find(|e| e.kind == "config.applied")
        .map(|e| e.seq)
        .unwrap();
    rig.pass(CONFIRM_WITHIN - Duration::from_secs(10)).await;
    assert_eq!(version(&rig), 2, "still within its time");
    rig.pass(Duration::from_secs(15)).await;
    assert!(
        rig.until(Duration::from_secs(5), || version(&rig) == 1)
            .await,
        "rolled back to the last good version"
    );
    assert!(
        has_new_kiosk(&rig),
        "the last good config is in force again"
    );
    // And says so, in an alert of its own.
    let mut rolled_back = None;
    while rolled_back.is_none() {
        let (_, events) = rig.next_batch().await;
        rolled_back = events
            .into_iter()
            .find(|e| e.kind == "config.rolled_back" && e.seq > applied);
    }
    let payload: serde_json::Value =
        serde_json::from_str(rolled_back.unwrap().payload.get()).unwrap();
    assert_eq!(payload["version"], 2);
    assert_eq!(payload["back_to"], 1);
    // A replay of version 2 is refused: a version once tried is used up.
    let toml = rig.config_text.clone();
    send_bundle(&mut rig, "b-2-again", 2, toml);
    let (r, _) = reply(&rig, "b-2-again").await;
    assert!(!r.ok, "{r:?}");
    rig.stop().await;
}
