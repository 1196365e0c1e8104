//! The certificate tooling behind `fwcfg certs`: a CA for the street, a server certificate for
//! the broker, a client certificate per gateway whose common name is the gateway's id (and one
//! named `central` for central), renewal, and revocation through a CRL. Keys are ECDSA P-256,
//! written with mode 0600.
//!
//! Every certificate has a random serial number and an expiry ([`DEFAULT_CLIENT_DAYS`] for
//! gateways and central, [`DEFAULT_SERVER_DAYS`] for brokers, [`DEFAULT_CA_DAYS`] for the CA).
//! Revoking one adds its serial to `revoked.json` in the CA's folder and writes `crl.pem` anew,
//! signed by the CA: central and the broker read it again within seconds of a change.
//!
//! Client certificates carry no Organization: rumqttd takes that field as a tenant and would
//! isolate the client's topics.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::config::TlsFiles;

/// Days a gateway's or central's client certificate is valid by default.
pub const DEFAULT_CLIENT_DAYS: i64 = 730;
/// Days a broker's server certificate is valid by default.
pub const DEFAULT_SERVER_DAYS: i64 = 825;
/// Days the street CA is valid by default.
pub const DEFAULT_CA_DAYS: i64 = 3650;
/// Days a CRL is valid: a new one is written with every revocation, and `fwcfg certs crl`
/// writes one again before this runs out.
pub const CRL_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0:?} is not a valid name: {1}")]
    Name(String, crate::ids::IdError),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--days {0}: give 1 to 36500")]
    Days(i64),
}

/// A CA on disk (`ca.pem`, `ca.key`) that issues certificates into the same folder.
pub struct Authority {
    dir: PathBuf,
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

fn parse_error(path: &Path, message: impl ToString) -> CertError {
    CertError::Parse {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

pub(crate) fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(if secret { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_owned())
        } else {
            CertError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

/// Writes `contents` to `path` through a temporary file and a rename, so that a reader never
/// sees half a file (central and the broker read the CRL while it is replaced).
fn write_replacing(path: &Path, contents: &str) -> Result<(), CertError> {
    crate::durable::write(path, contents.as_bytes(), crate::durable::Access::Default)
        .map_err(io(path))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A random 16-byte serial number whose DER encoding is its bytes as they are (positive, no
/// leading zero), so that a certificate's raw serial and the CRL's entry compare equal.
fn new_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand_bytes();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    // The system's random source only fails when the OS has none; a certificate tool on
    // such a machine could not make keys either.
    let _ = ring::rand::SystemRandom::new().fill(&mut out);
    out
}

fn check_days(days: i64) -> Result<i64, CertError> {
    if (1..=36_500).contains(&days) {
        Ok(days)
    } else {
        Err(CertError::Days(days))
    }
}

/// Sets a validity of `from`..`to` days from now.
fn valid(params: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(from_days) - Duration::minutes(5);
    params.not_after = now + Duration::days(to_days);
    params.serial_number = Some(new_serial());
}

/// The raw serial number of the certificate in a PEM file.
pub fn serial_of(cert_file: &Path) -> Result<Vec<u8>, CertError> {
    let text = std::fs::read_to_string(cert_file).map_err(io(cert_file))?;
    let der = pem::parse(&text).map_err(|e| parse_error(cert_file, e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents())
        .map_err(|e| parse_error(cert_file, e))?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

/// One revoked certificate, as `revoked.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The certificate's common name, for people.
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RevokedList {
    /// Increases with every CRL written.
    crl_number: u64,
    revoked: Vec<Revoked>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Authority {
    /// Creates a new CA in `dir`, valid for [`DEFAULT_CA_DAYS`].
    pub fn create(dir: &Path, name: &str) -> Result<Self, CertError> {
        Self::create_for(dir, name, DEFAULT_CA_DAYS)
    }

    /// Creates a new CA in `dir`, valid for `days`.
    pub fn create_for(dir: &Path, name: &str, days: i64) -> Result<Self, CertError> {
        let days = check_days(days)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        valid(&mut params, 0, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_new(&dir.join("ca.key"), &key.serialize_pem(), true)?;
        write_new(&dir.join("ca.pem"), &cert.pem(), false)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
        })
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
        let params = CertificateParams::from_ca_cert_pem(
            &std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?,
        )?;
        // Re-signing the same subject with the same key yields an issuer that verifies the
        // certificates it signs against the original ca.pem.
        let cert = params.self_signed(&key)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
        })
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Where the CA writes its certificate revocation list.
    pub fn crl_file(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// A server certificate for the broker, valid for `hosts` (names or IP addresses).
    pub fn server(&self, name: &str, hosts: &[String]) -> Result<TlsFiles, CertError> {
        self.server_for(name, hosts, DEFAULT_SERVER_DAYS)
    }

    /// A server certificate valid for `days`.
    pub fn server_for(
        &self,
        name: &str,
        hosts: &[String],
        days: i64,
    ) -> Result<TlsFiles, CertError> {
        let days = check_days(days)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        for h in hosts {
            params.subject_alt_names.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into()?),
            });
        }
        valid(&mut params, 0, days);
        self.issue(name, params)
    }

    /// A client certificate whose common name is `id` (a gateway id, or `central`), valid for
    /// [`DEFAULT_CLIENT_DAYS`].
    pub fn client(&self, id: &str) -> Result<TlsFiles, CertError> {
        self.client_valid(id, 0, DEFAULT_CLIENT_DAYS)
    }

    /// A client certificate valid from `from_days` to `to_days` days from now (negative: in
    /// the past — for testing what an expired certificate meets).
    pub fn client_valid(
        &self,
        id: &str,
        from_days: i64,
        to_days: i64,
    ) -> Result<TlsFiles, CertError> {
        crate::ids::check_id(id).map_err(|e| CertError::Name(id.to_owned(), e))?;
        if to_days > 36_500 || to_days <= from_days {
            return Err(CertError::Days(to_days));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(id);
        valid(&mut params, from_days, to_days);
        self.issue(id, params)
    }

    /// A new certificate for the same name and key as `id`'s, valid for `days` from now: the
    /// holder swaps in `ID.pem` and keeps its key. The old certificate stays valid until it
    /// expires or is revoked; it is kept as `ID.pem.previous`.
    pub fn renew(&self, id: &str, days: i64) -> Result<TlsFiles, CertError> {
        let days = check_days(days)?;
        crate::ids::check_id(id).map_err(|e| CertError::Name(id.to_owned(), e))?;
        let cert_file = self.dir.join(format!("{id}.pem"));
        let key_file = self.dir.join(format!("{id}.key"));
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_file).map_err(io(&key_file))?)?;
        let old = std::fs::read_to_string(&cert_file).map_err(io(&cert_file))?;
        let der = pem::parse(&old).map_err(|e| parse_error(&cert_file, e))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(der.contents())
            .map_err(|e| parse_error(&cert_file, e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(id);
        for san in parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|s| s.value.general_names.clone())
            .unwrap_or_default()
        {
            match san {
                x509_parser::extensions::GeneralName::DNSName(n) => params
                    .subject_alt_names
                    .push(SanType::DnsName(n.to_owned().try_into()?)),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(ip).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(ip).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        params.subject_alt_names.push(SanType::IpAddress(ip));
                    }
                }
                _ => {}
            }
        }
        valid(&mut params, 0, days);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let previous = self.dir.join(format!("{id}.pem.previous"));
        std::fs::copy(&cert_file, &previous).map_err(io(&previous))?;
        write_replacing(&cert_file, &cert.pem())?;
        Ok(TlsFiles {
            ca_file: self.ca_file(),
            cert_file,
            key_file,
        })
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Result<TlsFiles, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}.key"));
        write_new(&key_file, &key.serialize_pem(), true)?;
        write_new(&cert_file, &cert.pem(), false)?;
        Ok(TlsFiles {
            ca_file: self.ca_file(),
            cert_file,
            key_file,
        })
    }

    fn revoked_list(&self) -> Result<RevokedList, CertError> {
        let path = self.dir.join("revoked.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| parse_error(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevokedList::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The certificates revoked so far.
    pub fn revoked(&self) -> Result<Vec<Revoked>, CertError> {
        Ok(self.revoked_list()?.revoked)
    }

    /// Revokes the certificate in `cert_file` and writes the CRL anew; returns its path.
    pub fn revoke(&self, cert_file: &Path, reason: &str) -> Result<PathBuf, CertError> {
        let text = std::fs::read_to_string(cert_file).map_err(io(cert_file))?;
        let der = pem::parse(&text).map_err(|e| parse_error(cert_file, e))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents())
            .map_err(|e| parse_error(cert_file, e))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let serial = hex(cert.tbs_certificate.raw_serial());
        let mut list = self.revoked_list()?;
        if !list.revoked.iter().any(|r| r.serial == serial) {
            list.revoked.push(Revoked {
                serial,
                name,
                at: OffsetDateTime::now_utc(),
                reason: reason.to_owned(),
            });
        }
        self.write_crl(list)
    }

    /// Writes the CRL again (a fresh `next_update`) with what is revoked; returns its path.
    pub fn refresh_crl(&self) -> Result<PathBuf, CertError> {
        let list = self.revoked_list()?;
        self.write_crl(list)
    }

    fn write_crl(&self, mut list: RevokedList) -> Result<PathBuf, CertError> {
        list.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = list
            .revoked
            .iter()
            .filter_map(|r| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&r.serial)?),
                    revocation_time: r.at,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from(list.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)?;
        let json = serde_json::to_string_pretty(&list)
            .map_err(|e| parse_error(&self.dir.join("revoked.json"), e))?;
        write_replacing(&self.dir.join("revoked.json"), &json)?;
        let path = self.crl_file();
        write_replacing(&path, &crl.pem()?)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_from_a_reloaded_ca_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        Authority::create(dir.path(), "Street CA").unwrap();
        assert!(matches!(
            Authority::create(dir.path(), "again"),
            Err(CertError::Exists(_))
        ));
        let ca = Authority::load(dir.path()).unwrap();
        let files = ca.client("gw-1").unwrap();
        assert!(std::fs::read_to_string(&files.cert_file)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert!(matches!(ca.client("gw-1"), Err(CertError::Exists(_))));
        assert!(matches!(ca.client("GW/1"), Err(CertError::Name(..))));
        ca.server("broker", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn validity(cert_file: &Path) -> (i64, i64, Vec<u8>) {
        let text = std::fs::read_to_string(cert_file).unwrap();
        let der = pem::parse(&text).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
            c.tbs_certificate.raw_serial().to_vec(),
        )
    }

    #[test]
    fn certificates_expire_have_distinct_serials_and_renew_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Street CA").unwrap();
        let a = ca.client("gw-a").unwrap();
        let b = ca.client("gw-b").unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (from, to, serial_a) = validity(&a.cert_file);
        assert!(from <= now && (to - now - DEFAULT_CLIENT_DAYS * 86_400).abs() < 60);
        let (_, _, serial_b) = validity(&b.cert_file);
        assert_ne!(serial_a, serial_b);
        assert_eq!(serial_of(&a.cert_file).unwrap(), serial_a);
        assert!(serial_a[0] & 0x80 == 0 && serial_a[0] != 0);

        let key_before = std::fs::read(&a.key_file).unwrap();
        let renewed = ca.renew("gw-a", 30).unwrap();
        let (_, to, serial) = validity(&renewed.cert_file);
        assert!((to - now - 30 * 86_400).abs() < 60);
        assert_ne!(serial, serial_a);
        assert_eq!(std::fs::read(&renewed.key_file).unwrap(), key_before);
        assert!(dir.path().join("gw-a.pem.previous").exists());
        assert!(matches!(ca.renew("gw-a", 0), Err(CertError::Days(0))));
        assert!(matches!(
            ca.client_valid("gw-c", 0, 40_000),
            Err(CertError::Days(_))
        ));
    }

    #[test]
    fn revoking_keeps_a_list_and_writes_a_crl_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Street CA").unwrap();
        let a = ca.client("gw-a").unwrap();
        let crl = ca.revoke(&a.cert_file, "stolen").unwrap();
        // Twice is once.
        ca.revoke(&a.cert_file, "stolen").unwrap();
        let revoked = ca.revoked().unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].name, "gw-a");
        assert_eq!(revoked[0].serial, hex(&serial_of(&a.cert_file).unwrap()));
        let text = std::fs::read_to_string(&crl).unwrap();
        let der = pem::parse(&text).unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(der.contents()).unwrap();
        let serials: Vec<Vec<u8>> = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![serial_of(&a.cert_file).unwrap()]);
        let ca_text = std::fs::read_to_string(ca.ca_file()).unwrap();
        let ca_der = pem::parse(&ca_text).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca_der.contents()).unwrap();
        parsed.verify_signature(ca_cert.public_key()).unwrap();
    }
}
