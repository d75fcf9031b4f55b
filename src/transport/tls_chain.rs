//! Completing the server's certificate chain from the listener's `ca` file, as OpenSSL (and so
//! Mosquitto) does: a `cert` file that holds only the leaf, with the intermediate CA in `ca`,
//! still lets clients that trust only the root verify the server.
//!
//! From the last certificate of the chain, an issuer is looked for in `ca`: a certificate whose
//! subject is, byte for byte, the child's issuer name and whose public key verifies the child's
//! signature (x509-parser's `verify`, on *ring*). It is appended and the search goes on from it,
//! until the chain ends in a self-signed certificate, no issuer is found, or [`MAX_CHAIN`]
//! certificates are reached. A self-signed root found as an issuer is not sent: the client must
//! already have it to trust it, and TLS lets a server leave it out (RFC 8446 §4.4.2). Nothing is
//! ever removed or reordered, so a chain that needs nothing from `ca` stays exactly as given.
//! Expiry, key usage and name constraints are the client's to check; this only picks issuers.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates a completed chain holds (leaf included): real chains have one or two
/// intermediates; the bound stops a loop of cross-signed certificates.
pub const MAX_CHAIN: usize = 8;

/// Appends to `chain` (leaf first) the issuers it lacks that `ca` holds, and returns the
/// subjects of those it added (empty when it changed nothing).
pub fn complete(
    chain: &mut Vec<CertificateDer<'static>>,
    ca: &[CertificateDer<'static>],
) -> Vec<String> {
    let cas: Vec<(usize, X509Certificate<'_>)> = ca
        .iter()
        .enumerate()
        .filter_map(|(i, der)| X509Certificate::from_der(der).ok().map(|(_, c)| (i, c)))
        .collect();
    let mut added = Vec::new();
    while chain.len() < MAX_CHAIN {
        let Some((index, issuer)) = chain.last().and_then(|last| issuer_in(last, &cas, chain))
        else {
            break;
        };
        if self_signed(issuer) {
            break;
        }
        added.push(issuer.subject().to_string());
        chain.push(ca[*index].clone());
    }
    added
}

/// The certificate of `cas` (with its index in the `ca` file) that issued `child`, unless
/// `child` is self-signed or unparseable; never one already in `chain`.
fn issuer_in<'c, 'a>(
    child: &CertificateDer<'_>,
    cas: &'c [(usize, X509Certificate<'a>)],
    chain: &[CertificateDer<'static>],
) -> Option<&'c (usize, X509Certificate<'a>)> {
    let (_, child) = X509Certificate::from_der(child).ok()?;
    if self_signed(&child) {
        return None;
    }
    cas.iter().find(|(_, ca)| {
        ca.subject().as_raw() == child.issuer().as_raw()
            && child.verify_signature(Some(ca.public_key())).is_ok()
            && !chain.iter().any(|c| c.as_ref() == ca.as_raw())
    })
}

/// Whether `cert` names itself as issuer and its own key verifies its signature (a root).
fn self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}
