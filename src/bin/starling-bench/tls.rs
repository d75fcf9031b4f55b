//! TLS for `conn --tls`: a rustls client (the *ring* provider, as the broker) that trusts the
//! `--cafile` bundle and, unless `--no-resume`, resumes sessions the way a fleet of real clients
//! sharing one TLS library would: TLS 1.3 tickets, TLS 1.2 session ids or tickets, kept in one
//! in-memory cache shared by every connection of the run. A client takes one ticket from the
//! cache per handshake and the server hands out new ones after each, so after the first
//! `--concurrency` handshakes most of them resume; the report counts how many did.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What every TLS client of a run shares: the configuration (and with it the session cache)
/// and the name the broker's certificate is checked against.
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client trusting the certificates in `cafile`, checking the broker's certificate
    /// against `host` (a DNS name or an IP address, as the certificate's SAN holds it).
    pub fn new(cafile: &Path, host: &str, resume: bool) -> anyhow::Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cafile)
            .with_context(|| format!("cannot read --cafile {}", cafile.display()))?
        {
            let cert = cert.with_context(|| format!("bad PEM in {}", cafile.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable CA certificate in {}", cafile.display()))?;
        }
        if roots.is_empty() {
            bail!("--cafile {} holds no certificate", cafile.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The default: an in-memory cache (256 servers, up to 8 TLS 1.3 tickets each).
        config.resumption = if resume {
            Resumption::default()
        } else {
            Resumption::disabled()
        };
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned())
                .with_context(|| format!("{host} is not a valid TLS server name"))?,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake on a connected socket; true in the second field when it resumed an
    /// earlier session.
    pub async fn handshake(&self, tcp: TcpStream) -> anyhow::Result<(TlsStream<TcpStream>, bool)> {
        let tls = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        Ok((tls, resumed))
    }
}
