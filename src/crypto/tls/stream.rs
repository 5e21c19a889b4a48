//! A TLS stream that a reader thread and a writer thread can share, and the handshakes
//! run over it.
//!
//! The sharing rule (DESIGN.md "Rules for encrypted links"): the rustls state sits behind
//! one `Mutex` held only for memory work. The reader blocks on the socket without the
//! lock (its own clone; on the server the one socket the writer shares, so a connection
//! costs one descriptor), then feeds what it read in under the lock. Only the writer
//! side ever takes records out of rustls (`TlsSealer`), and it is one thread per link,
//! so records reach the socket in the order rustls made them. When the reader makes
//! records (handshake flights, alerts, key updates) it calls its `nudge` so the writer
//! drains them. It must not decide which certificate to trust (`pinning`) nor know any
//! peerchat line.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, Connection, ServerConfig};

use super::{Trust, client_config, fingerprint, lock};
use crate::protocol::line::ReadTimeout;

/// Bytes read from the socket at once: one full TLS record and its overhead.
const SOCKET_READ: usize = 16 * 1024 + 512;

/// Starts a client session over `sock`: returns the reader and the sealer (the
/// ClientHello is already waiting in the sealer: drain it with [`TlsSealer::pending`]).
pub fn client(sock: &TcpStream, config: Arc<ClientConfig>) -> io::Result<(TlsReader, TlsSealer)> {
    client_named(sock, config, "localhost")
}

/// As [`client`], naming the server `name` (a DNS name or an IP address): what a
/// CA-signed certificate is checked against (`Trust::Ca`), and the SNI sent.
pub fn client_named(
    sock: &TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
) -> io::Result<(TlsReader, TlsSealer)> {
    let name = ServerName::try_from(name.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a server name: {e}"),
        )
    })?;
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    split(sock, Connection::Client(conn))
}

/// Starts a server session over `sock` (the handshake runs as the reader reads).
pub fn server(sock: &TcpStream, config: Arc<ServerConfig>) -> io::Result<(TlsReader, TlsSealer)> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    split(sock, Connection::Server(conn))
}

/// Like [`server`], but the reader reads `sock` itself instead of a clone of it, so the
/// connection holds one file descriptor, not two: the server's writer writes on the same
/// `Arc` (a `&TcpStream` reads and writes from two threads at once; a clone would share
/// the socket, its timeouts and its shutdown anyway). The socket closes when both halves
/// are gone.
pub fn server_shared(
    sock: Arc<TcpStream>,
    config: Arc<ServerConfig>,
) -> io::Result<(TlsReader, TlsSealer)> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    Ok(split_shared(sock, Connection::Server(conn)))
}

/// Answers a connection the server will not serve with `bytes` (one `ERR` line) over
/// TLS, then closes: the handshake, the line, `close_notify`. Gives up at `deadline`.
/// Runs on its own short-lived thread, never on the accept loop.
pub fn send_and_close(
    sock: &TcpStream,
    config: Arc<ServerConfig>,
    bytes: &[u8],
    deadline: std::time::Instant,
) -> io::Result<()> {
    let (mut reader, sealer) = server(sock, config)?;
    let mut out = Vec::new();
    sealer.seal(bytes, &mut out)?;
    let mut sink = sock;
    sink.write_all(&out)?;
    while reader.is_handshaking() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        reader.set_read_timeout(Some(left))?;
        if !reader.pump()? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.clear();
        sealer.pending(&mut out)?;
        sink.write_all(&out)?;
    }
    out.clear();
    sealer.close(&mut out)?;
    sink.write_all(&out)?;
    sock.shutdown(std::net::Shutdown::Write)
}

/// A blocking, single-threaded TLS client stream (for tools and benchmarks that read
/// and write on one thread).
pub type BlockingTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Wraps a connected socket in a blocking TLS client that trusts as `trust` says; the
/// handshake runs on the first read or write.
pub fn blocking_client(sock: TcpStream, trust: Trust) -> io::Result<BlockingTls> {
    let (config, _) = client_config(trust).map_err(io::Error::other)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

fn split(sock: &TcpStream, conn: Connection) -> io::Result<(TlsReader, TlsSealer)> {
    Ok(split_shared(Arc::new(sock.try_clone()?), conn))
}

fn split_shared(sock: Arc<TcpStream>, mut conn: Connection) -> (TlsReader, TlsSealer) {
    // The sealer drains after every write, so rustls never needs to hold much back.
    conn.set_buffer_limit(None);
    let state = Arc::new(Mutex::new(conn));
    let reader = TlsReader {
        sock,
        state: Arc::clone(&state),
        buf: vec![0; SOCKET_READ].into_boxed_slice(),
        start: 0,
        end: 0,
        nudge: None,
    };
    (reader, TlsSealer { state })
}

fn broken(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// The reading half: plaintext out of a TLS link. Blocks on its socket (its own clone,
/// or on the server the one socket shared with the writer) without holding the lock.
pub struct TlsReader {
    /// This side's handle on the socket.
    sock: Arc<TcpStream>,
    /// The rustls state shared with the sealer.
    state: Arc<Mutex<Connection>>,
    /// Ciphertext read from the socket; `start..end` is what rustls has not taken yet.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Told when reading produced records to send (handshake, alerts).
    nudge: Option<Box<dyn Fn() + Send>>,
}

impl fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReader").finish_non_exhaustive()
    }
}

impl TlsReader {
    /// Sets what to call when rustls has records to send after a read (the writer's
    /// "drain now").
    pub fn set_nudge(&mut self, nudge: Box<dyn Fn() + Send>) {
        self.nudge = Some(nudge);
    }

    /// The socket under the link (for timeouts and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// True once the handshake has finished.
    pub fn is_handshaking(&self) -> bool {
        lock(&self.state).is_handshaking()
    }

    fn poke(&self) {
        if let Some(nudge) = &self.nudge {
            nudge();
        }
    }
}

impl ReadTimeout for TlsReader {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

impl TlsReader {
    /// Feeds rustls: what is left of the last socket read, or else one new read from the
    /// socket (the handshake advances; records to send are announced through the
    /// nudge). rustls takes at most 16 KiB of unread plaintext, so what it cannot take
    /// yet stays here for the next call. False at end of stream.
    pub fn pump(&mut self) -> io::Result<bool> {
        let fresh = self.start == self.end;
        if fresh {
            self.start = 0;
            self.end = (&*self.sock).read(&mut self.buf)?;
        }
        let eof = self.end == 0;
        let (result, wants_write) = {
            let mut state = lock(&self.state);
            let mut result = Ok(());
            if eof {
                // End of stream: rustls decides whether it was a clean close.
                result = state
                    .read_tls(&mut &[][..])
                    .and_then(|_| state.process_new_packets().map(|_| ()).map_err(broken));
            }
            while result.is_ok() && self.start < self.end {
                let mut input = &self.buf[self.start..self.end];
                match state.read_tls(&mut input) {
                    Ok(taken) => {
                        self.start += taken;
                        result = state.process_new_packets().map(|_| ()).map_err(broken);
                    }
                    // rustls is full: the rest waits until the plaintext is read.
                    Err(_) if !fresh || self.start > 0 => break,
                    Err(e) => result = Err(e),
                }
            }
            (result, state.wants_write())
        };
        if wants_write {
            self.poke();
        }
        result?;
        Ok(!eof)
    }
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let wants_write = {
                let mut state = lock(&self.state);
                match state.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                state.wants_write()
            };
            if wants_write {
                self.poke();
            }
            self.pump()?;
        }
    }
}

/// The writing half: seals plaintext into records and drains what rustls made. One
/// writer thread per link uses it, so records leave in order.
#[derive(Clone)]
pub struct TlsSealer {
    state: Arc<Mutex<Connection>>,
}

impl TlsSealer {
    /// Encrypts `plain` and appends every record rustls has ready to `out` (records made
    /// earlier by the reader come first). Before the handshake ends rustls keeps the
    /// plaintext and sends it as soon as it may.
    pub fn seal(&self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.writer().write_all(plain)?;
        drain(&mut state, out)
    }

    /// Appends the records rustls has ready (handshake flights, alerts) to `out`.
    pub fn pending(&self, out: &mut Vec<u8>) -> io::Result<()> {
        drain(&mut lock(&self.state), out)
    }

    /// Appends a `close_notify` alert (and anything before it) to `out`.
    pub fn close(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.send_close_notify();
        drain(&mut state, out)
    }

    /// The fingerprint of the certificate the other side showed, once known.
    pub fn peer_fingerprint(&self) -> Option<String> {
        lock(&self.state)
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| fingerprint(c.as_ref()))
    }

    /// True while the handshake is under way.
    pub fn is_handshaking(&self) -> bool {
        lock(&self.state).is_handshaking()
    }
}

/// Plaintext out for a client: each write is sealed and written at once on this
/// thread's socket clone. Records the reader made (rare after the handshake) leave
/// with the next write, so only this writer ever takes records out of rustls.
pub struct TlsWriter {
    sock: TcpStream,
    sealer: TlsSealer,
    sealed: Vec<u8>,
}

impl TlsWriter {
    /// A writer sealing with `sealer` onto (a clone of) `sock`.
    pub fn new(sock: &TcpStream, sealer: TlsSealer) -> io::Result<TlsWriter> {
        Ok(TlsWriter {
            sock: sock.try_clone()?,
            sealer,
            sealed: Vec::new(),
        })
    }

    /// Sends `close_notify`: the other side then sees a clean end.
    pub fn close(&mut self) -> io::Result<()> {
        self.sealed.clear();
        self.sealer.close(&mut self.sealed)?;
        self.sock.write_all(&self.sealed)
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sealed.clear();
        self.sealer.seal(buf, &mut self.sealed)?;
        self.sock.write_all(&self.sealed)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sealed.clear();
        self.sealer.pending(&mut self.sealed)?;
        self.sock.write_all(&self.sealed)
    }
}

/// Runs a client handshake to its end on the calling thread (nothing else uses the
/// link yet), within `deadline`.
pub fn finish_handshake(
    reader: &mut TlsReader,
    writer: &mut TlsWriter,
    deadline: std::time::Instant,
) -> io::Result<()> {
    writer.flush()?;
    while reader.is_handshaking() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake too slow",
            ));
        }
        reader.set_read_timeout(Some(left))?;
        if !reader.pump()? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed during the TLS handshake",
            ));
        }
        writer.flush()?;
    }
    reader.set_read_timeout(None)
}

fn drain(state: &mut Connection, out: &mut Vec<u8>) -> io::Result<()> {
    while state.wants_write() {
        state.write_tls(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tls::ServerIdentity;
    use std::fs;
    use std::net::TcpListener;

    fn pair(trust: impl FnOnce(&str) -> Trust) -> io::Result<(Vec<u8>, String)> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("server.db");
        let id = ServerIdentity::load_or_create(None, None, &db).map_err(io::Error::other)?;
        let mode = fs::metadata(dir.path().join("server-key.pem"))?.permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let fp = id.fingerprint();
        let sconf = id.server_config().map_err(io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (sock, _) = listener.accept()?;
            let (mut r, s) = server(&sock, sconf)?;
            let mut buf = [0u8; 5];
            let mut out = Vec::new();
            let mut w = &sock;
            // Drive the handshake by hand: read, then send what rustls made.
            let sealer = s.clone();
            let nudged = sock.try_clone()?;
            r.set_nudge(Box::new(move || {
                let mut out = Vec::new();
                if sealer.pending(&mut out).is_ok() {
                    let _ = (&nudged).write_all(&out);
                }
            }));
            r.read_exact(&mut buf)?;
            s.seal(&buf, &mut out)?;
            w.write_all(&out)
        });
        let sock = TcpStream::connect(addr)?;
        let (config, seen) = client_config(trust(&fp)).map_err(io::Error::other)?;
        let (mut r, s) = client(&sock, config)?;
        let sealer = s.clone();
        let nudged = sock.try_clone()?;
        r.set_nudge(Box::new(move || {
            let mut out = Vec::new();
            if sealer.pending(&mut out).is_ok() {
                let _ = (&nudged).write_all(&out);
            }
        }));
        let mut out = Vec::new();
        s.seal(b"hello", &mut out)?;
        (&sock).write_all(&out)?;
        let mut got = vec![0u8; 5];
        let result = r.read_exact(&mut got);
        drop(r);
        drop(sock);
        let _ = server.join();
        result?;
        assert_eq!(lock(&seen).clone(), Some(fp.clone()));
        Ok((got, fp))
    }

    #[test]
    fn a_pinned_certificate_talks_and_another_is_refused() {
        let (got, _) = pair(|fp| Trust::Pinned(fp.to_string())).expect("pinned link");
        assert_eq!(got, b"hello");
        assert!(pair(|_| Trust::Pinned(fingerprint(b"other"))).is_err());
    }
}
