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

/// What the sender was told of one event it handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the gateway answered 200 with its sequence number (the peer: PUBACK).
    Acked,
    /// Refused with an answer, or never taken (no connection): nothing should be stored.
    Refused,
    /// Handed over but never answered (the receiver died or the line broke mid-request): it
    /// may or may not be stored.
    Unanswered,
}

/// What became of every event number a sender handed out, numbers from 0 in order.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    outcomes: Vec<Option<Outcome>>,
    /// Events refused, by reason (`503`, `507`, `no connection`, …).
    pub refused: BTreeMap<String, u64>,
}

impl Ledger {
    /// Records `outcome` for events `first..first + n`; `reason` counts refusals.
    pub fn record(&mut self, first: u64, n: u64, outcome: Outcome, reason: &str) {
        let end = (first + n) as usize;
        if self.outcomes.len() < end {
            self.outcomes.resize(end, None);
        }
        for o in &mut self.outcomes[first as usize..end] {
            *o = Some(outcome);
        }
        if outcome == Outcome::Refused {
            *self.refused.entry(reason.to_owned()).or_default() += n;
        }
    }

    /// What the sender was told of event `n`; `None` when it was never sent.
    pub fn outcome(&self, n: u64) -> Option<Outcome> {
        self.outcomes
            .get(usize::try_from(n).ok()?)
            .copied()
            .flatten()
    }

    /// How many events had `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| **o == Some(outcome))
            .count() as u64
    }

    /// One past the highest event number handed out.
    pub fn len(&self) -> u64 {
        self.outcomes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// Posts batches to a gateway in a loop until stopped; failures (the gateway is down) are
/// retried after a pause with the next numbers and are not counted as accepted.
pub struct Poster {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Accepted>>,
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
    pub failures: Arc<AtomicU64>,
}

impl Poster {
    /// Posts `per_request` events at a time, as fast as the gateway answers.
    pub fn start(addr: SocketAddr, gateway: &str, per_request: u64) -> Self {
        Self::spawn(addr, gateway, per_request, None)
    }

    /// Posts `per_request` events at a time, `rate` events per second at most: a steady load
    /// that does not grow to fill what the gateway can take.
    pub fn start_paced(addr: SocketAddr, gateway: &str, per_request: u64, rate: f64) -> Self {
        let every = Duration::from_secs_f64(per_request as f64 / rate.max(1.0));
        Self::spawn(addr, gateway, per_request, Some(every))
    }

    fn spawn(addr: SocketAddr, gateway: &str, per_request: u64, every: Option<Duration>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Accepted::new()));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let failures = Arc::new(AtomicU64::new(0));
        let (s, a, l, f) = (
            stop.clone(),
            accepted.clone(),
            ledger.clone(),
            failures.clone(),
        );
        let token = source_token(gateway);
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap_or_default();
            let mut next = 0u64;
            let mut slot = tokio::time::Instant::now();
            while !s.load(Ordering::SeqCst) {
                if let Some(every) = every {
                    tokio::time::sleep_until(slot).await;
                    // After a stall, carry on at the pace instead of catching up in a burst.
                    slot = (slot + every).max(tokio::time::Instant::now() - Duration::from_secs(1));
                }
                let body = batch(next, per_request);
                let sent = client
                    .post(format!("http://{addr}/api/v1/events"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let (outcome, reason, seqs) = match sent {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) => (Outcome::Acked, String::new(), Some(v)),
                        Err(_) => (Outcome::Unanswered, String::new(), None),
                    },
                    Ok(r) => (Outcome::Refused, r.status().as_u16().to_string(), None),
                    Err(e) if e.is_connect() => (Outcome::Refused, "no connection".into(), None),
                    Err(_) => (Outcome::Unanswered, String::new(), None),
                };
                let seqs = seqs
                    .as_ref()
                    .and_then(|v| v["seqs"].as_array())
                    .filter(|seqs| seqs.len() as u64 == per_request);
                match seqs {
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
                    }
                }
                let outcome = match (outcome, seqs) {
                    // A 200 without the numbers is no acknowledgement.
                    (Outcome::Acked, None) => Outcome::Unanswered,
                    (o, _) => o,
                };
                l.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(next, per_request, outcome, &reason);
                if outcome != Outcome::Acked {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Numbers are never reused, accepted or not.
                next += per_request;
            }
        });
        Self {
            stop,
            accepted,
            ledger,
            task,
            failures,
        }
    }

    pub fn accepted_so_far(&self) -> usize {
        self.accepted.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// What became of each event number so far.
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops posting and returns everything the gateway acknowledged.
    pub async fn stop(self) -> Accepted {
        self.stop_with_ledger().await.0
    }

    /// Stops posting; returns everything the gateway acknowledged, and what became of each
    /// event number.
    pub async fn stop_with_ledger(self) -> (Accepted, Ledger) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acc = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let ledger = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (acc, ledger)
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

/// Checks that central's `stored` events (as its events API gives them) hold each sequence
/// number once and every one in `accepted`; returns the set stored.
pub fn assert_stored_once(
    stored: &[serde_json::Value],
    accepted: &Accepted,
) -> std::collections::BTreeSet<u64> {
    let seqs: Vec<u64> = stored.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), unique.len(), "stored twice");
    let missing: Vec<_> = accepted.keys().filter(|s| !unique.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    unique
}
