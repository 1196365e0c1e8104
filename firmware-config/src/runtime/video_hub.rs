//! A live video hub: one stream of fragmented MP4 pieces in, any number of viewers out.
//!
//! The hub keeps the current track (description and init segment) and the fragments since the
//! last keyframe (the GOP), and sends each piece on a broadcast ring. A viewer gets the track
//! and the GOP at once — so its player starts on a decodable picture — then follows the ring; a
//! viewer that falls behind the ring skips to the next keyframe instead of growing memory. The
//! gateway feeds a hub per camera from its RTSP session; central feeds one per shared camera
//! from the gateway's upstream.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Fragments a viewer may be behind before it skips to the next keyframe (about 2.5 s at
/// 25 fps; a power of two, as the broadcast ring rounds up to one).
pub const RING: usize = 64;
/// At most this many fragments are kept from the last keyframe (a longer GOP is not kept
/// whole: viewers then wait for the next keyframe).
const MAX_GOP: usize = 300;

/// What a player needs to know before the bytes: the MSE type and the picture size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Track {
    pub codec: String,
    /// `video/mp4; codecs="…"`, for `MediaSource.isTypeSupported`.
    pub mime: String,
    pub width: u32,
    pub height: u32,
    /// Bumped whenever the parameters change: the player appends the new init segment.
    pub generation: u64,
}

/// One piece of the stream.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A new track (parameters changed): its description and init segment.
    Init(Arc<Track>, Bytes),
    Fragment {
        keyframe: bool,
        bytes: Bytes,
    },
}

#[derive(Default)]
struct State {
    track: Option<(Arc<Track>, Bytes)>,
    gop: Vec<Bytes>,
}

/// A live stream; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Piece>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

/// What a new viewer starts from.
pub struct Joined {
    pub track: Option<(Arc<Track>, Bytes)>,
    pub gop: Vec<Bytes>,
    pub rx: broadcast::Receiver<Piece>,
}

impl Hub {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            tx: broadcast::channel(RING).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Viewers following the stream now.
    pub fn viewers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Whether a track is known (a fragment can be taken).
    pub fn has_track(&self) -> bool {
        self.lock().track.is_some()
    }

    /// Takes a piece: a new track starts a new GOP; a fragment joins the GOP (a keyframe
    /// starts it; fragments before the first keyframe are dropped: nothing could decode them).
    pub fn push(&self, piece: Piece) {
        let mut s = self.lock();
        match &piece {
            Piece::Init(track, init) => {
                s.track = Some((track.clone(), init.clone()));
                s.gop.clear();
            }
            Piece::Fragment { keyframe, bytes } => {
                if s.track.is_none() || (s.gop.is_empty() && !keyframe) {
                    return;
                }
                if *keyframe {
                    s.gop.clear();
                }
                if s.gop.len() < MAX_GOP {
                    s.gop.push(bytes.clone());
                }
            }
        }
        drop(s);
        let _ = self.tx.send(piece);
    }

    /// The source stopped: what was kept is stale (the track stays, for the next session).
    pub fn pause(&self) {
        self.lock().gop.clear();
    }

    /// A new viewer: the track, the GOP and the live ring, taken together so that nothing
    /// falls between them.
    pub fn join(&self) -> Joined {
        let s = self.lock();
        Joined {
            track: s.track.clone(),
            gop: s.gop.clone(),
            rx: self.tx.subscribe(),
        }
    }
}

/// Follows the ring for one viewer: yields pieces in order; after falling behind, skips to
/// the next keyframe (or new track). `None` when the hub is gone.
pub async fn next_piece(rx: &mut broadcast::Receiver<Piece>, skipping: &mut bool) -> Option<Piece> {
    loop {
        match rx.recv().await {
            Ok(piece) => {
                if *skipping {
                    match &piece {
                        Piece::Fragment {
                            keyframe: false, ..
                        } => continue,
                        _ => *skipping = false,
                    }
                }
                return Some(piece);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => *skipping = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with_track() -> Hub {
        let hub = Hub::new();
        let track = Arc::new(Track {
            codec: "avc1.42c01e".into(),
            mime: String::new(),
            width: 2,
            height: 2,
            generation: 1,
        });
        hub.push(Piece::Init(track, Bytes::from_static(b"init")));
        hub
    }

    fn frag(keyframe: bool) -> Piece {
        Piece::Fragment {
            keyframe,
            bytes: Bytes::from_static(b"f"),
        }
    }

    #[test]
    fn a_viewer_starts_on_the_last_keyframe() {
        let hub = Hub::new();
        hub.push(frag(true)); // before any track: dropped
        assert!(hub.join().gop.is_empty());
        let hub = hub_with_track();
        hub.push(frag(false)); // before any keyframe: dropped
        for k in [true, false, true, false] {
            hub.push(frag(k));
        }
        let j = hub.join();
        assert_eq!(j.gop.len(), 2);
        assert!(j.track.is_some());
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_to_the_next_keyframe() {
        let hub = hub_with_track();
        hub.push(frag(true));
        let mut j = hub.join();
        for _ in 1..2 * RING {
            hub.push(frag(false));
        }
        hub.push(frag(true));
        hub.push(frag(false));
        let mut skipping = false;
        match next_piece(&mut j.rx, &mut skipping).await {
            Some(Piece::Fragment { keyframe, .. }) => assert!(keyframe),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_piece(&mut j.rx, &mut skipping).await,
            Some(Piece::Fragment {
                keyframe: false,
                ..
            })
        ));
    }
}

/// A WebSocket message, whichever library carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    Text(String),
    Binary(Bytes),
}

/// To a viewer (a browser's Media Source): the track as JSON, then its init segment and the
/// fragments as they are.
pub fn to_viewer(piece: &Piece) -> Vec<WsMessage> {
    match piece {
        Piece::Init(track, init) => vec![
            WsMessage::Text(serde_json::to_string(&**track).unwrap_or_default()),
            WsMessage::Binary(init.clone()),
        ],
        Piece::Fragment { bytes, .. } => vec![WsMessage::Binary(bytes.clone())],
    }
}

/// Kinds of upstream binary messages (gateway → central): the first byte.
const UP_INIT: u8 = 0;
const UP_KEY: u8 = 1;
const UP_DELTA: u8 = 2;

/// Upstream (gateway → central): like [`to_viewer`], but every binary message starts with a
/// byte saying what it is, so that central's hub knows keyframes without parsing MP4.
pub fn to_upstream(piece: &Piece) -> Vec<WsMessage> {
    let tagged = |tag: u8, b: &Bytes| {
        let mut v = Vec::with_capacity(b.len() + 1);
        v.push(tag);
        v.extend_from_slice(b);
        WsMessage::Binary(Bytes::from(v))
    };
    match piece {
        Piece::Init(track, init) => vec![
            WsMessage::Text(serde_json::to_string(&**track).unwrap_or_default()),
            tagged(UP_INIT, init),
        ],
        Piece::Fragment { keyframe, bytes } => {
            vec![tagged(if *keyframe { UP_KEY } else { UP_DELTA }, bytes)]
        }
    }
}

/// Why an upstream message was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("bad track description: {0}")]
    Track(#[from] serde_json::Error),
    #[error("an init segment without a track description before it")]
    InitWithoutTrack,
    #[error("empty or unknown binary message")]
    Unknown,
}

/// Reads upstream messages back into pieces.
#[derive(Default)]
pub struct UpstreamReader {
    track: Option<Arc<Track>>,
}

impl UpstreamReader {
    pub fn read(&mut self, msg: WsMessage) -> Result<Option<Piece>, UpstreamError> {
        match msg {
            WsMessage::Text(t) => {
                self.track = Some(Arc::new(serde_json::from_str(&t)?));
                Ok(None)
            }
            WsMessage::Binary(b) => match b.first() {
                Some(&UP_INIT) => {
                    let track = self.track.take().ok_or(UpstreamError::InitWithoutTrack)?;
                    Ok(Some(Piece::Init(track, b.slice(1..))))
                }
                Some(&k @ (UP_KEY | UP_DELTA)) => Ok(Some(Piece::Fragment {
                    keyframe: k == UP_KEY,
                    bytes: b.slice(1..),
                })),
                _ => Err(UpstreamError::Unknown),
            },
        }
    }
}

/// Everything a joining follower is sent first: the track, its init segment and the GOP (its
/// first fragment is a keyframe).
pub fn catch_up(joined: &Joined) -> Vec<Piece> {
    let mut v = Vec::new();
    if let Some((track, init)) = &joined.track {
        v.push(Piece::Init(track.clone(), init.clone()));
        for (i, bytes) in joined.gop.iter().enumerate() {
            v.push(Piece::Fragment {
                keyframe: i == 0,
                bytes: bytes.clone(),
            });
        }
    }
    v
}

#[cfg(test)]
mod upstream_tests {
    use super::*;

    #[test]
    fn upstream_messages_read_back_into_the_same_pieces() {
        let track = Arc::new(Track {
            codec: "avc1.42c01e".into(),
            mime: "video/mp4; codecs=\"avc1.42c01e\"".into(),
            width: 640,
            height: 360,
            generation: 3,
        });
        let pieces = [
            Piece::Init(track.clone(), Bytes::from_static(b"init")),
            Piece::Fragment {
                keyframe: true,
                bytes: Bytes::from_static(b"k"),
            },
            Piece::Fragment {
                keyframe: false,
                bytes: Bytes::from_static(b"d"),
            },
        ];
        let mut r = UpstreamReader::default();
        let mut back = Vec::new();
        for p in &pieces {
            for m in to_upstream(p) {
                back.extend(r.read(m).unwrap());
            }
        }
        assert_eq!(back.len(), 3);
        assert!(matches!(&back[0], Piece::Init(t, b) if **t == *track && &b[..] == b"init"));
        assert!(
            matches!(&back[1], Piece::Fragment { keyframe: true, bytes } if &bytes[..] == b"k")
        );
        assert!(
            matches!(&back[2], Piece::Fragment { keyframe: false, bytes } if &bytes[..] == b"d")
        );
        assert!(r
            .read(WsMessage::Binary(Bytes::from_static(&[UP_INIT])))
            .is_err());
        assert!(r.read(WsMessage::Binary(Bytes::new())).is_err());
        assert!(r.read(WsMessage::Text("{".into())).is_err());
    }
}

/// Serves one viewer on a WebSocket until it leaves, the hub ends, or `stop` completes (a
/// share revoked or expired).
pub async fn serve_viewer(
    socket: axum::extract::ws::WebSocket,
    hub: Hub,
    stop: impl std::future::Future<Output = ()>,
) {
    serve(socket, hub, stop, to_viewer).await
}

/// Serves another relay following this hub (a central replica), in the upstream framing that
/// keeps keyframes marked, until it leaves or the hub ends.
pub async fn serve_follower(socket: axum::extract::ws::WebSocket, hub: Hub) {
    serve(socket, hub, std::future::pending(), to_upstream).await
}

async fn serve(
    mut socket: axum::extract::ws::WebSocket,
    hub: Hub,
    stop: impl std::future::Future<Output = ()>,
    frame: fn(&Piece) -> Vec<WsMessage>,
) {
    use axum::extract::ws::Message;
    async fn send(
        socket: &mut axum::extract::ws::WebSocket,
        piece: &Piece,
        frame: fn(&Piece) -> Vec<WsMessage>,
    ) -> bool {
        for m in frame(piece) {
            let m = match m {
                WsMessage::Text(t) => Message::Text(t.into()),
                WsMessage::Binary(b) => Message::Binary(b),
            };
            if socket.send(m).await.is_err() {
                return false;
            }
        }
        true
    }
    let joined = hub.join();
    let first = catch_up(&joined);
    let mut rx = joined.rx;
    // Until there is a track, wait for one; then start on the last keyframe.
    let mut skipping = first.is_empty();
    for piece in &first {
        if !send(&mut socket, piece, frame).await {
            return;
        }
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            piece = next_piece(&mut rx, &mut skipping) => match piece {
                Some(p) if send(&mut socket, &p, frame).await => {}
                _ => break,
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = &mut stop => {
                let _ = socket.send(Message::Text(r#"{"error":"the share ended"}"#.into())).await;
                break;
            }
        }
    }
}

/// The browser side: plays a live WebSocket of fragmented MP4 in a `<video>` through Media
/// Source Extensions (`play(video, note, wsUrl)`), served by both the gateway and central.
pub const PLAYER_JS: &str = include_str!("player.js");
