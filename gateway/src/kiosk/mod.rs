//! What the service hall's kiosks rely on, all of it kept at the gateway so that kiosks keep
//! working with the WAN down:
//!
//! | part | what |
//! | --- | --- |
//! | [`replica`] | the street's master data, signed by central, applied whole and stored |
//! | [`catalogue`] | the replica indexed for kiosks' questions (items, grids, party) |
//! | [`submissions`] | residents' reports and applications, kept until central has them, and their statuses |
//! | [`content`] | learning-content files fetched from central piece by piece, checked by hash |
//! | [`ratelimit`] | token buckets per terminal for queries and submissions |
//!
//! The HTTP side is `api::kiosk`.

pub mod catalogue;
pub mod content;
pub mod ratelimit;
pub mod replica;
pub mod submissions;

pub use catalogue::Catalogue;
