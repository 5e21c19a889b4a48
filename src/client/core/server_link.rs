//! The client's connection to the server: a reader thread and a writer thread.
//!
//! Owns the socket to the server. The reader turns lines into `ServerMsg`s (with their
//! list bodies, exactly as many lines as `ServerMsg::body_len` says, each a body line)
//! and sends them to whoever listens; the writer sends queued lines. It
//! must not print or decide what a message means.
//!
//! The link is TLS 1.3 (`crypto::trust` decides about the certificate): the reader
//! thread reads its own socket clone through the shared rustls state, and only the
//! writer thread takes records out of it, so records leave in order.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};

use crate::crypto::tls::{TlsReader, TlsWriter};
use crate::crypto::trust::{AskTrust, ServerTrust, TrustError};
use crate::protocol::limits::MAX_LINE;
use crate::protocol::line::{LineError, LineReader, write_lines};
use crate::protocol::server_msg::ServerMsg;
use crate::sanitize::Untrusted;

/// Lines that may wait to be written; the UI never blocks on a stuck server.
const SEND_QUEUE: usize = 256;

/// What the reader thread reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A complete message from the server.
    Msg(ServerMsg),
    /// The connection ended; the text says how. Nothing follows.
    Closed(String),
}

/// A live connection to the server.
pub struct ServerLink {
    /// Lines for the writer thread, without their `\n`.
    outgoing: Sender<String>,
    /// Messages and the final close from the reader thread.
    pub events: Receiver<LinkEvent>,
    /// The socket, to shut it down from the UI side.
    stream: TcpStream,
}

impl ServerLink {
    /// Connects over TLS (the certificate decided as `trust` says, asking through
    /// `ask` on first contact) and starts both threads.
    pub fn connect(
        addr: SocketAddr,
        trust: &ServerTrust,
        ask: Option<AskTrust<'_>>,
    ) -> Result<ServerLink, TrustError> {
        let tls = trust.connect(addr, ask)?;
        let stream = tls.stream;
        let (events_tx, events) = unbounded();
        let (outgoing, outgoing_rx) = bounded(SEND_QUEUE);
        let reader = tls.reader;
        thread::Builder::new()
            .name("server-read".into())
            .spawn(move || read_loop(reader, &events_tx))?;
        let writer = tls.writer;
        let write_half = stream.try_clone()?;
        thread::Builder::new()
            .name("server-write".into())
            .spawn(move || write_loop(writer, write_half, &outgoing_rx))?;
        Ok(ServerLink {
            outgoing,
            events,
            stream,
        })
    }

    /// A handle that queues lines from another thread (never blocking: a full queue
    /// drops the line), for the reverse dialler's `DIAL_FAILED`.
    pub fn line_sender(&self) -> impl Fn(&str) + Send + 'static {
        let outgoing = self.outgoing.clone();
        move |line: &str| {
            let _ = outgoing.try_send(line.replace(['\r', '\n'], " "));
        }
    }

    /// Queues one line (without `\n`). False if the link is gone or hopelessly behind.
    pub fn send_line(&self, line: &str) -> bool {
        match self.outgoing.try_send(line.replace(['\r', '\n'], " ")) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                log::warn!("the server is not reading; dropping the connection");
                self.close();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues several lines to be written together, so a long `SHARE` body takes one
    /// place in the queue and nothing can land between its lines.
    pub fn send_block(&self, lines: &[String]) -> bool {
        let block: Vec<String> = lines.iter().map(|l| l.replace(['\r', '\n'], " ")).collect();
        match self.outgoing.try_send(block.join("\n")) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.close();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Closes the connection in both directions; the reader reports `Closed`.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn read_loop(stream: TlsReader, events: &Sender<LinkEvent>) {
    let mut reader = LineReader::new(stream, MAX_LINE);
    // A line read as part of a list body that turned out to be a message line.
    let mut pending: Option<String> = None;
    let why = loop {
        let first = match pending.take().map_or_else(|| read_one(&mut reader), Ok) {
            Ok(line) => line,
            Err(why) => break why,
        };
        let body_len = match ServerMsg::body_len(&first) {
            Ok(n) => n,
            Err(e) => {
                log::warn!(
                    "server sent a malformed line: {}",
                    Untrusted(&e.to_string())
                );
                continue;
            }
        };
        let mut body = Vec::with_capacity(body_len.min(1024));
        for _ in 0..body_len {
            match read_one(&mut reader) {
                // Body lines start with their own words (protocol.md §2), so a short
                // list cannot make us swallow the replies after it.
                Ok(line) if is_body_line(&line) => body.push(line),
                Ok(line) => {
                    log::warn!("a list reply ended early: {}", ServerMsg::short(&first));
                    pending = Some(line);
                    break;
                }
                Err(why) => {
                    let _ = events.send(LinkEvent::Closed(why));
                    return;
                }
            }
        }
        match ServerMsg::parse(&first, &body) {
            Ok(msg) => {
                if events.send(LinkEvent::Msg(msg)).is_err() {
                    return;
                }
            }
            Err(e) => log::warn!(
                "server sent a message this client does not understand: {}",
                Untrusted(&e.to_string())
            ),
        }
    };
    let _ = events.send(LinkEvent::Closed(why));
}

/// True if `line` is a list body line (`TEXT`, `USER` or `FILE`), not a message.
fn is_body_line(line: &str) -> bool {
    let word = line.split(' ').next().unwrap_or("");
    crate::protocol::server_msg::BODY_WORDS.contains(&word)
}

fn read_one(reader: &mut LineReader<TlsReader>) -> Result<String, String> {
    loop {
        match reader.read_line() {
            Ok(Some(line)) => return Ok(line),
            Ok(None) => return Err("the server closed the connection".into()),
            Err(LineError::BadUtf8) => log::warn!("server sent a line that is not UTF-8"),
            Err(LineError::TooLong) => return Err("the server sent an overlong line".into()),
            Err(LineError::Io(e)) => return Err(format!("connection error: {e}")),
        }
    }
}

fn write_loop(mut out: TlsWriter, stream: TcpStream, outgoing: &Receiver<String>) {
    for mut line in outgoing.iter() {
        line.push('\n');
        if let Err(e) = write_lines(&mut out, &line) {
            log::debug!("writing to the server failed: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
    // The link is being dropped: a clean TLS end, so the server sees no truncation.
    let _ = out.close();
}
