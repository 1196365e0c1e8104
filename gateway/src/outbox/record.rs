//! One stored event: `[crc32][time_ms][kind_len][kind]([source_len][source])[payload]`,
//! little-endian. The checksum covers everything after it, so a torn or flipped record is found
//! when it is read. The top bit of `kind_len` says that the event source's id follows the kind
//! (one byte of length, then the id); records written before sources were kept have it clear
//! and read as the gateway's own.

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

/// Set in `kind_len` when the source's id follows the kind.
const HAS_SOURCE: u16 = 0x8000;

/// Encodes a record; `kind` longer than 32767 bytes and `source` longer than 255 are cut
/// (callers validate lengths first).
pub fn encode(time_ms: i64, kind: &str, source: Option<&str>, payload: &str) -> Vec<u8> {
    let kind = &kind.as_bytes()[..kind.len().min((HAS_SOURCE - 1) as usize)];
    let source = source.map(|s| &s.as_bytes()[..s.len().min(u8::MAX as usize)]);
    let mut out = Vec::with_capacity(HEADER + kind.len() + 256 + payload.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&time_ms.to_le_bytes());
    let flag = if source.is_some() { HAS_SOURCE } else { 0 };
    out.extend_from_slice(&(kind.len() as u16 | flag).to_le_bytes());
    out.extend_from_slice(kind);
    if let Some(src) = source {
        out.push(src.len() as u8);
        out.extend_from_slice(src);
    }
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

/// A record's kind, source (if any) and payload, as bytes.
type Parts<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// The parts of a record after its header.
fn parts(bytes: &[u8]) -> Result<Parts<'_>, RecordError> {
    let raw = u16::from_le_bytes([
        *bytes.get(12).ok_or(RecordError::Truncated)?,
        *bytes.get(13).ok_or(RecordError::Truncated)?,
    ]);
    let kind_len = (raw & !HAS_SOURCE) as usize;
    let kind = bytes
        .get(HEADER..HEADER + kind_len)
        .ok_or(RecordError::Truncated)?;
    let mut at = HEADER + kind_len;
    let source = if raw & HAS_SOURCE != 0 {
        let len = *bytes.get(at).ok_or(RecordError::Truncated)? as usize;
        let src = bytes
            .get(at + 1..at + 1 + len)
            .ok_or(RecordError::Truncated)?;
        at += 1 + len;
        Some(src)
    } else {
        None
    };
    Ok((kind, source, &bytes[at..]))
}

/// The id of the source that posted a record (unchecked: for accounting), or None for the
/// gateway's own.
pub fn source_of(bytes: &[u8]) -> Option<&str> {
    parts(bytes)
        .ok()
        .and_then(|(_, s, _)| s)
        .and_then(|s| std::str::from_utf8(s).ok())
}

/// Decodes a record into the wire event it becomes.
pub fn decode(seq: u64, class: EventClass, bytes: &[u8]) -> Result<Event, RecordError> {
    verify(bytes)?;
    let mut t = [0u8; 8];
    t.copy_from_slice(&bytes[4..12]);
    let time_ms = i64::from_le_bytes(t);
    let (kind, source, payload) = parts(bytes)?;
    let source = source
        .map(|s| std::str::from_utf8(s).map(str::to_owned))
        .transpose()
        .map_err(|_| RecordError::Payload)?;
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
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bytes = encode(
            1_790_000_000_123,
            "door.opened",
            None,
            r#"{"door":"archive"}"#,
        );
        let e = decode(7, EventClass::Alert, &bytes).unwrap();
        assert_eq!(e.seq, 7);
        assert_eq!(e.kind, "door.opened");
        assert_eq!(e.payload.get(), r#"{"door":"archive"}"#);
        assert_eq!(e.time.unix_timestamp_nanos(), 1_790_000_000_123_000_000);
        assert_eq!((e.source, source_of(&bytes)), (None, None));
        let bytes = encode(5, "door.opened", Some("door-access"), "{}");
        let e = decode(8, EventClass::Alert, &bytes).unwrap();
        assert_eq!((e.kind.as_str(), e.payload.get()), ("door.opened", "{}"));
        assert_eq!(e.source.as_deref(), Some("door-access"));
        assert_eq!(source_of(&bytes), Some("door-access"));
    }

    #[test]
    fn a_record_written_before_sources_were_kept_reads_as_the_gateways() {
        // The layout of the earlier format, written out by hand.
        let mut old = vec![0u8; 4];
        old.extend_from_slice(&42i64.to_le_bytes());
        old.extend_from_slice(&11u16.to_le_bytes());
        old.extend_from_slice(b"door.opened");
        old.extend_from_slice(b"[1]");
        let crc = crc32fast::hash(&old[4..]);
        old[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(old, encode(42, "door.opened", None, "[1]"));
        let e = decode(1, EventClass::Alert, &old).unwrap();
        assert_eq!((e.kind.as_str(), e.source), ("door.opened", None));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        for bytes in [
            encode(1, "k", None, "[1,2,3]"),
            encode(1, "k", Some("s"), "[1]"),
        ] {
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                assert!(decode(1, EventClass::Telemetry, &b).is_err(), "bit {i}");
            }
            assert_eq!(verify(&bytes[..5]), Err(RecordError::Truncated));
        }
    }
}
