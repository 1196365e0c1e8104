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
    let result = match cmd.name.as_str() {
        SNAPSHOT => snapshot(shared, &cmd.args),
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
