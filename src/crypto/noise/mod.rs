//! Noise for every peer↔peer connection: the handshake (XX with a pre-shared key
//! derived from the server's one-time ticket) and a framed reader and writer of
//! length-prefixed Noise transport messages.
//!
//! The ticket never crosses the wire: the initiator sends only a one-way id of it in the
//! first (clear) handshake message so the responder can find which ticket to use; the
//! handshake then completes only if both sides hold the ticket itself (it is the PSK,
//! mixed in at the third message). Both static keys are learned in the handshake; the
//! caller checks them against the keys the server named and the user's pins.
//!
//! After the handshake (`stream`: [`NoiseReader`], [`NoiseWriter`]) the reader and the
//! writer each keep their own nonce counter over one shared stateless transport state,
//! so neither needs a lock (DESIGN.md). Frames are a 2-byte big-endian length and one
//! Noise message (at most 65535 bytes), under the peerchat line and chunk protocol,
//! which stays unchanged. This module must not know any peerchat line.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use snow::{Builder, HandshakeState};

mod stream;

pub use stream::{NoiseReader, NoiseWriter};

/// The Noise protocol name. AES-GCM: this machine class has AES instructions and ring's
/// AES-GCM measured faster than its ChaCha20-Poly1305 here (the bench's `cipher` group,
/// BENCHMARKS.md).
pub const PATTERN: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";

/// The same handshake with ChaCha20-Poly1305, for machines without AES instructions
/// and for the comparison in the bench.
pub const PATTERN_CHACHA: &str = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";

/// Bound into every handshake, so a transcript from another protocol never verifies.
const PROLOGUE: &[u8] = b"peerchat peer link v1";

/// Largest Noise message (a frame's body).
pub const MAX_MESSAGE: usize = 65535;

/// AEAD tag bytes per message.
const TAG: usize = 16;

/// Most plaintext bytes in one transport message.
pub const MAX_PLAIN: usize = MAX_MESSAGE - TAG;

/// Length of a ticket id (what the initiator shows in clear).
pub const TICKET_ID_LEN: usize = 16;

/// The 32-byte pre-shared key both sides derive from the ticket text.
pub fn psk(ticket: &str) -> [u8; 32] {
    blake3::derive_key("peerchat 2026 noise psk from ticket", ticket.as_bytes())
}

/// A one-way id of the ticket: names it to the responder without revealing it.
pub fn ticket_id(ticket: &str) -> [u8; TICKET_ID_LEN] {
    let full = blake3::derive_key("peerchat 2026 ticket id", ticket.as_bytes());
    let mut id = [0u8; TICKET_ID_LEN];
    id.copy_from_slice(&full[..TICKET_ID_LEN]);
    id
}

/// Makes a new X25519 key pair: (private, public).
pub fn generate_keypair() -> io::Result<([u8; 32], [u8; 32])> {
    let pair = builder()?.generate_keypair().map_err(noise_err)?;
    let mut private = [0u8; 32];
    let mut public = [0u8; 32];
    private.copy_from_slice(&pair.private);
    public.copy_from_slice(&pair.public);
    Ok((private, public))
}

fn builder() -> io::Result<Builder<'static>> {
    builder_for(PATTERN)
}

fn builder_for(pattern: &str) -> io::Result<Builder<'static>> {
    let params = pattern
        .parse()
        .map_err(|e| io::Error::other(format!("noise params: {e:?}")))?;
    Ok(Builder::new(params))
}

fn noise_err(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("noise: {e}"))
}

/// What a finished handshake gives: the two halves and who is on the other side.
pub struct Handshaken {
    /// Plaintext in.
    pub reader: NoiseReader,
    /// Plaintext out.
    pub writer: NoiseWriter,
    /// The other side's long-term public key, as proved in the handshake.
    pub remote_key: [u8; 32],
}

impl fmt::Debug for Handshaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshaken").finish_non_exhaustive()
    }
}

/// Runs the initiator's side over `sock` (already connected): proves `ticket`, learns
/// the responder's key, and refuses (before sending anything secret) a responder whose
/// key is not `expect_key` when one is given. `deadline` bounds the whole handshake.
pub fn initiate(
    sock: &TcpStream,
    private: &[u8; 32],
    ticket: &str,
    expect_key: Option<&[u8; 32]>,
    deadline: Instant,
) -> io::Result<Handshaken> {
    initiate_with(PATTERN, sock, private, ticket, expect_key, deadline)
}

/// [`initiate`] with another protocol name (e.g. [`PATTERN_CHACHA`]).
pub fn initiate_with(
    pattern: &str,
    sock: &TcpStream,
    private: &[u8; 32],
    ticket: &str,
    expect_key: Option<&[u8; 32]>,
    deadline: Instant,
) -> io::Result<Handshaken> {
    let psk = psk(ticket);
    let mut hs = builder_for(pattern)?
        .local_private_key(private)
        .and_then(|b| b.psk(3, &psk))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .map_err(noise_err)?;
    let mut msg = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    // -> e (payload: the ticket's id, in clear by design)
    let n = hs
        .write_message(&ticket_id(ticket), &mut msg)
        .map_err(noise_err)?;
    write_frame(sock, &msg[..n])?;
    // <- e, ee, s, es (or a refusal line in clear, see `read_answer`)
    let frame = read_answer(sock, deadline)?;
    hs.read_message(&frame, &mut payload).map_err(noise_err)?;
    let remote = remote_key(&hs)?;
    if let Some(want) = expect_key
        && *want != remote
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer's key is not the one the server named",
        ));
    }
    // -> s, se, psk
    let n = hs.write_message(&[], &mut msg).map_err(noise_err)?;
    write_frame(sock, &msg[..n])?;
    finish(sock, hs, remote)
}

/// Runs the responder's side: reads the first message, asks `ticket_for` which ticket
/// the shown id names (`None` ends the handshake), and completes only if the initiator
/// holds that ticket. Returns the ticket too, so the caller knows which request it was.
pub fn respond(
    sock: &TcpStream,
    private: &[u8; 32],
    deadline: Instant,
    ticket_for: impl FnOnce(&[u8; TICKET_ID_LEN]) -> Option<String>,
) -> io::Result<(Handshaken, String)> {
    respond_with(PATTERN, sock, private, deadline, ticket_for)
}

/// [`respond`] with another protocol name (both sides must use the same).
pub fn respond_with(
    pattern: &str,
    sock: &TcpStream,
    private: &[u8; 32],
    deadline: Instant,
    ticket_for: impl FnOnce(&[u8; TICKET_ID_LEN]) -> Option<String>,
) -> io::Result<(Handshaken, String)> {
    let mut hs = builder_for(pattern)?
        .local_private_key(private)
        .and_then(|b| b.psk(3, &[0u8; 32]))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(noise_err)?;
    let mut msg = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    let frame = read_frame_by(sock, deadline)?;
    let n = hs.read_message(&frame, &mut payload).map_err(noise_err)?;
    let id: [u8; TICKET_ID_LEN] = payload[..n]
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "no ticket id"))?;
    // Time spent finding the ticket (waiting for the server's word) is ours, not the
    // initiator's: it does not count against the deadline.
    let asked = Instant::now();
    let ticket = ticket_for(&id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "unknown or used ticket"))?;
    let deadline = deadline + asked.elapsed();
    hs.set_psk(3, &psk(&ticket)).map_err(noise_err)?;
    let n = hs.write_message(&[], &mut msg).map_err(noise_err)?;
    write_frame(sock, &msg[..n])?;
    let frame = read_frame_by(sock, deadline)?;
    hs.read_message(&frame, &mut payload).map_err(noise_err)?;
    let remote = remote_key(&hs)?;
    Ok((finish(sock, hs, remote)?, ticket))
}

fn remote_key(hs: &HandshakeState) -> io::Result<[u8; 32]> {
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no remote key"))
}

fn finish(sock: &TcpStream, hs: HandshakeState, remote_key: [u8; 32]) -> io::Result<Handshaken> {
    let state = Arc::new(hs.into_stateless_transport_mode().map_err(noise_err)?);
    sock.set_read_timeout(None)?;
    Ok(Handshaken {
        reader: NoiseReader::new(sock.try_clone()?, Arc::clone(&state)),
        writer: NoiseWriter::new(sock.try_clone()?, state),
        remote_key,
    })
}

fn write_frame(mut sock: &TcpStream, body: &[u8]) -> io::Result<()> {
    let len = u16::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    sock.write_all(&frame)
}

/// A refusal the responder wrote in clear instead of handshake message 2 (it did not
/// know the ticket, was too busy, or was not spoken to in Noise): the line, without its
/// terminator and control characters. It is unauthenticated: show it, trust nothing in it.
#[derive(Debug, Clone)]
pub struct ClearRefusal(pub String);

impl fmt::Display for ClearRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClearRefusal {}

/// Longest refusal line read in clear.
const MAX_CLEAR_LINE: usize = 512;

/// The first bytes of a refusal line in clear (`ERR ...`). Message 2 is 96 bytes (its
/// length prefix starts with a zero byte), so the two can never be confused.
const CLEAR_REFUSAL: &[u8; 2] = b"ER";

/// Reads the responder's answer to message 1: message 2, or a refusal line in clear,
/// returned as a `ConnectionRefused` error carrying a [`ClearRefusal`].
fn read_answer(sock: &TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    read_exact_by(sock, deadline, &mut len)?;
    if &len != CLEAR_REFUSAL {
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        read_exact_by(sock, deadline, &mut body)?;
        return Ok(body);
    }
    let mut line = len.to_vec();
    let mut byte = [0u8; 1];
    while line.len() < MAX_CLEAR_LINE && read_exact_by(sock, deadline, &mut byte).is_ok() {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let text: String = String::from_utf8_lossy(&line)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        ClearRefusal(text),
    ))
}

/// Fills `buf` from `sock`, failing at `deadline`.
fn read_exact_by(mut sock: &TcpStream, deadline: Instant, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake too slow",
            ));
        }
        sock.set_read_timeout(Some(left))?;
        match sock.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one whole handshake frame, failing at `deadline`.
fn read_frame_by(sock: &TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    read_exact_by(sock, deadline, &mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact_by(sock, deadline, &mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    #[allow(clippy::type_complexity)]
    fn run(
        ticket_a: &'static str,
        ticket_b: &'static str,
    ) -> (
        io::Result<Handshaken>,
        io::Result<(Handshaken, String)>,
        [u8; 32],
        [u8; 32],
    ) {
        let (apriv, apub) = generate_keypair().unwrap();
        let (bpriv, bpub) = generate_keypair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let b = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            respond(&sock, &bpriv, deadline, |id| {
                (*id == ticket_id(ticket_b)).then(|| ticket_b.to_string())
            })
        });
        let sock = TcpStream::connect(addr).unwrap();
        let a = initiate(&sock, &apriv, ticket_a, Some(&bpub), deadline);
        let mut a = a;
        if let Ok(h) = &mut a {
            let _ = h.writer.write_all(b"HELLO over noise\n");
        }
        let b = b.join().unwrap();
        (a, b, apub, bpub)
    }

    #[test]
    fn same_ticket_completes_and_carries_bytes() {
        let (a, b, apub, bpub) = run("t1", "t1");
        let a = a.unwrap();
        let (mut b, ticket) = b.unwrap();
        assert_eq!(ticket, "t1");
        assert_eq!(a.remote_key, bpub);
        assert_eq!(b.remote_key, apub);
        let mut line = [0u8; 17];
        b.reader.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"HELLO over noise\n");
    }

    #[test]
    fn handshake_messages_have_the_documented_sizes() {
        // protocol.md §10: 64, 96 and 64 bytes; message 2 never starts with `E`.
        let (apriv, _) = generate_keypair().unwrap();
        let (bpriv, _) = generate_keypair().unwrap();
        let key = psk("t");
        let build = |private: &[u8; 32], initiator: bool| {
            let b = builder()
                .unwrap()
                .local_private_key(private)
                .unwrap()
                .psk(3, &key)
                .unwrap()
                .prologue(PROLOGUE)
                .unwrap();
            if initiator {
                b.build_initiator().unwrap()
            } else {
                b.build_responder().unwrap()
            }
        };
        let (mut a, mut b) = (build(&apriv, true), build(&bpriv, false));
        let (mut msg, mut out) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n1 = a.write_message(&ticket_id("t"), &mut msg).unwrap();
        b.read_message(&msg[..n1], &mut out).unwrap();
        let n2 = b.write_message(&[], &mut msg).unwrap();
        a.read_message(&msg[..n2], &mut out).unwrap();
        let n3 = a.write_message(&[], &mut msg).unwrap();
        b.read_message(&msg[..n3], &mut out).unwrap();
        assert_eq!((n1, n2, n3), (64, 96, 64));
        assert_ne!((n2 as u16).to_be_bytes()[0], b'E');
    }

    #[test]
    fn another_ticket_fails_the_handshake() {
        let (_a, b, _, _) = run("t1", "t2");
        assert!(b.is_err());
    }
}
