//! TLS under the test connections: the shared write half of a `Wire`, the client side of
//! the server's TLS (trusting the servers this test binary started), and fake TLS servers
//! a test writes itself.
//!
//! Owns the encrypted halves; it must not parse protocol lines (`wire` does).

use super::*;

/// The write half a `Wire` shares with its `clone_stream` handles.
pub type SharedOut = Arc<Mutex<Box<dyn Write + Send>>>;

pub(super) fn lock_out(out: &SharedOut) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plaintext out over TLS: every write is sealed and sent at once; `flush` sends the
/// records rustls has ready (handshake answers).
pub(super) struct TlsOut {
    pub(super) sock: TcpStream,
    pub(super) sealer: peerchat::crypto::tls::TlsSealer,
    pub(super) sealed: Vec<u8>,
}

impl Write for TlsOut {
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

/// The two halves for a new connection: TLS pinned to the server's fingerprint when
/// `stream` goes to a server this binary started (the handshake is run here), the bare
/// socket otherwise. The bool is true if the server closed during the handshake.
pub(super) fn secure_halves(stream: &TcpStream) -> (Box<dyn Read + Send>, SharedOut, bool) {
    let plain = || -> (Box<dyn Read + Send>, SharedOut, bool) {
        (
            Box::new(stream.try_clone().unwrap()),
            Arc::new(Mutex::new(Box::new(stream.try_clone().unwrap()))),
            false,
        )
    };
    let Some(fp) = stream.peer_addr().ok().and_then(server_fingerprint) else {
        return plain();
    };
    tls_halves(stream, peerchat::crypto::tls::Trust::Pinned(fp))
}

/// TLS halves over `stream` with the given trust; runs the handshake (bounded by
/// `WAIT`). The bool is true if the link ended during the handshake.
pub fn tls_halves(
    stream: &TcpStream,
    trust: peerchat::crypto::tls::Trust,
) -> (Box<dyn Read + Send>, SharedOut, bool) {
    use peerchat::protocol::line::ReadTimeout;
    let (config, _seen) = peerchat::crypto::tls::client_config(trust).unwrap();
    let (mut reader, sealer) = peerchat::crypto::tls::client(stream, config).unwrap();
    let out: SharedOut = Arc::new(Mutex::new(Box::new(TlsOut {
        sock: stream.try_clone().unwrap(),
        sealer: sealer.clone(),
        sealed: Vec::new(),
    })));
    let nudged = Arc::clone(&out);
    reader.set_nudge(Box::new(move || {
        let _ = lock_out(&nudged).flush();
    }));
    let _ = lock_out(&out).flush();
    let deadline = Instant::now() + WAIT;
    let mut ended = false;
    while reader.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("TLS handshake with {:?} took too long", stream.peer_addr());
        }
        reader.set_read_timeout(Some(left)).unwrap();
        match reader.pump() {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                ended = true;
                break;
            }
        }
    }
    (Box::new(reader), out, ended)
}

/// A second handle on a `Wire`'s link: writes are encrypted like the Wire's own and
/// never interleave with them; reads come straight off the socket (plain links only).
pub struct WireStream {
    pub(super) sock: TcpStream,
    pub(super) out: SharedOut,
}

impl WireStream {
    /// Sets the socket's write timeout.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }
}

impl Write for WireStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock_out(&self.out).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock_out(&self.out).flush()
    }
}

impl Read for WireStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

impl Wire {
    /// Connects to `addr` (e.g. a proxy in front of a server) speaking TLS with `trust`.
    pub fn connect_tls(addr: SocketAddr, trust: peerchat::crypto::tls::Trust) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let label = format!("tls wire {}", stream.local_addr().unwrap());
        let (input, output, eof) = tls_halves(&stream, trust);
        Wire {
            label,
            stream,
            input,
            output,
            buf: Vec::new(),
            eof,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }

    /// True once the other side closed (or the link broke).
    pub fn is_closed(&self) -> bool {
        self.eof
    }
}

/// A blocking TLS server side for a fake server written in a test.
pub type FakeTls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A certificate for a fake server: its TLS configuration and the fingerprint to give
/// the client (`--server-fingerprint`). The folder holds the key; keep it alive.
pub fn fake_server_tls() -> (Arc<rustls::ServerConfig>, String, TempDir) {
    let dir = TempDir::new().unwrap();
    let id = peerchat::crypto::tls::ServerIdentity::load_or_create(
        None,
        None,
        &dir.path().join("fake.db"),
    )
    .unwrap();
    (id.server_config().unwrap(), id.fingerprint(), dir)
}

/// Accepts one connection on `listener` and wraps it in TLS (the handshake runs on the
/// first read or write).
pub fn accept_tls(listener: &TcpListener, config: Arc<rustls::ServerConfig>) -> FakeTls {
    let (stream, _) = listener.accept().expect("accept the client");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    rustls::StreamOwned::new(conn, stream)
}

/// Reads one line (without its `\n`) from a fake server's TLS stream; empty at the end.
pub fn read_tls_line(tls: &mut FakeTls) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = tls.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

impl Wire {
    /// The server's side of an accepted connection, speaking TLS with `config` (a fake
    /// server in a test); the handshake is run here.
    pub fn accepted_tls(stream: TcpStream, label: &str, config: Arc<rustls::ServerConfig>) -> Wire {
        use peerchat::protocol::line::ReadTimeout;
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let (mut reader, sealer) = peerchat::crypto::tls::server(&stream, config).unwrap();
        let output: SharedOut = Arc::new(Mutex::new(Box::new(TlsOut {
            sock: stream.try_clone().unwrap(),
            sealer: sealer.clone(),
            sealed: Vec::new(),
        })));
        let nudged = Arc::clone(&output);
        reader.set_nudge(Box::new(move || {
            let _ = lock_out(&nudged).flush();
        }));
        let deadline = Instant::now() + WAIT;
        let mut eof = false;
        while reader.is_handshaking() && !eof {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "TLS handshake (server side) took too long");
            reader.set_read_timeout(Some(left)).unwrap();
            eof = !matches!(reader.pump(), Ok(true));
        }
        Wire {
            label: label.to_string(),
            stream,
            input: Box::new(reader),
            output,
            buf: Vec::new(),
            eof,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }
}
