//! Raw peer-link connections: Noise handshakes as a peer would make them (or forge),
//! identity keys for raw peers, and meeting a peer at the relay.
//!
//! Owns these raw peer conversations; the `Wire` they end in is in `wire`.

use super::*;

/// Noise halves over `stream` after the handshake `run` performs: a plaintext reader and
/// a shared plaintext writer, as [`Wire`] uses them.
pub(super) fn noise_halves(
    h: peerchat::crypto::noise::Handshaken,
) -> (Box<dyn Read + Send>, SharedOut) {
    (Box::new(h.reader), Arc::new(Mutex::new(Box::new(h.writer))))
}

impl Wire {
    /// Connects to a peer listener at `addr` and runs the Noise handshake as the
    /// initiator with `ticket` (a fresh key of our own; the listener's key is not
    /// checked). Afterwards the Wire behaves exactly like a plain one: lines and bytes
    /// travel inside Noise.
    pub fn peer(addr: SocketAddr, ticket: &str) -> Wire {
        Wire::try_peer(addr, ticket).unwrap_or_else(|e| panic!("noise to {addr}: {e}"))
    }

    /// [`Wire::peer`], returning the handshake's error (e.g. a wrong ticket).
    pub fn try_peer(addr: SocketAddr, ticket: &str) -> io::Result<Wire> {
        use peerchat::crypto::noise;
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WAIT))?;
        // One key for every raw peer of this test binary: a client pins the key of each
        // name it meets, so a raw "mallory" must keep hers across connections.
        let private = raw_peer_key().0;
        let h = noise::initiate(&stream, &private, ticket, None, Instant::now() + WAIT)?;
        let label = format!("noise wire {}", stream.local_addr()?);
        Ok(Wire::over_noise(stream, h, label))
    }

    /// The listener's side for a connection a client made to us (e.g. a raw peer that
    /// was granted `ticket`): runs the Noise handshake as the responder, accepting only
    /// `ticket`, then behaves like [`Wire::from_accepted`].
    pub fn accepted_peer(stream: TcpStream, ticket: &str, label: &str) -> Wire {
        use peerchat::crypto::noise;
        stream.set_nonblocking(false).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let private = raw_peer_key().0;
        let want = noise::ticket_id(ticket);
        let (h, _) = noise::respond(&stream, &private, Instant::now() + WAIT, |id| {
            (*id == want).then(|| ticket.to_string())
        })
        .unwrap_or_else(|e| panic!("{label}: noise handshake: {e}"));
        Wire::over_noise(stream, h, label.to_string())
    }

    pub(super) fn over_noise(
        stream: TcpStream,
        h: peerchat::crypto::noise::Handshaken,
        label: String,
    ) -> Wire {
        let (input, output) = noise_halves(h);
        Wire {
            label,
            stream,
            input,
            output,
            buf: Vec::new(),
            eof: false,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }
}

impl Wire {
    /// Runs the Noise handshake with the peer listener at `addr` with `ticket`, which the
    /// listener must refuse in clear before the handshake: returns its `ERR` line.
    pub fn refused_peer(addr: SocketAddr, ticket: &str) -> String {
        match Wire::try_peer(addr, ticket) {
            Ok(w) => w.fail("the listener completed a handshake it should have refused"),
            Err(e) => match e
                .get_ref()
                .and_then(|r| r.downcast_ref::<peerchat::crypto::noise::ClearRefusal>())
            {
                Some(line) => line.0.clone(),
                None => panic!("expected a refusal in clear from {addr}, got {e}"),
            },
        }
    }
}

/// The key pair raw peers of this test binary use (`Wire::peer`, `Wire::accepted_peer`).
pub fn raw_peer_key() -> ([u8; 32], [u8; 32]) {
    static KEY: std::sync::OnceLock<([u8; 32], [u8; 32])> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| peerchat::crypto::noise::generate_keypair().expect("a key pair"))
}

impl Wire {
    /// [`Wire::try_peer`] with the given private key (e.g. to play a user whose key
    /// changed) and the key the listener must prove (`None`: any).
    pub fn try_peer_as(
        addr: SocketAddr,
        ticket: &str,
        private: &[u8; 32],
        expect: Option<&[u8; 32]>,
    ) -> io::Result<Wire> {
        use peerchat::crypto::noise;
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WAIT))?;
        let h = noise::initiate(&stream, private, ticket, expect, Instant::now() + WAIT)?;
        let label = format!("noise wire {}", stream.local_addr()?);
        Ok(Wire::over_noise(stream, h, label))
    }
}

impl Wire {
    /// [`Wire::peer`] over a socket the test connected itself (e.g. with small buffers).
    pub fn peer_on(stream: TcpStream, ticket: &str, label: &str) -> Wire {
        use peerchat::crypto::noise;
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let private = raw_peer_key().0;
        let h = noise::initiate(&stream, &private, ticket, None, Instant::now() + WAIT)
            .unwrap_or_else(|e| panic!("{label}: noise handshake: {e}"));
        Wire::over_noise(stream, h, label.to_string())
    }
}

/// Dials the relay at `addr` with `token` and waits, reading byte by byte (so nothing of
/// the peer's first bytes is taken), until paired: the returned socket is end to end.
pub fn relay_meet(addr: SocketAddr, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(format!("RELAY {token}\r\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    assert_eq!(line, "OK RELAYED", "the relay answered {line:?}");
    stream.set_read_timeout(None).unwrap();
    stream
}

/// A well-formed Noise message 1 (with its 2-byte length) naming ticket id `id`, from a
/// fresh ephemeral key: what anyone can send without holding the ticket (the ticket is
/// mixed in only at message 3).
pub fn forged_message_1(id: &[u8; 16]) -> Vec<u8> {
    let mut hs = snow::Builder::new(peerchat::crypto::noise::PATTERN.parse().unwrap())
        .local_private_key(&raw_peer_key().0)
        .unwrap()
        .psk(3, &[0u8; 32])
        .unwrap()
        .prologue(b"peerchat peer link v1")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 1024];
    let n = hs.write_message(id, &mut msg).unwrap();
    let mut frame = (n as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg[..n]);
    frame
}
