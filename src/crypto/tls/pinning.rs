//! What the client accepts as the server's certificate: a pinned fingerprint, first
//! use, or a chain to `--server-ca` roots; the rustls verifier that checks (and records)
//! the certificate the server showed, and the client configuration built on it. The
//! decision about what to pin lives in `crypto::trust`; this module must not touch a
//! socket or a file other than the roots it is given.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::{fingerprint, lock, provider, tls_config};
use crate::error::{Error, Result};

/// What the client accepts as the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only a certificate with this fingerprint.
    Pinned(String),
    /// Any certificate (first contact); the caller then decides about what was seen.
    FirstUse,
    /// A chain that verifies to one of these roots (`--server-ca`) for the name the
    /// client connects with, checked the usual way (validity, name, signatures); no pin.
    Ca(Arc<rustls::RootCertStore>),
}

/// Reads the PEM certificates in `path` as trust roots (`--server-ca`).
pub fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let pem = fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Error::Config(format!("{} is not PEM certificates: {e}", path.display()))
        })?;
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "{} holds a certificate rustls refuses as a root: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Arc::new(roots))
}

/// Where the verifier writes the fingerprint the server showed.
pub type Seen = Arc<Mutex<Option<String>>>;

/// Checks the server's certificate against a pin (or records it on first use) and
/// its handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct PinVerifier {
    trust: Trust,
    seen: Seen,
    provider: Arc<CryptoProvider>,
    /// For `Trust::Ca`: rustls's own WebPKI verifier over those roots.
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        *lock(&self.seen) = Some(got.clone());
        if let Some(webpki) = &self.webpki {
            return webpki.verify_server_cert(
                end_entity,
                _intermediates,
                _server_name,
                _ocsp_response,
                _now,
            );
        }
        match &self.trust {
            Trust::Pinned(want) if *want != got => Err(rustls::Error::General(format!(
                "certificate fingerprint {got} is not the pinned {want}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts as `trust` says, and where the fingerprint the
/// server showed is written once the handshake has seen it.
pub fn client_config(trust: Trust) -> Result<(Arc<ClientConfig>, Seen)> {
    let seen = Arc::new(Mutex::new(None));
    let webpki = match &trust {
        Trust::Ca(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::clone(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::Config(format!("the --server-ca roots: {e}")))?,
        ),
        _ => None,
    };
    let verifier = PinVerifier {
        trust,
        seen: Arc::clone(&seen),
        provider: provider(),
        webpki,
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(config), seen))
}
