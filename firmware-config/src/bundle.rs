//! Signed configuration bundles: how central changes the configuration of a gateway or of one of
//! its terminals from afar, without a forged or broken configuration ever taking effect.
//!
//! A bundle is a JSON document:
//!
//! ```json
//! {"bundle":1,"key":"3f9a…","body":"{\"target\":{\"gateway\":\"gw-1\"},\"version\":7,…}","sig":"…"}
//! ```
//!
//! `body` is kept as the exact text that was signed, so nothing has to be canonicalised: the
//! Ed25519 signature covers `gridedge-bundle-v1\0` followed by the body's bytes. `key` names the
//! signing key (the first 8 bytes of the SHA-256 of its public key, in hex), so that a gateway can
//! say "signed by another key" rather than just "bad signature".

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{self, ConfigError, GatewayConfig, TerminalSettings};

/// The bundle format this build reads and writes.
pub const BUNDLE_FORMAT: u16 = 1;
/// Larger bundles are refused before they are parsed.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

const CONTEXT: &[u8] = b"gridedge-bundle-v1\0";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is {0} bytes; at most {MAX_BUNDLE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not a bundle: {0}")]
    Format(String),
    #[error("bundle format {0} is not supported; this build reads format {BUNDLE_FORMAT}")]
    UnsupportedFormat(u16),
    #[error("signed by key {found}, not by the trusted key {trusted}")]
    UnknownKey { found: String, trusted: String },
    #[error("signature does not verify: the bundle was altered or not signed by central")]
    BadSignature,
    #[error("bundle body: {0}")]
    Body(String),
    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whose configuration a bundle carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub gateway: String,
    /// A terminal of that gateway; absent for the gateway itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.terminal {
            Some(t) => write!(f, "terminal {t} of gateway {}", self.gateway),
            None => write!(f, "gateway {}", self.gateway),
        }
    }
}

/// The configuration itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    /// A whole `gateway.toml`.
    Gateway { toml: String },
    /// A terminal's settings.
    Terminal { settings: TerminalSettings },
}

/// What was signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBody {
    pub target: Target,
    /// Increases with every bundle for the same target; older and equal versions are refused.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub issued: OffsetDateTime,
    /// Why this change was made, for the audit trail.
    #[serde(default)]
    pub note: String,
    pub content: Content,
}

/// The content of a bundle, checked against the schema.
#[derive(Debug, Clone)]
pub enum Checked {
    Gateway(Box<GatewayConfig>),
    Terminal(TerminalSettings),
}

impl BundleBody {
    /// Checks the content against its target and the schema. A gateway config is parsed with
    /// relative paths taken from `base`; `files` says whether the files it names must exist
    /// here (true on the gateway, false where the bundle is signed).
    pub fn check(&self, base: &Path, files: bool) -> Result<Checked, Vec<String>> {
        match (&self.content, &self.target.terminal) {
            (Content::Gateway { toml }, None) => {
                let parsed = if files {
                    config::parse::<GatewayConfig>(toml, base)
                } else {
                    config::parse_elsewhere::<GatewayConfig>(toml, base)
                };
                let cfg = parsed.map_err(|e: ConfigError| e.issues())?;
                if cfg.gateway.id != self.target.gateway {
                    return Err(vec![format!(
                        "gateway.id: {:?} is not the bundle's target {:?}",
                        cfg.gateway.id, self.target.gateway
                    )]);
                }
                Ok(Checked::Gateway(Box::new(cfg)))
            }
            (Content::Terminal { settings }, Some(_)) => settings
                .check()
                .map(|()| Checked::Terminal(settings.clone()))
                .map_err(|e| e.issues()),
            (Content::Gateway { .. }, Some(t)) => Err(vec![format!(
                "content is a gateway config but the target is terminal {t:?}"
            )]),
            (Content::Terminal { .. }, None) => Err(vec![
                "content is terminal settings but the target is a gateway".to_owned(),
            ]),
        }
    }
}

/// A bundle as it travels and is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    pub bundle: u16,
    pub key: String,
    pub body: String,
    pub sig: String,
}

impl SignedBundle {
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let b: Self =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Format(e.to_string()))?;
        if b.bundle != BUNDLE_FORMAT {
            return Err(BundleError::UnsupportedFormat(b.bundle));
        }
        Ok(b)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The body, read without checking the signature: only for showing what a refused bundle
    /// claimed to be.
    pub fn unverified_body(&self) -> Option<BundleBody> {
        serde_json::from_str(&self.body).ok()
    }
}

fn signed_bytes(body: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + body.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(body.as_bytes());
    m
}

fn key_id(public: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn read(path: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(path).map_err(|source| BundleError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Central's bundle-signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl SigningKey {
    /// A new key, with its private half as PKCS#8 PEM to store.
    pub fn generate() -> Result<(Self, String), BundleError> {
        let bad = |m: &str| BundleError::Key {
            path: PathBuf::new(),
            message: m.to_owned(),
        };
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| bad("cannot generate"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| bad("generated key"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok((Self { pair, id }, pem("PRIVATE KEY", pkcs8.as_ref())))
    }

    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let text = read(path)?;
        let bad = |m: &str| BundleError::Key {
            path: path.to_owned(),
            message: m.to_owned(),
        };
        let der = unpem("PRIVATE KEY", &text).ok_or_else(|| bad("no PEM PRIVATE KEY in it"))?;
        // Accept keys made by OpenSSL too (PKCS#8 v1, without the public half).
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| bad("not an Ed25519 private key in PKCS#8"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half, as a PEM `PUBLIC KEY` that gateways trust (and OpenSSL reads).
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        pem("PUBLIC KEY", &der)
    }

    /// Signs any text under a context of its own (so a signature for one kind of message is
    /// never valid for another): the base64 signature.
    pub fn sign_text(&self, context: &[u8], text: &str) -> String {
        let mut m = Vec::with_capacity(context.len() + text.len());
        m.extend_from_slice(context);
        m.extend_from_slice(text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(&m).as_ref())
    }

    /// Signs bytes that already carry their own context: the base64 signature.
    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(bytes).as_ref())
    }

    pub fn sign(&self, body: &BundleBody) -> Result<SignedBundle, BundleError> {
        let text = serde_json::to_string(body).map_err(|e| BundleError::Body(e.to_string()))?;
        let sig = self.pair.sign(&signed_bytes(&text));
        Ok(SignedBundle {
            bundle: BUNDLE_FORMAT,
            key: self.id.clone(),
            body: text,
            sig: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        })
    }
}

/// A trusted bundle-signing public key.
#[derive(Clone)]
pub struct VerifyingKey {
    raw: Vec<u8>,
    id: String,
}

impl VerifyingKey {
    pub fn from_pem(text: &str) -> Option<Self> {
        let der = unpem("PUBLIC KEY", text)?;
        let raw = der.strip_prefix(&SPKI_PREFIX[..])?;
        (raw.len() == 32).then(|| Self {
            raw: raw.to_vec(),
            id: key_id(raw),
        })
    }

    pub fn load(path: &Path) -> Result<Self, BundleError> {
        Self::from_pem(&read(path)?).ok_or_else(|| BundleError::Key {
            path: path.to_owned(),
            message: "not an Ed25519 PUBLIC KEY in PEM".to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks a signature made by [`SigningKey::sign_bytes`].
    pub fn verify_bytes(&self, bytes: &[u8], sig: &str) -> bool {
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .is_ok_and(|sig| {
                UnparsedPublicKey::new(&ED25519, &self.raw)
                    .verify(bytes, &sig)
                    .is_ok()
            })
    }

    /// Checks a signature made by [`SigningKey::sign_text`] with the same context.
    pub fn verify_text(
        &self,
        context: &[u8],
        key: &str,
        text: &str,
        sig: &str,
    ) -> Result<(), BundleError> {
        if key != self.id {
            return Err(BundleError::UnknownKey {
                found: key.to_owned(),
                trusted: self.id.clone(),
            });
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| BundleError::BadSignature)?;
        let mut m = Vec::with_capacity(context.len() + text.len());
        m.extend_from_slice(context);
        m.extend_from_slice(text.as_bytes());
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(&m, &sig)
            .map_err(|_| BundleError::BadSignature)
    }

    /// Checks the signature, then reads the body. Nothing in the body is trusted before this.
    pub fn verify(&self, b: &SignedBundle) -> Result<BundleBody, BundleError> {
        if b.key != self.id {
            return Err(BundleError::UnknownKey {
                found: b.key.clone(),
                trusted: self.id.clone(),
            });
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&b.sig)
            .map_err(|_| BundleError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(&signed_bytes(&b.body), &sig)
            .map_err(|_| BundleError::BadSignature)?;
        serde_json::from_str(&b.body).map_err(|e| BundleError::Body(e.to_string()))
    }
}

/// Writes a new signing key pair as `STEM.key` (mode 0600) and `STEM.pub` in `dir`; refuses to
/// overwrite either.
pub fn create_key_files(
    dir: &Path,
    stem: &str,
) -> Result<(PathBuf, PathBuf), crate::certs::CertError> {
    let (key, private) = SigningKey::generate().map_err(|e| crate::certs::CertError::Io {
        path: dir.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::create_dir_all(dir).map_err(|source| crate::certs::CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let (k, p) = (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.pub")),
    );
    crate::certs::write_new(&k, &private, true)?;
    crate::certs::write_new(&p, &key.public_pem(), false)?;
    Ok((k, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(version: u64) -> BundleBody {
        BundleBody {
            target: Target {
                gateway: "gw-1".into(),
                terminal: Some("kiosk-1".into()),
            },
            version,
            issued: OffsetDateTime::UNIX_EPOCH,
            note: "test".into(),
            content: Content::Terminal {
                settings: TerminalSettings::default(),
            },
        }
    }

    #[test]
    fn signs_verifies_and_refuses_alterations_and_other_keys() {
        let (key, private) = SigningKey::generate().unwrap();
        let trusted = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        assert_eq!(trusted.id(), key.id());
        let signed = key.sign(&body(3)).unwrap();
        let again = SignedBundle::parse(signed.to_json().as_bytes()).unwrap();
        assert_eq!(trusted.verify(&again).unwrap(), body(3));

        let mut altered = signed.clone();
        altered.body = altered.body.replace("\"version\":3", "\"version\":4");
        assert!(matches!(
            trusted.verify(&altered),
            Err(BundleError::BadSignature)
        ));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(matches!(
            trusted.verify(&other.sign(&body(3)).unwrap()),
            Err(BundleError::UnknownKey { .. })
        ));
        // The private PEM loads back to the same key.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), private).unwrap();
        assert_eq!(
            SigningKey::load(&dir.path().join("k")).unwrap().id(),
            key.id()
        );
    }

    #[test]
    fn bad_documents_are_typed_errors() {
        assert!(matches!(
            SignedBundle::parse(b"{"),
            Err(BundleError::Format(_))
        ));
        assert!(matches!(
            SignedBundle::parse(br#"{"bundle":9,"key":"","body":"","sig":""}"#),
            Err(BundleError::UnsupportedFormat(9))
        ));
        assert!(matches!(
            SignedBundle::parse(&vec![b' '; MAX_BUNDLE_BYTES + 1]),
            Err(BundleError::TooLarge(_))
        ));
        assert!(VerifyingKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        )
        .is_none());
    }

    #[test]
    fn content_must_match_its_target() {
        let mut b = body(1);
        b.target.terminal = None;
        assert!(b.check(Path::new("/"), false).is_err());
        let mut g = body(1);
        g.content = Content::Gateway {
            toml: crate::examples::GATEWAY.to_owned(),
        };
        g.target.terminal = None;
        g.target.gateway = "another".into();
        let issues = g.check(Path::new("/"), false).unwrap_err();
        assert!(issues[0].contains("gateway.id"), "{issues:?}");
        g.target.gateway = "gw-hongxing-01".into();
        assert!(matches!(
            g.check(Path::new("/"), false),
            Ok(Checked::Gateway(_))
        ));
    }
}
