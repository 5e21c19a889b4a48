//! One client connection from accept to close: read a line, parse it, dispatch it, reply.
//!
//! Owns the reading half of a connection (plaintext out of its TLS link), the login
//! deadline and idle timeout, and the
//! order of a connection's life (greeting, login, commands, leaving). It must not write
//! to the socket directly (replies go through the `Outbox`) nor lock the registry itself
//! (it calls the registry's methods).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use crate::crypto::tls::TlsReader;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use super::commands::{self, Flow};
use super::login;
use super::outbox::Outbox;
use super::registry::ConnId;
use crate::protocol::ParseError;
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::MAX_LINE;
use crate::protocol::line::{LineError, LineReader};
use crate::protocol::server_msg::{Command, ServerMsg, SharedFile, VERSION};
use crate::sanitize::Untrusted;

/// How long a closing connection keeps reading (and discarding) what the client still
/// sends, so that our last line reaches it before the socket closes.
const LINGER: Duration = Duration::from_secs(2);

/// Why a connection ends.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client asked to leave and got `OK BYE`.
    Quit,
    /// The server sent a closing `ERR` (timeout, block, framing error).
    Refused,
    /// The socket closed or failed.
    Gone,
}

/// The reading side of one connection and the state its loops share.
pub struct Conn {
    /// Bounded line reader over the TLS link (which reads the socket the writer shares:
    /// one descriptor per client, `tls::server_shared`).
    reader: LineReader<TlsReader>,
    /// Where replies go.
    pub outbox: Outbox,
    /// The client's address as the server sees it.
    pub peer: SocketAddr,
    /// This connection's id in the registry.
    pub id: ConnId,
    /// Login must be finished by then; `None` once logged in.
    deadline: Option<Instant>,
    /// How long a logged-in client may stay silent.
    idle_timeout: Duration,
}

impl Conn {
    /// Queues a reply for the client, waiting while it has too much unread: this
    /// connection's lines are read no faster than the client reads the answers.
    pub fn send(&self, msg: ServerMsg) {
        self.outbox.reply(&msg);
    }

    /// Queues an `ERR`.
    pub fn send_err(&self, code: ErrorCode, message: impl Into<String>) {
        self.send(ServerMsg::err(code, message));
    }

    /// Queues a closing `ERR` and returns the matching [`End`].
    pub fn refuse(&self, code: ErrorCode, message: impl Into<String>) -> End {
        self.send_err(code, message);
        End::Refused
    }

    /// Marks login finished: from now on only the idle timeout applies.
    pub fn logged_in(&mut self) {
        self.deadline = None;
    }

    /// The next line. `Ok(None)` means a line was rejected with an `ERR` already sent
    /// (not UTF-8) and the caller should ask again; `Err` means the connection ends.
    pub fn next_line(&mut self) -> Result<Option<String>, End> {
        // A whole line must arrive by the deadline: the login's, or the idle timeout from
        // now. Dripping one byte at a time does not stretch it.
        let deadline = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.idle_timeout);
        if deadline <= Instant::now() {
            return Err(self.refuse(ErrorCode::Timeout, "login not finished in time"));
        }
        match self.reader.read_line_by(deadline) {
            Ok(Some(line)) => Ok(Some(line)),
            Ok(None) => Err(End::Gone),
            Err(LineError::BadUtf8) => {
                self.send_err(ErrorCode::BadEncoding, "the line is not valid UTF-8");
                Ok(None)
            }
            Err(LineError::TooLong) => Err(self.refuse(
                ErrorCode::LineTooLong,
                format!("a line may hold at most {MAX_LINE} bytes"),
            )),
            Err(e) if e.is_timeout() => Err(match self.deadline {
                Some(_) => self.refuse(ErrorCode::Timeout, "login not finished in time"),
                None => self.refuse(
                    ErrorCode::Timeout,
                    format!("no line for {} s", self.idle_timeout.as_secs()),
                ),
            }),
            Err(LineError::Io(e)) => {
                log::debug!("{}: read failed: {e}", self.peer);
                Err(End::Gone)
            }
        }
    }

    /// After a closing reply: stop writing once the queue drains, and read what the
    /// client still sends for a moment so that closing does not reset the connection
    /// (a reset can destroy our last line before the client reads it).
    fn linger(self) {
        self.outbox.close();
        let mut stream: &TcpStream = self.reader.get_ref().socket();
        let until = Instant::now() + LINGER;
        let mut sink = [0u8; 8192];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Serves one accepted connection until it ends, then takes its user offline.
pub fn serve(stream: TlsReader, peer: SocketAddr, id: ConnId, outbox: Outbox, shared: Arc<Shared>) {
    let config = &shared.config;
    let mut conn = Conn {
        reader: LineReader::new(stream, MAX_LINE),
        outbox,
        peer,
        id,
        deadline: Some(Instant::now() + config.login_timeout()),
        idle_timeout: config.idle_timeout(),
    };
    conn.send(ServerMsg::Hello { version: VERSION });
    let end = match login::run(&mut conn, &shared) {
        Ok(me) => command_loop(&mut conn, &me, &shared),
        Err(end) => end,
    };
    let claimed = shared.registry.claimed_by(id);
    // The others learn it from the next presence announcement (`server::presence`).
    if let Some(name) = shared.registry.remove_connection(id) {
        log::info!("{peer} {name}: offline ({end:?})");
        shared.files.remove(&name.to_ascii_lowercase());
        commands::close_abandoned_sessions(&shared, &name);
    }
    // In a cluster, the login's key goes now rather than when it expires.
    if let (Some(cluster), Some(key)) = (&shared.cluster, claimed) {
        cluster.release(&key, id);
    }
    match end {
        End::Gone => conn.outbox.kill(),
        End::Quit | End::Refused => conn.linger(),
    }
    log::debug!("{peer}: connection closed");
}

/// Most characters of a command the log shows; longer ones are cut, with their size.
const LOGGED_COMMAND: usize = 200;

/// `command` as the log shows it: at most [`LOGGED_COMMAND`] characters.
fn for_log(command: String) -> String {
    match command.char_indices().nth(LOGGED_COMMAND) {
        Some((cut, _)) => format!("{}... ({} bytes)", &command[..cut], command.len()),
        None => command,
    }
}

/// Reads the `count` lines after `SHARE`. A bad line is answered after the body is
/// read, so the stream stays in step; a framing error ends the connection as usual.
fn read_share_body(
    conn: &mut Conn,
    count: usize,
) -> Result<Result<Vec<SharedFile>, ParseError>, End> {
    let mut files = Vec::with_capacity(count.min(1024));
    let mut first_error = None;
    for _ in 0..count {
        match conn.next_line()? {
            Some(line) => match SharedFile::parse(&line) {
                Ok(file) => files.push(file),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            },
            None => {
                first_error.get_or_insert(ParseError::bad("a SHARE line is not UTF-8"));
            }
        }
    }
    Ok(match first_error {
        Some(e) => Err(e),
        None => Ok(files),
    })
}

fn command_loop(conn: &mut Conn, me: &login::LoggedIn, shared: &Shared) -> End {
    loop {
        let Some(line) = (match conn.next_line() {
            Ok(line) => line,
            Err(end) => return end,
        }) else {
            continue;
        };
        match Command::parse(&line) {
            Ok(None) => {}
            Ok(Some(Command::Share { count })) => {
                log::info!("{} {}: SHARE {count}", conn.peer, me.name);
                let files = match read_share_body(conn, count) {
                    Ok(files) => files,
                    Err(end) => return end,
                };
                conn.send(commands::share(shared, me, conn.peer.ip(), files));
            }
            Ok(Some(command)) => {
                // Arguments are the client's text: cleaned, so a CR cannot forge a line,
                // and cut short, so a client's 4 KB lines cannot make the log grow by 4 KB
                // each (a pipelined SEARCH flood wrote its whole needle per line).
                let shown = for_log(command.to_string());
                // Heartbeats arrive every few seconds from every client: an operator's
                // terminal at info level shows what users do, not that they are alive.
                if matches!(command, Command::Ping) {
                    log::debug!("{} {}: {}", conn.peer, me.name, Untrusted(&shown));
                } else {
                    log::info!("{} {}: {}", conn.peer, me.name, Untrusted(&shown));
                }
                let (reply, flow) = commands::dispatch(&command, me, shared);
                conn.send(reply);
                if flow == Flow::Close {
                    return End::Quit;
                }
            }
            Err(e) if Command::refusal_closes(&line) => {
                // A refused SHARE count: the lines after it cannot be told from commands,
                // so they are not read at all (protocol.md §4b).
                log::info!(
                    "{} {}: SHARE refused ({}); closing",
                    conn.peer,
                    me.name,
                    e.code
                );
                return conn.refuse(e.code, e.message);
            }
            Err(e) => {
                log::info!("{} {}: rejected ({})", conn.peer, me.name, e.code);
                conn.send_err(e.code, e.message);
            }
        }
    }
}
