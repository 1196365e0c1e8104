//! The contract every GridEdge part shares.
//!
//! - [`config`]: the TOML configuration of central, of a gateway and of its devices, validated with
//!   errors that name the bad field by its path (`cameras[2].url: …`).
//! - [`topics`]: the MQTT topic tree between gateways and central.
//! - [`wire`]: the messages on those topics, in a versioned envelope.
//! - [`ids`]: the identifiers that appear in topics, URLs and sequence keys.

pub mod bundle;
pub mod certs;
pub mod config;
pub mod durable;
pub mod examples;
pub mod ids;
pub mod kinds;
pub mod masterdata;
pub mod revocation;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod topics;
pub mod web;
pub mod wire;
