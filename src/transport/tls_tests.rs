//! Tests of certificate loading, hot reload and client identities, with certificates made by
//! rcgen in a scratch directory.

use std::path::PathBuf;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::*;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("starling-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `name`, as (cert PEM, key PEM, cert DER).
fn self_signed(name: &str) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn leaf(t: &Tls) -> Vec<u8> {
    t.current_chain()[0].as_ref().to_vec()
}

fn mqtts(cert: PathBuf, key: PathBuf) -> ListenerConfig {
    ListenerConfig {
        protocol: crate::config::ListenerProtocol::Mqtts,
        cert: Some(cert),
        key: Some(key),
        ..ListenerConfig::default()
    }
}

#[test]
fn reload_swaps_and_bad_files_keep_the_old_pair() {
    let dir = Scratch::new("reload");
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (c1, k1, d1) = self_signed("one.test");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let r = Tls::from_config(&mqtts(cert.clone(), key.clone())).unwrap();
    assert_eq!(leaf(&r), d1);

    let (c2, k2, d2) = self_signed("two.test");
    std::fs::write(&cert, &c2).unwrap();
    std::fs::write(&key, &k2).unwrap();
    r.reload().unwrap();
    assert_eq!(leaf(&r), d2);

    // A certificate whose key is not the one on disk.
    let (c3, _, _) = self_signed("three.test");
    std::fs::write(&cert, &c3).unwrap();
    match r.reload() {
        Err(e @ TlsError::KeyPair { .. }) => assert!(e.to_string().contains("cert.pem"), "{e}"),
        other => panic!("expected KeyPair, got {other:?}"),
    }
    assert_eq!(leaf(&r), d2);

    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(matches!(r.reload(), Err(TlsError::NoCert { .. })));
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&cert, &c2).unwrap();
    match r.reload() {
        Err(e @ TlsError::Key { .. }) => assert!(e.to_string().contains("key.pem"), "{e}"),
        other => panic!("expected Key, got {other:?}"),
    }
    assert_eq!(leaf(&r), d2);
}

/// `reload_from` moves to other paths, CA included, all or nothing: a bad CA keeps the old
/// certificate too, even though the new certificate itself was fine.
#[test]
fn reload_from_new_paths_is_all_or_nothing() {
    let dir = Scratch::new("reload-from");
    let (c1, k1, d1) = self_signed("one.test");
    let (c2, k2, d2) = self_signed("two.test");
    for (f, text) in [("c1", &c1), ("k1", &k1), ("c2", &c2), ("k2", &k2)] {
        std::fs::write(dir.path(f), text).unwrap();
    }
    std::fs::write(dir.path("bad-ca"), "no certificates here").unwrap();
    let mut l = mqtts(dir.path("c1"), dir.path("k1"));
    l.ca = Some(dir.path("c1"));
    let t = Tls::from_config(&l).unwrap();
    let two = TlsFiles {
        cert: dir.path("c2"),
        key: dir.path("k2"),
        ca: Some(dir.path("bad-ca")),
    };
    assert!(matches!(
        t.reload_from(two.clone()),
        Err(TlsError::NoCa { .. })
    ));
    assert_eq!(leaf(&t), d1);
    assert_eq!(t.files().cert, dir.path("c1"));
    let two = TlsFiles {
        ca: Some(dir.path("c2")),
        ..two
    };
    t.reload_from(two.clone()).unwrap();
    assert_eq!(leaf(&t), d2);
    assert_eq!(t.files(), two);
    // A later plain reload re-reads the new paths, not the original ones.
    std::fs::write(dir.path("c1"), "garbage").unwrap();
    t.reload().unwrap();
    assert_eq!(leaf(&t), d2);
}

#[tokio::test]
async fn watcher_reloads_changed_files() {
    let dir = Scratch::new("watch");
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (c1, k1, d1) = self_signed("one.test");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let r = Tls::from_config(&mqtts(cert.clone(), key.clone())).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(r.clone().watch(Duration::from_millis(20), stop.clone()));
    // Broken files are logged and ignored.
    std::fs::write(
        &cert,
        "garbage that is longer than before, so the size changes too",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(leaf(&r), d1);
    let (c2, k2, d2) = self_signed("two.test");
    std::fs::write(&key, &k2).unwrap();
    std::fs::write(&cert, &c2).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while leaf(&r) != d2 {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn from_config_reports_the_bad_file() {
    let dir = Scratch::new("config");
    let (c, k, _) = self_signed("srv.test");
    std::fs::write(dir.path("cert.pem"), &c).unwrap();
    std::fs::write(dir.path("key.pem"), &k).unwrap();
    let mut l = ListenerConfig {
        protocol: crate::config::ListenerProtocol::Mqtts,
        cert: Some(dir.path("cert.pem")),
        key: Some(dir.path("key.pem")),
        ..ListenerConfig::default()
    };
    Tls::from_config(&l).unwrap();

    l.ca = Some(dir.path("missing-ca.pem"));
    let e = Tls::from_config(&l).unwrap_err();
    assert!(e.to_string().contains("missing-ca.pem"), "{e}");
    std::fs::write(dir.path("empty-ca.pem"), "").unwrap();
    l.ca = Some(dir.path("empty-ca.pem"));
    assert!(matches!(Tls::from_config(&l), Err(TlsError::NoCa { .. })));
    l.ca = Some(dir.path("cert.pem"));
    l.require_certificate = true;
    Tls::from_config(&l).unwrap();

    l.key = Some(dir.path("nope.key"));
    let e = Tls::from_config(&l).unwrap_err();
    assert!(e.to_string().contains("nope.key"), "{e}");
}

fn cert_with_subject(parts: &[(DnType, &str)]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    params.distinguished_name = dn;
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn identity_is_common_name_and_rfc2253_subject() {
    let der = cert_with_subject(&[
        (DnType::CountryName, "DE"),
        (DnType::OrganizationName, "Acme"),
        (DnType::CommonName, "dev1"),
    ]);
    assert_eq!(
        identity_of(&der),
        (
            Some("dev1".to_owned()),
            Some("CN=dev1,O=Acme,C=DE".to_owned())
        )
    );
}

#[test]
fn subject_values_are_escaped() {
    let der = cert_with_subject(&[
        (DnType::OrganizationName, "Acme, Inc."),
        (DnType::CommonName, " #a+b;<c>\"d\\ "),
    ]);
    let (cn, subject) = identity_of(&der);
    assert_eq!(cn.as_deref(), Some(" #a+b;<c>\"d\\ "));
    assert_eq!(
        subject.as_deref(),
        Some("CN=\\ #a\\+b\\;\\<c\\>\\\"d\\\\\\ ,O=Acme\\, Inc.")
    );
    let der = cert_with_subject(&[(DnType::CommonName, "Jörg")]);
    assert_eq!(identity_of(&der).1.as_deref(), Some("CN=J\\C3\\B6rg"));
}

#[test]
fn no_common_name_and_garbage() {
    let der = cert_with_subject(&[(DnType::OrganizationName, "Acme")]);
    assert_eq!(identity_of(&der), (None, Some("O=Acme".to_owned())));
    assert_eq!(identity_of(b"not a certificate"), (None, None));
}

#[tokio::test]
async fn client_identity_from_a_real_handshake() {
    use rcgen::{BasicConstraints, CertifiedIssuer, IsCa};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = Scratch::new("handshake");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let issue = |sans: Vec<String>, dn: &[(DnType, &str)]| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        // rcgen starts with a placeholder CN; replace the whole name to control the order.
        p.distinguished_name = DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        (p.signed_by(&key, &ca).unwrap(), key)
    };
    let (server, server_key) = issue(vec!["localhost".into()], &[]);
    let (client, client_key) = issue(
        vec![],
        &[
            (DnType::OrganizationName, "Acme"),
            (DnType::CommonName, "dev1"),
        ],
    );
    std::fs::write(dir.path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path("s.pem"), server.pem()).unwrap();
    std::fs::write(dir.path("s.key"), server_key.serialize_pem()).unwrap();
    let listener = ListenerConfig {
        protocol: crate::config::ListenerProtocol::Mqtts,
        cert: Some(dir.path("s.pem")),
        key: Some(dir.path("s.key")),
        ca: Some(dir.path("ca.pem")),
        ..ListenerConfig::default()
    };
    let tls = Tls::from_config(&listener).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client_config = |with_cert: bool| {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        let c = if with_cert {
            let key = PrivateKeyDer::try_from(client_key.serialize_der()).unwrap();
            b.with_client_auth_cert(vec![client.der().clone()], key)
                .unwrap()
        } else {
            b.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    for with_cert in [true, false] {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move {
            let mut s = acceptor.accept(a).await.unwrap();
            let id = client_identity(s.get_ref().1);
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            id
        });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = client_config(with_cert).connect(name, b).await.unwrap();
        c.write_all(b"x").await.unwrap();
        c.flush().await.unwrap();
        let id = server.await.unwrap();
        if with_cert {
            assert_eq!(
                id,
                Some((Some("dev1".to_owned()), Some("CN=dev1,O=Acme".to_owned())))
            );
        } else {
            assert_eq!(id, None);
        }
    }
}

/// A CA certificate named `name`, signed by `issuer` or self-signed.
fn ca_cert(
    name: &str,
    issuer: Option<&rcgen::CertifiedIssuer<'static, KeyPair>>,
) -> rcgen::CertifiedIssuer<'static, KeyPair> {
    use rcgen::{BasicConstraints, CertifiedIssuer, IsCa};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    match issuer {
        Some(i) => CertifiedIssuer::signed_by(p, key, i).unwrap(),
        None => CertifiedIssuer::self_signed(p, key).unwrap(),
    }
}

/// Whether a client that trusts only `root` completes a handshake with `tls` for "localhost".
async fn verifies_with(tls: &Tls, root: &CertificateDer<'static>) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (a, b) = tokio::io::duplex(16 * 1024);
    let acceptor = tls.acceptor();
    let server = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        s.write_all(b"x").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    });
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = async {
        let mut c = connector
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    let _ = server.await;
    result
}

/// Issue 13 item 4: a `cert` file with only the leaf, the intermediate CA in the `ca` file. As
/// with Mosquitto (OpenSSL), the server sends leaf + intermediate, so a client that trusts only
/// the root verifies it (RFC 8446 §4.4.2: the chain up to, not necessarily including, a trust
/// anchor), and the completion is logged. The root, also in `ca`, is not sent. Without `ca`
/// the client fails with an unknown issuer, which is what every client saw before.
#[tokio::test]
async fn chain_is_completed_from_the_ca_file() {
    let dir = Scratch::new("chain");
    let root = ca_cert("Test Root", None);
    let intermediate = ca_cert("Test Intermediate", Some(&root));
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &intermediate)
        .unwrap();
    std::fs::write(dir.path("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path("leaf.key"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.path("ca.pem"),
        format!("{}{}", root.pem(), intermediate.pem()),
    )
    .unwrap();
    let mut l = mqtts(dir.path("leaf.pem"), dir.path("leaf.key"));

    let bare = Tls::from_config(&l).unwrap();
    let e = verifies_with(&bare, root.der()).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    l.ca = Some(dir.path("ca.pem"));
    let (tls, logs) = crate::logging::capture_logs(|| Tls::from_config(&l));
    let tls = tls.unwrap();
    assert_eq!(
        tls.current_chain(),
        vec![leaf.der().clone(), intermediate.der().clone()]
    );
    assert!(
        logs.contains("INFO")
            && logs.contains("chain completed")
            && logs.contains("Test Intermediate"),
        "{logs}"
    );
    verifies_with(&tls, root.der()).await.unwrap();
    // A reload completes it again.
    tls.reload().unwrap();
    assert_eq!(tls.current_chain().len(), 2);
}

/// Issue 13 item 4, the other half: when the `ca` file has nothing the chain lacks (a leaf
/// signed by the root itself, or a chain that already holds its intermediate), the chain is
/// sent exactly as given and nothing is logged.
#[test]
fn a_complete_chain_is_left_alone() {
    let dir = Scratch::new("chain-alone");
    let root = ca_cert("Alone Root", None);
    let intermediate = ca_cert("Alone Intermediate", Some(&root));
    let issue = |issuer: &rcgen::CertifiedIssuer<'static, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert, key)
    };
    std::fs::write(
        dir.path("ca.pem"),
        format!("{}{}", root.pem(), intermediate.pem()),
    )
    .unwrap();
    let (by_root, k1) = issue(&root);
    let (by_inter, k2) = issue(&intermediate);
    let cases = [
        ("by-root", by_root.pem(), k1, vec![by_root.der().clone()]),
        (
            "full",
            format!("{}{}", by_inter.pem(), intermediate.pem()),
            k2,
            vec![by_inter.der().clone(), intermediate.der().clone()],
        ),
    ];
    for (name, pem, key, expected) in cases {
        std::fs::write(dir.path(name), pem).unwrap();
        std::fs::write(dir.path("key"), key.serialize_pem()).unwrap();
        let mut l = mqtts(dir.path(name), dir.path("key"));
        l.ca = Some(dir.path("ca.pem"));
        let (tls, logs) = crate::logging::capture_logs(|| Tls::from_config(&l));
        assert_eq!(tls.unwrap().current_chain(), expected, "{name}");
        assert!(!logs.contains("chain completed"), "{name}: {logs}");
    }
}

/// One client handshake with `tls` over an in-memory pipe, returning how it went (full or
/// resumed). The server writes a byte after the handshake, so reading it also takes in the
/// TLS 1.3 tickets it sent before, as a real client's first read would.
async fn handshake_kind(tls: &Tls, client: &Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = tokio::io::duplex(16 * 1024);
    let acceptor = tls.acceptor();
    let server = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        // Keep the stream until the client has read the byte.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, b)
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    c.read_exact(&mut byte).await.unwrap();
    let kind = c.get_ref().1.handshake_kind().unwrap();
    drop(c);
    server.await.unwrap();
    kind
}

/// Issue 15: a returning client resumes its session (TLS 1.3 ticket; TLS 1.2 ticket), with
/// tickets from a ticketer, not a per-session cache entry; a reload (new certificate or CA)
/// makes the old sessions unusable, so the next handshake is a full one, checked against what
/// is now loaded.
#[tokio::test]
async fn sessions_resume_until_a_reload() {
    let dir = Scratch::new("resume");
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (c, k, der) = self_signed("localhost");
    std::fs::write(&cert, c).unwrap();
    std::fs::write(&key, k).unwrap();
    let tls = Tls::from_config(&mqtts(cert, key)).unwrap();
    assert!(tls.inner.current.load().config.ticketer.enabled());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der)).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(handshake_kind(&tls, &client).await, Full, "{version:?}");
        assert_eq!(handshake_kind(&tls, &client).await, Resumed, "{version:?}");
        assert_eq!(handshake_kind(&tls, &client).await, Resumed, "{version:?}");
        tls.reload().unwrap();
        assert_eq!(handshake_kind(&tls, &client).await, Full, "{version:?}");
        assert_eq!(handshake_kind(&tls, &client).await, Resumed, "{version:?}");
    }
}
