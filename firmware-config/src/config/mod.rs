//! Configuration of central, of a gateway and of the devices of its centre.
//!
//! Files are TOML. Every struct denies unknown fields, documents its defaults on the field, and is
//! validated after parsing; every problem found is reported with the path of the field it is about
//! (`cameras[2].url: scheme must be rtsp, not http`). `fwcfg check` and the services use the same
//! [`load`] function, so they print the same errors.

pub mod central;
pub mod gateway;
pub mod secret;
pub mod terminal;
pub mod units;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use central::CentralConfig;
pub use gateway::GatewayConfig;
pub use secret::{SecretError, SecretRef};
pub use terminal::TerminalSettings;
pub use units::ByteSize;

/// One problem in a config file, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Path of the field, e.g. `cameras[2].url`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The document is not valid TOML, or a field has the wrong name or type. Parsing stops at the
    /// first such error, so there is exactly one issue.
    #[error("{0}")]
    Syntax(Issue),
    /// The document parsed; these are all the problems found in its values.
    #[error("{} problem(s) in config:\n  {}", .0.len(), join(.0))]
    Invalid(Vec<Issue>),
}

fn join(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl ConfigError {
    /// Every problem, one per line, as `fwcfg check` prints them.
    pub fn issues(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Syntax(issue) => vec![issue.to_string()],
            ConfigError::Invalid(issues) => issues.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A config document: knows how to make its relative paths absolute and how to check its values.
pub trait Document: DeserializeOwned {
    /// Makes every relative path absolute, relative to `base` (the config file's folder).
    fn resolve_paths(&mut self, base: &Path);
    /// Reports every problem found to `v`.
    fn validate(&self, v: &mut Validator);
    /// Settings that work but leave something open (clear text on the network, a development
    /// switch): `fwcfg check` prints them and the services log them at start.
    fn warnings(&self) -> Vec<Issue> {
        Vec::new()
    }
}

/// Parses and validates a document. Relative paths in it are taken relative to `base`.
pub fn parse<T: Document>(text: &str, base: &Path) -> Result<T, ConfigError> {
    parse_checked(text, base, true)
}

/// Like [`parse`], for a document that will run on another machine (a bundle being signed):
/// everything is checked except that the files it names exist here.
pub fn parse_elsewhere<T: Document>(text: &str, base: &Path) -> Result<T, ConfigError> {
    parse_checked(text, base, false)
}

fn parse_checked<T: Document>(text: &str, base: &Path, files: bool) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    let mut doc: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigError::Syntax(Issue {
            path: if path == "." { String::new() } else { path },
            message: format!("{}{location}", inner.message().trim_end()),
        })
    })?;
    doc.resolve_paths(base);
    let mut v = Validator {
        skip_files: !files,
        ..Validator::default()
    };
    doc.validate(&mut v);
    if v.issues.is_empty() {
        Ok(doc)
    } else {
        Err(ConfigError::Invalid(v.issues))
    }
}

/// Reads, parses and validates a config file.
pub fn load<T: Document>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base)
}

pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Collects the problems found while validating a document.
#[derive(Debug, Default)]
pub struct Validator {
    issues: Vec<Issue>,
    skip_files: bool,
}

impl Validator {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// An id that appears in topics and URLs (see [`crate::ids`]).
    pub fn id(&mut self, path: &str, id: &str) {
        if let Err(e) = crate::ids::check_id(id) {
            self.error(path, format!("{id:?} {e}"));
        }
    }

    pub fn non_empty(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
    }

    pub fn positive(&mut self, path: &str, d: std::time::Duration) {
        if d.is_zero() {
            self.error(path, "must be greater than zero");
        }
    }

    /// `d` must lie within `[min, max]`.
    pub fn duration_within(
        &mut self,
        path: &str,
        d: std::time::Duration,
        min: std::time::Duration,
        max: std::time::Duration,
    ) {
        if d < min || d > max {
            self.error(
                path,
                format!(
                    "{} is out of range; use {} to {}",
                    humantime::format_duration(d),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
    }

    pub fn file_exists(&mut self, path: &str, file: &Path) {
        if self.skip_files {
            return;
        }
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.error(path, format!("{} is not a regular file", file.display())),
            Err(e) => self.error(path, format!("{}: {e}", file.display())),
        }
    }

    /// Reports ids that appear more than once among `ids` (with their list paths).
    pub fn unique_ids<'a>(&mut self, list: &str, ids: impl IntoIterator<Item = &'a str>) {
        let mut seen = std::collections::HashMap::new();
        for (i, id) in ids.into_iter().enumerate() {
            if let Some(first) = seen.insert(id, i) {
                self.error(
                    &format!("{list}[{i}].id"),
                    format!("duplicate id {id:?} (also {list}[{first}].id)"),
                );
                seen.insert(id, first);
            }
        }
    }

    /// An MQTT broker URL: `mqtt://host:port` or `mqtts://host:port`.
    pub fn broker_url(&mut self, path: &str, url: &str) -> Option<url::Url> {
        match url::Url::parse(url) {
            Err(e) => {
                self.error(path, format!("{url:?} is not a URL: {e}"));
                None
            }
            Ok(u) if !matches!(u.scheme(), "mqtt" | "mqtts") => {
                self.error(
                    path,
                    format!("scheme must be mqtt or mqtts, not {}", u.scheme()),
                );
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.error(path, "needs a host, e.g. mqtts://central.example:8883");
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.error(
                    path,
                    "must not hold credentials; the client certificate identifies the gateway",
                );
                None
            }
            Ok(u) => Some(u),
        }
    }
}

/// Default port of a broker URL's scheme.
pub fn broker_port(url: &url::Url) -> u16 {
    url.port()
        .unwrap_or(if url.scheme() == "mqtts" { 8883 } else { 1883 })
}

/// TLS files of an MQTT client or listener.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) that sign the peer's certificate.
    pub ca_file: PathBuf,
    /// PEM file with this side's certificate chain.
    pub cert_file: PathBuf,
    /// PEM file with this side's private key (PKCS#8 or RSA).
    pub key_file: PathBuf,
}

impl TlsFiles {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            *p = resolve(base, p);
        }
    }

    pub(crate) fn validate(&self, path: &str, v: &mut Validator) {
        v.file_exists(&format!("{path}.ca_file"), &self.ca_file);
        v.file_exists(&format!("{path}.cert_file"), &self.cert_file);
        v.file_exists(&format!("{path}.key_file"), &self.key_file);
    }
}

/// The HTTP listener of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address and port to listen on.
    pub listen: std::net::SocketAddr,
    /// Serve HTTPS (and WSS) with this certificate; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Most connections served at once; beyond it new ones wait in the kernel's queue. A
    /// connection that sends no complete request head within 10 s, or stays idle between
    /// requests as long, is closed. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    1024
}

/// A server's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM file with the server's certificate chain.
    pub cert_file: PathBuf,
    /// PEM file with its private key.
    pub key_file: PathBuf,
}

impl Http {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(t) = &mut self.tls {
            t.cert_file = resolve(base, &t.cert_file);
            t.key_file = resolve(base, &t.key_file);
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if let Some(t) = &self.tls {
            v.file_exists("http.tls.cert_file", &t.cert_file);
            v.file_exists("http.tls.key_file", &t.key_file);
        }
        if self.max_connections == 0 {
            v.error("http.max_connections", "must be greater than zero");
        }
    }

    /// Plain HTTP beyond this host.
    pub(crate) fn warnings(&self, out: &mut Vec<Issue>) {
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            out.push(Issue {
                path: "http.tls".to_owned(),
                message: format!(
                    "{} is reachable from the network without TLS: tokens, passwords and residents' data would cross it in clear text; give [http] tls (deploy/INSTALL.md, \"HTTPS\")",
                    self.listen
                ),
            });
        }
    }
}

/// A warning when `url` is a plain `mqtt://` broker beyond this host.
pub(crate) fn plain_broker_warning(path: &str, url: &str, out: &mut Vec<Issue>) {
    let Ok(u) = url::Url::parse(url) else {
        return;
    };
    let local = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => true,
    };
    if u.scheme() == "mqtt" && !local {
        out.push(Issue {
            path: path.to_owned(),
            message: format!(
                "{url} is plain MQTT to another host: use mqtts:// with a client certificate"
            ),
        });
    }
}
