//! Opening an MQTT connection to central's broker: plain for a broker on the same host, TLS with
//! a client certificate otherwise (the certificate is the gateway's identity).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{broker_port, TlsFiles};

/// Why the MQTT client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("broker URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Sends each packet at once (TCP_NODELAY). rumqttc leaves Nagle on, and an acknowledged batch
/// then waits ~40 ms for the peer's delayed ACK before its next small packet leaves.
pub fn send_at_once(eventloop: &mut rumqttc::EventLoop) {
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
}

/// Client options for `url` (`mqtt://` or `mqtts://`), with `tls` for `mqtts://`.
pub fn client_options(
    url: &str,
    tls: Option<&TlsFiles>,
    client_id: &str,
    keep_alive: Duration,
) -> Result<MqttOptions, MqttSetupError> {
    let bad = |reason: &str| MqttSetupError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    // IPv6 literals come back in brackets; the socket layer wants them bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut opts = MqttOptions::new(client_id, host, broker_port(&parsed));
    opts.set_keep_alive(keep_alive);
    opts.set_max_packet_size(
        crate::wire::MAX_MESSAGE_BYTES + 4096,
        crate::wire::MAX_MESSAGE_BYTES + 4096,
    );
    match (parsed.scheme(), tls) {
        ("mqtt", None) => {}
        ("mqtts", Some(files)) => {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(client_tls(files)?),
            )));
        }
        ("mqtts", None) => return Err(bad("mqtts:// needs TLS files")),
        ("mqtt", Some(_)) => return Err(bad("TLS files given for a plain mqtt:// broker")),
        (other, _) => return Err(bad(&format!("unsupported scheme {other}"))),
    }
    Ok(opts)
}

/// A rustls client config that trusts `ca_file` and presents `cert_file`/`key_file`.
pub fn client_tls(files: &TlsFiles) -> Result<rustls::ClientConfig, MqttSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&files.ca_file)? {
        roots.add(cert)?;
    }
    let chain = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?)
}

fn pem_error(path: &Path, reason: impl ToString) -> MqttSetupError {
    MqttSetupError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file; none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}
