//! Commands from central (on the gateway's `cmd` topic) and their replies.

use base64::Engine;
use firmware_config::wire::{Command, CommandReply};
use serde_json::{json, Value};

use crate::Shared;

/// Command names this gateway understands.
pub const SNAPSHOT: &str = "camera.snapshot";

pub fn handle(shared: &Shared, cmd: &Command) -> CommandReply {
    let result = match cmd.name.as_str() {
        SNAPSHOT => snapshot(shared, &cmd.args),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(data) => CommandReply {
            id: cmd.id.clone(),
            ok: true,
            message: String::new(),
            data,
        },
        Err(message) => CommandReply {
            id: cmd.id.clone(),
            ok: false,
            message,
            data: Value::Null,
        },
    }
}

/// `camera.snapshot {"camera": id}`: the camera's latest JPEG, base64 in `data.jpeg`.
fn snapshot(shared: &Shared, args: &Value) -> Result<Value, String> {
    let id = args
        .get("camera")
        .and_then(Value::as_str)
        .ok_or("args.camera (a camera id) is required")?;
    let analysis = shared
        .analyses
        .get(id)
        .ok_or_else(|| format!("no enabled camera {id:?}"))?;
    let shot = analysis
        .latest()
        .ok_or_else(|| format!("camera {id:?} has no snapshot yet"))?;
    Ok(json!({
        "camera": id,
        "id": shot.id,
        "width": shot.width,
        "height": shot.height,
        "jpeg": base64::engine::general_purpose::STANDARD.encode(&shot.jpeg),
    }))
}
