//! A chunk: the records of one class appended by one group commit, stored under a single sled
//! key (its first sequence number). sled's cost is per key, so writing, acknowledging and
//! evicting thousands of events as one key is what makes the outbox fast and small.
//!
//! Layout: `[count: u32]` then per record `[seq: u64][len: u32][record]`, little-endian; each
//! record carries its own checksum (see `record`).

use super::record::RecordError;

/// Encodes records `(seq, record bytes)`, in increasing `seq` order.
pub fn encode<'a>(entries: impl ExactSizeIterator<Item = (u64, &'a [u8])> + Clone) -> Vec<u8> {
    let size: usize = 4 + entries.clone().map(|(_, r)| 12 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (seq, r) in entries {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The records of a chunk, borrowed from its bytes.
pub fn decode(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, RecordError> {
    let count = u32::from_le_bytes(
        bytes
            .get(..4)
            .ok_or(RecordError::Truncated)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?,
    );
    let mut out = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut at = 4;
    for _ in 0..count {
        let head = bytes.get(at..at + 12).ok_or(RecordError::Truncated)?;
        let seq = u64::from_le_bytes(head[..8].try_into().map_err(|_| RecordError::Truncated)?);
        let len = u32::from_le_bytes(head[8..12].try_into().map_err(|_| RecordError::Truncated)?)
            as usize;
        let rec = bytes
            .get(at + 12..at + 12 + len)
            .ok_or(RecordError::Truncated)?;
        out.push((seq, rec));
        at += 12 + len;
    }
    if at != bytes.len() {
        return Err(RecordError::Truncated);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let recs: Vec<(u64, Vec<u8>)> = vec![(3, b"abc".to_vec()), (9, vec![]), (10, vec![7; 300])];
        let bytes = encode(recs.iter().map(|(s, r)| (*s, r.as_slice())));
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2], (10, &[7u8; 300][..]));
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
}
