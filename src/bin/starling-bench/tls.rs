//! TLS for `conn --tls`: a rustls client (the *ring* provider, as the broker) that trusts the
//! `--cafile` bundle and, unless `--no-resume`, resumes sessions as a fleet of returning
//! devices would: TLS 1.3 tickets, TLS 1.2 session ids or tickets, kept in one pool shared by
//! every connection of the run ([`TicketPool`]). A client takes one ticket per handshake and
//! the server hands out new ones after each, so after the first `--concurrency` handshakes
//! nearly all resume; the report counts how many did.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::{ClientConfig, HandshakeKind, NamedGroup, RootCertStore};
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
        config.resumption = if resume {
            Resumption::store(Arc::new(TicketPool::default()))
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

/// Most TLS 1.3 tickets the pool keeps (the oldest go first).
const MAX_TICKETS: usize = 16_384;

/// The session store of one run, which talks to one broker (so server names are not kept
/// apart). rustls' own in-memory cache keeps at most 8 TLS 1.3 tickets per server: with
/// `--concurrency` handshakes starting in waves, most of a wave would find none and make a full
/// handshake, which a fleet of devices, each holding its own ticket, would not.
#[derive(Debug, Default)]
struct TicketPool(parking_lot::Mutex<Pool>);

#[derive(Debug, Default)]
struct Pool {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.0.lock().kx_hint = Some(group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.lock().kx_hint
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.lock().tls12 = Some(value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.lock().tls12.clone()
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.0.lock().tls12 = None;
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut pool = self.0.lock();
        if pool.tls13.len() == MAX_TICKETS {
            pool.tls13.pop_front();
        }
        pool.tls13.push_back(value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest: the least likely to have expired. Each ticket is used at most once.
        self.0.lock().tls13.pop_back()
    }
}
