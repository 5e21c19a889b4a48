//! The server's certificate: fingerprints (what clients pin and people compare), the
//! operator's certificate and key or the self-signed pair made on first start, the
//! rustls server configuration, and files only their owner reads. It must not decide
//! whether a client trusts a certificate (`pinning`) nor touch a socket (`stream`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{provider, tls_config};
use crate::error::{Error, Result};

/// SHA-256 of a certificate's DER bytes as colon-separated upper-case hex, the form
/// `openssl x509 -noout -fingerprint -sha256` prints, so operators can compare.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a fingerprint typed by a person: hex digits only, upper case, colons
/// between bytes. `None` if it is not 32 bytes of hex.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .trim_start_matches("SHA256:")
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let upper = hex.to_ascii_uppercase();
    let bytes: Vec<&str> = (0..32).map(|i| &upper[2 * i..2 * i + 2]).collect();
    Some(bytes.join(":"))
}

/// The server's certificate chain and private key.
pub struct ServerIdentity {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// The leaf certificate's fingerprint (what clients pin).
    pub fn fingerprint(&self) -> String {
        self.certs
            .first()
            .map(|c| fingerprint(c.as_ref()))
            .unwrap_or_default()
    }

    /// Loads the operator's certificate and key (PEM), or, when neither is given, the
    /// self-signed pair beside the database, made on first start.
    pub fn load_or_create(
        cert: Option<&Path>,
        key: Option<&Path>,
        db: &Path,
    ) -> Result<ServerIdentity> {
        match (cert, key) {
            (Some(cert), Some(key)) => ServerIdentity::load(cert, key),
            (None, None) => {
                let dir = db
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let (cert, key) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
                if !cert.exists() || !key.exists() {
                    create_self_signed(dir, &cert, &key)?;
                }
                ServerIdentity::load(&cert, &key)
            }
            _ => Err(Error::Config(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            )),
        }
    }

    fn load(cert: &Path, key: &Path) -> Result<ServerIdentity> {
        let bad = |what: &Path, e: rustls::pki_types::pem::Error| {
            Error::Config(format!("cannot read {}: {e}", what.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(cert, e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(cert, e))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "no certificate in {}",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
        Ok(ServerIdentity { certs, key })
    }

    /// The rustls server configuration: TLS 1.3 only, no client certificates.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_config)?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(tls_config)?;
        // No session resumption: clients reconnect rarely, and tickets are bytes for nothing.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// Writes a new self-signed certificate and its key (mode 0600) into `dir`.
fn create_self_signed(dir: &Path, cert: &Path, key: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| Error::Config(format!("cannot make a certificate: {e}")))?;
    write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    let mut file = File::create(cert)?;
    file.write_all(made.cert.pem().as_bytes())?;
    file.sync_all()?;
    log::info!(
        "made a self-signed certificate {} and key {}",
        cert.display(),
        key.display()
    );
    Ok(())
}

/// Creates (or replaces) a file readable and writable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A temporary name of this process and moment: two clients sharing a data folder
    // never write the same temporary file; the rename makes the new content appear whole.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp: PathBuf = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_any_usual_form() {
        let fp = fingerprint(b"hello");
        assert_eq!(parse_fingerprint(&fp), Some(fp.clone()));
        let plain: String = fp.chars().filter(|c| *c != ':').collect();
        assert_eq!(parse_fingerprint(&plain.to_lowercase()), Some(fp.clone()));
        assert_eq!(parse_fingerprint("ab:cd"), None);
    }
}
