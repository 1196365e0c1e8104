//! Simulated terminals: kiosks that send heartbeats, and a status page for the gateway's
//! probes that can be taken down and brought back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Result;

/// The token of terminal `id` in tests.
pub fn terminal_token(id: &str) -> String {
    format!("token-of-terminal-{id}")
}

/// A `[[terminals]]` table for `id` with `health` (an inline table). Its token is written to a
/// file in `dir`.
pub fn terminal_toml(dir: &Path, id: &str, kind: &str, health: &str) -> String {
    let file = dir.join(format!("terminal-{id}.token"));
    let _ = std::fs::write(&file, terminal_token(id));
    format!(
        "\n[[terminals]]\nid = \"{id}\"\nname = \"Terminal {id}\"\nkind = \"{kind}\"\n\
         health = {health}\ntoken = {{ file = \"{}\" }}\n",
        file.display()
    )
}

/// A gateway `id` on the broker at `broker_url` with one kiosk, `kiosk-a` (its token file in
/// `dir`), for residents' submissions.
pub async fn gateway_with_kiosk(
    id: &str,
    broker_url: &str,
    dir: &Path,
) -> Result<crate::services::TestGateway> {
    let kiosk = terminal_toml(
        dir,
        "kiosk-a",
        "kiosk",
        "{ mode = \"heartbeat\", interval = \"1h\" }",
    );
    crate::services::TestGateway::start_with(id, broker_url, None, &kiosk).await
}

/// Hands a resident's submission to the gateway's kiosk API as `kiosk-a`: its receipt.
pub async fn submit(gw: &crate::services::TestGateway, body: &Value) -> Result<String> {
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/kiosk/submissions"))
        .bearer_auth(terminal_token("kiosk-a"))
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "submission: {}", r.status());
    let v: Value = r.json().await?;
    v["receipt"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no receipt in {v}"))
}

/// A heartbeat body: all well, or with the printer failing.
pub fn heartbeat_body(printer_ok: bool) -> Value {
    json!({
        "app_version": "kiosk-app 3.2.1",
        "uptime_secs": 120,
        "peripherals": {
            "printer": { "ok": printer_ok, "detail": if printer_ok { "" } else { "paper out" } },
            "card_reader": { "ok": true },
        },
        "free_disk_bytes": 20_000_000_000u64,
        "temperature_c": 41.5,
    })
}

/// A terminal talking to its gateway.
#[derive(Clone)]
pub struct Kiosk {
    pub id: String,
    gateway: SocketAddr,
    client: reqwest::Client,
}

impl Kiosk {
    pub fn new(id: &str, gateway: SocketAddr) -> Self {
        Self {
            id: id.to_owned(),
            gateway,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends a heartbeat with `body` and this kiosk's token: (status, answer).
    pub async fn beat(&self, body: &Value) -> Result<(u16, Value)> {
        self.post_raw(Some(&terminal_token(&self.id)), serde_json::to_vec(body)?)
            .await
    }

    /// Sends any body with any token.
    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .post(format!(
                "http://{}/api/v1/terminals/heartbeat",
                self.gateway
            ))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let value = r.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// `GET /api/v1/terminals/config` with `if_none_match`: (status, ETag, body).
    pub async fn fetch_config(&self, if_none_match: Option<&str>) -> Result<(u16, String, String)> {
        let mut req = self
            .client
            .get(format!("http://{}/api/v1/terminals/config", self.gateway))
            .bearer_auth(terminal_token(&self.id));
        if let Some(tag) = if_none_match {
            req = req.header("if-none-match", tag);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok((status, etag, r.text().await?))
    }
}

/// A terminal's HTTP status page on 127.0.0.1: 200 while up, 503 while down.
pub struct StatusPage {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusPage {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let up = flag.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = conn.read(&mut buf).await;
                    let answer: &[u8] = if up {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown"
                    };
                    let _ = conn.write_all(answer).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Self { addr, up, task })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}/status", self.addr)
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}
