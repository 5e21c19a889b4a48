//! TLS 1.3 for the client↔server link: rustls configurations (the `ring` provider),
//! the server's certificate (made with rcgen on first start, or the operator's own),
//! certificate fingerprints and the pinning verifier, and a TLS stream that a reader
//! thread and a writer thread can share.
//!
//! - `cert`: fingerprints, the server's certificate and key, the server configuration,
//!   files only their owner reads.
//! - `pinning`: what the client trusts (`Trust`), `--server-ca` roots, the verifier that
//!   pins or records the server's certificate, the client configuration.
//! - `stream`: the shared TLS stream halves (`TlsReader`, `TlsSealer`, `TlsWriter`), the
//!   handshakes over them, and the blocking client for tools.
//!
//! Everything public is re-exported here, so callers name `crypto::tls::…` only. This
//! module must not know any peerchat line.

use std::sync::{Arc, Mutex, MutexGuard};

use rustls::crypto::{CryptoProvider, ring as ring_provider};

use crate::error::Error;

mod cert;
mod pinning;
mod stream;

pub use cert::{ServerIdentity, fingerprint, parse_fingerprint, write_private};
pub use pinning::{Seen, Trust, client_config, load_roots};
pub use stream::{
    BlockingTls, TlsReader, TlsSealer, TlsWriter, blocking_client, client, client_named,
    finish_handshake, send_and_close, server, server_shared,
};

/// The provider every config uses: `ring` builds quickly and uses AES-NI.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
}

fn tls_config(e: rustls::Error) -> Error {
    Error::Config(format!("TLS configuration: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
