//! One stored event: `[crc32][time_ms][kind_len][kind][payload]`, little-endian. The checksum
//! covers everything after it, so a torn or flipped record is found when it is read.

use firmware_config::wire::{Event, EventClass};
use serde_json::value::RawValue;
use time::OffsetDateTime;

const HEADER: usize = 4 + 8 + 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record payload is not JSON")]
    Payload,
}

/// Encodes a record; `kind` longer than 65535 bytes is cut (callers validate lengths first).
pub fn encode(time_ms: i64, kind: &str, payload: &str) -> Vec<u8> {
    let kind = &kind.as_bytes()[..kind.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(HEADER + kind.len() + payload.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(&(kind.len() as u16).to_le_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(payload.as_bytes());
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a record's checksum without decoding it.
pub fn verify(bytes: &[u8]) -> Result<(), RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Truncated);
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if crc32fast::hash(&bytes[4..]) != stored {
        return Err(RecordError::Checksum);
    }
    Ok(())
}

/// Decodes a record into the wire event it becomes.
pub fn decode(seq: u64, class: EventClass, bytes: &[u8]) -> Result<Event, RecordError> {
    verify(bytes)?;
    let mut t = [0u8; 8];
    t.copy_from_slice(&bytes[4..12]);
    let time_ms = i64::from_le_bytes(t);
    let kind_len = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
    let kind = bytes
        .get(HEADER..HEADER + kind_len)
        .ok_or(RecordError::Truncated)?;
    let payload = &bytes[HEADER + kind_len..];
    let payload = std::str::from_utf8(payload).map_err(|_| RecordError::Payload)?;
    let payload = RawValue::from_string(payload.to_owned()).map_err(|_| RecordError::Payload)?;
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(Event {
        seq,
        class,
        kind: String::from_utf8_lossy(kind).into_owned(),
        time,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bytes = encode(1_790_000_000_123, "door.opened", r#"{"door":"archive"}"#);
        let e = decode(7, EventClass::Alert, &bytes).unwrap();
        assert_eq!(e.seq, 7);
        assert_eq!(e.kind, "door.opened");
        assert_eq!(e.payload.get(), r#"{"door":"archive"}"#);
        assert_eq!(e.time.unix_timestamp_nanos(), 1_790_000_000_123_000_000);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = encode(1, "k", "[1,2,3]");
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(1, EventClass::Telemetry, &b).is_err(), "bit {i}");
        }
        assert_eq!(verify(&bytes[..5]), Err(RecordError::Truncated));
    }
}
