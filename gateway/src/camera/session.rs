//! `CameraSession`: one task per camera, keeping a stream open from its [`CameraSource`]
//! (RTSP in production), reading frames with a timeout, and keeping the camera's health
//! current.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::gateway::Camera;
use firmware_config::runtime::clock::Instant;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::analysis::{Analysis, Decoders};
use super::annexb::Keyframes;
use super::decode::VideoCodec;
use super::source::{CameraLink, CameraSource, Failure};
use super::{CameraState, Cameras};
use crate::uplink::Backoff;

/// Wait before retrying a camera that refused the credentials: a wrong password is not fixed
/// by retrying every second, and some cameras lock accounts after repeated failures.
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(60);

/// Why a session ended.
enum Ended {
    Cancelled,
    Failed(Failure),
}

pub struct CameraSession {
    camera: Camera,
    cameras: Cameras,
    link: Box<dyn CameraLink>,
    analysis: Arc<Analysis>,
    /// Absent when FFmpeg could not start: the camera is then watched without pictures.
    decoders: Option<Decoders>,
    live: crate::video::Live,
}

impl CameraSession {
    pub fn new(
        camera: Camera,
        source: &dyn CameraSource,
        cameras: Cameras,
        analysis: Arc<Analysis>,
        decoders: Option<Decoders>,
        live: crate::video::Live,
    ) -> Self {
        Self {
            link: source.link(&camera),
            camera,
            cameras,
            analysis,
            decoders,
            live,
        }
    }

    pub async fn run(mut self, token: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut sessions = 0u64;
        loop {
            self.cameras
                .set_state(&self.camera.id, CameraState::Connecting, None);
            self.cameras.update(&self.camera.id, |h| h.attempts += 1);
            let ended = tokio::select! {
                _ = token.cancelled() => Ended::Cancelled,
                e = self.stream(&mut backoff, &mut sessions) => Ended::Failed(e),
            };
            self.live.stop();
            let Failure { state, reason } = match ended {
                Ended::Cancelled => break,
                Ended::Failed(f) => f,
            };
            tracing::warn!(camera = %self.camera.id, state = state.as_str(), error = %reason, "camera session ended");
            self.cameras.set_state(&self.camera.id, state, Some(reason));
            let wait = if state == CameraState::Unauthorized {
                UNAUTHORIZED_RETRY
            } else {
                backoff.next_wait()
            };
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            self.link.before_retry().await;
        }
        self.link.close().await;
        tracing::info!(camera = %self.camera.id, "camera session stopped");
    }

    /// Opens the stream and reads it until it fails; returns why.
    async fn stream(&mut self, backoff: &mut Backoff, sessions: &mut u64) -> Failure {
        let mut opened = match self.link.open().await {
            Ok(o) => o,
            Err(f) => return f,
        };
        let cam = &self.camera;
        let video_codec = opened.video_codec();
        self.cameras.update(&cam.id, |h| {
            h.codec = Some(opened.codec.clone());
            h.reset_rates();
        });
        let mut streaming = false;
        let mut keyframes = Keyframes::default();
        loop {
            // retina has no read timeout of its own.
            let frame = match tokio::time::timeout(cam.stall_timeout, opened.frames.next()).await {
                Err(_) if streaming => {
                    return Failure::new(
                        CameraState::Stalled,
                        format!("no frame for {:?}", cam.stall_timeout),
                    )
                }
                Err(_) => return Failure::new(CameraState::Offline, "no frame after PLAY"),
                Ok(None) => return Failure::new(CameraState::Offline, "stream ended"),
                Ok(Some(Err(f))) => return f,
                Ok(Some(Ok(frame))) => frame,
            };
            if let Some(p) = &frame.parameters {
                self.live
                    .set_parameters(p, video_codec == Some(VideoCodec::H265));
                self.cameras.update(&cam.id, |hl| {
                    hl.width = Some(p.width);
                    hl.height = Some(p.height);
                });
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
            let flagged = frame.random_access;
            let key = match video_codec {
                Some(vc) if flagged || vc == VideoCodec::H265 => {
                    keyframes.inspect(vc, &frame.data) || flagged
                }
                _ => flagged,
            };
            let len = frame.data.len();
            self.cameras.update(&cam.id, |h| {
                h.frame(now, len, frame.stream_secs, key, frame.lost)
            });
            let data = frame.data;
            if let (Some(decoders), Some(vc)) = (&self.decoders, video_codec) {
                if let Some(want) = self.analysis.on_frame(now, key, len) {
                    // A copy only for the keyframes that are decoded (one every few seconds).
                    let keyframe = keyframes.self_contained(vc, data.clone());
                    decoders.submit(&self.analysis, vc, keyframe, want);
                }
            }
            self.live.frame(frame.pts, key, data);
        }
    }
}
