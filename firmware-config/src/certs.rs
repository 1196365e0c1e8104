//! The certificate tooling behind `fwcfg certs`: a CA for the street, a server certificate for
//! the broker, and a client certificate per gateway whose common name is the gateway's id (and
//! one named `central` for central). Keys are ECDSA P-256, written with mode 0600.
//!
//! Client certificates carry no Organization: rumqttd takes that field as a tenant and would
//! isolate the client's topics.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};

use crate::config::TlsFiles;

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

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Authority {
    /// Creates a new CA in `dir`.
    pub fn create(dir: &Path, name: &str) -> Result<Self, CertError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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

    /// A server certificate for the broker, valid for `hosts` (names or IP addresses).
    pub fn server(&self, name: &str, hosts: &[String]) -> Result<TlsFiles, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        for h in hosts {
            params.subject_alt_names.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into()?),
            });
        }
        self.issue(name, params)
    }

    /// A client certificate whose common name is `id` (a gateway id, or `central`).
    pub fn client(&self, id: &str) -> Result<TlsFiles, CertError> {
        crate::ids::check_id(id).map_err(|e| CertError::Name(id.to_owned(), e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(id);
        self.issue(id, params)
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
}
