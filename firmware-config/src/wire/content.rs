//! Content files fetched piece by piece: the gateway asks (`fetch`), central answers
//! (`chunk`).

use serde::{Deserialize, Serialize};

/// The largest piece of a content file one message carries (base64 makes it a third larger,
/// well inside [`super::MAX_MESSAGE_BYTES`]).
pub const MAX_CHUNK_BYTES: u64 = 256 * 1024;

/// A request for `len` bytes of the content file `sha256` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentFetch {
    pub sha256: String,
    pub offset: u64,
    pub len: u64,
}

/// A piece of a content file, with the hash of the piece itself so that a damaged piece is
/// refused on arrival (the whole file is checked against its own hash at the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentChunk {
    pub sha256: String,
    pub offset: u64,
    /// The whole file's size.
    pub total: u64,
    /// SHA-256 of `data`'s bytes, lower-case hex.
    pub chunk_sha256: String,
    /// The bytes, base64 (standard alphabet).
    pub data: String,
    /// Set when central does not have the file (or the range is outside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
