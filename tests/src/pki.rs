//! A throw-away PKI for tests, made with the same tooling as `fwcfg certs`: one CA, a server
//! certificate for 127.0.0.1/localhost, and client certificates whose common name is the
//! client's id (as gateways' are).

use std::path::{Path, PathBuf};

use firmware_config::certs::Authority;
use firmware_config::config::TlsFiles;

use crate::Result;

pub struct TestPki {
    ca: Authority,
    pub ca_file: PathBuf,
}

impl TestPki {
    /// Creates the CA in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let ca = Authority::create(dir, "GridEdge test CA")?;
        Ok(Self {
            ca_file: ca.ca_file(),
            ca,
        })
    }

    /// A server certificate valid for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> Result<TlsFiles> {
        Ok(self
            .ca
            .server(name, &["localhost".to_owned(), "127.0.0.1".to_owned()])?)
    }

    /// A client certificate with common name `id` issued by another, unrelated CA (made in a
    /// `foreign` subfolder), that trusts this PKI's CA: a stranger who can reach our broker.
    pub fn foreign_client(&self, id: &str) -> Result<TlsFiles> {
        let dir = self
            .ca_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("foreign");
        let foreign = match Authority::load(&dir) {
            Ok(ca) => ca,
            Err(_) => Authority::create(&dir, "Foreign CA")?,
        };
        let mut files = foreign.client(id)?;
        files.ca_file = self.ca_file.clone();
        Ok(files)
    }

    /// A client certificate with common name `id`.
    pub fn client(&self, id: &str) -> Result<TlsFiles> {
        Ok(self.ca.client(id)?)
    }

    /// A client certificate with common name `id` valid from `from_days` to `to_days` days
    /// from now (both negative: already expired).
    pub fn client_valid(&self, id: &str, from_days: i64, to_days: i64) -> Result<TlsFiles> {
        Ok(self.ca.client_valid(id, from_days, to_days)?)
    }

    /// The CA's revocation list, written (with nothing revoked) if there is none yet.
    pub fn crl_file(&self) -> Result<PathBuf> {
        let path = self.ca.crl_file();
        if !path.exists() {
            self.ca.refresh_crl()?;
        }
        Ok(path)
    }

    /// Revokes the certificate of `files`; the CRL is written anew.
    pub fn revoke(&self, files: &TlsFiles) -> Result<PathBuf> {
        Ok(self.ca.revoke(&files.cert_file, "test: key stolen")?)
    }

    /// A new certificate for `id`, with the key it has.
    pub fn renew(&self, id: &str, days: i64) -> Result<TlsFiles> {
        Ok(self.ca.renew(id, days)?)
    }
}
