//! What a terminal says in its heartbeat, with the limits a gateway enforces on it, and the
//! problems it reveals (failing peripherals, low disk, heat).

use std::collections::BTreeMap;

use firmware_config::config::gateway::TerminalPolicy;
use firmware_config::config::terminal::PERIPHERALS;
use serde::{Deserialize, Serialize};

/// Heartbeat bodies larger than this are refused before they are parsed.
pub const MAX_HEARTBEAT_BYTES: usize = 8 * 1024;
const MAX_TEXT: usize = 200;

/// `POST /api/v1/terminals/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The terminal's software version, e.g. `kiosk-app 3.2.1`.
    pub app_version: String,
    pub uptime_secs: u64,
    /// Peripheral name (printer, card_reader, camera, screen, scanner, speaker) → its state.
    #[serde(default)]
    pub peripherals: BTreeMap<String, Peripheral>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// The version of the settings bundle the terminal runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peripheral {
    pub ok: bool,
    /// What is wrong, e.g. `paper out`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Why a heartbeat was refused; the text names the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HeartbeatRefused(String);

impl Heartbeat {
    /// Parses a body; the error names the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, HeartbeatRefused> {
        if body.len() > MAX_HEARTBEAT_BYTES {
            return Err(HeartbeatRefused(format!(
                "heartbeat is {} bytes; at most {MAX_HEARTBEAT_BYTES}",
                body.len()
            )));
        }
        // The common case parses plainly; only a bad body is parsed again to name its field.
        if let Ok(hb) = serde_json::from_slice::<Self>(body) {
            hb.check()?;
            return Ok(hb);
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let hb: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            HeartbeatRefused(if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            })
        })?;
        hb.check()?;
        Ok(hb)
    }

    fn check(&self) -> Result<(), HeartbeatRefused> {
        if self.app_version.trim().is_empty() || self.app_version.len() > 64 {
            return Err(HeartbeatRefused(
                "app_version: 1 to 64 characters".to_owned(),
            ));
        }
        if self.peripherals.len() > PERIPHERALS.len() {
            return Err(HeartbeatRefused(format!(
                "peripherals: at most {} entries",
                PERIPHERALS.len()
            )));
        }
        for (name, p) in &self.peripherals {
            if !PERIPHERALS.contains(&name.as_str()) {
                return Err(HeartbeatRefused(format!(
                    "peripherals.{name}: not a peripheral; use one of {}",
                    PERIPHERALS.join(", ")
                )));
            }
            if p.detail.len() > MAX_TEXT {
                return Err(HeartbeatRefused(format!(
                    "peripherals.{name}.detail: at most {MAX_TEXT} bytes"
                )));
            }
        }
        if let Some(t) = self.temperature_c {
            if !(-40.0..=150.0).contains(&t) {
                return Err(HeartbeatRefused(format!(
                    "temperature_c: {t} is out of range -40 to 150"
                )));
            }
        }
        Ok(())
    }

    /// What makes the terminal degraded; empty when all is well.
    pub fn problems(&self, policy: &TerminalPolicy, required: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in &self.peripherals {
            if !p.ok {
                out.push(if p.detail.is_empty() {
                    format!("{name}: failing")
                } else {
                    format!("{name}: {}", p.detail)
                });
            }
        }
        for r in required {
            if !self.peripherals.contains_key(r) {
                out.push(format!("{r}: not reported"));
            }
        }
        if let Some(free) = self.free_disk_bytes {
            if free < policy.min_free_disk.bytes() {
                out.push(format!(
                    "disk: {} MB free, below {} MB",
                    free / 1_000_000,
                    policy.min_free_disk.bytes() / 1_000_000
                ));
            }
        }
        if let Some(t) = self.temperature_c {
            if t > policy.max_temperature_c {
                out.push(format!(
                    "temperature: {t:.1} °C, above {:.1} °C",
                    policy.max_temperature_c
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_with_the_field_named() {
        let ok = br#"{"app_version":"kiosk 3.2","uptime_secs":5,"peripherals":{"printer":{"ok":false,"detail":"paper out"}},"free_disk_bytes":100000000,"temperature_c":80.5}"#;
        let hb = Heartbeat::parse(ok).unwrap();
        let problems = hb.problems(&TerminalPolicy::default(), &["card_reader".to_owned()]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("paper out"));
        for (body, field) in [
            (&br#"{"app_version":"","uptime_secs":1}"#[..], "app_version"),
            (br#"{"app_version":"a","uptime_secs":-1}"#, "uptime_secs"),
            (
                br#"{"app_version":"a","uptime_secs":1,"peripherals":{"fax":{"ok":true}}}"#,
                "peripherals.fax",
            ),
            (
                br#"{"app_version":"a","uptime_secs":1,"temperature_c":900}"#,
                "temperature_c",
            ),
            (
                br#"{"app_version":"a","uptime_secs":1,"colour":1}"#,
                "colour",
            ),
            (br#"not json"#, "expected"),
        ] {
            let e = Heartbeat::parse(body).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        assert!(Heartbeat::parse(&vec![b' '; MAX_HEARTBEAT_BYTES + 1]).is_err());
    }
}
