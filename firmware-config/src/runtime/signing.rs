//! Signed uplink messages: identity that works with any broker.
//!
//! A gateway signs each message it sends with the private key of its TLS client certificate and
//! attaches the certificate. Central checks that the certificate was issued by the street's CA,
//! that its common name is the gateway the message claims to be from, and that the signature
//! holds. The embedded broker (rumqttd) verifies client certificates but cannot bind topics to
//! them; with signatures, a gateway still cannot speak for another.
//!
//! The signature covers `gridedge-v1\0{gateway}\0{seq as 8 bytes BE}{payload JSON as sent}`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::mqtt::{read_certs, read_key, MqttSetupError};
use crate::config::TlsFiles;
use crate::ids::GatewayId;
use crate::wire::Signature;

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
    #[error("signature does not verify")]
    BadSignature,
    #[error("CA setup: {0}")]
    Setup(String),
}

fn signed_bytes(gateway: &GatewayId, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 64);
    m.extend_from_slice(b"gridedge-v1\0");
    m.extend_from_slice(gateway.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// The gateway's side.
pub struct Signer {
    key: EcdsaKeyPair,
    cert_b64: String,
    rng: SystemRandom,
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
        Ok(Self {
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.as_ref()),
            rng,
        })
    }

    pub fn sign(&self, gateway: &GatewayId, seq: u64, payload: &[u8]) -> Signature {
        let value = self
            .key
            .sign(&self.rng, &signed_bytes(gateway, seq, payload))
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_ref()))
            .unwrap_or_default();
        Signature {
            cert: self.cert_b64.clone(),
            value,
        }
    }
}

/// Central's side: trusts certificates issued by the gateway CA, and remembers the ones it has
/// already checked (by their bytes) so that the chain is verified once per certificate.
pub struct Verifier {
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    known: Mutex<HashMap<Vec<u8>, CertIdentity>>,
}

/// A verified certificate's common name and public key.
type CertIdentity = (String, Vec<u8>);

impl Verifier {
    pub fn from_ca_file(ca_file: &Path) -> Result<Self, SigningError> {
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
        })
    }

    /// Checks that `sig` is `gateway`'s signature over `payload` with envelope sequence `seq`.
    pub fn verify(
        &self,
        gateway: &GatewayId,
        seq: u64,
        payload: &[u8],
        sig: Option<&Signature>,
    ) -> Result<(), SigningError> {
        let sig = sig.ok_or(SigningError::Unsigned)?;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let der = b64.decode(&sig.cert).map_err(|_| SigningError::Encoding)?;
        let value = b64.decode(&sig.value).map_err(|_| SigningError::Encoding)?;
        let (cn, public_key) = self.identity(der)?;
        if cn != gateway.as_str() {
            return Err(SigningError::WrongGateway {
                cert: cn,
                claimed: gateway.to_string(),
            });
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public_key)
            .verify(&signed_bytes(gateway, seq, payload), &value)
            .map_err(|_| SigningError::BadSignature)
    }

    /// The common name and public key of a certificate issued by the CA.
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
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .ok_or_else(|| SigningError::Untrusted("no common name".into()))?
            .to_owned();
        let public_key = parsed.public_key().subject_public_key.data.to_vec();
        if let Ok(mut known) = self.known.lock() {
            if known.len() > 100_000 {
                known.clear();
            }
            known.insert(der, (cn.clone(), public_key.clone()));
        }
        Ok((cn, public_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Authority;

    #[test]
    fn a_signature_binds_gateway_seq_and_payload_to_a_certificate_of_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "CA").unwrap();
        let gw1 = GatewayId::new("gw-1").unwrap();
        let gw2 = GatewayId::new("gw-2").unwrap();
        let signer = Signer::from_files(&ca.client("gw-1").unwrap()).unwrap();
        let verifier = Verifier::from_ca_file(&ca.ca_file()).unwrap();
        let sig = signer.sign(&gw1, 7, b"{\"a\":1}");
        verifier.verify(&gw1, 7, b"{\"a\":1}", Some(&sig)).unwrap();
        // Cached path too.
        verifier.verify(&gw1, 7, b"{\"a\":1}", Some(&sig)).unwrap();
        assert!(matches!(
            verifier.verify(&gw1, 8, b"{\"a\":1}", Some(&sig)),
            Err(SigningError::BadSignature)
        ));
        assert!(matches!(
            verifier.verify(&gw1, 7, b"{\"a\":2}", Some(&sig)),
            Err(SigningError::BadSignature)
        ));
        assert!(matches!(
            verifier.verify(&gw2, 7, b"{\"a\":1}", Some(&sig)),
            Err(SigningError::WrongGateway { .. })
        ));
        assert!(matches!(
            verifier.verify(&gw1, 7, b"{}", None),
            Err(SigningError::Unsigned)
        ));

        let other = tempfile::tempdir().unwrap();
        let rogue_ca = Authority::create(other.path(), "Rogue").unwrap();
        let rogue = Signer::from_files(&rogue_ca.client("gw-1").unwrap()).unwrap();
        let forged = rogue.sign(&gw1, 7, b"{}");
        assert!(matches!(
            verifier.verify(&gw1, 7, b"{}", Some(&forged)),
            Err(SigningError::Untrusted(_))
        ));
    }
}
