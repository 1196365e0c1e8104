//! Commands from central (on the gateway's `cmd` topic) and their replies.

use base64::Engine;
use firmware_config::wire::{Command, CommandReply};
use serde_json::{json, Value};

use std::sync::Arc;

use crate::Shared;

/// Command names this gateway understands.
pub const SNAPSHOT: &str = "camera.snapshot";
pub const UPSTREAM_START: &str = "video.upstream.start";
pub const UPSTREAM_STOP: &str = "video.upstream.stop";
pub const CONFIG_BUNDLE: &str = "config.bundle";
pub const SUBMISSION_STATUS: &str = "submission.status";
pub const MEETING_INVITE: &str = "meeting.invite";
pub const CLIP_TAKE: &str = "camera.clip";
pub const CLIP_LIST: &str = "camera.clips";
pub const CLIP_READ: &str = "camera.clip.read";

/// The most of a clip one `camera.clip.read` reply carries (base64 makes it a third more).
pub const CLIP_READ_MAX: u64 = 512 * 1024;

/// Why a command was refused; its text is the reply's message.
#[derive(Debug, thiserror::Error)]
pub enum CommandRefusal {
    #[error("unknown command {0:?}")]
    Unknown(String),
    #[error("args: not {what}: {source}")]
    BadArgs {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("args.{0} is required")]
    Missing(&'static str),
    #[error("no enabled camera {0:?}")]
    NoCamera(String),
    #[error("camera {0:?} has no snapshot yet")]
    NoSnapshot(String),
    #[error(transparent)]
    Clip(#[from] crate::clips::ClipError),
    #[error("no clip {1} of camera {0:?} ({2})")]
    NoClip(String, u64, String),
    #[error("clip {0}: {1}")]
    ClipRead(u64, String),
    #[error(transparent)]
    Upstream(#[from] crate::video::upstream::UpstreamError),
    #[error(transparent)]
    Bundle(#[from] crate::bundles::BundleRefusal),
}

/// Answers a command. Most answer at once; a bundle is applied in its own task (it may wait
/// for cameras to stop) and its reply goes out through `shared.replies` — `None` here.
pub fn handle(shared: &Arc<Shared>, cmd: &Command) -> Option<CommandReply> {
    if cmd.name == CONFIG_BUNDLE {
        let (shared, cmd) = (shared.clone(), cmd.clone());
        tokio::spawn(async move {
            let result = shared.bundles.receive(&*shared, &cmd.args).await;
            let _ = shared
                .replies
                .send(reply(&cmd, result.map_err(CommandRefusal::from)));
        });
        return None;
    }
    if cmd.name == SUBMISSION_STATUS {
        let status: Result<crate::kiosk::submissions::Status, _> =
            serde_json::from_value(cmd.args.clone());
        let result = match status {
            Ok(status) => {
                let shared = shared.clone();
                // Stored off the session loop (it flushes); the kiosk sees it a moment later.
                tokio::task::spawn_blocking(move || match shared.statuses.put(&status) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(receipt = %status.receipt, version = status.version, "an older status came late")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot store a submission's status"),
                });
                Ok(Value::Null)
            }
            Err(source) => Err(CommandRefusal::BadArgs {
                what: "a submission status",
                source,
            }),
        };
        return Some(reply(cmd, result));
    }
    if cmd.name == MEETING_INVITE {
        let result =
            match serde_json::from_value::<firmware_config::wire::Invitation>(cmd.args.clone()) {
                Ok(inv) => {
                    let shared = shared.clone();
                    // Stored off the session loop (it flushes); terminals are woken when it is.
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = shared.meetings.put(&inv, shared.clock.now_utc()) {
                            tracing::warn!(error = %e, "cannot store a meeting invitation");
                        }
                    });
                    Ok(Value::Null)
                }
                Err(source) => Err(CommandRefusal::BadArgs {
                    what: "an invitation",
                    source,
                }),
            };
        return Some(reply(cmd, result));
    }
    if cmd.name == CLIP_READ {
        // A file read, off the session loop; the reply follows through `shared.replies`.
        let (shared, cmd) = (shared.clone(), cmd.clone());
        tokio::task::spawn_blocking(move || {
            let _ = shared
                .replies
                .send(reply(&cmd, clip_read(&shared, &cmd.args)));
        });
        return None;
    }
    let result = match cmd.name.as_str() {
        SNAPSHOT => snapshot(shared, &cmd.args),
        CLIP_TAKE => clip_take(shared, &cmd.args),
        CLIP_LIST => camera_arg(&cmd.args).and_then(|c| {
            if !shared.config().cameras.iter().any(|k| k.id == c) {
                return Err(CommandRefusal::NoCamera(c.to_owned()));
            }
            Ok(json!({ "camera": c, "clips": shared.clips.list(c) }))
        }),
        UPSTREAM_START => upstream_start(shared, &cmd.args),
        UPSTREAM_STOP => camera_arg(&cmd.args)
            .map(|c| json!({ "camera": c, "was_running": shared.upstreams.stop(c) })),
        other => Err(CommandRefusal::Unknown(other.to_owned())),
    };
    Some(reply(cmd, result))
}

fn reply(cmd: &Command, result: Result<Value, CommandRefusal>) -> CommandReply {
    match result {
        Ok(data) => CommandReply {
            id: cmd.id.clone(),
            ok: true,
            message: String::new(),
            data,
        },
        Err(refusal) => CommandReply {
            id: cmd.id.clone(),
            ok: false,
            message: refusal.to_string(),
            data: Value::Null,
        },
    }
}

fn camera_arg(args: &Value) -> Result<&str, CommandRefusal> {
    args.get("camera")
        .and_then(Value::as_str)
        .ok_or(CommandRefusal::Missing("camera (a camera id)"))
}

/// `video.upstream.start {"camera": id, "url": ws-url}`: push the camera's live video there.
fn upstream_start(shared: &Shared, args: &Value) -> Result<Value, CommandRefusal> {
    let id = camera_arg(args)?;
    let url = args
        .get("url")
        .and_then(Value::as_str)
        .ok_or(CommandRefusal::Missing("url (where to push)"))?;
    let live = shared
        .live(id)
        .ok_or_else(|| CommandRefusal::NoCamera(id.to_owned()))?;
    shared
        .upstreams
        .start(id, url.to_owned(), live.hub().clone(), &shared.token)?;
    live.prepare();
    Ok(json!({ "camera": id }))
}

/// `camera.clip {"camera": id, "by"?}`: a clip of the camera now (an operator's request), as
/// for an alert: named at once, written `clips.post` later.
fn clip_take(shared: &Shared, args: &Value) -> Result<Value, CommandRefusal> {
    let id = camera_arg(args)?;
    let by = args.get("by").and_then(Value::as_str).unwrap_or("central");
    let clip = shared
        .clips
        .take(id, "operator", std::time::SystemTime::now())?;
    tracing::info!(
        camera = id,
        clip = clip.id,
        by,
        "clip asked for by an operator"
    );
    Ok(json!(clip))
}

/// `camera.clip.read {"camera", "clip", "offset", "length"}`: up to `CLIP_READ_MAX` bytes of a
/// written clip from `offset`, base64 in `data.data`, with the clip's whole size. Blocking.
fn clip_read(shared: &Shared, args: &Value) -> Result<Value, CommandRefusal> {
    use std::io::{Read, Seek};
    let camera = camera_arg(args)?;
    let clip = args
        .get("clip")
        .and_then(Value::as_u64)
        .ok_or(CommandRefusal::Missing("clip (a clip id)"))?;
    let offset = args.get("offset").and_then(Value::as_u64).unwrap_or(0);
    let length = args
        .get("length")
        .and_then(Value::as_u64)
        .unwrap_or(CLIP_READ_MAX)
        .min(CLIP_READ_MAX);
    let Some(path) = shared.clips.file(camera, clip) else {
        let why = shared
            .clips
            .get(camera, clip)
            .map_or("not kept".to_owned(), |i| i.state);
        return Err(CommandRefusal::NoClip(camera.to_owned(), clip, why));
    };
    let read = || -> std::io::Result<(u64, Vec<u8>)> {
        let mut f = std::fs::File::open(&path)?;
        let size = f.metadata()?.len();
        f.seek(std::io::SeekFrom::Start(offset.min(size)))?;
        let mut buf = Vec::with_capacity(length.min(size.saturating_sub(offset)) as usize);
        f.take(length).read_to_end(&mut buf)?;
        Ok((size, buf))
    };
    let (size, data) = read().map_err(|e| CommandRefusal::ClipRead(clip, e.to_string()))?;
    Ok(json!({
        "camera": camera,
        "clip": clip,
        "size": size,
        "offset": offset,
        "data": base64::engine::general_purpose::STANDARD.encode(&data),
    }))
}

/// `camera.snapshot {"camera": id}`: the camera's latest JPEG, base64 in `data.jpeg`.
fn snapshot(shared: &Shared, args: &Value) -> Result<Value, CommandRefusal> {
    let id = camera_arg(args)?;
    let analysis = shared
        .analysis(id)
        .ok_or_else(|| CommandRefusal::NoCamera(id.to_owned()))?;
    let shot = analysis
        .latest()
        .ok_or_else(|| CommandRefusal::NoSnapshot(id.to_owned()))?;
    Ok(json!({
        "camera": id,
        "id": shot.id,
        "width": shot.width,
        "height": shot.height,
        "jpeg": base64::engine::general_purpose::STANDARD.encode(&shot.jpeg),
    }))
}
