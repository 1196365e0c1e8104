//! The messages on the GridEdge topics, in a versioned JSON envelope.
//!
//! ```json
//! {"v":1,"kind":"health","gateway":"gw-1","seq":42,"time":"2026-11-25T08:00:00Z","payload":{…}}
//! ```
//!
//! `seq` is the sender's own increasing counter for the kind (for `events`, the first event's
//! sequence number). [`decode`] checks the version and the kind before it reads the payload, so a
//! message from a newer or foreign sender is a typed [`WireError`], never a panic.

mod ack;
mod command;
mod content;
mod events;
mod health;
mod receipt;
mod status;

pub use ack::Ack;
pub use command::{Command, CommandReply, Invitation, MeetingAnswer, MeetingKind, MeetingPlan};
pub use content::{ContentChunk, ContentFetch, MAX_CHUNK_BYTES};
pub use events::{Event, EventBatch, EventClass};
pub use health::{
    ConfigVersions, DiskReport, GatewayHealth, OutboxReport, ReplicaReport, TerminalsSummary,
};
pub use receipt::{is_receipt_check, receipt, RECEIPT_CHECK_ALPHABET, RECEIPT_CHECK_LEN};
pub use status::{LinkState, Status};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::GatewayId;

/// The envelope version this build writes and reads.
pub const WIRE_VERSION: u16 = 1;

/// Largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A message with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub v: u16,
    /// The gateway the message is from (uplink) or for (downlink).
    pub gateway: GatewayId,
    pub seq: u64,
    pub time: OffsetDateTime,
    pub message: Message,
    /// The sender's signature over the payload, when it signed (see `runtime::signing`).
    pub sig: Option<Signature>,
    /// The payload's JSON exactly as received (what a signature covers); empty when built here.
    pub raw_payload: Vec<u8>,
}

/// A signature (see `runtime::signing`): a gateway's carries its certificate (DER, base64),
/// central's the id of its signing key; the value is base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    pub value: String,
}

/// Every kind of message, with its payload. (Encoded by hand rather than as a serde-tagged enum:
/// serde buffers tagged content, which cannot carry the events' raw JSON payloads.)
// Messages are decoded and handled one at a time, never stored in bulk: boxing the large
// health report would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Message {
    Status(Status),
    Health(GatewayHealth),
    Events(EventBatch),
    Ack(Ack),
    Command(Command),
    Reply(CommandReply),
    /// A signed master data update for the gateway's replica.
    Data(crate::masterdata::replica::SignedUpdate),
    /// A gateway asks for a piece of a content file (gateway → central, `fetch` topic).
    Fetch(ContentFetch),
    /// A piece of a content file (central → gateway, `data` topic).
    Chunk(ContentChunk),
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Status(_) => "status",
            Message::Health(_) => "health",
            Message::Events(_) => "events",
            Message::Ack(_) => "ack",
            Message::Command(_) => "command",
            Message::Reply(_) => "reply",
            Message::Data(_) => "data",
            Message::Fetch(_) => "fetch",
            Message::Chunk(_) => "chunk",
        }
    }
}

/// Every kind this build understands.
pub const KINDS: [&str; 9] = [
    "status", "health", "events", "ack", "command", "reply", "data", "fetch", "chunk",
];

/// Why bytes are not a message this build can read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message is {0} bytes; at most {MAX_MESSAGE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not a GridEdge envelope: {0}")]
    NotAnEnvelope(#[source] serde_json::Error),
    #[error("unsupported envelope version {0}; this build reads version {WIRE_VERSION}")]
    UnsupportedVersion(u16),
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    #[error("bad {kind} message: {source}")]
    BadPayload {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode message: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Envelope {
    pub fn new(gateway: GatewayId, seq: u64, message: Message) -> Self {
        Self {
            v: WIRE_VERSION,
            gateway,
            seq,
            time: OffsetDateTime::now_utc(),
            message,
            sig: None,
            raw_payload: Vec::new(),
        }
    }

    /// The same envelope, stamped with `time` (a task's clock) instead of the system's.
    pub fn at(mut self, time: OffsetDateTime) -> Self {
        self.time = time;
        self
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.encode_signed(|_| None)
    }

    /// Encodes the envelope; `sign` sees the payload's JSON bytes and may return a signature
    /// over them.
    pub fn encode_signed(
        &self,
        sign: impl FnOnce(&[u8]) -> Option<Signature>,
    ) -> Result<Vec<u8>, WireError> {
        #[derive(Serialize)]
        struct Out<'a> {
            v: u16,
            kind: &'static str,
            gateway: &'a GatewayId,
            seq: u64,
            #[serde(with = "time::serde::rfc3339")]
            time: OffsetDateTime,
            payload: &'a serde_json::value::RawValue,
            #[serde(skip_serializing_if = "Option::is_none")]
            sig: Option<Signature>,
        }
        // Made as raw JSON straight away: `RawValue::from_string` would parse a batch of
        // thousands of events once more only to check what serde_json just wrote.
        let payload = serde_json::value::to_raw_value(&self.message).map_err(WireError::Encode)?;
        let sig = sign(payload.get().as_bytes()).or_else(|| self.sig.clone());
        serde_json::to_vec(&Out {
            v: self.v,
            kind: self.message.kind(),
            gateway: &self.gateway,
            seq: self.seq,
            time: self.time,
            payload: &payload,
            sig,
        })
        .map_err(WireError::Encode)
    }
}

/// The envelope as one pass over the bytes sees it: version and kind, and the other fields
/// still as raw JSON, read only once the version and kind are known to be this build's.
#[derive(Deserialize)]
struct Parts<'a> {
    v: u16,
    kind: String,
    #[serde(borrow, default)]
    gateway: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    seq: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    time: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    sig: Option<&'a serde_json::value::RawValue>,
}

/// A field of the envelope: required, and of its type.
fn field<'a, T: Deserialize<'a>>(
    raw: Option<&'a serde_json::value::RawValue>,
    name: &'static str,
) -> Result<T, serde_json::Error> {
    match raw {
        Some(raw) => serde_json::from_str(raw.get()),
        None => Err(serde::de::Error::missing_field(name)),
    }
}

/// The envelope's time, RFC 3339.
#[derive(Deserialize)]
struct Time(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

fn payload<T: serde::de::DeserializeOwned>(
    raw: &serde_json::value::RawValue,
) -> Result<T, serde_json::Error> {
    serde_json::from_str(raw.get())
}

/// Reads an envelope: size, then version, then kind, then the whole message. The bytes are
/// scanned once for the envelope and once more for the payload: a batch is the largest thing
/// central reads, many times a second.
pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let parts: Parts<'_> = serde_json::from_slice(bytes).map_err(WireError::NotAnEnvelope)?;
    if parts.v != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(parts.v));
    }
    if !KINDS.contains(&parts.kind.as_str()) {
        return Err(WireError::UnknownKind(parts.kind));
    }
    let bad = |source| WireError::BadPayload {
        kind: parts.kind.clone(),
        source,
    };
    let gateway: GatewayId = field(parts.gateway, "gateway").map_err(bad)?;
    let seq: u64 = field(parts.seq, "seq").map_err(bad)?;
    let Time(time) = field(parts.time, "time").map_err(bad)?;
    let sig: Option<Signature> = match parts.sig {
        Some(raw) => serde_json::from_str(raw.get()).map_err(bad)?,
        None => None,
    };
    let raw = parts
        .payload
        .ok_or_else(|| bad(serde::de::Error::missing_field("payload")))?;
    let message = match parts.kind.as_str() {
        "status" => Message::Status(payload(raw).map_err(bad)?),
        "health" => Message::Health(payload(raw).map_err(bad)?),
        "events" => Message::Events(payload(raw).map_err(bad)?),
        "ack" => Message::Ack(payload(raw).map_err(bad)?),
        "command" => Message::Command(payload(raw).map_err(bad)?),
        "reply" => Message::Reply(payload(raw).map_err(bad)?),
        "data" => Message::Data(payload(raw).map_err(bad)?),
        "fetch" => Message::Fetch(payload(raw).map_err(bad)?),
        "chunk" => Message::Chunk(payload(raw).map_err(bad)?),
        other => return Err(WireError::UnknownKind(other.to_owned())),
    };
    Ok(Envelope {
        v: parts.v,
        gateway,
        seq,
        time,
        message,
        sig,
        raw_payload: raw.get().as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gw() -> GatewayId {
        GatewayId::new("gw-1").unwrap()
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Status(Status {
                state: LinkState::Online,
                version: "0.1.0".into(),
                site: "hongxing".into(),
                will_seq: Some(3),
            }),
            Message::Health(GatewayHealth {
                version: "0.1.0".into(),
                site: "hongxing".into(),
                uptime_secs: 12,
                cameras_configured: 2,
                terminals_configured: 3,
                outbox: Some(OutboxReport::default()),
                terminals: None,
                config: None,
                masterdata: None,
                certificate_expires: None,
            }),
            Message::Events(EventBatch {
                events: vec![Event {
                    seq: 7,
                    class: EventClass::Alert,
                    kind: "camera.covered".into(),
                    time: OffsetDateTime::UNIX_EPOCH,
                    payload: serde_json::value::RawValue::from_string(
                        json!({"camera": "hall", "note": "镜头遮挡"}).to_string(),
                    )
                    .unwrap(),
                    source: Some("door-access".into()),
                }],
            }),
            Message::Ack(Ack {
                watermark: 6,
                ranges: vec![(9, 12)],
                batch: Some(3),
            }),
            Message::Command(Command {
                id: "c1".into(),
                name: "snapshot".into(),
                args: json!({"camera": "hall"}),
            }),
            Message::Reply(CommandReply {
                id: "c1".into(),
                ok: false,
                message: "no such camera".into(),
                data: serde_json::Value::Null,
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, m) in samples().into_iter().enumerate() {
            let env = Envelope {
                v: WIRE_VERSION,
                gateway: gw(),
                seq: i as u64,
                time: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
                message: m,
                sig: None,
                raw_payload: Vec::new(),
            };
            let bytes = env.encode().unwrap();
            let back = decode(&bytes).unwrap();
            assert_eq!(back.message, env.message);
            assert_eq!(
                (back.v, &back.gateway, back.seq, back.time, &back.sig),
                (env.v, &env.gateway, env.seq, env.time, &env.sig)
            );
            assert_eq!(back.raw_payload, serde_json::to_vec(&env.message).unwrap());
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["kind"], env.message.kind());
            assert!(KINDS.contains(&env.message.kind()));
        }
    }

    fn raw(v: u16, kind: &str, payload: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"v": v, "kind": kind, "gateway": "gw-1", "seq": 1,
            "time": "2026-11-25T08:00:00Z", "payload": payload}))
        .unwrap()
    }

    #[test]
    fn rejects_unknown_version() {
        let err = decode(&raw(2, "health", json!({}))).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedVersion(2)), "{err}");
    }

    #[test]
    fn rejects_unknown_kind() {
        let err = decode(&raw(1, "teleport", json!({}))).unwrap_err();
        assert!(
            matches!(err, WireError::UnknownKind(ref k) if k == "teleport"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_payload_and_bad_gateway_id() {
        let err = decode(&raw(1, "ack", json!({"watermark": "x"}))).unwrap_err();
        assert!(
            matches!(err, WireError::BadPayload { ref kind, .. } if kind == "ack"),
            "{err}"
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&raw(1, "ack", json!({"watermark": 1}))).unwrap();
        v["gateway"] = json!("gw/#");
        let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, WireError::BadPayload { .. }), "{err}");
    }

    #[test]
    fn a_missing_or_mistyped_envelope_field_is_a_bad_message_of_its_kind() {
        for field in ["gateway", "seq", "time", "payload"] {
            let mut v: serde_json::Value =
                serde_json::from_slice(&raw(1, "ack", json!({"watermark": 1}))).unwrap();
            v.as_object_mut().unwrap().remove(field);
            let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(err, WireError::BadPayload { ref kind, .. } if kind == "ack")
                    && err.to_string().contains(field),
                "{field}: {err}"
            );
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&raw(1, "ack", json!({"watermark": 1}))).unwrap();
        v["time"] = json!("yesterday");
        assert!(matches!(
            decode(&serde_json::to_vec(&v).unwrap()),
            Err(WireError::BadPayload { .. })
        ));
        v["time"] = json!("2026-11-25T08:00:00Z");
        v["sig"] = json!(42);
        assert!(matches!(
            decode(&serde_json::to_vec(&v).unwrap()),
            Err(WireError::BadPayload { .. })
        ));
        // The version is judged before anything else is read.
        v["v"] = json!(9);
        v["seq"] = json!("not a number");
        assert!(matches!(
            decode(&serde_json::to_vec(&v).unwrap()),
            Err(WireError::UnsupportedVersion(9))
        ));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"[]",
            b"{\"v\":-1}",
            b"{\"v\":1}",
        ] {
            assert!(decode(bytes).is_err());
        }
        assert!(matches!(
            decode(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge(_))
        ));
    }
}
