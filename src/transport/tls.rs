//! TLS for `mqtts` and `wss` listeners, on rustls with the *ring* crypto provider.
//!
//! [`Tls::from_config`] reads the listener's PEM files (with `rustls-pki-types`' [`PemObject`])
//! and builds a rustls [`ServerConfig`]. The provider is passed explicitly
//! ([`ServerConfig::builder_with_provider`]), so the process-wide default provider is never
//! consulted and Cargo feature unification (another crate enabling aws-lc-rs) cannot make
//! configuration panic.
//!
//! * **Client certificates**: with `ca`, clients are verified by [`WebPkiClientVerifier`]
//!   against that bundle; without `require_certificate` a client may still present none.
//!   [`peer_identity`] extracts the Common Name and the RFC 2253 subject of a verified client
//!   certificate, for `use_identity_as_username` / `use_subject_as_username`.
//! * **Chain completion**: when the `cert` file lacks intermediates that the `ca` file holds,
//!   they are appended to the chain the server sends (see `tls_chain.rs`; logged at info), as OpenSSL
//!   does for Mosquitto; a chain that needs nothing is sent as given.
//! * **Hot reload**: the certificate, the key and the CA bundle are all part of one
//!   [`ServerConfig`], held behind an [`ArcSwap`]. [`Tls::reload`] (the file watcher,
//!   [`Tls::watch`]) and [`Tls::reload_from`] (SIGHUP, possibly with new paths) read every file
//!   and build a complete new configuration before swapping it in, so a handshake sees either
//!   the old material or the new, never a mix; when any file does not load, the old
//!   configuration stays in use and the error is returned. Handshakes in progress and
//!   established connections keep the configuration they started with.
//! * **Session resumption**: tickets (TLS 1.3 and 1.2) and a session-id cache (TLS 1.2), both
//!   tied to one loaded configuration, see `enable_resumption`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use x509_parser::asn1_rs::Header;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::config::ListenerConfig;

/// How often [`Tls::watch`] looks at the certificate, key and CA files.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Why a TLS configuration or certificate could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener has no `{0}` file configured")]
    Missing(&'static str),
    #[error("cannot read certificate file {}: {source}", path.display())]
    Cert { path: PathBuf, source: pem::Error },
    #[error("certificate file {} holds no certificate", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot read private key file {}: {source}", path.display())]
    Key { path: PathBuf, source: pem::Error },
    #[error("certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot read CA file {}: {source}", path.display())]
    Ca { path: PathBuf, source: pem::Error },
    #[error("CA file {} holds a certificate that cannot be a trust anchor: {source}", path.display())]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("CA file {} holds no CA certificate", path.display())]
    NoCa { path: PathBuf },
    #[error("cannot verify client certificates with CA file {}: {source}", path.display())]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The files a TLS listener reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA bundle client certificates are verified against, when clients are asked for one.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The `cert`, `key` and `ca` of a listener; `cert` and `key` must be set.
    pub fn of(listener: &ListenerConfig) -> Result<TlsFiles, TlsError> {
        Ok(TlsFiles {
            cert: listener.cert.clone().ok_or(TlsError::Missing("cert"))?,
            key: listener.key.clone().ok_or(TlsError::Missing("key"))?,
            ca: listener.ca.clone(),
        })
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(self.cert.as_path()),
            Some(self.key.as_path()),
            self.ca.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// One complete load of a listener's files.
struct Material {
    files: TlsFiles,
    config: Arc<ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
}

/// The TLS side of one listener: its current configuration, swappable while the listener runs.
/// Clones share the configuration.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    require_certificate: bool,
    current: ArcSwap<Material>,
    /// Serialises reloads, so a watcher poll that read the old paths cannot replace what a
    /// SIGHUP with new paths just installed.
    reloading: parking_lot::Mutex<()>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.inner.current.load().files)
            .field("require_certificate", &self.inner.require_certificate)
            .finish()
    }
}

impl Tls {
    /// Reads `cert`, `key` and (when set) `ca` of a listener and builds its TLS configuration.
    pub fn from_config(listener: &ListenerConfig) -> Result<Tls, TlsError> {
        let files = TlsFiles::of(listener)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = load_material(files, listener.require_certificate, &provider)?;
        Ok(Tls {
            inner: Arc::new(Inner {
                provider,
                require_certificate: listener.require_certificate,
                current: ArcSwap::from_pointee(material),
                reloading: parking_lot::Mutex::new(()),
            }),
        })
    }

    /// An acceptor for one handshake, with the configuration current now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.current.load().config.clone())
    }

    /// The files the current configuration was read from.
    pub fn files(&self) -> TlsFiles {
        self.inner.current.load().files.clone()
    }

    /// The certificate chain new handshakes present (leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.current.load().chain.clone()
    }

    /// Re-reads the current files. On success new handshakes use what they now hold; on
    /// failure the current configuration stays in use and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let _one = self.inner.reloading.lock();
        let files = self.files();
        self.install(files)
    }

    /// Reads `files` (which may name other paths than the current ones) and, when all of them
    /// load, makes them the current configuration; otherwise keeps the current one.
    pub fn reload_from(&self, files: TlsFiles) -> Result<(), TlsError> {
        let _one = self.inner.reloading.lock();
        self.install(files)
    }

    fn install(&self, files: TlsFiles) -> Result<(), TlsError> {
        let fresh = load_material(files, self.inner.require_certificate, &self.inner.provider)?;
        self.inner.current.store(Arc::new(fresh));
        Ok(())
    }

    /// Polls the current files every `every` until `shutdown`, reloading when the modification
    /// time or size of any of them changes, and logs the outcome. After a failed reload it
    /// tries once more at the next poll, in case it read a file that was still being written.
    /// When a reload installs other paths, those are watched from then on.
    pub async fn watch(self, every: Duration, shutdown: CancellationToken) {
        let mut seen = self.stamp();
        let mut retry = false;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.stamp();
            if now.0 != seen.0 {
                // Another reload moved to other files; they were just read.
                seen = now;
                retry = false;
                continue;
            }
            if now == seen && !retry {
                continue;
            }
            seen = now;
            // The files are a few kilobytes: reading them inline is cheaper than a thread hop.
            match self.reload() {
                Ok(()) => {
                    retry = false;
                    let cert = seen.0.cert.display();
                    tracing::info!(%cert, "TLS certificate, key and CA reloaded");
                }
                Err(e) => {
                    if !retry {
                        tracing::warn!(
                            error = %e,
                            "TLS files changed on disk but did not load; keeping the previous ones"
                        );
                    }
                    retry = !retry;
                }
            }
        }
    }

    fn stamp(&self) -> (TlsFiles, Vec<Option<(SystemTime, u64)>>) {
        let files = self.files();
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let stamps = files.paths().map(one).collect();
        (files, stamps)
    }
}

/// Reads every file of `files` and builds the server configuration they make.
fn load_material(
    files: TlsFiles,
    require_certificate: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Material, TlsError> {
    let ca_certs = files.ca.as_deref().map(read_ca).transpose()?;
    let certified = load_certified_key(&files, ca_certs.as_deref(), provider)?;
    let chain = certified.cert.clone();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = match (&files.ca, ca_certs) {
        (Some(ca), Some(certs)) => {
            let roots = Arc::new(roots(ca, certs)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = if require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                path: ca.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(Arc::new(certified))));
    enable_resumption(&mut config)?;
    Ok(Material {
        files,
        config: Arc::new(config),
        chain,
    })
}

/// Sessions kept for TLS 1.2 clients that resume by session id rather than by ticket.
const SESSION_CACHE: usize = 4096;

/// Session resumption, so a reconnecting client skips the certificate signature and chain
/// checks (most of a full handshake's cost on both sides): TLS 1.3 and TLS 1.2 tickets
/// encrypted with keys only this configuration holds (rotated every 6 hours; nothing stored per
/// session), and for TLS 1.2 clients without tickets a bounded session-id cache.
///
/// Both belong to this one [`ServerConfig`]: a reload builds a new configuration with new
/// ticket keys and an empty cache, so no session negotiated under the old certificate or CA
/// (a client certificate since distrusted, say) resumes under the new one; those clients
/// make one full handshake.
fn enable_resumption(config: &mut ServerConfig) -> Result<(), TlsError> {
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(())
}

/// The trust anchors in the PEM file at `path` (a bridge's `cafile`): every certificate,
/// at least one.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots(path, read_ca(path)?)
}

/// Every certificate of the `ca` file.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |source| TlsError::Ca {
        path: path.to_path_buf(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)
}

/// The trust anchors client certificates are verified against: the `ca` file read from `path`.
fn roots(path: &Path, certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// Reads a certificate chain and its key and checks that they belong together. Intermediates
/// the chain lacks are taken from the `ca` file's certificates when it holds them.
fn load_certified_key(
    files: &TlsFiles,
    ca: Option<&[CertificateDer<'static>]>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    let cert_err = |source| TlsError::Cert {
        path: cert.to_path_buf(),
        source,
    };
    let mut chain = CertificateDer::pem_file_iter(cert)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    if let (Some(ca), Some(ca_path)) = (ca, &files.ca) {
        let added = tls_chain::complete(&mut chain, ca);
        if !added.is_empty() {
            tracing::info!(cert = %cert.display(), ca = %ca_path.display(), added = ?added,
                "server certificate chain completed with intermediates from the ca file");
        }
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::KeyPair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// A server certificate that never changes: each reload builds a new [`ServerConfig`] around
/// a new one.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client certificate's identity: its Common Name and its subject in RFC 2253 form (as
/// OpenSSL and Mosquitto's `use_subject_as_username` write it: last RDN first, `,` between
/// RDNs, special characters and non-ASCII bytes escaped). `(None, None)` when the client sent no
/// certificate or it cannot be parsed; the CN is `None` when the subject has no printable one.
pub fn peer_identity(conn: &ServerConnection) -> (Option<String>, Option<String>) {
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => identity_of(leaf.as_ref()),
        None => (None, None),
    }
}

/// Like [`peer_identity`], but `None` when the client presented no certificate, as
/// [`crate::protocol::ConnectionInfo::tls_identity`] holds it.
pub fn client_identity(conn: &ServerConnection) -> Option<(Option<String>, Option<String>)> {
    conn.peer_certificates()
        .is_some_and(|c| !c.is_empty())
        .then(|| peer_identity(conn))
}

/// The identity in a DER certificate; see [`peer_identity`].
pub fn identity_of(der: &[u8]) -> (Option<String>, Option<String>) {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (None, None);
    };
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    (cn, Some(rfc2253(subject)))
}

/// Formats a distinguished name as RFC 2253 does (and OpenSSL's `XN_FLAG_RFC2253`).
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            out.push_str(attribute_keyword(&oid).unwrap_or(&oid));
            out.push('=');
            let value = attr.attr_value();
            match attr.as_str() {
                Ok(s) => escape_value(s, &mut out),
                Err(_) => {
                    // Not a string type this crate decodes: `#` and the hex of its DER encoding.
                    out.push('#');
                    for b in der_header(&value.header, value.data.len())
                        .iter()
                        .chain(value.data)
                    {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

/// The short names OpenSSL uses for RFC 2253 output.
fn attribute_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.46" => "dnQualifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 2253 §2.4 escaping, plus OpenSSL's escaping of control and non-ASCII bytes as `\XX`.
fn escape_value(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let edge = (i == 0 && (b == b' ' || b == b'#')) || (i + 1 == bytes.len() && b == b' ');
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(b as char);
            }
            _ if edge => {
                out.push('\\');
                out.push(b as char);
            }
            0..=0x1f | 0x7f..=0xff => out.push_str(&format!("\\{b:02X}")),
            _ => out.push(b as char),
        }
    }
}

/// The DER tag and length bytes of a value whose content is `len` bytes long.
fn der_header(header: &Header<'_>, len: usize) -> Vec<u8> {
    let mut out = match header.raw_tag() {
        Some(t) => t.to_vec(),
        None => {
            let class = (header.class() as u8) << 6;
            let constructed = if header.is_constructed() { 0x20 } else { 0 };
            // Universal tags of attribute values are all below 31: one byte.
            vec![class | constructed | (header.tag().0 as u8 & 0x1f)]
        }
    };
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out
}

#[path = "tls_chain.rs"]
mod tls_chain;

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
