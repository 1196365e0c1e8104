//! A throw-away PKI for tests: one CA, a server certificate for 127.0.0.1/localhost, and client
//! certificates whose common name is the client's id (as gateways' are).

use std::path::{Path, PathBuf};

use firmware_config::config::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};

use crate::Result;

pub struct TestPki {
    dir: PathBuf,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
    pub ca_file: PathBuf,
}

impl TestPki {
    /// Creates the CA in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("GridEdge test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            ca_key,
            ca_cert,
            ca_file,
        })
    }

    /// A server certificate valid for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> Result<TlsFiles> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name = dn(name);
        self.issue(name, params)
    }

    /// A client certificate with common name `id` (no organisation: rumqttd would take that as a
    /// tenant and isolate the client's topics).
    pub fn client(&self, id: &str) -> Result<TlsFiles> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(id);
        self.issue(id, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Result<TlsFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok(TlsFiles {
            ca_file: self.ca_file.clone(),
            cert_file,
            key_file,
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
