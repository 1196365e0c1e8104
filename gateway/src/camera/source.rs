//! `CameraSource`: where a camera session's frames come from, as a seam.
//!
//! [`Rtsp`] opens the camera's RTSP stream with retina (DESCRIBE, SETUP, PLAY); [`Recorded`]
//! plays encoded frames from memory at a set rate, in tokio's time, and goes down and up when
//! a test says so. The session above reads frames with its stall timeout, keeps the health,
//! feeds snapshots, sensing and live video, and never knows which it has.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::config::gateway::{Camera, Transport as CamTransport};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};

use super::decode::VideoCodec;
use super::CameraState;

/// Longest wait for an RTSP request (DESCRIBE, SETUP, PLAY).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stream could not be opened or ended: the state the camera is then in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub state: CameraState,
    pub reason: String,
}

impl Failure {
    pub fn new(state: CameraState, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: reason.into(),
        }
    }
}

/// A stream's parameter sets and picture, owned (retina lends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParameters {
    pub sets: OwnedParameterSets,
    pub width: u32,
    pub height: u32,
    /// e.g. `avc1.64001f`.
    pub rfc6381_codec: String,
    /// Frames per second as a fraction, when the stream says.
    pub frame_rate: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedParameterSets {
    H264 {
        sps: Vec<u8>,
        pps: Vec<u8>,
    },
    H265 {
        vps: Vec<u8>,
        sps: Vec<u8>,
        pps: Vec<u8>,
    },
}

impl StreamParameters {
    fn from_retina(v: &retina::codec::VideoParameters) -> Option<Self> {
        use retina::codec::VideoParametersCodec as C;
        let sets = match v.codec_params() {
            C::H264 { sps, pps } => OwnedParameterSets::H264 {
                sps: sps.to_vec(),
                pps: pps.to_vec(),
            },
            C::H265 { vps, sps, pps } => OwnedParameterSets::H265 {
                vps: vps.to_vec(),
                sps: sps.to_vec(),
                pps: pps.to_vec(),
            },
            _ => return None,
        };
        let (width, height) = v.pixel_dimensions();
        Some(Self {
            sets,
            width,
            height,
            rfc6381_codec: v.rfc6381_codec().to_owned(),
            frame_rate: v.frame_rate(),
        })
    }
}

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Annex B, with parameter sets before each keyframe.
    pub data: Vec<u8>,
    /// The stream flags it as a random access point (H.264 IDR; H.265 CRA frames are not).
    pub random_access: bool,
    /// Stream time in seconds, for keyframe intervals.
    pub stream_secs: f64,
    /// Presentation time in 90 kHz units, for live video.
    pub pts: i64,
    /// Packets lost just before it.
    pub lost: u64,
    /// New parameters, on the first frame and whenever they change.
    pub parameters: Option<StreamParameters>,
}

/// A playing stream.
pub struct Opened {
    /// `h264` or `h265`.
    pub codec: String,
    /// Frames until the stream fails or ends (`None`).
    pub frames: BoxStream<'static, Result<Frame, Failure>>,
}

impl Opened {
    pub fn video_codec(&self) -> Option<VideoCodec> {
        VideoCodec::from_encoding(&self.codec)
    }
}

/// Opens streams for camera sessions; one per gateway, shared by every camera.
pub trait CameraSource: Send + Sync + 'static {
    /// A stream source for one camera's session task.
    fn link(&self, camera: &Camera) -> Box<dyn CameraLink>;
}

/// One camera's stream source, kept by its session task across reconnects.
pub trait CameraLink: Send {
    /// Opens the stream and starts it playing.
    fn open(&mut self) -> BoxFuture<'_, Result<Opened, Failure>>;
    /// Before opening again: waits (bounded) for what the last stream left behind.
    fn before_retry(&mut self) -> BoxFuture<'_, ()>;
    /// The session is stopping: lets the last stream close cleanly (bounded).
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// Cameras on the network, over RTSP.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rtsp;

impl CameraSource for Rtsp {
    fn link(&self, camera: &Camera) -> Box<dyn CameraLink> {
        Box::new(RtspLink {
            camera: camera.clone(),
            group: Arc::new(SessionGroup::default()),
        })
    }
}

struct RtspLink {
    camera: Camera,
    /// The camera's RTSP sessions, old ones included, to tear down.
    group: Arc<SessionGroup>,
}

impl CameraLink for RtspLink {
    fn open(&mut self) -> BoxFuture<'_, Result<Opened, Failure>> {
        Box::pin(self.play())
    }

    fn before_retry(&mut self) -> BoxFuture<'_, ()> {
        // Some cameras allow few sessions: wait out our stale ones before opening another.
        Box::pin(async {
            let stale = self.group.stale_sessions();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.group.await_stale_sessions(&stale),
            )
            .await;
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        // Let a TEARDOWN of the last session go out before the gateway exits.
        Box::pin(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.group.await_teardown()).await;
        })
    }
}

impl RtspLink {
    async fn play(&self) -> Result<Opened, Failure> {
        let cam = &self.camera;
        let creds = match &cam.credentials {
            None => None,
            Some(c) => match c.password.read() {
                Ok(password) => Some(Credentials {
                    username: c.username.clone(),
                    password,
                }),
                Err(e) => {
                    return Err(Failure::new(
                        CameraState::Unauthorized,
                        format!("password unavailable: {e}"),
                    ))
                }
            },
        };
        let url = url::Url::parse(&cam.url)
            .map_err(|e| Failure::new(CameraState::Unsupported, format!("bad URL: {e}")))?;
        let opts = SessionOptions::default()
            .creds(creds)
            .session_group(self.group.clone())
            .user_agent(format!("GridEdge gateway {}", crate::VERSION));
        let mut session = timed("DESCRIBE", Session::describe(url, opts)).await?;
        let Some(i) = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        else {
            return Err(Failure::new(
                CameraState::Unsupported,
                "no H.264 or H.265 video stream",
            ));
        };
        let codec = session.streams()[i].encoding_name().to_owned();
        let transport = match cam.transport {
            CamTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            CamTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        // Annex B with parameter sets before each keyframe: every keyframe decodes on its own.
        let setup = SetupOptions::default()
            .transport(transport)
            .frame_format(FrameFormat::SIMPLE);
        timed("SETUP", session.setup(i, setup)).await?;
        let playing = timed("PLAY", session.play(PlayOptions::default())).await?;
        let demuxed = playing.demuxed().map_err(|e| failure(&e))?;
        let frames = futures::stream::unfold((demuxed, true), move |(mut d, first)| async move {
            loop {
                match d.next().await? {
                    Err(e) => return Some((Err(failure(&e)), (d, first))),
                    Ok(CodecItem::VideoFrame(frame)) => {
                        let parameters = if first || frame.has_new_parameters() {
                            match d.streams()[i].parameters() {
                                Some(ParametersRef::Video(v)) => StreamParameters::from_retina(v),
                                _ => None,
                            }
                        } else {
                            None
                        };
                        let f = Frame {
                            random_access: frame.is_random_access_point(),
                            stream_secs: frame.timestamp().elapsed_secs(),
                            pts: frame.timestamp().elapsed(),
                            lost: u64::from(frame.loss()),
                            parameters,
                            data: frame.into_data(),
                        };
                        return Some((Ok(f), (d, false)));
                    }
                    Ok(_) => continue,
                }
            }
        });
        Ok(Opened {
            codec,
            frames: frames.boxed(),
        })
    }
}

/// An RTSP request with [`REQUEST_TIMEOUT`].
async fn timed<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Err(_) => Err(Failure::new(
            CameraState::Offline,
            format!("{what} timed out"),
        )),
        Ok(Err(e)) => Err(failure(&e)),
        Ok(Ok(v)) => Ok(v),
    }
}

fn failure(e: &retina::Error) -> Failure {
    match e.status_code() {
        Some(401) | Some(403) => Failure::new(
            CameraState::Unauthorized,
            "the camera refused the credentials",
        ),
        _ => Failure::new(
            CameraState::Offline,
            e.to_string().lines().next().unwrap_or_default(),
        ),
    }
}

/// Recorded frames played in a loop at `fps`, in tokio's time (so under paused time an hour
/// of video costs only the frames' handling). Every camera plays the same recording; a
/// camera switched off does not answer and its open stream ends.
#[derive(Clone)]
pub struct Recorded {
    codec: &'static str,
    frames: Arc<Vec<(Vec<u8>, bool)>>,
    fps: u32,
    off: Arc<Mutex<BTreeSet<String>>>,
}

impl Recorded {
    /// `frames`: each picture's Annex B bytes and whether it is a keyframe.
    pub fn new(codec: VideoCodec, frames: Vec<(Vec<u8>, bool)>, fps: u32) -> Self {
        Self {
            codec: match codec {
                VideoCodec::H264 => "h264",
                VideoCodec::H265 => "h265",
            },
            frames: Arc::new(frames),
            fps: fps.max(1),
            off: Arc::default(),
        }
    }

    /// Switches camera `id` on or off (as a power cut or an unplugged cable would).
    pub fn set_on(&self, id: &str, on: bool) {
        let mut off = self.off.lock().unwrap_or_else(PoisonError::into_inner);
        if on {
            off.remove(id);
        } else {
            off.insert(id.to_owned());
        }
    }

    fn is_on(&self, id: &str) -> bool {
        !self
            .off
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }
}

impl CameraSource for Recorded {
    fn link(&self, camera: &Camera) -> Box<dyn CameraLink> {
        Box::new(RecordedLink {
            recording: self.clone(),
            camera: camera.id.clone(),
        })
    }
}

struct RecordedLink {
    recording: Recorded,
    camera: String,
}

impl CameraLink for RecordedLink {
    fn open(&mut self) -> BoxFuture<'_, Result<Opened, Failure>> {
        Box::pin(async {
            if !self.recording.is_on(&self.camera) || self.recording.frames.is_empty() {
                return Err(Failure::new(
                    CameraState::Offline,
                    "the camera does not answer",
                ));
            }
            let (r, camera) = (self.recording.clone(), self.camera.clone());
            let period = Duration::from_secs(1) / r.fps;
            let ticks = 90_000 / i64::from(r.fps);
            let frames = futures::stream::unfold(0u64, move |n| {
                let (r, camera) = (r.clone(), camera.clone());
                async move {
                    if n > 0 {
                        tokio::time::sleep(period).await;
                    }
                    if !r.is_on(&camera) {
                        return None;
                    }
                    let (data, key) = &r.frames[(n % r.frames.len() as u64) as usize];
                    let f = Frame {
                        data: data.clone(),
                        random_access: *key,
                        stream_secs: n as f64 / f64::from(r.fps),
                        pts: n as i64 * ticks,
                        lost: 0,
                        parameters: None,
                    };
                    Some((Ok(f), n + 1))
                }
            });
            Ok(Opened {
                codec: self.recording.codec.to_owned(),
                frames: frames.boxed(),
            })
        })
    }

    fn before_retry(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
