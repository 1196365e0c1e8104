//! Commands to gateways: published on a gateway's `cmd` topic, answered on its `reply` topic,
//! matched by id. A gateway that does not answer in time is reported as such; a late reply is
//! dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::transport::Publisher;
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{Command, CommandReply, Message};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot send the command: {0}")]
    Send(String),
    #[error("gateway {gateway} did not answer within {timeout:?}")]
    Timeout { gateway: String, timeout: Duration },
    #[error("gateway {gateway} refused: {message}")]
    Refused { gateway: String, message: String },
}

/// Commands in flight; cheap to share.
pub struct Commands {
    client: std::sync::Arc<dyn Publisher>,
    downlink: std::sync::Arc<super::downlink::Downlink>,
    next: AtomicU64,
    /// (gateway, command id) → who waits for the reply.
    pending: Mutex<HashMap<(String, String), oneshot::Sender<CommandReply>>>,
}

impl Commands {
    pub fn new(
        client: std::sync::Arc<dyn Publisher>,
        downlink: std::sync::Arc<super::downlink::Downlink>,
    ) -> Self {
        Self {
            client,
            downlink,
            next: AtomicU64::new(1),
            pending: Mutex::default(),
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), oneshot::Sender<CommandReply>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `name` with `args` to `gateway` and waits for its successful reply.
    pub async fn send(
        &self,
        gateway: &GatewayId,
        name: &str,
        args: serde_json::Value,
        timeout: Duration,
    ) -> Result<CommandReply, CommandError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("c{n}-{}", std::process::id());
        let key = (gateway.as_str().to_owned(), id.clone());
        let (tx, rx) = oneshot::channel();
        self.pending().insert(key.clone(), tx);
        let command = Message::Command(Command {
            id,
            name: name.to_owned(),
            args,
        });
        let payload = self
            .downlink
            .seal(gateway, Channel::Cmd, command)
            .map_err(|e| CommandError::Send(e.to_string()));
        let sent = match payload {
            Ok(payload) => self
                .client
                .publish(Topic::gateway(gateway, Channel::Cmd).path(), false, payload)
                .await
                .map_err(|e| CommandError::Send(e.to_string())),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            self.pending().remove(&key);
            return Err(e);
        }
        let reply = tokio::time::timeout(timeout, rx).await;
        self.pending().remove(&key);
        match reply {
            Ok(Ok(r)) if r.ok => Ok(r),
            Ok(Ok(r)) => Err(CommandError::Refused {
                gateway: gateway.to_string(),
                message: r.message,
            }),
            _ => Err(CommandError::Timeout {
                gateway: gateway.to_string(),
                timeout,
            }),
        }
    }

    /// Publishes `message` to `gateway`'s `channel` without waiting for an answer.
    pub fn publish(
        &self,
        gateway: &GatewayId,
        channel: Channel,
        message: Message,
    ) -> Result<(), CommandError> {
        let payload = self
            .downlink
            .seal(gateway, channel, message)
            .map_err(|e| CommandError::Send(e.to_string()))?;
        self.client
            .try_publish(Topic::gateway(gateway, channel).path(), false, payload)
            .map_err(|e| CommandError::Send(e.to_string()))
    }

    /// A reply arrived from `gateway`.
    pub(crate) fn complete(&self, gateway: &GatewayId, reply: CommandReply) {
        let key = (gateway.as_str().to_owned(), reply.id.clone());
        match self.pending().remove(&key) {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => tracing::debug!(%gateway, id = %reply.id, "reply to no waiting command"),
        }
    }
}
