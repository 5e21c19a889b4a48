//! Outgoing peer connections: asking a peer for a chat session and opening data
//! connections, each checking that whoever answers holds the ticket (`ACCEPT <mac>`).
//!
//! Owns the requester's side of the handshakes: the `HELLO`/`PUSH`/`FETCH` line, one
//! deadline for the answer whatever the peer sends meanwhile, the proof check, and
//! saying plainly why a peer refused. Established chat links are handed to
//! `peer_link::PeerLink`, data connections to the transfer code. It must not decide who
//! to ask (that is `sessions` and `transfers`) nor print.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::ladder::{self, Route};
use super::peer_link::{PeerEvent, PeerEvents, PeerLink, send_last};
use super::peer_secure::{self, PeerSecurity, Secured, secure_as_requester};
use super::transfer::Wire;
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{
    DEFAULT_RELAY_TOKEN_TTL, MAX_LINE, PEER_CONNECT_TIMEOUT, TICKET_GRACE, WRITE_TIMEOUT,
};
use std::sync::Arc;

/// How long an end waits at the relay for `OK RELAYED`: the default token life.
const RELAY_WAIT: Duration = DEFAULT_RELAY_TOKEN_TTL;
use crate::protocol::line::{LineError, LineReader, write_lines};
use crate::protocol::peer_msg::{PEER_VERSION, PeerMsg};
use crate::protocol::server_msg::EndReason;
use crate::protocol::ticket::Ticket;

/// Small stacks: these threads only move lines.
const THREAD_STACK: usize = 128 * 1024;

/// Opens a data connection to `peer` by `route` (`addr` is where the server says it
/// listens, for messages): secures it (Noise as the initiator, `peer_secure`, on every
/// attempt of the route: the first to finish the handshake wins), sends its first line
/// (`PUSH` or `FETCH`) inside it and checks the listener's proof of the ticket
/// (`ACCEPT <mac>`, protocol.md §11) before any file line is exchanged. An `ERR` as the
/// first answer (a refusal) is left for the transfer code, so it reports it as before;
/// anything else, or a wrong MAC, is refused. A refusal in clear before the handshake
/// comes back as an error carrying the line (`peer_secure::clear_refusal`); nothing
/// answering at all as one `ladder::is_unreached` recognises.
pub fn open_transfer(
    addr: SocketAddr,
    route: &Route,
    first: &PeerMsg,
    peer: &str,
    expected_key: Option<[u8; 32]>,
    security: &Arc<PeerSecurity>,
) -> io::Result<Wire> {
    let (from, id, ticket) = match first {
        PeerMsg::Push {
            from,
            transfer,
            ticket,
            ..
        }
        | PeerMsg::Fetch {
            from,
            transfer,
            ticket,
            ..
        } => (from, *transfer, ticket),
        _ => return Err(io::Error::other("not the first line of a data connection")),
    };
    // The listener may hold an early connection up to `TICKET_GRACE` for its ticket.
    let wait = PEER_CONNECT_TIMEOUT + TICKET_GRACE;
    let (secured, deadline) = secure_route(route, ticket, expected_key, peer, security, wait)?;
    secured.sock.set_nodelay(true)?;
    let Secured {
        sock,
        reader,
        mut writer,
        remote_key,
    } = secured;
    write_lines(&mut writer, &first.to_wire())?;
    let mut reader = LineReader::new(reader, MAX_LINE);
    let line = match reader.read_line_by(deadline) {
        Ok(Some(line)) => line,
        Ok(None) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the peer closed the connection",
            ));
        }
        Err(LineError::Io(e)) => return Err(e),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an unreadable answer",
            ));
        }
    };
    if line.starts_with("ERR ") {
        return Wire::with_first_line(sock, reader, writer, line);
    }
    let want = ticket.accept_mac(id, from, peer);
    let proven = match PeerMsg::parse(&line) {
        Ok(PeerMsg::Accept { mac }) => blake3::Hash::from_hex(&mac).ok() == Some(want),
        _ => false,
    };
    if !proven {
        log::warn!("a data connection to {addr} did not prove the ticket for {peer}");
        send_last(
            &mut writer,
            &sock,
            &PeerMsg::Err {
                code: ErrorCode::BadProof,
                message: "no valid proof of the ticket".into(),
            },
        );
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("could not verify that the answer came from {peer} (441 BAD_PROOF)"),
        ));
    }
    // The answer decrypted, so the listener holds the ticket: now its key may be pinned.
    if let Err((code, message)) = security.check_pin(peer, &remote_key) {
        send_last(&mut writer, &sock, &PeerMsg::Err { code, message });
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{peer}'s identity key could not be accepted ({code})"),
        ));
    }
    Wire::new(sock, reader, writer)
}

/// A stream to `peer` by `route`, secured by the Noise handshake as the initiator on
/// each attempt (`ladder::obtain_with`): on the direct rung the first address whose
/// handshake completes wins and the others are dropped. Each attempt's deadline is
/// `wait` from its connection; the winner's is returned, for the first answer.
fn secure_route(
    route: &Route,
    ticket: &Ticket,
    expected_key: Option<[u8; 32]>,
    peer: &str,
    security: &Arc<PeerSecurity>,
    wait: Duration,
) -> io::Result<(Secured, Instant)> {
    let ticket = ticket.clone();
    let peer = peer.to_string();
    let security = Arc::clone(security);
    ladder::obtain_with(route, move |stream, at| {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let deadline = Instant::now() + wait;
        secure_as_requester(&stream, &ticket, expected_key, &peer, &security, deadline)
            .map(|secured| (secured, deadline))
            .map_err(|e| handshake_error(e, at, &peer))
    })
}

/// Says what a failed handshake means: a refusal in clear is kept as it is (the caller
/// reads it with `peer_secure::clear_refusal`); a handshake that broke off means
/// whoever answered does not hold the ticket (not the peer the server named).
fn handshake_error(e: io::Error, addr: SocketAddr, peer: &str) -> io::Error {
    if peer_secure::clear_refusal(&e).is_some() {
        return e;
    }
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            log::warn!("the handshake with {addr} failed for {peer}: {e}");
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the encrypted handshake with {addr} failed: whoever answered there could not prove it is {peer} ({})",
                    ErrorCode::NotNoise
                ),
            )
        }
        _ => e,
    }
}

/// The first line waiting on `stream` and its length with the terminator, without taking
/// it off the socket (`peek`), by `deadline`. A line longer than `MAX_LINE` or not UTF-8
/// is an error.
pub(super) fn peek_line(stream: &TcpStream, deadline: Instant) -> io::Result<(String, usize)> {
    let mut buf = vec![0u8; MAX_LINE + 2];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.peek(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the peer closed the connection",
            ));
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&buf[..end])
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?;
            return Ok((line.trim_end_matches('\r').to_string(), end + 1));
        }
        if n == buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "overlong line"));
        }
        // Part of a line: `peek` returns at once while it waits, so pause between looks.
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the requester needs to ask a peer and check its answer.
pub struct Ask {
    /// Our username.
    pub me: String,
    /// The user we ask, as the server named them.
    pub peer: String,
    /// The server's session id.
    pub session: u64,
    /// Where the server says the peer listens (for messages; `route` says how to dial).
    pub addr: SocketAddr,
    /// The ticket for this session.
    pub ticket: Ticket,
    /// The peer's identity key as the server gave it (`None`: it registered none), for
    /// the link's handshake to check.
    pub peer_key: crate::protocol::identity_key::KeyField,
    /// How long to wait for the answer, from sending `HELLO`, whatever arrives meanwhile.
    pub wait: Duration,
    /// How to reach the peer: its hints, waiting to be dialled back, or the relay.
    pub route: Route,
    /// Our key and the pins, for the handshake.
    pub security: Arc<PeerSecurity>,
}

/// Connects to `addr`: straight, or through the relay at `relay` with its token
/// (`RELAY <token>`, then `OK RELAYED` once the other end is there; protocol.md §13).
/// The peer protocol then runs over the stream unchanged, end to end.
pub fn dial(addr: SocketAddr, relay: Option<&(SocketAddr, String)>) -> io::Result<TcpStream> {
    match relay {
        None => TcpStream::connect_timeout(&addr, PEER_CONNECT_TIMEOUT),
        Some((relay, token)) => {
            let stream = TcpStream::connect_timeout(relay, PEER_CONNECT_TIMEOUT)?;
            stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
            let mut out = &stream;
            write_lines(&mut out, &format!("RELAY {token}\n"))?;
            // The other end is told by the server and dials out: give it the token's life.
            let (line, taken) = peek_line(&stream, Instant::now() + RELAY_WAIT)?;
            let mut used = vec![0u8; taken];
            io::Read::read_exact(&mut &stream, &mut used)?;
            if line != "OK RELAYED" {
                let shown: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("the relay refused: {shown}"),
                ));
            }
            stream.set_read_timeout(None)?;
            Ok(stream)
        }
    }
}

/// Connects to the peer of `ask`, presents the ticket and waits for the answer on a
/// thread of its own; the outcome arrives as [`PeerEvent::Answered`].
pub fn request(ask: Ask, events: PeerEvents) -> io::Result<()> {
    let session = ask.session;
    let peer = ask.peer.clone();
    thread::Builder::new()
        .name("peer-connect".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let result = ask_peer(&ask, &events);
            let _ = events.send(PeerEvent::Answered {
                session,
                peer,
                result,
            });
        })?;
    Ok(())
}

fn ask_peer(ask: &Ask, events: &PeerEvents) -> Result<PeerLink, (EndReason, String)> {
    let addr = ask.addr;
    let peer = &ask.peer;
    let unreachable = |e: io::Error| (EndReason::Unreachable, format!("cannot reach {addr}: {e}"));
    // One deadline for the whole answer (from the connection): PINGs or a line dripped
    // byte by byte from a hostile peer must not keep us waiting past it.
    let (secured, deadline) = secure_route(
        &ask.route,
        &ask.ticket,
        ask.peer_key,
        peer,
        &ask.security,
        ask.wait,
    )
    .map_err(|e| {
        if ladder::is_unreached(&e) {
            // Nothing answered by this route: the ladder's next rung may reach the peer.
            return unreachable(e);
        }
        if let Some((code, message)) = peer_secure::clear_refusal(&e) {
            return match code {
                Some(code) => (EndReason::Refused, answer_error(peer, code, message)),
                None => (EndReason::Refused, message),
            };
        }
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                (EndReason::Timeout, "no answer".into())
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData => {
                (EndReason::Refused, format!("{e} (not opened)"))
            }
            _ => (EndReason::Refused, format!("the connection broke: {e}")),
        }
    })?;
    let Secured {
        sock: stream,
        reader,
        mut writer,
        remote_key,
    } = secured;
    let hello = PeerMsg::Hello {
        version: PEER_VERSION,
        from: ask.me.clone(),
        session: ask.session,
        ticket: ask.ticket.clone(),
    };
    write_lines(&mut writer, &hello.to_wire()).map_err(unreachable)?;
    let mut reader = LineReader::new(reader, MAX_LINE);
    loop {
        let line = match reader.read_line_by(deadline) {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err((
                    EndReason::Refused,
                    format!(
                        "the peer closed the connection without answering (whoever is at {addr} may not hold the ticket for {peer}; not opened)"
                    ),
                ));
            }
            Err(LineError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err((
                    EndReason::Refused,
                    format!(
                        "the peer cut the connection without answering (whoever is at {addr} may not hold the ticket for {peer}; not opened)"
                    ),
                ));
            }
            Err(e) if e.is_timeout() => return Err((EndReason::Timeout, "no answer".into())),
            Err(LineError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                log::warn!("the answer from {addr} failed decryption for {peer}");
                return Err((
                    EndReason::Refused,
                    format!(
                        "could not verify that the answer came from {peer}: it failed the encryption check (whoever is at {addr} does not hold the ticket; not opened)"
                    ),
                ));
            }
            Err(_) => {
                return Err((
                    EndReason::Refused,
                    "the peer sent something unreadable".into(),
                ));
            }
        };
        let parsed = PeerMsg::parse(&line);
        let mut unverified = || {
            // Whoever answered does not hold the ticket: not the peer the server named.
            send_last(
                &mut writer,
                &stream,
                &PeerMsg::Err {
                    code: ErrorCode::BadProof,
                    message: "ACCEPT without a valid proof of the ticket".into(),
                },
            );
            log::warn!("an ACCEPT from {addr} did not prove the ticket for {peer}");
            Err((
                EndReason::Refused,
                format!("could not verify that the answer came from {peer} (not opened)"),
            ))
        };
        match parsed {
            Ok(PeerMsg::Accept { mac }) => {
                let want = ask.ticket.accept_mac(ask.session, &ask.me, peer);
                // `blake3::Hash` compares in constant time.
                if blake3::Hash::from_hex(&mac).ok() != Some(want) {
                    return unverified();
                }
                // The answer decrypted: the target holds the ticket; pin or check its key.
                if let Err((code, message)) = ask.security.check_pin(peer, &remote_key) {
                    send_last(&mut writer, &stream, &PeerMsg::Err { code, message });
                    return Err((
                        EndReason::Refused,
                        format!("{peer}'s identity key could not be accepted ({code}; not opened)"),
                    ));
                }
                return PeerLink::start(stream, reader, writer, events.clone())
                    .map_err(|e| (EndReason::PeerLost, format!("cannot start the link: {e}")));
            }
            Err(_) if line.split(' ').next() == Some("ACCEPT") => return unverified(),
            Ok(PeerMsg::Decline { reason }) => {
                let why = EndReason::from_word(reason.split(' ').next().unwrap_or(""))
                    .filter(|r| *r == EndReason::Timeout)
                    .unwrap_or(EndReason::Declined);
                return Err((why, reason));
            }
            Ok(PeerMsg::Err { code, message }) => {
                return Err((EndReason::Refused, answer_error(peer, code, message)));
            }
            Ok(PeerMsg::Ping) | Ok(PeerMsg::Pong) => {}
            Ok(_) | Err(_) => {
                return Err((EndReason::Refused, "the peer broke the protocol".into()));
            }
        }
    }
}

/// What to tell the person when the peer answered our `HELLO` with an `ERR`.
fn answer_error(peer: &str, code: ErrorCode, message: String) -> String {
    match code {
        ErrorCode::AlreadyAsked => {
            format!("{peer} already has a chat request from you waiting for an answer ({code})")
        }
        ErrorCode::PeerBusy => {
            format!("{peer} has too many connections at once; try again later ({code})")
        }
        ErrorCode::TooManySessions => {
            format!("{peer} cannot take another session now ({code})")
        }
        _ => message,
    }
}
