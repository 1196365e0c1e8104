//! Notices out: what must reach a person (a case step the resident follows, a supervisor's
//! 督办, a deadline near, an escalated alert) leaves as signed JSON to the deployment's webhook.
//!
//! A notice is stored before anything is sent (state table `notices`, shared by replicas), so a
//! restart loses none. Pending notices are also listed by when they are due (`notices_due`), so
//! that the worker looks only at those, not at every notice of the week. A worker on each
//! replica claims a due notice by compare-and-set for a short while, posts it, and marks it sent on a 2xx; otherwise it waits `retry_after`, doubled
//! each time (at most 10 min), until `max_attempts`, when the notice is kept as `failed` and
//! shown (`GET /api/v1/notices?state=failed`). Delivery is at least once: a replica that dies
//! between the post and the mark leaves it to be sent again, so receivers deduplicate by `id`.
//!
//! Each post carries `X-GridEdge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` with the webhook's secret, so a receiver can refuse forged and replayed
//! notices.
//!
//! With `[notify.sms]`, the notices a person should read on their phone (see `sms.rs`) are
//! kept a second time on the `sms` channel and go to the SMS provider, retried and shown the
//! same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::central::Notify as NotifyConfig;
use firmware_config::runtime::clock::Clock;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::state::Table;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub id: String,
    /// `case.status`, `case.supervised`, `case.reminder`, `alert.escalated`.
    pub kind: String,
    /// `webhook`, or `sms` (then `data` is the text message).
    #[serde(default = "webhook")]
    pub channel: String,
    pub data: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_at: OffsetDateTime,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// The replica sending it now, and until when its claim holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
}

fn webhook() -> String {
    "webhook".to_owned()
}

/// Longest a claim holds: a post times out well before.
const CLAIM: time::Duration = time::Duration::seconds(30);
const POST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Sent notices are kept this long (to look up), then dropped.
const KEEP_SENT: time::Duration = time::Duration::days(7);

/// How often the whole table is read: sent notices past `KEEP_SENT` dropped, and a pending
/// notice missing from the due list (its process stopped between the two writes) listed.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

pub struct Notifier {
    table: Arc<dyn Table>,
    /// Pending notices by when they are due: `<next_at, 20 digits of ns>/<id>` → nothing.
    due: Arc<dyn Table>,
    clock: Clock,
    config: NotifyConfig,
    replica: String,
    next: AtomicU64,
    wake: tokio::sync::Notify,
    metrics: Arc<crate::metrics::Metrics>,
    /// Whom a text goes to (the grid staff's duty phones).
    directory: Option<Arc<crate::masterdata::MasterData>>,
}

impl Notifier {
    pub fn open(
        state: &dyn crate::state::StateStore,
        clock: Clock,
        config: NotifyConfig,
        replica: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, crate::state::StateError> {
        Ok(Self {
            table: state.table("notices")?,
            due: state.table("notices_due")?,
            clock,
            config,
            replica,
            next: AtomicU64::new(u64::from(rand::random::<u32>()) << 32),
            wake: tokio::sync::Notify::new(),
            metrics,
            directory: None,
        })
    }

    /// Finds the duty phones of assignees in `masterdata`.
    pub fn with_directory(mut self, masterdata: Arc<crate::masterdata::MasterData>) -> Self {
        self.directory = Some(masterdata);
        self
    }

    /// Keeps a notice to send: to the webhook, and as a text to whom it concerns (nothing
    /// where there is nowhere to send it).
    pub fn notify(&self, kind: &str, data: Value) {
        if let Some(cfg) = &self.config.sms {
            let current = self.directory.as_ref().and_then(|m| m.current());
            let directory = current.as_ref().map(|v| &v.dataset);
            if let Some(m) = crate::sms::message(cfg, kind, &data, directory) {
                match serde_json::to_value(&m) {
                    Ok(text) => self.keep(kind, "sms", text),
                    Err(e) => tracing::error!(kind, error = %e, "cannot keep a text"),
                }
            }
        }
        if self.config.webhook.is_some() {
            self.keep(kind, "webhook", data);
        }
    }

    fn keep(&self, kind: &str, channel: &str, data: Value) {
        let now = self.clock.now_utc();
        // Time first, so the table lists notices in order; a counter keeps two apart.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:020}-{n:016x}", now.unix_timestamp_nanos());
        let notice = Notice {
            id: id.clone(),
            kind: kind.to_owned(),
            channel: channel.to_owned(),
            data,
            created: now,
            state: "pending".into(),
            attempts: 0,
            next_at: now,
            last_error: None,
            sent_at: None,
            claimed_by: None,
        };
        let stored = serde_json::to_vec(&notice)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                self.table
                    .insert(id.as_bytes(), v)
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| self.list_due(&notice).map_err(|e| e.to_string()))
            .and_then(|()| self.table.flush().map_err(|e| e.to_string()))
            .and_then(|()| self.due.flush().map_err(|e| e.to_string()));
        match stored {
            Ok(()) => self.wake.notify_one(),
            Err(e) => tracing::error!(kind, error = %e, "cannot keep a notice"),
        }
    }

    fn due_key(n: &Notice) -> Vec<u8> {
        format!("{:020}/{}", n.next_at.unix_timestamp_nanos().max(0), n.id).into_bytes()
    }

    fn list_due(&self, n: &Notice) -> Result<(), crate::state::StateError> {
        self.due.insert(&Self::due_key(n), Vec::new())
    }

    /// Notices newest first, of one state or all.
    pub fn list(&self, state: Option<&str>, limit: usize) -> Vec<Notice> {
        self.table
            .scan_rev(b"")
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<Notice>(&v).ok())
            .filter(|n| state.is_none_or(|s| n.state == s))
            .take(limit)
            .collect()
    }

    /// Sends due notices until `token` is cancelled.
    pub async fn run(self: Arc<Self>, token: tokio_util::sync::CancellationToken) {
        if self.config.webhook.is_none() && self.config.sms.is_none() {
            return;
        }
        let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "notices: cannot make an HTTP client");
                return;
            }
        };
        let mut swept: Option<std::time::Instant> = None;
        loop {
            if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                swept = Some(std::time::Instant::now());
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.sweep()).await;
            }
            let due = {
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.claim_due())
                    .await
                    .unwrap_or_default()
            };
            for (held, notice) in due {
                let outcome = match (
                    notice.channel.as_str(),
                    &self.config.webhook,
                    &self.config.sms,
                ) {
                    ("sms", _, Some(sms)) => self.text(&client, sms, &notice).await,
                    ("webhook", Some(webhook), _) => self.post(&client, webhook, &notice).await,
                    (channel, ..) => Err(format!("no {channel} is configured")),
                };
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.settle(held, notice, outcome)).await;
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Reads every notice: drops those sent more than `KEEP_SENT` ago, so the table does not
    /// grow with every notice ever sent, and lists any pending one the due list lacks. Blocking.
    fn sweep(&self) {
        let now = self.clock.now_utc();
        let (mut dropped, mut listed) = (0, 0);
        for (key, raw) in self.table.scan(b"").filter_map(Result::ok) {
            let Ok(n) = serde_json::from_slice::<Notice>(&raw) else {
                continue;
            };
            if n.state == "sent" && n.sent_at.is_some_and(|t| now - t > KEEP_SENT) {
                dropped += usize::from(self.table.remove(&key).is_ok());
            } else if n.state == "pending"
                && !matches!(self.due.get(&Self::due_key(&n)), Ok(Some(_)))
                && self.list_due(&n).is_ok()
            {
                listed += 1;
            }
        }
        if dropped + listed > 0 {
            tracing::info!(dropped, listed, "notices swept");
        }
    }

    /// Pending notices whose time has come, each claimed by this replica (by compare-and-set:
    /// another replica's claim wins), read from the due list in time order. An entry that no
    /// longer matches its notice (sent, or due at another time by now) is dropped. Blocking.
    fn claim_due(&self) -> Vec<(Vec<u8>, Notice)> {
        let now = self.clock.now_utc();
        let now_key = format!("{:020}", now.unix_timestamp_nanos().max(0));
        let mut out = Vec::new();
        let mut pending = 0;
        for (due_key, _) in self.due.scan(b"").filter_map(Result::ok) {
            pending += 1;
            if out.len() >= 32 || due_key.get(..20).is_none_or(|t| t > now_key.as_bytes()) {
                continue;
            }
            let id = due_key.get(21..).unwrap_or_default();
            let held = self.table.get(id).ok().flatten();
            let notice = held
                .as_deref()
                .and_then(|raw| serde_json::from_slice::<Notice>(raw).ok());
            let Some((raw, mut n)) = held.zip(notice) else {
                let _ = self.due.remove(&due_key);
                pending -= 1;
                continue;
            };
            if n.state != "pending" || Self::due_key(&n) != due_key {
                // Stale: another replica claimed or settled it meanwhile.
                let _ = self.due.remove(&due_key);
                pending -= 1;
                continue;
            }
            n.claimed_by = Some(self.replica.clone());
            // The claim pushes its time on: another replica passes it by meanwhile.
            n.next_at = now + CLAIM;
            let Ok(v) = serde_json::to_vec(&n) else {
                continue;
            };
            if matches!(self.table.replace_if(id, &raw, v.clone()), Ok(true)) {
                // Listed at the claim's end first: should this replica die while sending, the
                // notice is due again then.
                let _ = self.list_due(&n);
                let _ = self.due.remove(&due_key);
                out.push((v, n));
            }
        }
        self.metrics.notices_pending.set(pending);
        out
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        webhook: &firmware_config::config::central::Webhook,
        n: &Notice,
    ) -> Result<(), String> {
        let secret = webhook.secret.read().map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&json!({
            "id": n.id, "kind": n.kind, "created": n.created.unix_timestamp(), "data": n.data,
        }))
        .map_err(|e| e.to_string())?;
        let t = self.clock.now_utc().unix_timestamp();
        let r = client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("x-gridedge-signature", signature(&secret, t, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", r.status()))
        }
    }

    /// Sends a text through the SMS provider.
    async fn text(
        &self,
        client: &reqwest::Client,
        cfg: &firmware_config::config::central::Sms,
        n: &Notice,
    ) -> Result<(), String> {
        let secret = cfg.secret.read().map_err(|e| e.to_string())?;
        let m: crate::sms::Message =
            serde_json::from_value(n.data.clone()).map_err(|e| e.to_string())?;
        // A nonce per attempt: providers refuse one seen before.
        let nonce = format!("{}-{}", n.id, n.attempts);
        let r = crate::sms::request(cfg, &secret, &m, self.clock.now_utc(), &nonce);
        let mut req = client.post(&r.url).body(r.body);
        for (k, v) in r.headers {
            req = req.header(k, v);
        }
        let answer = req.send().await.map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| e.to_string())?;
        crate::sms::taken(cfg.provider, status, &body)
    }

    /// Marks a claimed notice sent, or due again later, or failed. Blocking.
    fn settle(&self, held: Vec<u8>, mut n: Notice, outcome: Result<(), String>) {
        let now = self.clock.now_utc();
        let claimed = Self::due_key(&n);
        n.attempts += 1;
        n.claimed_by = None;
        match outcome {
            Ok(()) => {
                n.state = "sent".into();
                n.sent_at = Some(now);
                n.last_error = None;
                self.metrics.notices.get_or_create(&label("sent")).inc();
            }
            Err(e) => {
                tracing::warn!(id = %n.id, kind = %n.kind, attempts = n.attempts, error = %e, "a notice was not taken");
                n.last_error = Some(e);
                if n.attempts >= self.config.max_attempts {
                    n.state = "failed".into();
                    self.metrics.notices.get_or_create(&label("failed")).inc();
                } else {
                    let wait = self
                        .config
                        .retry_after
                        .saturating_mul(1 << (n.attempts - 1).min(16))
                        .min(MAX_WAIT);
                    n.next_at = now + wait;
                    self.metrics.notices.get_or_create(&label("retried")).inc();
                }
            }
        }
        let v = match serde_json::to_vec(&n) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(id = %n.id, error = %e, "cannot encode a notice");
                return;
            }
        };
        match self.table.replace_if(n.id.as_bytes(), &held, v) {
            Ok(true) => {
                if n.state == "pending" {
                    let _ = self.list_due(&n);
                }
                let _ = self.due.remove(&claimed);
                let _ = self.table.flush();
                let _ = self.due.flush();
            }
            Ok(false) => tracing::warn!(id = %n.id, "a notice changed while it was sent"),
            Err(e) => tracing::error!(id = %n.id, error = %e, "cannot keep a notice's outcome"),
        }
    }
}

fn label(outcome: &str) -> crate::metrics::OutcomeLabel {
    crate::metrics::OutcomeLabel {
        outcome: outcome.to_owned(),
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hmac_sha256_hex(secret.as_bytes(), &signed))
}

fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(state: &crate::state::MemoryState) -> Notifier {
        let config = firmware_config::config::parse_elsewhere(
            firmware_config::examples::CENTRAL,
            std::path::Path::new("/"),
        )
        .unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new(&config));
        Notifier::open(
            state,
            Clock::system(),
            Default::default(),
            "r1".into(),
            metrics,
        )
        .unwrap()
    }

    #[test]
    fn the_worker_reads_the_due_list_and_a_sweep_mends_it() {
        let state = crate::state::MemoryState::default();
        let n = notifier(&state);
        n.keep("case.status", "webhook", json!({"receipt": "a"}));
        n.keep("case.status", "webhook", json!({"receipt": "b"}));
        let claimed = n.claim_due();
        assert_eq!(claimed.len(), 2);
        assert_eq!(n.due.len(), 2, "each listed again at its claim's end");
        assert!(n.claim_due().is_empty(), "claimed: not due again yet");

        let mut claimed = claimed.into_iter();
        let (held, sent) = claimed.next().unwrap();
        n.settle(held, sent.clone(), Ok(()));
        let (held, failed) = claimed.next().unwrap();
        n.settle(held, failed.clone(), Err("503".into()));
        assert_eq!(n.due.len(), 1, "the sent one is off the list");
        let retry = n.list(Some("pending"), 10);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].id, failed.id);
        assert_eq!(
            n.due.scan(b"").next().unwrap().unwrap().0,
            Notifier::due_key(&retry[0]),
            "listed at its retry's time"
        );

        // An entry for a notice sent meanwhile (another replica's) is dropped, not sent.
        let stale = format!("{:020}/{}", 1, sent.id).into_bytes();
        n.due.insert(&stale, Vec::new()).unwrap();
        assert!(n.claim_due().is_empty());
        assert_eq!(n.due.len(), 1);

        // A pending notice the list lost (a stop between the two writes) is listed again.
        n.due.remove(&Notifier::due_key(&retry[0])).unwrap();
        n.sweep();
        assert_eq!(n.due.len(), 1);
    }

    #[test]
    fn hmac_is_rfc_4231s() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_the_time_and_the_body() {
        let a = signature("s3cret", 1_800_000_000, b"{\"id\":1}");
        assert!(a.starts_with("t=1800000000,v1="));
        assert_eq!(a.len(), "t=1800000000,v1=".len() + 64);
        assert_ne!(a, signature("s3cret", 1_800_000_001, b"{\"id\":1}"));
        assert_ne!(a, signature("s3cret", 1_800_000_000, b"{\"id\":2}"));
        assert_ne!(a, signature("other", 1_800_000_000, b"{\"id\":1}"));
    }
}
