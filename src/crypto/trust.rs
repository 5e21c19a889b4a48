//! The client's decision about a server's certificate: the pin in the data folder, a
//! fingerprint given on the command line, or trust on first use (asked, or allowed by a
//! flag), and a loud refusal when a pinned server shows another certificate.
//!
//! Owns connecting a TLS link to the server up to the end of its handshake. It must not
//! print: questions go through the `ask` callback the front end gives, and refusals
//! come back as errors whose text is meant for the user.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Instant;

use crate::protocol::limits::TLS_CONNECT_DEADLINE;

use super::identity::{Pins, SERVER_PINS};
use super::tls::{self, TlsReader, TlsWriter, Trust};

/// Asks the user `(server, fingerprint)`: trust this first-seen certificate?
pub type AskTrust<'a> = &'a mut dyn FnMut(&str, &str) -> bool;

/// How the client decides to trust a server.
pub struct ServerTrust {
    /// The data folder, where `server-pins` lives.
    pub data_dir: PathBuf,
    /// `--server-fingerprint`: only this certificate (and it is pinned).
    pub fingerprint: Option<String>,
    /// `--trust-first-use`: pin an unknown server's certificate without asking.
    pub trust_first_use: bool,
    /// `--listen-addr` when it names one address: the connection comes from it, so the
    /// server announces to peers the address we really listen on.
    pub source: Option<std::net::IpAddr>,
    /// `--server-ca`: the server's certificate must verify against these roots for
    /// this name; then no pin is asked for, read or written.
    pub ca: Option<ServerCa>,
}

/// A CA-signed server certificate, verified the usual way (`--server-ca`).
#[derive(Debug, Clone)]
pub struct ServerCa {
    /// The PEM file of trusted roots.
    pub roots: PathBuf,
    /// The name the certificate must be for: `--server-name`, else the host of
    /// `--server` (a DNS name or an IP address).
    pub name: String,
}

/// Why the client would not talk to a server.
#[derive(Debug)]
pub enum TrustError {
    /// The network or the handshake failed.
    Io(io::Error),
    /// The pinned fingerprint differs from what the server showed.
    Changed {
        server: String,
        pinned: String,
        shown: String,
        pins: PathBuf,
    },
    /// An unknown server, and nobody said to trust it.
    Unknown { server: String, shown: String },
    /// `--server-fingerprint` was not what the server showed.
    NotGiven { given: String, shown: String },
    /// `--server-ca` was given and the certificate does not verify against it.
    CaRefused {
        server: String,
        ca: PathBuf,
        name: String,
        detail: String,
    },
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustError::Io(e) => write!(f, "{e}"),
            TrustError::Changed {
                server,
                pinned,
                shown,
                pins,
            } => write!(
                f,
                "WARNING: THE SERVER'S CERTIFICATE HAS CHANGED. {server} showed fingerprint \
                 {shown}, but {pinned} is pinned for it. Someone may be intercepting the \
                 connection; nothing was sent. If the operator really replaced the \
                 certificate, check the new fingerprint with them (the server prints it at \
                 start), then remove the line for {server} from {} or pass \
                 --server-fingerprint with the new value.",
                pins.display()
            ),
            TrustError::Unknown { server, shown } => write!(
                f,
                "{server} is a server not seen before; its certificate fingerprint is \
                 {shown}. Check it with the operator, then run again with \
                 --server-fingerprint {shown} (or --trust-first-use)."
            ),
            TrustError::CaRefused {
                server,
                ca,
                name,
                detail,
            } => write!(
                f,
                "the certificate of {server} does not verify against the CA in {} for the \
                 name {name} ({detail}); nothing was sent. Check that the server uses a \
                 certificate that CA issued for {name} (--server-name sets the name to check).",
                ca.display()
            ),
            TrustError::NotGiven { given, shown } => write!(
                f,
                "the server's certificate fingerprint is {shown}, not the {given} given \
                 with --server-fingerprint; nothing was sent"
            ),
        }
    }
}

impl From<io::Error> for TrustError {
    fn from(e: io::Error) -> Self {
        TrustError::Io(e)
    }
}

/// A TLS link to the server whose handshake is done: the socket, and the two halves.
pub struct ServerTls {
    /// The socket (for shutdown).
    pub stream: TcpStream,
    /// Plaintext in.
    pub reader: TlsReader,
    /// Plaintext out.
    pub writer: TlsWriter,
    /// The fingerprint the server showed (and that is now pinned).
    pub fingerprint: String,
}

/// Connects to `addr`, from `source` when it is one address of the same family.
fn dial(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: std::time::Duration,
) -> io::Result<TcpStream> {
    match source {
        Some(ip) if !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4() => {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(socket.into())
        }
        _ => TcpStream::connect_timeout(&addr, timeout),
    }
}

impl ServerTrust {
    /// Connects to `addr`, runs the TLS handshake, and decides about the certificate.
    /// `ask(server, fingerprint)` asks the user about a server seen for the first time
    /// (a terminal); `None` when nobody can be asked (a pipe, a reconnect).
    pub fn connect(
        &self,
        addr: SocketAddr,
        ask: Option<AskTrust<'_>>,
    ) -> Result<ServerTls, TrustError> {
        let key = addr.to_string();
        if let Some(ca) = &self.ca {
            return self.connect_ca(addr, ca);
        }
        let mut pins = Pins::open(&self.data_dir, SERVER_PINS)?;
        let pinned = pins.get(&key).map(str::to_string);
        let trust = match (&self.fingerprint, &pinned) {
            (Some(given), _) => Trust::Pinned(given.clone()),
            (None, Some(pinned)) => Trust::Pinned(pinned.clone()),
            (None, None) => Trust::FirstUse,
        };
        let deadline = Instant::now() + TLS_CONNECT_DEADLINE;
        let stream = dial(addr, self.source, TLS_CONNECT_DEADLINE)?;
        stream.set_nodelay(true)?;
        let (config, seen) = tls::client_config(trust.clone()).map_err(io::Error::other)?;
        let (mut reader, sealer) = tls::client(&stream, config)?;
        let mut writer = TlsWriter::new(&stream, sealer)?;
        let result = tls::finish_handshake(&mut reader, &mut writer, deadline);
        let shown = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (result, shown) = match (result, shown) {
            (Ok(()), Some(shown)) => (Ok(()), shown),
            (Err(e), Some(shown)) => (Err(e), shown),
            (Ok(()), None) => return Err(io::Error::other("no certificate seen").into()),
            (Err(e), None) => return Err(e.into()),
        };
        if let Trust::Pinned(want) = &trust
            && *want != shown
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Err(match &self.fingerprint {
                Some(given) => TrustError::NotGiven {
                    given: given.clone(),
                    shown,
                },
                None => TrustError::Changed {
                    server: key,
                    pinned: want.clone(),
                    shown,
                    pins: self.data_dir.join(SERVER_PINS),
                },
            });
        }
        result?;
        // A fingerprint given on the command line is the authority for this run and is
        // not written down; a certificate trusted on first use is pinned.
        if self.fingerprint.is_none() && pinned.as_deref() != Some(shown.as_str()) {
            let allowed = match (&trust, ask) {
                (Trust::Pinned(_), _) => true,
                _ if self.trust_first_use => true,
                (_, Some(ask)) => ask(&key, &shown),
                (_, None) => false,
            };
            if !allowed {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Err(TrustError::Unknown { server: key, shown });
            }
            pins.set(&key, &shown)?;
        }
        Ok(ServerTls {
            stream,
            reader,
            writer,
            fingerprint: shown,
        })
    }
}

impl ServerTrust {
    /// Connects to `addr` and verifies its certificate against `ca` for `ca.name`: a
    /// certificate that verifies needs no pin; one that does not is refused.
    fn connect_ca(&self, addr: SocketAddr, ca: &ServerCa) -> Result<ServerTls, TrustError> {
        let refused = |detail: String| TrustError::CaRefused {
            server: addr.to_string(),
            ca: ca.roots.clone(),
            name: ca.name.clone(),
            detail,
        };
        let roots = tls::load_roots(&ca.roots).map_err(|e| refused(e.to_string()))?;
        let deadline = Instant::now() + TLS_CONNECT_DEADLINE;
        let stream = dial(addr, self.source, TLS_CONNECT_DEADLINE)?;
        stream.set_nodelay(true)?;
        let (config, seen) = tls::client_config(Trust::Ca(roots)).map_err(io::Error::other)?;
        let (mut reader, sealer) =
            tls::client_named(&stream, config, &ca.name).map_err(|e| refused(e.to_string()))?;
        let mut writer = TlsWriter::new(&stream, sealer)?;
        let result = tls::finish_handshake(&mut reader, &mut writer, deadline);
        let shown = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (result, shown) {
            (Ok(()), Some(fingerprint)) => Ok(ServerTls {
                stream,
                reader,
                writer,
                fingerprint,
            }),
            // The verifier saw a certificate and said no.
            (Err(e), Some(_)) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                Err(refused(e.to_string()))
            }
            (Ok(()), None) => Err(io::Error::other("no certificate seen").into()),
            (Err(e), None) => Err(e.into()),
        }
    }
}
