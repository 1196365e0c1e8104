//! `CameraSession`: one task per camera, keeping an RTSP session (retina) open, reading frames
//! with a timeout, and keeping the camera's health current.

use firmware_config::runtime::clock::Instant;
use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::gateway::{Camera, Transport as CamTransport};
use futures::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio_util::sync::CancellationToken;

use super::analysis::{Analysis, Decoders};
use super::annexb::Keyframes;
use super::decode::VideoCodec;
use super::{CameraState, Cameras};
use crate::uplink::Backoff;

/// Longest wait for an RTSP request (DESCRIBE, SETUP, PLAY).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before retrying a camera that refused the credentials: a wrong password is not fixed
/// by retrying every second, and some cameras lock accounts after repeated failures.
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(60);

/// Why a session ended.
enum Ended {
    Cancelled,
    Failed(CameraState, String),
}

pub struct CameraSession {
    camera: Camera,
    cameras: Cameras,
    group: Arc<SessionGroup>,
    analysis: Arc<Analysis>,
    /// Absent when FFmpeg could not start: the camera is then watched without pictures.
    decoders: Option<Decoders>,
    live: crate::video::Live,
}

impl CameraSession {
    pub fn new(
        camera: Camera,
        cameras: Cameras,
        analysis: Arc<Analysis>,
        decoders: Option<Decoders>,
        live: crate::video::Live,
    ) -> Self {
        Self {
            camera,
            cameras,
            group: Arc::new(SessionGroup::default()),
            analysis,
            decoders,
            live,
        }
    }

    pub async fn run(self, token: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut sessions = 0u64;
        loop {
            self.cameras
                .set_state(&self.camera.id, CameraState::Connecting, None);
            self.cameras.update(&self.camera.id, |h| h.attempts += 1);
            let ended = tokio::select! {
                _ = token.cancelled() => Ended::Cancelled,
                e = self.stream(&mut backoff, &mut sessions) => e,
            };
            self.live.stop();
            let (state, error) = match ended {
                Ended::Cancelled => break,
                Ended::Failed(state, error) => (state, error),
            };
            tracing::warn!(camera = %self.camera.id, state = state.as_str(), %error, "camera session ended");
            self.cameras.set_state(&self.camera.id, state, Some(error));
            let wait = if state == CameraState::Unauthorized {
                UNAUTHORIZED_RETRY
            } else {
                backoff.next_wait()
            };
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            // Some cameras allow few sessions: wait out our stale ones before opening another.
            let stale = self.group.stale_sessions();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.group.await_stale_sessions(&stale),
            )
            .await;
        }
        // Let a TEARDOWN of the last session go out before the gateway exits.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.group.await_teardown()).await;
        tracing::info!(camera = %self.camera.id, "camera session stopped");
    }

    async fn stream(&self, backoff: &mut Backoff, sessions: &mut u64) -> Ended {
        let cam = &self.camera;
        let creds = match &cam.credentials {
            None => None,
            Some(c) => match c.password.read() {
                Ok(password) => Some(Credentials {
                    username: c.username.clone(),
                    password,
                }),
                Err(e) => {
                    return Ended::Failed(
                        CameraState::Unauthorized,
                        format!("password unavailable: {e}"),
                    )
                }
            },
        };
        let url = match url::Url::parse(&cam.url) {
            Ok(u) => u,
            Err(e) => return Ended::Failed(CameraState::Unsupported, format!("bad URL: {e}")),
        };
        let opts = SessionOptions::default()
            .creds(creds)
            .session_group(self.group.clone())
            .user_agent(format!("GridEdge gateway {}", crate::VERSION));
        let mut session =
            match tokio::time::timeout(REQUEST_TIMEOUT, Session::describe(url, opts)).await {
                Err(_) => return Ended::Failed(CameraState::Offline, "DESCRIBE timed out".into()),
                Ok(Err(e)) => return failure(&e),
                Ok(Ok(s)) => s,
            };
        let Some(i) = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        else {
            return Ended::Failed(
                CameraState::Unsupported,
                "no H.264 or H.265 video stream".into(),
            );
        };
        let codec = session.streams()[i].encoding_name().to_owned();
        let video_codec = VideoCodec::from_encoding(&codec);
        let transport = match cam.transport {
            CamTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            CamTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            session.setup(
                i,
                SetupOptions::default()
                    .transport(transport)
                    // Annex B with parameter sets before each keyframe: every keyframe
                    // decodes on its own.
                    .frame_format(FrameFormat::SIMPLE),
            ),
        )
        .await
        {
            Err(_) => return Ended::Failed(CameraState::Offline, "SETUP timed out".into()),
            Ok(Err(e)) => return failure(&e),
            Ok(Ok(())) => {}
        }
        let playing =
            match tokio::time::timeout(REQUEST_TIMEOUT, session.play(PlayOptions::default())).await
            {
                Err(_) => return Ended::Failed(CameraState::Offline, "PLAY timed out".into()),
                Ok(Err(e)) => return failure(&e),
                Ok(Ok(p)) => p,
            };
        let mut demuxed = match playing.demuxed() {
            Ok(d) => d,
            Err(e) => return failure(&e),
        };
        self.cameras.update(&cam.id, |h| {
            h.codec = Some(codec.clone());
            h.reset_rates();
        });
        let mut streaming = false;
        let mut keyframes = Keyframes::default();
        loop {
            // retina has no read timeout of its own.
            let item = match tokio::time::timeout(cam.stall_timeout, demuxed.next()).await {
                Err(_) if streaming => {
                    return Ended::Failed(
                        CameraState::Stalled,
                        format!("no frame for {:?}", cam.stall_timeout),
                    )
                }
                Err(_) => return Ended::Failed(CameraState::Offline, "no frame after PLAY".into()),
                Ok(None) => return Ended::Failed(CameraState::Offline, "stream ended".into()),
                Ok(Some(Err(e))) => return failure(&e),
                Ok(Some(Ok(item))) => item,
            };
            let CodecItem::VideoFrame(frame) = item else {
                continue;
            };
            if !streaming || frame.has_new_parameters() {
                if let Some(ParametersRef::Video(v)) = demuxed.streams()[i].parameters() {
                    self.live
                        .set_parameters(v, video_codec == Some(VideoCodec::H265));
                    let (w, h) = v.pixel_dimensions();
                    self.cameras.update(&cam.id, |hl| {
                        hl.width = Some(w);
                        hl.height = Some(h);
                    });
                }
            }
            if !streaming {
                streaming = true;
                *sessions += 1;
                backoff.reset();
                let reconnect = *sessions > 1;
                self.cameras.update(&cam.id, |h| {
                    if reconnect {
                        h.reconnects += 1;
                    }
                });
                self.cameras
                    .set_state(&cam.id, CameraState::Streaming, None);
                self.analysis.session_started();
            }
            let now = Instant::now();
            // H.265 CRA keyframes are not flagged by retina; H.264 keyframes are (and carry
            // the parameter sets to remember).
            let flagged = frame.is_random_access_point();
            let key = match video_codec {
                Some(vc) if flagged || vc == VideoCodec::H265 => {
                    keyframes.inspect(vc, frame.data()) || flagged
                }
                _ => flagged,
            };
            let (len, ts, lost) = (
                frame.data().len(),
                frame.timestamp().elapsed_secs(),
                u64::from(frame.loss()),
            );
            self.cameras
                .update(&cam.id, |h| h.frame(now, len, ts, key, lost));
            let pts = frame.timestamp().elapsed();
            let data = frame.into_data();
            if let (Some(decoders), Some(vc)) = (&self.decoders, video_codec) {
                if let Some(want) = self.analysis.on_frame(now, key, len) {
                    // A copy only for the keyframes that are decoded (one every few seconds).
                    let keyframe = keyframes.self_contained(vc, data.clone());
                    decoders.submit(&self.analysis, vc, keyframe, want);
                }
            }
            self.live.frame(pts, key, data);
        }
    }
}

fn failure(e: &retina::Error) -> Ended {
    match e.status_code() {
        Some(401) | Some(403) => Ended::Failed(
            CameraState::Unauthorized,
            "the camera refused the credentials".into(),
        ),
        _ => Ended::Failed(
            CameraState::Offline,
            e.to_string().lines().next().unwrap_or_default().to_owned(),
        ),
    }
}
