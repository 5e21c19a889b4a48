//! Established links between peers: one reader and one writer thread per link, and
//! what the peer threads report to the UI loop ([`PeerEvent`]).
//!
//! Owns every established link. Links answer `PING`, send keep-alives, enforce the
//! flood limit and report every other message as a [`PeerEvent`]; what they send goes
//! through `peer_out` (written at once by the sender when the link is idle, else by
//! the writer thread). New connections are `peer_accept`'s (ours as the target) and
//! `peer_dial`'s (ours as the requester). It must not decide who may connect (that is
//! `sessions`) nor print.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use super::peer_limits::FloodLimit;
use super::peer_out::{self, PeerOut, Refused};
use crate::crypto::noise::{NoiseReader, NoiseWriter};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{HANDSHAKE_TIMEOUT, MAX_LINE, PEER_IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::protocol::line::{LineError, LineReader, ReadTimeout, write_lines};
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::EndReason;

/// Where peer threads send what they report: a chat message may be handled on the
/// reader's own thread (`lane`).
pub type PeerEvents = super::lane::Lane<PeerEvent>;

pub use super::peer_accept::{
    Hello, Incoming, Purpose, answer_relayed, answer_reverse, spawn_listener,
};

/// Identifies one established link inside this client.
pub type LinkId = u64;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// Small stacks: these threads only move lines.
pub(super) const THREAD_STACK: usize = 128 * 1024;

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
        events: PeerEvents,
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
    events: &PeerEvents,
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
