//! Direct connections between peers: the listener, the handshake, and one reader and
//! one writer thread per established link.
//!
//! Owns incoming peer sockets and every established link. Incoming connections take a
//! handshake slot (capped per source address and in all, `peer_limits`), must send a
//! `HELLO` within the handshake timeout and are handed to the UI loop as [`Incoming`]
//! for the ticket check, still holding their slot; every refusal is counted for the
//! person's summary. Established links answer `PING`, send keep-alives, enforce the
//! flood limit and report every other message as a [`PeerEvent`]; what they send goes
//! through `peer_out` (written at once by the sender when the link is idle, else by
//! the writer thread). Outgoing connections are `peer_dial`'s. It must not decide who may connect (that is `sessions`) nor print.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::ladder::Reversals;
use super::peer_limits::{FloodLimit, Refusals, Slot, Slots};
use super::peer_out::{self, PeerOut, Refused};
use super::peer_secure::{self, PeerSecurity, Secured};
use super::transfer::Wire;
use crate::crypto::noise::{NoiseReader, NoiseWriter};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{HANDSHAKE_TIMEOUT, MAX_LINE, PEER_IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::protocol::line::{LineError, LineReader, ReadTimeout, write_lines};
use crate::protocol::peer_msg::{PEER_VERSION, PeerMsg};
use crate::protocol::server_msg::EndReason;
use crate::protocol::ticket::Ticket;
use crate::sanitize::Untrusted;

/// Identifies one established link inside this client.
pub type LinkId = u64;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// Small stacks: these threads only move lines.
const THREAD_STACK: usize = 128 * 1024;

/// What the peer threads report to the UI loop.
pub enum PeerEvent {
    /// Someone connected and said `HELLO`; the ticket is not checked yet.
    Incoming(Box<Incoming>),
    /// Our request to `peer` for `session` was answered (or failed).
    Answered {
        /// The server's session id.
        session: u64,
        /// The user we asked.
        peer: String,
        /// The open link, or why there is none.
        result: Result<PeerLink, (EndReason, String)>,
    },
    /// A message on an established link (never `PING` or `PONG`).
    Msg { link: LinkId, msg: PeerMsg },
    /// An established link ended; nothing more comes from it.
    Closed { link: LinkId, why: String },
}

/// What an incoming `HELLO` claims.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The user the connecting side says it is.
    pub from: String,
    /// The session or transfer id it says it comes for.
    pub session: u64,
    /// The ticket it presents.
    pub ticket: Ticket,
    /// What the connection is for.
    pub purpose: Purpose,
}

/// What an incoming connection is for, from its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// `HELLO`: a chat session.
    Chat,
    /// `PUSH`: the bytes of offer `offer`, accepted over the chat link.
    Push { offer: u64 },
    /// `FETCH`: a file of our shared folder.
    Fetch { name: String },
}

/// An incoming connection that has said `HELLO` and waits to be accepted or refused.
pub struct Incoming {
    /// The claim to check.
    pub hello: Hello,
    /// The connecting address, for logs.
    pub remote: SocketAddr,
    /// The raw socket (peeks, timeouts, shutdown); lines go through Noise.
    stream: TcpStream,
    reader: LineReader<NoiseReader>,
    writer: NoiseWriter,
    /// The requester's identity key, proven in the handshake (and checked already
    /// against the server's word and the pins).
    pub remote_key: [u8; 32],
    /// The handshake slot, held until the ticket is checked (`release_slot`).
    slot: Option<Slot>,
    /// Arrived through the relay (`EVENT RELAY`), not on our listener.
    pub relayed: bool,
    /// How it reached us: `direct` (our listener), `reverse` (we dialled the requester
    /// back, `EVENT DIAL`) or `relay`.
    pub path: &'static str,
    /// The requester's identity key as the server gave it with the ticket, set once the
    /// ticket checked out (`None` before, or when it registered none).
    pub peer_key: crate::protocol::identity_key::KeyField,
    /// Where a refusal is counted.
    refusals: Refusals,
}

impl Incoming {
    /// Gives the handshake slot back: the ticket checked out, so this connection no
    /// longer counts against its address's handshake cap.
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    /// The connecting address.
    pub fn ip(&self) -> std::net::IpAddr {
        self.remote.ip()
    }

    /// True if the connecting side has closed the connection (a requester that gave up
    /// or died), checked without blocking and without taking anything off the socket.
    pub fn peer_gone(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let gone = match self.stream.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        gone || self.stream.set_nonblocking(false).is_err()
    }

    /// Refuses with an `ERR` line and closes; counted for the person's summary.
    pub fn refuse(mut self, code: ErrorCode, message: &str) {
        self.refusals.add(self.remote.ip(), code);
        log::info!(
            "refused a peer connection from {}: {}",
            self.remote,
            Untrusted(message)
        );
        let line = PeerMsg::Err {
            code,
            message: message.to_string(),
        };
        send_last(&mut self.writer, &self.stream, &line);
    }

    /// Declines (the person said no, or did not answer) and closes.
    pub fn decline(mut self, reason: EndReason) {
        send_last(
            &mut self.writer,
            &self.stream,
            &PeerMsg::Decline {
                reason: reason.word().to_string(),
            },
        );
    }

    /// Proves to the connecting side of a data connection (its ticket checked) that we
    /// hold the ticket: `ACCEPT <mac>` as `me`, before any file line (protocol.md §11).
    pub fn prove(&mut self, me: &str) -> io::Result<()> {
        let hello = &self.hello;
        let mac = hello.ticket.accept_mac(hello.session, &hello.from, me);
        let accept = PeerMsg::Accept {
            mac: mac.to_hex().to_string(),
        };
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        write_lines(&mut self.writer, &accept.to_wire())
    }

    /// Hands a transfer connection (its ticket checked) to the transfer code.
    pub fn into_wire(self) -> io::Result<Wire> {
        Wire::new(self.stream, self.reader, self.writer)
    }

    /// Accepts as `me`: sends `ACCEPT <mac>` (the proof that we hold the ticket) and
    /// starts the link's threads.
    pub fn accept(mut self, me: &str, events: &Sender<PeerEvent>) -> io::Result<PeerLink> {
        let hello = &self.hello;
        let mac = hello.ticket.accept_mac(hello.session, &hello.from, me);
        let accept = PeerMsg::Accept {
            mac: mac.to_hex().to_string(),
        };
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        write_lines(&mut self.writer, &accept.to_wire())?;
        PeerLink::start(self.stream, self.reader, self.writer, events.clone())
    }
}

/// One line (inside Noise) and a FIN on a connection we are giving up on; never blocks
/// for long.
pub(super) fn send_last(out: &mut NoiseWriter, stream: &TcpStream, msg: &PeerMsg) {
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = write_lines(out, &msg.to_wire());
    let _ = stream.shutdown(Shutdown::Write);
}

/// An established link: queue lines to the peer; the reader reports what comes back.
pub struct PeerLink {
    /// This link's id in `PeerEvent`s.
    pub id: LinkId,
    /// The sending side (shared with the link's reader and writer threads).
    out: Arc<PeerOut>,
}

impl PeerLink {
    /// Starts the reader and writer threads of a link whose handshake is done.
    pub(super) fn start(
        stream: TcpStream,
        reader: LineReader<NoiseReader>,
        writer: NoiseWriter,
        events: Sender<PeerEvent>,
    ) -> io::Result<PeerLink> {
        let id = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        reader.get_ref().set_read_timeout(Some(PEER_IDLE_TIMEOUT))?;
        let stream = Arc::new(stream);
        let (out, woken) = PeerOut::new(writer, Arc::clone(&stream));
        let writer_out = Arc::clone(&out);
        thread::Builder::new()
            .name(format!("peer-write-{id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || peer_out::write_loop(&writer_out, &woken))?;
        let reader_out = Arc::clone(&out);
        thread::Builder::new()
            .name(format!("peer-read-{id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || read_loop(reader, id, &reader_out, &events, &stream))?;
        Ok(PeerLink { id, out })
    }

    /// Sends a message (at once when the socket takes it). False if the link is gone,
    /// or if the peer stopped reading and too much waits for it (the link is then cut).
    pub fn send(&self, msg: &PeerMsg) -> bool {
        match self.out.send(msg) {
            Ok(()) => true,
            Err(Refused::Full) => {
                log::warn!("peer link {} is not reading; cutting it", self.id);
                self.kill();
                false
            }
            Err(Refused::Gone) => false,
        }
    }

    /// Sends `CLOSE <reason>` after what is queued, then a FIN.
    pub fn close(&self, reason: &str) {
        self.out.close_with(&PeerMsg::Close {
            reason: reason.to_string(),
        });
    }

    /// Cuts the connection now.
    pub fn kill(&self) {
        self.out.kill();
    }
}

impl Drop for PeerLink {
    /// A link nobody holds any more: what was sent still goes out, then a FIN (the
    /// writer thread ends; the reader ends when the peer closes).
    fn drop(&mut self) {
        self.out.close();
    }
}

fn read_loop(
    mut reader: LineReader<NoiseReader>,
    id: LinkId,
    out: &PeerOut,
    events: &Sender<PeerEvent>,
    stream: &TcpStream,
) {
    let mut flood = FloodLimit::new();
    let reply = |msg: PeerMsg| {
        let _ = out.send(&msg);
    };
    let err = |code: ErrorCode, message: String| PeerMsg::Err { code, message };
    let why = loop {
        match reader.read_line() {
            Ok(None) => break "the connection closed".to_string(),
            Ok(Some(line)) => {
                if !flood.allow() {
                    reply(err(ErrorCode::Flood, "too many lines; closing".into()));
                    out.close();
                    break "it sent too many lines (flood limit)".to_string();
                }
                match PeerMsg::parse(&line) {
                    Ok(PeerMsg::Ping) => reply(PeerMsg::Pong),
                    Ok(PeerMsg::Pong) => {}
                    Ok(msg) => {
                        let last = matches!(msg, PeerMsg::Close { .. } | PeerMsg::Err { .. });
                        let handed = Instant::now();
                        if events.send(PeerEvent::Msg { link: id, msg }).is_err() {
                            return;
                        }
                        // A full queue (our core is slow) stopped our reading, not the peer.
                        flood.stalled(handed.elapsed());
                        if last {
                            break "the peer closed the session".to_string();
                        }
                    }
                    Err(e) => reply(err(e.code, e.message)),
                }
            }
            Err(LineError::BadUtf8) => reply(err(
                ErrorCode::BadEncoding,
                "the line is not valid UTF-8".into(),
            )),
            Err(LineError::TooLong) => {
                reply(err(
                    ErrorCode::LineTooLong,
                    format!("a line may hold at most {MAX_LINE} bytes"),
                ));
                out.close();
                break "it sent an overlong line".to_string();
            }
            Err(e) if e.is_timeout() => {
                break format!("no sign of life for {} s", PEER_IDLE_TIMEOUT.as_secs());
            }
            Err(LineError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                break "what arrived failed the encryption check (changed on the way?)".to_string();
            }
            Err(LineError::Io(e)) => break format!("connection error: {e}"),
        }
    };
    log::debug!("peer link {id} ended: {why}");
    let _ = stream.shutdown(Shutdown::Read);
    // Nothing more comes in: what we sent goes out, then a FIN, and the writer ends.
    out.close();
    let _ = events.send(PeerEvent::Closed { link: id, why });
}

/// Accepts peer connections on `listener` until the process ends, running each one's
/// Noise handshake and reading its `HELLO` on a short-lived thread. A connection gets a
/// handshake slot or is closed at once with `ERR 442 PEER_BUSY` (in clear: nothing is
/// encrypted yet); refusals are counted in `refusals`.
pub fn spawn_listener(
    listener: TcpListener,
    events: Sender<PeerEvent>,
    refusals: Refusals,
    reversals: Reversals,
    security: Arc<PeerSecurity>,
) -> io::Result<()> {
    let slots = Slots::new();
    thread::Builder::new()
        .name("peer-listen".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of descriptors, say: wait instead of spinning.
                        log::warn!("accepting a peer failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let Ok(remote) = stream.peer_addr() else {
                    continue;
                };
                let Some(slot) = slots.try_take(remote.ip()) else {
                    refusals.add(remote.ip(), ErrorCode::PeerBusy);
                    log::debug!("too many peer handshakes; refused {remote}");
                    refuse_now(&stream);
                    continue;
                };
                let events = events.clone();
                let refusals = refusals.clone();
                let reversals = reversals.clone();
                let security = Arc::clone(&security);
                // A failed spawn drops the closure: the stream closes, the slot returns.
                let _ = thread::Builder::new()
                    .name("peer-hello".into())
                    .stack_size(THREAD_STACK)
                    .spawn(move || {
                        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
                        // A peer dialling us back for a request of ours sends its clear
                        // `REVERSE` line before any Noise: it is not a new handshake.
                        if let Some(stream) = reversals.claim(stream, remote, deadline, &refusals) {
                            let first = First::new(&security, "direct");
                            handshake(stream, remote, Some(slot), refusals, &events, first);
                        }
                    });
            }
        })?;
    Ok(())
}

/// `ERR 442 PEER_BUSY` without waiting: a fresh socket's send buffer takes one line, and
/// if it does not, the connection is closed anyway.
fn refuse_now(stream: &TcpStream) {
    let line = PeerMsg::Err {
        code: ErrorCode::PeerBusy,
        message: "too many connections at once; try again later".into(),
    };
    if stream.set_nonblocking(true).is_ok() {
        let mut out = stream;
        let _ = write_lines(&mut out, &line.to_wire());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// The target's side of a relayed connection (`EVENT RELAY`, protocol.md §13): dials
/// the relay with `token` on a thread of its own and, once paired, reads the peer's
/// first line as if the connection had arrived on our listener (same checks, same
/// ticket). Relayed connections are bounded by the relay's per-user limit, so they take
/// no listener slot.
pub fn answer_relayed(
    relay: SocketAddr,
    token: String,
    events: Sender<PeerEvent>,
    refusals: Refusals,
    security: Arc<PeerSecurity>,
) {
    let _ = thread::Builder::new()
        .name("peer-relayed".into())
        .stack_size(THREAD_STACK)
        .spawn(
            move || match super::peer_dial::dial(relay, Some(&(relay, token))) {
                Ok(stream) => {
                    let first = First::new(&security, "relay");
                    handshake(stream, relay, None, refusals, &events, first);
                }
                Err(e) => log::info!("meeting a peer at the relay {relay} failed: {e}"),
            },
        );
}

/// The target's side of a reverse connection (`EVENT DIAL`, protocol.md §13): dials the
/// requester back (`ladder::dial_back`, which sends the clear `REVERSE` line) and then
/// answers as if the connection had arrived on our listener: the Noise handshake as the
/// responder (the requester is the initiator whoever dialled), then its first line (same
/// checks, same ticket). Reverse dials are bounded by `MAX_REVERSE_DIALS`, so they take
/// no listener slot. `failed` runs when no connection to the requester could be made.
pub fn answer_reverse(
    hints: Vec<SocketAddr>,
    (transfer, id): (bool, u64),
    events: Sender<PeerEvent>,
    refusals: Refusals,
    security: Arc<PeerSecurity>,
    failed: impl FnOnce() + Send + 'static,
) {
    let answer = move |stream, remote| {
        let first = First::new(&security, "reverse");
        handshake(stream, remote, None, refusals, &events, first);
    };
    super::ladder::dial_back(hints, transfer, id, answer, failed);
}

/// What the target's side of a new connection needs besides the stream: our keys and
/// pins for the Noise handshake, and how the connection came.
struct First<'a> {
    security: &'a PeerSecurity,
    path: &'static str,
}

impl<'a> First<'a> {
    fn new(security: &'a PeerSecurity, path: &'static str) -> First<'a> {
        First { security, path }
    }
}

/// The target's side of a new connection (accepted, dialled back or relayed): the Noise
/// handshake as the responder (`peer_secure`), then the first line inside it, which
/// must name the handshake's ticket.
fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Option<Slot>,
    refusals: Refusals,
    events: &Sender<PeerEvent>,
    first: First<'_>,
) {
    let (secured, awaited) = match peer_secure::secure_as_target(&stream, first.security) {
        Ok(done) => done,
        Err(refusal) => {
            // The losers of a requester's race over address hints are not news.
            if !peer_secure::is_race_loser(&refusal) {
                refusals.add(remote.ip(), refusal.0);
            }
            log::info!(
                "peer connection from {remote} refused: {}",
                Untrusted(&refusal.1)
            );
            return;
        }
    };
    let Secured {
        reader: read_half,
        mut writer,
        remote_key,
        ..
    } = secured;
    if stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).is_err() {
        return;
    }
    let mut reader = LineReader::new(read_half, MAX_LINE);
    let mut refuse = |code: ErrorCode, message: &str| {
        refusals.add(remote.ip(), code);
        log::info!(
            "peer connection from {remote} refused: {}",
            Untrusted(message)
        );
        send_last(
            &mut writer,
            &stream,
            &PeerMsg::Err {
                code,
                message: message.to_string(),
            },
        );
    };
    let line = match reader.read_line_by(Instant::now() + HANDSHAKE_TIMEOUT) {
        Ok(Some(line)) => line,
        Ok(None) => return,
        Err(LineError::BadUtf8) => {
            return refuse(ErrorCode::BadEncoding, "the line is not valid UTF-8");
        }
        Err(LineError::TooLong) => return refuse(ErrorCode::LineTooLong, "overlong line"),
        Err(e) if e.is_timeout() => return refuse(ErrorCode::Timeout, "no HELLO in time"),
        Err(LineError::Io(_)) => return,
    };
    let (version, from, session, ticket, purpose) = match PeerMsg::parse_first(&line) {
        Ok(PeerMsg::Hello {
            version,
            from,
            session,
            ticket,
        }) => (version, from, session, ticket, Purpose::Chat),
        Ok(PeerMsg::Push {
            version,
            from,
            transfer,
            ticket,
            offer,
        }) => (version, from, transfer, ticket, Purpose::Push { offer }),
        Ok(PeerMsg::Fetch {
            version,
            from,
            transfer,
            ticket,
            name,
        }) => (version, from, transfer, ticket, Purpose::Fetch { name }),
        Err(e) if matches!(line.split(' ').next(), Some("HELLO" | "PUSH" | "FETCH")) => {
            return refuse(e.code, &e.message);
        }
        Ok(_) | Err(_) => {
            return refuse(
                ErrorCode::OutOfOrder,
                "the first line must be HELLO, PUSH or FETCH",
            );
        }
    };
    if version != PEER_VERSION {
        return refuse(ErrorCode::BadRequest, "unsupported peer protocol version");
    }
    if ticket != awaited.ticket {
        return refuse(
            ErrorCode::BadTicket,
            "the ticket is not the one of the handshake",
        );
    }
    let incoming = Incoming {
        hello: Hello {
            from,
            session,
            ticket,
            purpose,
        },
        remote,
        stream,
        reader,
        writer,
        remote_key,
        relayed: first.path == "relay",
        path: first.path,
        slot,
        refusals,
        peer_key: None,
    };
    // Blocks while the UI loop is behind; the slot bounds how many wait here.
    let _ = events.send(PeerEvent::Incoming(Box::new(incoming)));
}
