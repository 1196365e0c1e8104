//! Pushing a camera's live video to central's relay, on a connection the gateway opens (the
//! centre sits behind NAT). Central asks with a `video.upstream.start` command naming the
//! camera and the URL (with a one-time token); the push runs until central closes it, a
//! `video.upstream.stop` command, or the gateway stops.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use firmware_config::runtime::video_hub::{catch_up, next_piece, to_upstream, Hub, WsMessage};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a push was not started, or ended.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot push over TLS: this gateway has no [uplink.tls] to trust central with")]
    NoTls,
    #[error("cannot push video to {0:?}: not an http(s) or ws(s) URL")]
    NotAVideoUrl(String),
    #[error("connecting to central timed out")]
    ConnectTimeout,
    #[error("cannot connect to central: {0}")]
    Connect(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("central closed the push: {0}")]
    Closed(#[source] tokio_tungstenite::tungstenite::Error),
}

/// The pushes running now, per camera.
#[derive(Default)]
pub struct Upstreams {
    running: Mutex<HashMap<String, CancellationToken>>,
    /// For `https://` relays: trusts central's CA (from `[uplink.tls]`) and shows the
    /// gateway's certificate.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Upstreams {
    pub fn new(tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        Self {
            running: Mutex::default(),
            tls,
        }
    }

    /// Starts pushing `camera`'s `hub` to `url`, replacing a push of the same camera.
    pub fn start(
        &self,
        camera: &str,
        url: String,
        hub: Hub,
        parent: &CancellationToken,
    ) -> Result<(), UpstreamError> {
        let url = if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            url
        };
        let tls = if url.starts_with("ws://") {
            None
        } else if url.starts_with("wss://") {
            Some(self.tls.clone().ok_or(UpstreamError::NoTls)?)
        } else {
            return Err(UpstreamError::NotAVideoUrl(url));
        };
        let token = parent.child_token();
        if let Some(old) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(camera.to_owned(), token.clone())
        {
            old.cancel();
        }
        let camera = camera.to_owned();
        tokio::spawn(async move {
            match push(&url, tls, hub, token).await {
                Ok(()) => tracing::info!(%camera, "video push to central ended"),
                Err(e) => tracing::warn!(%camera, error = %e, "video push to central failed"),
            }
        });
        Ok(())
    }

    pub fn stop(&self, camera: &str) -> bool {
        match self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(camera)
        {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

async fn push(
    url: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    hub: Hub,
    token: CancellationToken,
) -> Result<(), UpstreamError> {
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    tracing::info!("pushing live video to central");
    let joined = hub.join();
    let first = catch_up(&joined);
    let mut rx = joined.rx;
    let mut skipping = first.is_empty();
    let to_message = |m: WsMessage| match m {
        WsMessage::Text(t) => Message::Text(t.into()),
        WsMessage::Binary(b) => Message::Binary(b),
    };
    for piece in &first {
        for m in to_upstream(piece) {
            ws.send(to_message(m))
                .await
                .map_err(UpstreamError::Closed)?;
        }
    }
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            piece = next_piece(&mut rx, &mut skipping) => {
                let Some(piece) = piece else { break };
                for m in to_upstream(&piece) {
                    ws.send(to_message(m)).await.map_err(UpstreamError::Closed)?;
                }
            }
            msg = ws.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
