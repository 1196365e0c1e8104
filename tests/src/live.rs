//! A live video viewer on a WebSocket (the gateway's camera wall or central's shares), for
//! tests and benchmarks that count what arrives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// What a viewer has received so far.
#[derive(Default)]
pub struct Received {
    /// Binary messages: init segments and fragments.
    pub binary: AtomicU64,
    pub bytes: AtomicU64,
    /// Track descriptions (JSON), in order.
    pub texts: Mutex<Vec<serde_json::Value>>,
    /// When the first binary message after a track arrived (the first decodable picture).
    pub first_fragment: Mutex<Option<Instant>>,
    /// Set once the server closed the stream.
    pub closed: Mutex<Option<Instant>>,
    pub tracks: AtomicUsize,
    /// Each fragment's decode time (its `tfdt`, 90 kHz) and when it arrived.
    pub arrivals: Mutex<Vec<(u64, Instant)>>,
}

/// The decode time of a fragment (`moof` … `tfdt`), if it is one.
pub fn tfdt(fragment: &[u8]) -> Option<u64> {
    let at = fragment.windows(4).take(200).position(|w| w == b"tfdt")? + 4;
    let version = *fragment.get(at)?;
    let v = fragment.get(at + 4..)?;
    if version == 1 {
        Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
    } else {
        Some(u64::from(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
    }
}

impl Received {
    pub fn binary(&self) -> u64 {
        self.binary.load(Ordering::Relaxed)
    }
    pub fn texts(&self) -> Vec<serde_json::Value> {
        self.texts.lock().map(|t| t.clone()).unwrap_or_default()
    }
    pub fn closed_at(&self) -> Option<Instant> {
        *self.closed.lock().ok()?
    }
}

/// A viewer reading `url` in the background until the server closes it or the handle drops.
pub struct Viewer {
    pub received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Viewer {
    /// Connects; fails when the server refuses the WebSocket (its HTTP status is in the error).
    pub async fn connect(url: &str) -> crate::Result<Self> {
        Self::connect_with(request(url, None)?, None).await
    }

    /// Connects with `Authorization: Bearer <token>` (a gateway's camera wall, as a video
    /// terminal's program would).
    pub async fn connect_as(url: &str, token: &str) -> crate::Result<Self> {
        Self::connect_with(request(url, Some(token))?, None).await
    }

    /// Connects over `wss://` trusting the CA in `ca_file`.
    pub async fn connect_tls(url: &str, ca_file: &std::path::Path) -> crate::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for c in firmware_config::runtime::mqtt::read_certs(ca_file)? {
            roots.add(c)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::connect_with(
            request(url, None)?,
            Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))),
        )
        .await
    }

    async fn connect_with(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> crate::Result<Self> {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
                .await?;
        let received = Arc::new(Received::default());
        let r = received.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        if let Ok(v) = serde_json::from_str(&t) {
                            if let Ok(mut texts) = r.texts.lock() {
                                texts.push(v);
                            }
                        }
                        r.tracks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Binary(b)) => {
                        // The first binary after a track is its init segment; the next is
                        // the first picture.
                        let n = r.binary.fetch_add(1, Ordering::Relaxed) + 1;
                        if let (Some(t), Ok(mut a)) = (tfdt(&b), r.arrivals.lock()) {
                            a.push((t, Instant::now()));
                        }
                        r.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if n == 2 {
                            if let Ok(mut f) = r.first_fragment.lock() {
                                f.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if let Ok(mut c) = r.closed.lock() {
                *c = Some(Instant::now());
            }
        });
        Ok(Self { received, task })
    }
}

/// A WebSocket request for `url`, with `Authorization: Bearer <token>` when given.
pub fn request(
    url: &str,
    token: Option<&str>,
) -> crate::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut r = url.into_client_request()?;
    if let Some(t) = token {
        r.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(r)
}
