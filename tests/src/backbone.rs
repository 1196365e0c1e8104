//! Helpers for backbone tests: a poster that keeps handing events to a gateway and remembers
//! what the gateway acknowledged, and the check that central holds exactly those.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::services::{central_events, source_token};
use crate::{eventually, Result};

pub const CLASSES: [&str; 4] = ["alert", "submission", "health", "telemetry"];

/// `n` events numbered from `start`, classes in turn, each about 200 bytes of JSON.
pub fn batch(start: u64, n: u64) -> Value {
    Value::Array(
        (start..start + n)
            .map(|i| {
                json!({"class": CLASSES[(i % 4) as usize], "kind": "test.event",
                       "payload": {"n": i, "site": "hongxing", "note": "网格 test event", "pad": "x".repeat(80)}})
            })
            .collect(),
    )
}

/// Accepted events: sequence number → the event's own number `n`.
pub type Accepted = BTreeMap<u64, u64>;

/// Posts batches to a gateway in a loop until stopped; failures (the gateway is down) are
/// retried after a pause and are not counted as accepted.
pub struct Poster {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Accepted>>,
    task: tokio::task::JoinHandle<()>,
    pub failures: Arc<AtomicU64>,
}

impl Poster {
    pub fn start(addr: SocketAddr, gateway: &str, per_request: u64) -> Self {
        Self::paced(addr, gateway, per_request, Duration::ZERO)
    }

    /// Like [`Self::start`], waiting `pause` after each request (a steady trickle rather than
    /// all the gateway takes).
    pub fn paced(addr: SocketAddr, gateway: &str, per_request: u64, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Accepted::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let (s, a, f) = (stop.clone(), accepted.clone(), failures.clone());
        let token = source_token(gateway);
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap_or_default();
            let mut next = 0u64;
            while !s.load(Ordering::SeqCst) {
                let body = batch(next, per_request);
                let sent = client
                    .post(format!("http://{addr}/api/v1/events"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let seqs = match sent {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                    _ => None,
                };
                match seqs.as_ref().and_then(|v| v["seqs"].as_array()) {
                    Some(seqs) => {
                        let mut acc = a.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (i, seq) in seqs.iter().enumerate() {
                            if let Some(seq) = seq.as_u64() {
                                acc.insert(seq, next + i as u64);
                            }
                        }
                    }
                    None => {
                        f.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                // Numbers are never reused, accepted or not.
                next += per_request;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        });
        Self {
            stop,
            accepted,
            task,
            failures,
        }
    }

    pub fn accepted_so_far(&self) -> usize {
        self.accepted.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Stops posting and returns everything the gateway acknowledged.
    pub async fn stop(self) -> Accepted {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acc = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        acc.clone()
    }
}

/// Waits until central holds at least every accepted event, then checks that each stored
/// sequence number appears once and every accepted event is there with its own payload.
pub async fn assert_central_has(
    central_http: SocketAddr,
    gateway: &str,
    accepted: &Accepted,
    timeout: Duration,
) -> Result<()> {
    let want: Vec<u64> = accepted.keys().copied().collect();
    let events = eventually(
        &format!("{} accepted events of {gateway} at central", want.len()),
        timeout,
        || async {
            let events = central_events(central_http, gateway).await.ok()?;
            let have: std::collections::HashSet<u64> =
                events.iter().filter_map(|e| e["seq"].as_u64()).collect();
            want.iter().all(|s| have.contains(s)).then_some(events)
        },
    )
    .await?;
    let mut seen = BTreeMap::new();
    for e in &events {
        let seq = e["seq"].as_u64().unwrap_or(0);
        let n = e["payload"]["n"].as_u64().unwrap_or(u64::MAX);
        anyhow::ensure!(seen.insert(seq, n).is_none(), "seq {seq} stored twice");
    }
    for (seq, n) in accepted {
        anyhow::ensure!(
            seen.get(seq) == Some(n),
            "seq {seq}: central has {:?}, the gateway accepted n={n}",
            seen.get(seq)
        );
    }
    Ok(())
}

/// An encoded `events` message from `gateway` holding one alert with sequence number
/// `event_seq`, signed by `signer` when given: material for spoofing tests.
pub fn forged_batch(
    gateway: &str,
    envelope_seq: u64,
    event_seq: u64,
    signer: Option<&firmware_config::runtime::signing::Signer>,
) -> Result<Vec<u8>> {
    use firmware_config::wire::{Envelope, Event, EventBatch, EventClass, Message};
    let gateway = firmware_config::ids::GatewayId::new(gateway)?;
    let env = Envelope::new(
        gateway.clone(),
        envelope_seq,
        Message::Events(EventBatch {
            events: vec![Event {
                seq: event_seq,
                class: EventClass::Alert,
                kind: "forged".into(),
                time: time::OffsetDateTime::now_utc(),
                payload: serde_json::value::RawValue::from_string("{}".into())?,
                source: None,
            }],
        }),
    );
    let channel = firmware_config::topics::Channel::Events;
    Ok(env.encode_signed(|p| signer.map(|s| s.sign(channel, &env, p)))?)
}
