//! Signed messages in both directions: identity and authenticity that hold on any broker.
//!
//! - **Uplink.** A gateway signs each message with the private key of its TLS client
//!   certificate and attaches the certificate. Central checks that the certificate was issued
//!   by the street's CA, is neither expired nor revoked, that its common name is the gateway the
//!   message claims to be from, and that the signature holds.
//! - **Downlink.** Central signs each message it sends a gateway (ack, command, data) with its
//!   Ed25519 signing key, the key whose public half every gateway is configured with
//!   (`uplink.central_key_file`). A gateway refuses anything unsigned or mis-signed.
//!
//! Both signatures cover the direction, the gateway, the channel (topic), the kind, the
//! envelope's sequence number and time, and the payload's JSON as sent — so a signed message
//! cannot be moved to another topic, another gateway or another kind, and its time and
//! sequence number can be checked against replays by the receiver.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;

use super::mqtt::{read_certs, read_key, MqttSetupError};
use crate::bundle::{SigningKey, VerifyingKey};
use crate::config::TlsFiles;
use crate::ids::GatewayId;
use crate::revocation::Revocations;
use crate::topics::Channel;
use crate::wire::{Envelope, Signature};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{0}")]
    Files(#[from] MqttSetupError),
    #[error("key {0}: only ECDSA P-256 keys in PKCS#8 (as `fwcfg certs` makes) can sign")]
    Key(String),
    #[error("message is not signed")]
    Unsigned,
    #[error("bad signature encoding")]
    Encoding,
    #[error("certificate not issued by the gateway CA: {0}")]
    Untrusted(String),
    #[error("certificate is for {cert:?}, the message claims {claimed:?}")]
    WrongGateway { cert: String, claimed: String },
    #[error("certificate of {0:?} has expired")]
    Expired(String),
    #[error("certificate of {0:?} is revoked")]
    Revoked(String),
    #[error("signed by key {found}, not by central's key {trusted}")]
    UnknownKey { found: String, trusted: String },
    #[error("signature does not verify")]
    BadSignature,
    #[error("CA setup: {0}")]
    Setup(String),
}

/// Which way a message travels: part of what is signed, so that a signature made for one
/// direction is never valid for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The bytes a signature covers.
fn signed_bytes(dir: Direction, channel: Channel, env: &Envelope, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 96);
    m.extend_from_slice(match dir {
        Direction::Up => b"gridedge-up-v2\0",
        Direction::Down => b"gridedge-down-v2\0",
    });
    for part in [env.gateway.as_str(), channel.as_str(), env.message.kind()] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(&env.seq.to_be_bytes());
    m.extend_from_slice(&env.time.unix_timestamp_nanos().to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// The payload bytes a received envelope's signature covers.
fn received_payload(env: &Envelope) -> &[u8] {
    &env.raw_payload
}

/// The gateway's side of the uplink: signs with its certificate's key.
pub struct Signer {
    key: EcdsaKeyPair,
    cert_b64: String,
    rng: SystemRandom,
    not_after: Option<OffsetDateTime>,
}

impl Signer {
    pub fn from_files(files: &TlsFiles) -> Result<Self, SigningError> {
        let cert = read_certs(&files.cert_file)?
            .into_iter()
            .next()
            .ok_or_else(|| SigningError::Key(files.cert_file.display().to_string()))?;
        let key = match read_key(&files.key_file)? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => return Err(SigningError::Key(files.key_file.display().to_string())),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            key.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|_| SigningError::Key(files.key_file.display().to_string()))?;
        let not_after = x509_parser::parse_x509_certificate(cert.as_ref())
            .ok()
            .and_then(|(_, c)| {
                OffsetDateTime::from_unix_timestamp(c.validity().not_after.timestamp()).ok()
            });
        Ok(Self {
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.as_ref()),
            rng,
            not_after,
        })
    }

    /// When the certificate stops being valid.
    pub fn not_after(&self) -> Option<OffsetDateTime> {
        self.not_after
    }

    /// The signature of `env`, published on `channel`, whose payload encodes as `payload`.
    pub fn sign(&self, channel: Channel, env: &Envelope, payload: &[u8]) -> Signature {
        let value = self
            .key
            .sign(
                &self.rng,
                &signed_bytes(Direction::Up, channel, env, payload),
            )
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_ref()))
            .unwrap_or_default();
        Signature {
            cert: self.cert_b64.clone(),
            key: String::new(),
            value,
        }
    }
}

/// A verified certificate: its common name, public key, expiry and serial.
#[derive(Debug, Clone)]
struct CertIdentity {
    common_name: String,
    public_key: Vec<u8>,
    not_after: i64,
    serial: Vec<u8>,
}

/// Central's side of the uplink: trusts certificates issued by the gateway CA and not revoked,
/// and remembers the ones it has already checked (by their bytes) so that the chain is
/// verified once per certificate.
pub struct Verifier {
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    known: Mutex<HashMap<Vec<u8>, CertIdentity>>,
    revocations: Arc<Revocations>,
}

impl Verifier {
    /// Trusts `ca_file`; `revocations` names the certificates no longer trusted.
    pub fn from_ca_file(
        ca_file: &Path,
        revocations: Arc<Revocations>,
    ) -> Result<Self, SigningError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca_file)? {
            roots
                .add(c)
                .map_err(|e| SigningError::Setup(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| SigningError::Setup(e.to_string()))?;
        Ok(Self {
            client_verifier,
            known: Mutex::new(HashMap::new()),
            revocations,
        })
    }

    /// Checks that `env`, received on `channel`, is signed by its gateway's valid certificate.
    pub fn verify(&self, channel: Channel, env: &Envelope) -> Result<(), SigningError> {
        let sig = env.sig.as_ref().ok_or(SigningError::Unsigned)?;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let der = b64.decode(&sig.cert).map_err(|_| SigningError::Encoding)?;
        let value = b64.decode(&sig.value).map_err(|_| SigningError::Encoding)?;
        let id = self.identity(der)?;
        if id.common_name != env.gateway.as_str() {
            return Err(SigningError::WrongGateway {
                cert: id.common_name,
                claimed: env.gateway.to_string(),
            });
        }
        if id.not_after < OffsetDateTime::now_utc().unix_timestamp() {
            return Err(SigningError::Expired(id.common_name));
        }
        if self.revocations.is_revoked(&id.serial) {
            return Err(SigningError::Revoked(id.common_name));
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &id.public_key)
            .verify(
                &signed_bytes(Direction::Up, channel, env, received_payload(env)),
                &value,
            )
            .map_err(|_| SigningError::BadSignature)
    }

    /// The identity of a certificate issued by the CA.
    fn identity(&self, der: Vec<u8>) -> Result<CertIdentity, SigningError> {
        if let Some(found) = self.known.lock().ok().and_then(|k| k.get(&der).cloned()) {
            return Ok(found);
        }
        let cert = CertificateDer::from(der.clone());
        self.client_verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map_err(|e| SigningError::Untrusted(e.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| SigningError::Untrusted(e.to_string()))?;
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .ok_or_else(|| SigningError::Untrusted("no common name".into()))?
            .to_owned();
        let id = CertIdentity {
            common_name,
            public_key: parsed.public_key().subject_public_key.data.to_vec(),
            not_after: parsed.validity().not_after.timestamp(),
            serial: parsed.tbs_certificate.raw_serial().to_vec(),
        };
        if let Ok(mut known) = self.known.lock() {
            if known.len() > 100_000 {
                known.clear();
            }
            known.insert(der, id.clone());
        }
        Ok(id)
    }
}

/// Central's side of the downlink: signs with central's Ed25519 key.
pub struct DownlinkSigner {
    key: SigningKey,
}

impl DownlinkSigner {
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// The signature of `env`, published on `channel`, whose payload encodes as `payload`.
    pub fn sign(&self, channel: Channel, env: &Envelope, payload: &[u8]) -> Signature {
        Signature {
            cert: String::new(),
            key: self.key.id().to_owned(),
            value: self
                .key
                .sign_bytes(&signed_bytes(Direction::Down, channel, env, payload)),
        }
    }

    /// Encodes `env` for `channel`, signed.
    pub fn encode(
        &self,
        channel: Channel,
        env: &Envelope,
    ) -> Result<Vec<u8>, crate::wire::WireError> {
        env.encode_signed(|payload| Some(self.sign(channel, env, payload)))
    }
}

/// The gateway's side of the downlink: trusts central's public key only.
#[derive(Clone)]
pub struct DownlinkVerifier {
    key: VerifyingKey,
}

impl DownlinkVerifier {
    pub fn new(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// Checks that `env`, received on `channel`, is central's and addressed to `gateway`.
    pub fn verify(
        &self,
        gateway: &GatewayId,
        channel: Channel,
        env: &Envelope,
    ) -> Result<(), SigningError> {
        let sig = env.sig.as_ref().ok_or(SigningError::Unsigned)?;
        if sig.key != self.key.id() {
            return Err(SigningError::UnknownKey {
                found: sig.key.clone(),
                trusted: self.key.id().to_owned(),
            });
        }
        let bytes = signed_bytes(Direction::Down, channel, env, received_payload(env));
        if !self.key.verify_bytes(&bytes, &sig.value) {
            return Err(SigningError::BadSignature);
        }
        // Checked after the signature: a message central signed for another gateway.
        if &env.gateway != gateway {
            return Err(SigningError::WrongGateway {
                cert: gateway.to_string(),
                claimed: env.gateway.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Authority;
    use crate::wire::{self, Ack, Message};

    fn env(gateway: &str, seq: u64, message: Message) -> Envelope {
        Envelope::new(GatewayId::new(gateway).unwrap(), seq, message)
    }

    fn ack(n: u64) -> Message {
        Message::Ack(Ack {
            watermark: n,
            ranges: vec![(1, n)],
            batch: Some(n),
        })
    }

    fn health() -> Message {
        Message::Reply(wire::CommandReply {
            id: "c1".into(),
            ok: true,
            message: String::new(),
            data: serde_json::Value::Null,
        })
    }

    /// Encodes with `sign` and decodes again, as the receiver sees it.
    fn through_wire(env: &Envelope, sign: impl FnOnce(&[u8]) -> Option<Signature>) -> Envelope {
        wire::decode(&env.encode_signed(sign).unwrap()).unwrap()
    }

    #[test]
    fn an_uplink_signature_binds_gateway_channel_kind_seq_time_and_payload_to_a_certificate_of_the_ca(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "CA").unwrap();
        let signer = Signer::from_files(&ca.client("gw-1").unwrap()).unwrap();
        let verifier =
            Verifier::from_ca_file(&ca.ca_file(), Arc::new(Revocations::none())).unwrap();
        let sent = env("gw-1", 7, health());
        let got = through_wire(&sent, |p| Some(signer.sign(Channel::Reply, &sent, p)));
        verifier.verify(Channel::Reply, &got).unwrap();
        // Cached path too.
        verifier.verify(Channel::Reply, &got).unwrap();
        // Another topic, sequence number, time or gateway: refused.
        assert!(matches!(
            verifier.verify(Channel::Health, &got),
            Err(SigningError::BadSignature)
        ));
        for tamper in [
            |e: &mut Envelope| e.seq += 1,
            |e: &mut Envelope| e.time += time::Duration::seconds(1),
            |e: &mut Envelope| e.raw_payload.push(b' '),
        ] {
            let mut bad = got.clone();
            tamper(&mut bad);
            assert!(matches!(
                verifier.verify(Channel::Reply, &bad),
                Err(SigningError::BadSignature)
            ));
        }
        let mut other = got.clone();
        other.gateway = GatewayId::new("gw-2").unwrap();
        assert!(matches!(
            verifier.verify(Channel::Reply, &other),
            Err(SigningError::WrongGateway { .. })
        ));
        let mut unsigned = got.clone();
        unsigned.sig = None;
        assert!(matches!(
            verifier.verify(Channel::Reply, &unsigned),
            Err(SigningError::Unsigned)
        ));

        let other = tempfile::tempdir().unwrap();
        let rogue_ca = Authority::create(other.path(), "Rogue").unwrap();
        let rogue = Signer::from_files(&rogue_ca.client("gw-1").unwrap()).unwrap();
        let forged = through_wire(&sent, |p| Some(rogue.sign(Channel::Reply, &sent, p)));
        assert!(matches!(
            verifier.verify(Channel::Reply, &forged),
            Err(SigningError::Untrusted(_))
        ));
    }

    #[test]
    fn a_revoked_or_expired_gateway_certificate_is_refused_even_once_known() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "CA").unwrap();
        let files = ca.client("gw-1").unwrap();
        let signer = Signer::from_files(&files).unwrap();
        let revocations = Arc::new(Revocations::none());
        let verifier = Verifier::from_ca_file(&ca.ca_file(), revocations.clone()).unwrap();
        let sent = env("gw-1", 1, health());
        let got = through_wire(&sent, |p| Some(signer.sign(Channel::Reply, &sent, p)));
        verifier.verify(Channel::Reply, &got).unwrap();
        let serial = crate::certs::serial_of(&files.cert_file).unwrap();
        revocations.replace_for_test([serial]);
        assert!(matches!(
            verifier.verify(Channel::Reply, &got),
            Err(SigningError::Revoked(_))
        ));

        let expired = ca.client_valid("gw-old", -2, -1).unwrap();
        let signer = Signer::from_files(&expired).unwrap();
        let sent = env("gw-old", 1, health());
        let got = through_wire(&sent, |p| Some(signer.sign(Channel::Reply, &sent, p)));
        assert!(verifier.verify(Channel::Reply, &got).is_err());
    }

    #[test]
    fn a_downlink_signature_is_centrals_for_one_gateway_channel_and_kind() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        let signer = DownlinkSigner::new(key);
        let gw = GatewayId::new("gw-1").unwrap();
        let verifier = DownlinkVerifier::new(verifying);
        let sent = env("gw-1", 5, ack(5));
        let got = wire::decode(&signer.encode(Channel::Ack, &sent).unwrap()).unwrap();
        verifier.verify(&gw, Channel::Ack, &got).unwrap();
        assert!(matches!(
            verifier.verify(&gw, Channel::Cmd, &got),
            Err(SigningError::BadSignature)
        ));
        let other = GatewayId::new("gw-2").unwrap();
        assert!(matches!(
            verifier.verify(&other, Channel::Ack, &got),
            Err(SigningError::WrongGateway { .. })
        ));
        let mut moved = got.clone();
        moved.gateway = other.clone();
        assert!(matches!(
            verifier.verify(&other, Channel::Ack, &moved),
            Err(SigningError::BadSignature)
        ));
        let mut unsigned = got.clone();
        unsigned.sig = None;
        assert!(matches!(
            verifier.verify(&gw, Channel::Ack, &unsigned),
            Err(SigningError::Unsigned)
        ));
        // An uplink signature is no downlink signature, whatever key made it.
        let (rogue, _) = SigningKey::generate().unwrap();
        let forged = wire::decode(
            &DownlinkSigner::new(rogue)
                .encode(Channel::Ack, &sent)
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&gw, Channel::Ack, &forged),
            Err(SigningError::UnknownKey { .. })
        ));
    }
}
