//! Live video: each camera's frames packaged once as fragmented MP4 ([`fmp4`]) and shared by
//! every viewer ([`live`]), without re-encoding.

pub mod clip;
pub mod fmp4;
pub mod live;
pub mod ring;
pub mod transcode;
pub mod upstream;

pub use live::{next_piece, Hub, Joined, Live, Piece, Track};
