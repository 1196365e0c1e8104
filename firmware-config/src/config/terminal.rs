//! The settings of one kiosk, video terminal or screen, as central sends them in a signed
//! bundle and the terminal fetches them from its gateway.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Validator;

/// Peripherals a terminal may report on in its heartbeat.
pub const PERIPHERALS: [&str; 6] = [
    "printer",
    "card_reader",
    "camera",
    "screen",
    "scanner",
    "speaker",
];

/// Settings of one terminal (`settings.toml` for `fwcfg sign --terminal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalSettings {
    /// Language of the terminal's pages: `zh-CN` or `en`. Default `zh-CN`.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// How often the terminal sends its heartbeat. Default 10 s.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A kiosk left alone this long goes back to its home page. Default 2 min.
    #[serde(default = "default_idle_return", with = "humantime_serde")]
    pub idle_return: Duration,
    /// Speaker volume, 0–100. Default 60.
    #[serde(default = "default_volume")]
    pub volume: u8,
    /// Screen brightness, 0–100. Default 80.
    #[serde(default = "default_brightness")]
    pub brightness: u8,
    /// Peripherals that must work; a heartbeat without one of them, or with it failing, makes
    /// the terminal degraded.
    #[serde(default)]
    pub required_peripherals: Vec<String>,
    /// The page the terminal shows when idle (`http://` or `https://`).
    #[serde(default)]
    pub home_page: Option<String>,
}

fn default_locale() -> String {
    "zh-CN".to_owned()
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_return() -> Duration {
    Duration::from_secs(120)
}
fn default_volume() -> u8 {
    60
}
fn default_brightness() -> u8 {
    80
}

impl TerminalSettings {
    /// Parses and checks settings written as TOML; every problem names its field.
    pub fn parse(text: &str) -> Result<Self, super::ConfigError> {
        let de = toml::Deserializer::new(text);
        let settings: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            super::ConfigError::Syntax(super::Issue {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().message().trim_end().to_owned(),
            })
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// Checks the values of settings that parsed.
    pub fn check(&self) -> Result<(), super::ConfigError> {
        let mut v = Validator::default();
        self.validate(&mut v);
        if v.issues().is_empty() {
            Ok(())
        } else {
            Err(super::ConfigError::Invalid(v.issues().to_vec()))
        }
    }

    pub fn validate(&self, v: &mut Validator) {
        if !matches!(self.locale.as_str(), "zh-CN" | "en") {
            v.error(
                "locale",
                format!("{:?} is not supported; use zh-CN or en", self.locale),
            );
        }
        v.duration_within(
            "heartbeat_interval",
            self.heartbeat_interval,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        v.duration_within(
            "idle_return",
            self.idle_return,
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
        );
        for (name, value) in [("volume", self.volume), ("brightness", self.brightness)] {
            if value > 100 {
                v.error(name, format!("{value} is out of range; use 0 to 100"));
            }
        }
        for (i, p) in self.required_peripherals.iter().enumerate() {
            if !PERIPHERALS.contains(&p.as_str()) {
                v.error(
                    &format!("required_peripherals[{i}]"),
                    format!(
                        "{p:?} is not a peripheral; use one of {}",
                        PERIPHERALS.join(", ")
                    ),
                );
            }
        }
        if let Some(url) = &self.home_page {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => v.error(
                    "home_page",
                    format!("scheme must be http or https, not {}", u.scheme()),
                ),
                Err(e) => v.error("home_page", format!("{url:?} is not a URL: {e}")),
            }
        }
    }
}

impl Default for TerminalSettings {
    fn default() -> Self {
        Self {
            locale: default_locale(),
            heartbeat_interval: default_heartbeat(),
            idle_return: default_idle_return(),
            volume: default_volume(),
            brightness: default_brightness(),
            required_peripherals: Vec::new(),
            home_page: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_bad_field_named() {
        assert_eq!(
            TerminalSettings::parse("").unwrap(),
            TerminalSettings::default()
        );
        let err = TerminalSettings::parse(
            "locale = \"fr\"\nvolume = 140\nrequired_peripherals = [\"printer\", \"fax\"]\nhome_page = \"ftp://x\"\n",
        )
        .unwrap_err()
        .issues()
        .join("\n");
        for field in ["locale", "volume", "required_peripherals[1]", "home_page"] {
            assert!(
                err.contains(&format!("{field}: ")),
                "{field} missing in {err}"
            );
        }
        assert!(TerminalSettings::parse("colour = 1").is_err());
    }
}
