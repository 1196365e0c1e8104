//! Revoked certificates: the street CA's certificate revocation list (CRL), as `fwcfg certs
//! revoke` writes it, read again whenever the file changes so that a revocation takes effect
//! without a restart.
//!
//! A CRL is trusted only when the CA's key signed it; a file that cannot be read or checked
//! leaves the list that was in force (and says so), never an empty one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

struct Source {
    crl: PathBuf,
    /// The CA's certificate (DER), whose key must have signed the CRL.
    ca_der: Vec<u8>,
}

#[derive(Default)]
struct State {
    serials: HashSet<Vec<u8>>,
    modified: Option<SystemTime>,
}

/// The serial numbers of revoked certificates.
pub struct Revocations {
    source: Option<Source>,
    state: RwLock<State>,
}

fn file_error(path: &Path, message: impl ToString) -> RevocationError {
    RevocationError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The DER of the first PEM block labelled `label` in `text`, or `text` itself when it is not
/// PEM (a DER file).
fn der_of(bytes: &[u8], label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(bytes.to_vec());
    };
    let begin = format!("-----BEGIN {label}-----");
    let Some(start) = text.find(&begin) else {
        return (!text.contains("-----BEGIN")).then(|| bytes.to_vec());
    };
    let start = start + begin.len();
    let stop = start + text[start..].find("-----END")?;
    let b64: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl Revocations {
    /// Nothing is revoked (no CRL configured).
    pub fn none() -> Self {
        Self {
            source: None,
            state: RwLock::default(),
        }
    }

    /// Reads the CRL at `crl`, which the CA in `ca_file` must have signed.
    pub fn from_crl_file(crl: &Path, ca_file: &Path) -> Result<Self, RevocationError> {
        let ca = std::fs::read(ca_file).map_err(|e| file_error(ca_file, e))?;
        let ca_der = der_of(&ca, "CERTIFICATE")
            .ok_or_else(|| file_error(ca_file, "no certificate in it"))?;
        x509_parser::parse_x509_certificate(&ca_der).map_err(|e| file_error(ca_file, e))?;
        let r = Self {
            source: Some(Source {
                crl: crl.to_owned(),
                ca_der,
            }),
            state: RwLock::default(),
        };
        r.load()?;
        Ok(r)
    }

    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.state
            .read()
            .map(|s| s.serials.contains(serial))
            .unwrap_or(true)
    }

    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.serials.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the CRL again if the file changed since it was last read. Ok(true) when a new
    /// list is in force; on an error the list in force stays.
    pub fn refresh(&self) -> Result<bool, RevocationError> {
        let Some(src) = &self.source else {
            return Ok(false);
        };
        let modified = std::fs::metadata(&src.crl)
            .and_then(|m| m.modified())
            .map_err(|e| file_error(&src.crl, e))?;
        let known = self.state.read().ok().and_then(|s| s.modified);
        if known == Some(modified) {
            return Ok(false);
        }
        self.load()?;
        Ok(true)
    }

    fn load(&self) -> Result<(), RevocationError> {
        let Some(src) = &self.source else {
            return Ok(());
        };
        let modified = std::fs::metadata(&src.crl).and_then(|m| m.modified()).ok();
        let bytes = std::fs::read(&src.crl).map_err(|e| file_error(&src.crl, e))?;
        let der =
            der_of(&bytes, "X509 CRL").ok_or_else(|| file_error(&src.crl, "no X509 CRL in it"))?;
        let (_, crl) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| file_error(&src.crl, format!("not a CRL: {e}")))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&src.ca_der)
            .map_err(|e| file_error(&src.crl, e))?;
        crl.verify_signature(ca.public_key())
            .map_err(|e| file_error(&src.crl, format!("not signed by the CA: {e}")))?;
        let serials: HashSet<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        if let Ok(mut s) = self.state.write() {
            s.serials = serials;
            s.modified = modified;
        }
        Ok(())
    }

    /// Replaces the list (tests only: a CRL file is the real way in).
    #[doc(hidden)]
    pub fn replace_for_test(&self, serials: impl IntoIterator<Item = Vec<u8>>) {
        if let Ok(mut s) = self.state.write() {
            s.serials = serials.into_iter().collect();
        }
    }
}

/// A serial number as lower-case hex, for logs and the revocation list.
pub fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{serial_of, Authority};

    /// Marks `path` as changed (its time moves on even within the clock's granularity).
    fn changed(path: &Path) {
        let t = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn a_crl_signed_by_the_ca_revokes_its_serials_and_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "CA").unwrap();
        let a = ca.client("gw-a").unwrap();
        let b = ca.client("gw-b").unwrap();
        let crl = ca.revoke(&a.cert_file, "key lost").unwrap();
        let r = Revocations::from_crl_file(&crl, &ca.ca_file()).unwrap();
        assert!(r.is_revoked(&serial_of(&a.cert_file).unwrap()));
        assert!(!r.is_revoked(&serial_of(&b.cert_file).unwrap()));
        assert!(!r.refresh().unwrap(), "unchanged file, nothing new");
        // The file's time is what tells a change.
        ca.revoke(&b.cert_file, "stolen").unwrap();
        changed(&crl);
        assert!(r.refresh().unwrap());
        assert!(r.is_revoked(&serial_of(&b.cert_file).unwrap()));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_crl_of_another_ca_or_a_broken_file_is_refused_and_the_old_list_stays() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(&dir.path().join("ca"), "CA").unwrap();
        let rogue = Authority::create(&dir.path().join("rogue"), "Rogue").unwrap();
        let a = ca.client("gw-a").unwrap();
        let crl = ca.revoke(&a.cert_file, "test").unwrap();
        let r = Revocations::from_crl_file(&crl, &ca.ca_file()).unwrap();
        let foreign = rogue
            .revoke(&rogue.client("gw-z").unwrap().cert_file, "x")
            .unwrap();
        assert!(Revocations::from_crl_file(&foreign, &ca.ca_file()).is_err());
        std::fs::write(&crl, "garbage").unwrap();
        changed(&crl);
        assert!(r.refresh().is_err());
        assert!(r.is_revoked(&serial_of(&a.cert_file).unwrap()));
    }
}
