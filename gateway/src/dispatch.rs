//! What central's messages mean, once the uplink has checked them (this gateway's topic,
//! central's signature, the replay window) and taken the acks of its own batches: commands go
//! to [`crate::commands`], master data to the kiosks' replica, pieces of content files to the
//! content store. The uplink only carries them.

use std::sync::Arc;

use firmware_config::topics::Channel;
use firmware_config::wire::{CommandReply, Message};

use crate::kiosk::replica::Received;
use crate::Shared;

/// A message on a channel that does not carry its kind.
#[derive(Debug, thiserror::Error)]
#[error("{kind} on {channel}")]
pub struct Misplaced {
    pub kind: &'static str,
    pub channel: &'static str,
}

/// Hands a checked message from central to the part it is for; returns the reply to send
/// at once, if any (a bundle replies later, on its own).
pub fn deliver(
    shared: &Arc<Shared>,
    channel: Channel,
    message: Message,
) -> Result<Option<CommandReply>, Misplaced> {
    match (channel, message) {
        (Channel::Cmd, Message::Command(cmd)) => {
            tracing::info!(command = %cmd.name, id = %cmd.id, "command from central");
            Ok(crate::commands::handle(shared, &cmd))
        }
        (Channel::Data, Message::Data(update)) => {
            // Applying flushes to disk: off the session loop.
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || match shared.replica.receive(&update) {
                Ok(Received::Applied { version }) => {
                    tracing::info!(version, "master data replica updated");
                    shared.report_now.notify_one();
                    shared.content.wake.notify_one();
                }
                Ok(Received::Refused(e)) => {
                    tracing::warn!(error = %e, "master data update refused; the replica keeps its version");
                    if e.needs_snapshot() {
                        shared.report_now.notify_one();
                    }
                }
                Ok(Received::Untrusted) => tracing::warn!(
                    "master data update refused: no [bundles] public_key_file to check it with"
                ),
                Err(e) => tracing::error!(error = %e, "cannot store the master data update"),
            });
            Ok(None)
        }
        (Channel::Data, Message::Chunk(chunk)) => {
            shared.content.deliver(chunk);
            Ok(None)
        }
        (channel, message) => Err(Misplaced {
            kind: message.kind(),
            channel: channel.as_str(),
        }),
    }
}
