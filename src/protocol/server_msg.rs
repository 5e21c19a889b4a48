//! Client↔server messages: every line of protocol.md §2–§5 as a typed value that both
//! parses and formats itself.
//!
//! Owns the text of what the server sends; the commands a client sends are in
//! `protocol::command` and its login answers in `protocol::login_msg` (both re-exported
//! here, so callers name one module). It must not touch sockets (see `line`) or decide
//! what a message does (see `server::commands`).

use std::fmt;
use std::net::SocketAddr;

use super::codes::ErrorCode;
use super::file_name::safe_file_name;
use super::hints::Hints;
use super::identity_key::{KeyField, ShowKey, parse_key_field};
use super::limits::MAX_LIST_LINES;
use super::mail_msg::{parse_sealed, sealed_hex};
use super::session_token::SessionToken;
use super::ticket::Ticket;
use super::{ParseError, parse_err, write_err};

/// Protocol version announced in `HELLO`.
pub const VERSION: u32 = 1;

/// The replies followed by body lines (protocol.md §2, Lists), and no others.
pub const LIST_REPLIES: &[&str] = &["HELP", "LIST", "FILES", "SEARCH"];

/// The first words of body lines: `TEXT` (help), `USER` (list), `FILE` (files, search).
/// No message line starts with one of them, so a reader can tell the two apart.
pub const BODY_WORDS: &[&str] = &["TEXT", "USER", "FILE"];

/// The question an `ASK` line asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskField {
    /// Are you a new client? (Y/N)
    New,
    /// A username, to register or to log in.
    Username,
    /// A password, to register or to log in.
    Password,
    /// The port the client listens on for peers.
    Port,
}

impl AskField {
    fn word(self) -> &'static str {
        match self {
            AskField::New => "NEW",
            AskField::Username => "USERNAME",
            AskField::Password => "PASSWORD",
            AskField::Port => "PORT",
        }
    }

    fn from_word(word: &str) -> Option<AskField> {
        Some(match word {
            "NEW" => AskField::New,
            "USERNAME" => AskField::Username,
            "PASSWORD" => AskField::Password,
            "PORT" => AskField::Port,
            _ => return None,
        })
    }
}

/// A successful reply: the words after `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK REGISTERED <user>`: the account exists and is logged in.
    Registered { user: String },
    /// `OK LOGGED_IN <user>`
    LoggedIn { user: String },
    /// `OK WELCOME <user> <addr>`: online; `addr` is what peers are told.
    Welcome { user: String, addr: SocketAddr },
    /// `OK HELP <n>` and `n` lines `TEXT <line>`.
    Help { lines: Vec<String> },
    /// `OK LIST <n> <total>` and `n` lines `USER <name> <id>`: one page of the `total`
    /// users online.
    List {
        /// The page, sorted by name (any case).
        users: Vec<ListedUser>,
        /// How many are online in all.
        total: usize,
    },
    /// `OK WHOIS <id> <user> <key> online|offline`: any account, online or not, with the
    /// identity key to seal a message to it.
    Whois {
        /// The account's id.
        id: u64,
        /// The name as registered.
        user: String,
        /// Its identity key (`-`: none registered; nothing can be sealed to it).
        key: KeyField,
        /// Online now (a message is delivered at once, else queued).
        online: bool,
    },
    /// `OK OFFER <offer> delivered|queued`: the server passed the file offer on, or keeps
    /// it until the recipient logs in.
    Offered {
        /// The sender's offer number.
        offer: u64,
        /// Handed to the recipient's connection (else queued).
        delivered: bool,
    },
    /// `OK OFFER_ANSWER <offer>`: the answer is passed on (or kept for the offerer).
    OfferAnswered { offer: u64 },
    /// `OK SENT <msgid> delivered|queued`: the server passed the sealed message on, or
    /// keeps it until the recipient logs in.
    Sent {
        /// The server's message id.
        id: u64,
        /// Handed to the recipient's connection (else queued).
        delivered: bool,
    },
    /// `OK TOKEN <token> <seconds>`: log in again with `RESUME` within `seconds`.
    Token { token: SessionToken, secs: u64 },
    /// `OK INFO <user> <addr> <key>`
    Info {
        /// The user, as registered.
        user: String,
        /// Where that user accepts peers.
        addr: SocketAddr,
        /// The user's identity key as the server has it (`-`: none registered).
        key: KeyField,
    },
    /// `OK KEY`: the server stored our identity key.
    KeySet,
    /// `OK PONG`
    Pong,
    /// `OK BYE`: the server closes next.
    Bye,
    /// `OK SESSION <id> <user> <addr> <ticket> <key>`: connect to `addr` and present
    /// `ticket`.
    Session {
        /// The server's session id.
        id: u64,
        /// The user asked for, as registered.
        user: String,
        /// Where that user accepts peers.
        addr: SocketAddr,
        /// The one-time ticket for this session.
        ticket: Ticket,
        /// That user's identity key as the server has it (`-`: none registered), for
        /// the peer link's handshake to check.
        key: KeyField,
        /// More addresses to try at once (protocol.md §13), after `addr` (boxed: it is
        /// rarely long, and keeps every `ServerMsg` small).
        hints: Box<Hints>,
    },
    /// `OK RELAY SESSION|TRANSFER <id> <addr> <token>`: dial the relay at `addr` and
    /// present `token` (protocol.md §13); the other end was told to do the same.
    Relay {
        /// For a transfer (else a chat session).
        transfer: bool,
        /// The session or transfer id.
        id: u64,
        /// Where the relay listens.
        addr: SocketAddr,
        /// This end's one-time relay token.
        token: String,
    },
    /// `OK SESSION_OPEN <id>`: the server noted that the session was accepted.
    SessionOpened { id: u64 },
    /// `OK SESSION_END <id>`: the server noted that the session ended.
    SessionEnded { id: u64 },
    /// `OK TRANSFER <id> <user> <addr> <ticket> <key>`: connect to `addr` for a file
    /// transfer and present `ticket`.
    Transfer {
        /// The server's transfer id.
        id: u64,
        /// The other user, as registered.
        user: String,
        /// Where that user accepts peers.
        addr: SocketAddr,
        /// The one-time ticket for this transfer.
        ticket: Ticket,
        /// That user's identity key as the server has it (`-`: none registered).
        key: KeyField,
        /// More addresses to try at once (protocol.md §13), after `addr` (boxed: it is
        /// rarely long, and keeps every `ServerMsg` small).
        hints: Box<Hints>,
    },
    /// `OK HINTS <n>`: the server now gives requesters these `n` local addresses.
    Hints { count: usize },
    /// `OK REVERSE SESSION|TRANSFER <id>`: the target was asked to dial us back.
    Reverse {
        /// For a transfer (else a chat session).
        transfer: bool,
        /// The session or transfer id.
        id: u64,
    },
    /// `OK DIAL_FAILED SESSION|TRANSFER <id>`: the requester was told.
    DialFailed {
        /// For a transfer (else a chat session).
        transfer: bool,
        /// The session or transfer id.
        id: u64,
    },
    /// `OK TRANSFER_END <id>`: the server logged the transfer's outcome.
    TransferEnded { id: u64 },
    /// `OK SHARE <n>`: the server now lists these `n` files for you.
    Shared { count: usize },
    /// `OK FILES <n> <total>` and `n` lines `FILE <user> <size> <name>`: one page of
    /// `total` files.
    Files { files: Vec<FileEntry>, total: usize },
    /// `OK SEARCH <n> <total>` and `n` lines `FILE <user> <size> <name>`: the first `n` of
    /// `total` matches.
    Search { files: Vec<FileEntry>, total: usize },
}

/// One user in a `LIST` page: `USER <name> <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    /// The name as registered.
    pub name: String,
    /// The account's short numeric id, for `\msg <id>` (`WHOIS`, `SEND`).
    pub id: u64,
}

/// One shared file in a listing or search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Who shares it.
    pub user: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its name inside that user's shared folder.
    pub name: String,
}

impl FileEntry {
    fn parse(line: &str) -> Result<FileEntry, ParseError> {
        let bad = || ParseError::bad("a file line is FILE <user> <size> <name>");
        let mut parts = line.splitn(4, ' ');
        if parts.next() != Some("FILE") {
            return Err(bad());
        }
        let user = parts.next().filter(|u| !u.is_empty()).ok_or_else(bad)?;
        let size = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
        Ok(FileEntry {
            user: user.to_string(),
            size,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for FileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FILE {} {} {}",
            self.user,
            self.size,
            one_line(&self.name)
        )
    }
}

/// One line of a `SHARE` body: `<size> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Size in bytes.
    pub size: u64,
    /// Name inside the shared folder.
    pub name: String,
}

impl SharedFile {
    /// Parses `<size> <name>`: the name is everything after the first space, spaces
    /// included, and must pass the file name rule (`protocol::file_name`).
    pub fn parse(line: &str) -> Result<SharedFile, ParseError> {
        let bad = || ParseError::bad("a SHARE line is <size> <name>");
        let (size, name) = line.split_once(' ').ok_or_else(bad)?;
        let size = size.parse().map_err(|_| bad())?;
        let name = safe_file_name(name).map_err(ParseError::bad)?;
        Ok(SharedFile {
            size,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for SharedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.size, one_line(&self.name))
    }
}

/// How a transfer ended, as logged by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    /// Delivered and verified.
    Ok,
    /// Broke off (connection lost, disk error); may be resumed.
    Failed,
    /// Cancelled by either side.
    Cancelled,
    /// A chunk or the whole file failed its hash.
    Corrupt,
    /// Refused (declined offer, unsafe name, not shared).
    Refused,
}

impl TransferResult {
    /// Every result.
    pub const ALL: &'static [TransferResult] = &[
        TransferResult::Ok,
        TransferResult::Failed,
        TransferResult::Cancelled,
        TransferResult::Corrupt,
        TransferResult::Refused,
    ];

    /// The word on the wire and in the log.
    pub fn word(self) -> &'static str {
        match self {
            TransferResult::Ok => "ok",
            TransferResult::Failed => "failed",
            TransferResult::Cancelled => "cancelled",
            TransferResult::Corrupt => "corrupt",
            TransferResult::Refused => "refused",
        }
    }

    /// Parses a word (case-insensitive).
    pub fn from_word(word: &str) -> Option<TransferResult> {
        TransferResult::ALL
            .iter()
            .copied()
            .find(|r| r.word().eq_ignore_ascii_case(word))
    }
}

/// Which side of a transfer a `TRANSFER_END` report comes from, and so the direction:
/// `send`/`receive` are the two sides of a push, `fetch`/`serve` of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferRole {
    /// Pushes a file it offered (asked for the ticket).
    Send,
    /// Receives a pushed file.
    Receive,
    /// Downloads from the other's shared folder (asked for the ticket).
    Fetch,
    /// Serves a file from its shared folder.
    Serve,
}

impl TransferRole {
    /// Every role.
    pub const ALL: &'static [TransferRole] = &[
        TransferRole::Send,
        TransferRole::Receive,
        TransferRole::Fetch,
        TransferRole::Serve,
    ];

    /// The word on the wire and in the log.
    pub fn word(self) -> &'static str {
        match self {
            TransferRole::Send => "send",
            TransferRole::Receive => "receive",
            TransferRole::Fetch => "fetch",
            TransferRole::Serve => "serve",
        }
    }

    /// Parses a word (case-insensitive).
    pub fn from_word(word: &str) -> Option<TransferRole> {
        TransferRole::ALL
            .iter()
            .copied()
            .find(|r| r.word().eq_ignore_ascii_case(word))
    }

    /// `push` or `fetch`.
    pub fn direction(self) -> &'static str {
        match self {
            TransferRole::Send | TransferRole::Receive => "push",
            TransferRole::Fetch | TransferRole::Serve => "fetch",
        }
    }

    /// True for the side that writes the file and verifies its hash.
    pub fn receives(self) -> bool {
        matches!(self, TransferRole::Receive | TransferRole::Fetch)
    }

    /// True for the side that asked for the ticket (the requester in the log).
    pub fn requests(self) -> bool {
        matches!(self, TransferRole::Send | TransferRole::Fetch)
    }
}

/// Something the server pushes unasked: the words after `EVENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `EVENT ONLINE <user>...`: these users came online in the last interval.
    Online { users: Vec<String> },
    /// `EVENT OFFLINE <user>...`: these users went offline in the last interval.
    Offline { users: Vec<String> },
    /// `EVENT PRESENCE <came> <went>`: too many users came and went in the last interval
    /// to name them; `LIST` tells who is online.
    Presence { came: usize, went: usize },
    /// `EVENT SHUTDOWN <message>`
    Shutdown { message: String },
    /// `EVENT SESSION_REQUEST <id> <from> <ticket> <key>`: `from` will connect to us
    /// with `ticket` for session `id`.
    SessionRequest {
        /// The server's session id.
        id: u64,
        /// The requesting user.
        from: String,
        /// The ticket `from` will present.
        ticket: Ticket,
        /// `from`'s identity key as the server has it (`-`: none registered).
        key: KeyField,
    },
    /// `EVENT TRANSFER_REQUEST <id> <from> <ticket> <key>`: `from` will connect to us
    /// with `ticket` for file transfer `id`.
    TransferRequest {
        /// The server's transfer id.
        id: u64,
        /// The requesting user.
        from: String,
        /// The ticket `from` will present.
        ticket: Ticket,
        /// `from`'s identity key as the server has it (`-`: none registered).
        key: KeyField,
    },
    /// `EVENT RELAY <id> <addr> <token>`: the requester of session or transfer `id`
    /// cannot reach us directly; dial the relay at `addr` with `token`, then answer the
    /// peer's first line on that connection as if it had arrived on our listener.
    Relay {
        /// The session or transfer id.
        id: u64,
        /// Where the relay listens.
        addr: SocketAddr,
        /// Our one-time relay token.
        token: String,
    },
    /// `EVENT DIAL SESSION|TRANSFER <id> <hints>`: the requester of `id` cannot reach us;
    /// dial one of `hints`, send `REVERSE SESSION|TRANSFER <id>`, then answer its first
    /// line as if the connection had arrived on our listener (protocol.md §13).
    Dial {
        /// For a transfer (else a chat session).
        transfer: bool,
        /// The session or transfer id.
        id: u64,
        /// Where the requester may be reached.
        hints: Hints,
    },
    /// `EVENT DIAL_FAILED SESSION|TRANSFER <id>`: the target of our request `id` could
    /// not dial us back; go to the relay now.
    DialFailed {
        /// For a transfer (else a chat session).
        transfer: bool,
        /// The session or transfer id.
        id: u64,
    },
    /// `EVENT MAILBOX <n>`: the next `n` events are `EVENT MESSAGE`s that waited at the
    /// server while we were away.
    Mailbox { count: usize },
    /// `EVENT HELD <n>`: the next `n` events are file offers and answers that waited at
    /// the server while we were away.
    Held { count: usize },
    /// `EVENT MESSAGE <msgid> <from> <unix-ms> <from-key> <sealed>`: a message sealed to
    /// our identity key, relayed (or kept) by the server.
    Message {
        /// The server's message id.
        id: u64,
        /// The sender, as the server knows it (the login that sent it).
        from: String,
        /// When the server took it (Unix ms).
        at_ms: u64,
        /// The sender's identity key as the server had it then: the key that sealed it.
        key: KeyField,
        /// The one-way Noise message (`crypto::sealed`).
        sealed: Vec<u8>,
    },
    /// `EVENT OFFER <from> <offer> <size> <name>`: a file offer that came through the
    /// server (answer with `OFFER_ANSWER`; the push then comes as for a chat offer).
    Offer {
        /// Who offers.
        from: String,
        /// Their offer number.
        offer: u64,
        /// Bytes of the file.
        size: u64,
        /// Its name.
        name: String,
    },
    /// `EVENT OFFER_ANSWER <from> <offer> ok|no`: `from` answered our offer `offer`.
    OfferAnswer {
        /// Who answered.
        from: String,
        /// Our offer number.
        offer: u64,
        /// Accepted.
        accept: bool,
    },
    /// A kind this version does not know; clients ignore it (protocol.md §5).
    Unknown { kind: String, rest: String },
}

/// One message from the server, possibly several lines long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// `HELLO peerchat <version>`
    Hello { version: u32 },
    /// `ASK <FIELD> <prompt>`
    Ask { field: AskField, prompt: String },
    /// `OK ...`
    Ok(Reply),
    /// `ERR <code> <NAME> <message>`
    Err { code: ErrorCode, message: String },
    /// `EVENT ...`
    Event(Event),
}

/// Keeps text from anywhere one line on the wire; the rule lives in `crate::sanitize`.
pub use crate::sanitize::one_line;

impl ServerMsg {
    /// The first words of a line, at most 40 characters, for a log message.
    pub fn short(line: &str) -> String {
        one_line(&line.chars().take(40).collect::<String>())
    }

    /// Shorthand for an `ERR` message.
    pub fn err(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Err {
            code,
            message: message.into(),
        }
    }

    /// The wire form: one or more lines, each ending in `\n`.
    pub fn to_wire(&self) -> String {
        let mut out = self.to_string();
        out.push('\n');
        out
    }

    /// How many lines follow `first` as part of the same message (protocol.md §2, Lists):
    /// exactly the `<n>` of `OK HELP <n>`, `OK LIST <n>`, `OK FILES <n> <total>` and
    /// `OK SEARCH <n> <total>`; 0 for every other line, whatever numbers it holds.
    pub fn body_len(first: &str) -> Result<usize, ParseError> {
        let mut words = first.split(' ');
        if words.next() != Some("OK") {
            return Ok(0);
        }
        if !words
            .next()
            .is_some_and(|what| LIST_REPLIES.contains(&what))
        {
            return Ok(0);
        }
        let count = words
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ParseError::bad(format!("list reply without a count: {first}")))?;
        if count > MAX_LIST_LINES {
            return Err(ParseError::bad("list reply announces too many lines"));
        }
        Ok(count)
    }

    /// Parses a message from its first line and the `body_len(first)` lines after it.
    pub fn parse(first: &str, body: &[String]) -> Result<ServerMsg, ParseError> {
        let (word, rest) = split_word(first);
        match word {
            "HELLO" => {
                let (name, version) = split_word(rest);
                match (name, version.parse::<u32>()) {
                    ("peerchat", Ok(version)) => Ok(ServerMsg::Hello { version }),
                    _ => Err(ParseError::bad("malformed HELLO")),
                }
            }
            "ASK" => {
                let (field, prompt) = split_word(rest);
                let field = AskField::from_word(field)
                    .ok_or_else(|| ParseError::bad(format!("unknown ASK field {field}")))?;
                Ok(ServerMsg::Ask {
                    field,
                    prompt: prompt.to_string(),
                })
            }
            "ERR" => {
                let (code, message) = parse_err(rest)?;
                Ok(ServerMsg::Err { code, message })
            }
            "EVENT" => parse_event(rest).map(ServerMsg::Event),
            "OK" => parse_reply(rest, body).map(ServerMsg::Ok),
            _ => Err(ParseError::bad(
                "a server line starts with HELLO, ASK, OK, ERR or EVENT",
            )),
        }
    }
}

fn parse_event(rest: &str) -> Result<Event, ParseError> {
    let (kind, rest) = split_word(rest);
    Ok(match kind {
        "ONLINE" => Event::Online {
            users: names(rest)?,
        },
        "OFFLINE" => Event::Offline {
            users: names(rest)?,
        },
        "PRESENCE" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [came, went] => Event::Presence {
                came: came
                    .parse()
                    .map_err(|_| ParseError::bad("malformed EVENT PRESENCE"))?,
                went: went
                    .parse()
                    .map_err(|_| ParseError::bad("malformed EVENT PRESENCE"))?,
            },
            _ => return Err(ParseError::bad("usage: EVENT PRESENCE <came> <went>")),
        },
        "SHUTDOWN" => Event::Shutdown {
            message: rest.to_string(),
        },
        "RELAY" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [id, addr, token] => Event::Relay {
                id: parse_id(id)?,
                addr: parse_addr(addr)?,
                token: parse_relay_token(token)?,
            },
            _ => return Err(ParseError::bad("usage: EVENT RELAY <id> <addr> <token>")),
        },
        "DIAL_FAILED" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [what @ ("SESSION" | "TRANSFER"), id] => Event::DialFailed {
                transfer: *what == "TRANSFER",
                id: parse_id(id)?,
            },
            _ => {
                return Err(ParseError::bad(
                    "usage: EVENT DIAL_FAILED SESSION|TRANSFER <id>",
                ));
            }
        },
        "DIAL" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [what @ ("SESSION" | "TRANSFER"), id, hints] => Event::Dial {
                transfer: *what == "TRANSFER",
                id: parse_id(id)?,
                hints: Hints::parse(hints)?,
            },
            _ => {
                return Err(ParseError::bad(
                    "usage: EVENT DIAL SESSION|TRANSFER <id> <hints>",
                ));
            }
        },
        "OFFER" => {
            let usage = || ParseError::bad("usage: EVENT OFFER <from> <offer> <size> <name>");
            let mut parts = rest.splitn(4, ' ');
            let from = single_name(parts.next().unwrap_or(""))?;
            let offer = parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(usage)?;
            let size = parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(usage)?;
            let name = safe_file_name(parts.next().unwrap_or("")).map_err(ParseError::bad)?;
            Event::Offer {
                from,
                offer,
                size,
                name: name.to_string(),
            }
        }
        "OFFER_ANSWER" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [from, offer, answer @ ("ok" | "no")] => Event::OfferAnswer {
                from: single_name(from)?,
                offer: parse_id(offer)?,
                accept: *answer == "ok",
            },
            _ => {
                return Err(ParseError::bad(
                    "usage: EVENT OFFER_ANSWER <from> <offer> ok|no",
                ));
            }
        },
        "MAILBOX" => Event::Mailbox {
            count: rest
                .parse()
                .map_err(|_| ParseError::bad("usage: EVENT MAILBOX <n>"))?,
        },
        "HELD" => Event::Held {
            count: rest
                .parse()
                .map_err(|_| ParseError::bad("usage: EVENT HELD <n>"))?,
        },
        "MESSAGE" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
            [id, from, at, key, sealed] => Event::Message {
                id: parse_id(id)?,
                from: single_name(from)?,
                at_ms: at
                    .parse()
                    .map_err(|_| ParseError::bad("malformed EVENT MESSAGE"))?,
                key: parse_key_field(key)?,
                sealed: parse_sealed(sealed)?,
            },
            _ => {
                return Err(ParseError::bad(
                    "usage: EVENT MESSAGE <msgid> <from> <unix-ms> <key> <sealed>",
                ));
            }
        },
        "SESSION_REQUEST" | "TRANSFER_REQUEST" => {
            let words: Vec<&str> = rest.split(' ').collect();
            match words.as_slice() {
                [id, from, ticket, key] if kind == "SESSION_REQUEST" => Event::SessionRequest {
                    id: parse_id(id)?,
                    from: from.to_string(),
                    ticket: parse_ticket(ticket)?,
                    key: parse_key_field(key)?,
                },
                [id, from, ticket, key] => Event::TransferRequest {
                    id: parse_id(id)?,
                    from: from.to_string(),
                    ticket: parse_ticket(ticket)?,
                    key: parse_key_field(key)?,
                },
                _ => {
                    return Err(ParseError::bad(
                        "usage: EVENT SESSION_REQUEST|TRANSFER_REQUEST <id> <from> <ticket> <key>",
                    ));
                }
            }
        }
        // Kinds are upper-case words; anything else is not a future event but garbage
        // (and would not format back to itself).
        other
            if !other.is_empty() && other.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            Event::Unknown {
                kind: other.to_string(),
                rest: rest.to_string(),
            }
        }
        _ => return Err(ParseError::bad("EVENT without a valid kind")),
    })
}

fn parse_reply(rest: &str, body: &[String]) -> Result<Reply, ParseError> {
    let (what, args) = split_word(rest);
    let words: Vec<&str> = args.split(' ').filter(|w| !w.is_empty()).collect();
    let reply = match (what, words.as_slice()) {
        ("REGISTERED", [user]) => Reply::Registered {
            user: user.to_string(),
        },
        ("LOGGED_IN", [user]) => Reply::LoggedIn {
            user: user.to_string(),
        },
        ("WELCOME", [user, addr]) => Reply::Welcome {
            user: user.to_string(),
            addr: parse_addr(addr)?,
        },
        ("INFO", [user, addr, key]) => Reply::Info {
            user: user.to_string(),
            addr: parse_addr(addr)?,
            key: parse_key_field(key)?,
        },
        ("KEY", []) => Reply::KeySet,
        ("WHOIS", [id, user, key, state @ ("online" | "offline")]) => Reply::Whois {
            id: parse_id(id)?,
            user: single_name(user)?,
            key: parse_key_field(key)?,
            online: *state == "online",
        },
        ("OFFER", [offer, how @ ("delivered" | "queued")]) => Reply::Offered {
            offer: parse_id(offer)?,
            delivered: *how == "delivered",
        },
        ("OFFER_ANSWER", [offer]) => Reply::OfferAnswered {
            offer: parse_id(offer)?,
        },
        ("SENT", [id, how @ ("delivered" | "queued")]) => Reply::Sent {
            id: parse_id(id)?,
            delivered: *how == "delivered",
        },
        ("SESSION", [id, user, addr, ticket, key, hints]) => Reply::Session {
            id: parse_id(id)?,
            user: user.to_string(),
            addr: parse_addr(addr)?,
            ticket: parse_ticket(ticket)?,
            key: parse_key_field(key)?,
            hints: Box::new(Hints::parse(hints)?),
        },
        ("SESSION_OPEN", [id]) => Reply::SessionOpened { id: parse_id(id)? },
        ("RELAY", [what @ ("SESSION" | "TRANSFER"), id, addr, token]) => Reply::Relay {
            transfer: *what == "TRANSFER",
            id: parse_id(id)?,
            addr: parse_addr(addr)?,
            token: parse_relay_token(token)?,
        },
        ("SESSION_END", [id]) => Reply::SessionEnded { id: parse_id(id)? },
        ("TRANSFER", [id, user, addr, ticket, key, hints]) => Reply::Transfer {
            id: parse_id(id)?,
            user: user.to_string(),
            addr: parse_addr(addr)?,
            ticket: parse_ticket(ticket)?,
            key: parse_key_field(key)?,
            hints: Box::new(Hints::parse(hints)?),
        },
        ("HINTS", [count]) => Reply::Hints {
            count: count
                .parse()
                .map_err(|_| ParseError::bad("malformed OK HINTS"))?,
        },
        ("DIAL_FAILED", [what @ ("SESSION" | "TRANSFER"), id]) => Reply::DialFailed {
            transfer: *what == "TRANSFER",
            id: parse_id(id)?,
        },
        ("REVERSE", [what @ ("SESSION" | "TRANSFER"), id]) => Reply::Reverse {
            transfer: *what == "TRANSFER",
            id: parse_id(id)?,
        },
        ("TRANSFER_END", [id]) => Reply::TransferEnded { id: parse_id(id)? },
        ("SHARE", [count]) => Reply::Shared {
            count: count
                .parse()
                .map_err(|_| ParseError::bad("malformed OK SHARE"))?,
        },
        ("FILES", [count, total]) if count.parse::<usize>().ok() == Some(body.len()) => {
            Reply::Files {
                files: body
                    .iter()
                    .map(|l| FileEntry::parse(l))
                    .collect::<Result<_, _>>()?,
                total: total
                    .parse()
                    .map_err(|_| ParseError::bad("malformed OK FILES"))?,
            }
        }
        ("SEARCH", [count, total]) if count.parse::<usize>().ok() == Some(body.len()) => {
            Reply::Search {
                files: body
                    .iter()
                    .map(|l| FileEntry::parse(l))
                    .collect::<Result<_, _>>()?,
                total: total
                    .parse()
                    .map_err(|_| ParseError::bad("malformed OK SEARCH"))?,
            }
        }
        ("PONG", []) => Reply::Pong,
        ("BYE", []) => Reply::Bye,
        ("HELP", [count]) if count.parse::<usize>().ok() == Some(body.len()) => Reply::Help {
            lines: body
                .iter()
                .map(|line| match line.split_once(' ') {
                    Some(("TEXT", text)) => Ok(text.to_string()),
                    _ if line == "TEXT" => Ok(String::new()),
                    _ => Err(ParseError::bad("a HELP line is TEXT <text>")),
                })
                .collect::<Result<_, _>>()?,
        },
        ("LIST", [count, total]) if count.parse::<usize>().ok() == Some(body.len()) => {
            let users = body
                .iter()
                .map(|line| {
                    let bad = || ParseError::bad("a LIST line is USER <name> <id>");
                    match line.split(' ').collect::<Vec<_>>().as_slice() {
                        ["USER", name, id] => Ok(ListedUser {
                            name: single_name(name)?,
                            id: id.parse().map_err(|_| bad())?,
                        }),
                        _ => Err(bad()),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let total = total
                .parse()
                .map_err(|_| ParseError::bad("malformed OK LIST"))?;
            Reply::List { users, total }
        }
        ("TOKEN", [token, secs]) => Reply::Token {
            token: SessionToken::parse(token).ok_or_else(|| ParseError::bad("malformed token"))?,
            secs: secs
                .parse()
                .map_err(|_| ParseError::bad("malformed OK TOKEN"))?,
        },
        _ => return Err(ParseError::bad(format!("malformed OK {what}"))),
    };
    Ok(reply)
}

fn parse_addr(text: &str) -> Result<SocketAddr, ParseError> {
    text.parse()
        .map_err(|_| ParseError::bad(format!("not an address: {text}")))
}

/// A relay token: up to 160 characters of `[0-9A-Za-z._-]` (protocol.md §13).
fn parse_relay_token(text: &str) -> Result<String, ParseError> {
    let fine = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if text.is_empty() || text.len() > 160 || !text.bytes().all(fine) {
        return Err(ParseError::bad("not a relay token"));
    }
    Ok(text.to_string())
}

pub(super) fn parse_id(text: &str) -> Result<u64, ParseError> {
    text.parse()
        .map_err(|_| ParseError::bad(format!("not a session id: {}", shorten(text))))
}

fn parse_ticket(text: &str) -> Result<Ticket, ParseError> {
    Ticket::parse(text).ok_or_else(|| ParseError::bad("malformed ticket"))
}

/// One or more usernames separated by single spaces.
fn names(text: &str) -> Result<Vec<String>, ParseError> {
    text.split(' ').map(single_name).collect()
}

fn single_name(text: &str) -> Result<String, ParseError> {
    if text.is_empty() || text.contains(' ') {
        return Err(ParseError::bad("expected one username"));
    }
    Ok(text.to_string())
}

/// The first space-separated word and the rest (leading spaces of the rest removed).
pub(super) fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((word, rest)) => (word, rest.trim_start_matches(' ')),
        None => (text, ""),
    }
}

impl fmt::Display for ServerMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerMsg::Hello { version } => write!(f, "HELLO peerchat {version}"),
            ServerMsg::Ask { field, prompt } => {
                write!(f, "ASK {} {}", field.word(), one_line(prompt))
            }
            ServerMsg::Err { code, message } => write_err(f, *code, message),
            ServerMsg::Event(event) => match event {
                Event::Online { users } => write!(f, "EVENT ONLINE {}", users.join(" ")),
                Event::Offline { users } => write!(f, "EVENT OFFLINE {}", users.join(" ")),
                Event::Presence { came, went } => write!(f, "EVENT PRESENCE {came} {went}"),
                Event::Shutdown { message } => write!(f, "EVENT SHUTDOWN {}", one_line(message)),
                Event::SessionRequest {
                    id,
                    from,
                    ticket,
                    key,
                } => write!(
                    f,
                    "EVENT SESSION_REQUEST {id} {from} {ticket} {}",
                    ShowKey(key)
                ),
                Event::TransferRequest {
                    id,
                    from,
                    ticket,
                    key,
                } => write!(
                    f,
                    "EVENT TRANSFER_REQUEST {id} {from} {ticket} {}",
                    ShowKey(key)
                ),
                Event::Relay { id, addr, token } => write!(f, "EVENT RELAY {id} {addr} {token}"),
                Event::Dial {
                    transfer,
                    id,
                    hints,
                } => {
                    let what = if *transfer { "TRANSFER" } else { "SESSION" };
                    write!(f, "EVENT DIAL {what} {id} {hints}")
                }
                Event::Mailbox { count } => write!(f, "EVENT MAILBOX {count}"),
                Event::DialFailed { transfer, id } => {
                    let what = if *transfer { "TRANSFER" } else { "SESSION" };
                    write!(f, "EVENT DIAL_FAILED {what} {id}")
                }
                Event::Held { count } => write!(f, "EVENT HELD {count}"),
                Event::Offer {
                    from,
                    offer,
                    size,
                    name,
                } => write!(f, "EVENT OFFER {from} {offer} {size} {}", one_line(name)),
                Event::OfferAnswer {
                    from,
                    offer,
                    accept,
                } => {
                    let answer = if *accept { "ok" } else { "no" };
                    write!(f, "EVENT OFFER_ANSWER {from} {offer} {answer}")
                }
                Event::Message {
                    id,
                    from,
                    at_ms,
                    key,
                    sealed,
                } => write!(
                    f,
                    "EVENT MESSAGE {id} {from} {at_ms} {} {}",
                    ShowKey(key),
                    sealed_hex(sealed)
                ),
                Event::Unknown { kind, rest } => {
                    write!(f, "EVENT {} {}", one_line(kind), one_line(rest))
                }
            },
            ServerMsg::Ok(reply) => match reply {
                Reply::Registered { user } => write!(f, "OK REGISTERED {user}"),
                Reply::LoggedIn { user } => write!(f, "OK LOGGED_IN {user}"),
                Reply::Welcome { user, addr } => write!(f, "OK WELCOME {user} {addr}"),
                Reply::Info { user, addr, key } => {
                    write!(f, "OK INFO {user} {addr} {}", ShowKey(key))
                }
                Reply::KeySet => write!(f, "OK KEY"),
                Reply::Whois {
                    id,
                    user,
                    key,
                    online,
                } => {
                    let state = if *online { "online" } else { "offline" };
                    write!(f, "OK WHOIS {id} {user} {} {state}", ShowKey(key))
                }
                Reply::Offered { offer, delivered } => {
                    let how = if *delivered { "delivered" } else { "queued" };
                    write!(f, "OK OFFER {offer} {how}")
                }
                Reply::OfferAnswered { offer } => write!(f, "OK OFFER_ANSWER {offer}"),
                Reply::Sent { id, delivered } => {
                    let how = if *delivered { "delivered" } else { "queued" };
                    write!(f, "OK SENT {id} {how}")
                }
                Reply::Session {
                    id,
                    user,
                    addr,
                    ticket,
                    key,
                    hints,
                } => write!(
                    f,
                    "OK SESSION {id} {user} {addr} {ticket} {} {hints}",
                    ShowKey(key)
                ),
                Reply::SessionOpened { id } => write!(f, "OK SESSION_OPEN {id}"),
                Reply::Relay {
                    transfer,
                    id,
                    addr,
                    token,
                } => {
                    let what = if *transfer { "TRANSFER" } else { "SESSION" };
                    write!(f, "OK RELAY {what} {id} {addr} {token}")
                }
                Reply::SessionEnded { id } => write!(f, "OK SESSION_END {id}"),
                Reply::Transfer {
                    id,
                    user,
                    addr,
                    ticket,
                    key,
                    hints,
                } => write!(
                    f,
                    "OK TRANSFER {id} {user} {addr} {ticket} {} {hints}",
                    ShowKey(key)
                ),
                Reply::Hints { count } => write!(f, "OK HINTS {count}"),
                Reply::Reverse { transfer, id } => {
                    let what = if *transfer { "TRANSFER" } else { "SESSION" };
                    write!(f, "OK REVERSE {what} {id}")
                }
                Reply::DialFailed { transfer, id } => {
                    let what = if *transfer { "TRANSFER" } else { "SESSION" };
                    write!(f, "OK DIAL_FAILED {what} {id}")
                }
                Reply::TransferEnded { id } => write!(f, "OK TRANSFER_END {id}"),
                Reply::Shared { count } => write!(f, "OK SHARE {count}"),
                Reply::Files { files, total } => {
                    write!(f, "OK FILES {} {total}", files.len())?;
                    files.iter().try_for_each(|e| write!(f, "\n{e}"))
                }
                Reply::Search { files, total } => {
                    write!(f, "OK SEARCH {} {total}", files.len())?;
                    files.iter().try_for_each(|e| write!(f, "\n{e}"))
                }
                Reply::Pong => write!(f, "OK PONG"),
                Reply::Bye => write!(f, "OK BYE"),
                Reply::Help { lines } => {
                    write!(f, "OK HELP {}", lines.len())?;
                    lines
                        .iter()
                        .try_for_each(|l| write!(f, "\nTEXT {}", one_line(l)))
                }
                Reply::List { users, total } => {
                    write!(f, "OK LIST {} {total}", users.len())?;
                    users
                        .iter()
                        .try_for_each(|u| write!(f, "\nUSER {} {}", u.name, u.id))
                }
                Reply::Token { token, secs } => write!(f, "OK TOKEN {token} {secs}"),
            },
        }
    }
}

/// At most 32 characters of untrusted text, for echoing it in an error message.
pub(super) fn shorten(text: &str) -> String {
    let mut short: String = one_line(text).chars().take(32).collect();
    if text.chars().count() > 32 {
        short.push('…');
    }
    short
}

pub use super::command::{COMMANDS, Command, CommandSpec, EndReason};
pub use super::login_msg::{
    NewAnswer, Password, Username, format_resume, parse_port, parse_resume,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, id: u64) -> ListedUser {
        ListedUser {
            name: name.into(),
            id,
        }
    }

    fn round_trip(msg: ServerMsg) {
        let wire = msg.to_wire();
        assert!(wire.ends_with('\n'));
        let mut lines = wire.trim_end_matches('\n').split('\n').map(String::from);
        let first = lines.next().unwrap();
        let body: Vec<String> = lines.collect();
        assert_eq!(ServerMsg::body_len(&first).unwrap(), body.len(), "{wire}");
        assert_eq!(ServerMsg::parse(&first, &body).unwrap(), msg, "{wire}");
    }

    #[test]
    fn every_server_message_round_trips() {
        let addr: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        for msg in [
            ServerMsg::Hello { version: VERSION },
            ServerMsg::Ask {
                field: AskField::New,
                prompt: "Are you a new client? (Y/N)".into(),
            },
            ServerMsg::Ask {
                field: AskField::Username,
                prompt: "Username".into(),
            },
            ServerMsg::Ask {
                field: AskField::Password,
                prompt: "Password".into(),
            },
            ServerMsg::Ask {
                field: AskField::Port,
                prompt: "Listening port".into(),
            },
            ServerMsg::Ok(Reply::Registered {
                user: "alice".into(),
            }),
            ServerMsg::Ok(Reply::LoggedIn {
                user: "alice".into(),
            }),
            ServerMsg::Ok(Reply::Welcome {
                user: "alice".into(),
                addr,
            }),
            ServerMsg::Ok(Reply::Info {
                user: "bob".into(),
                addr: v6,
                key: None,
            }),
            ServerMsg::Ok(Reply::Info {
                user: "bob".into(),
                addr,
                key: Some([7; 32]),
            }),
            ServerMsg::Ok(Reply::KeySet),
            ServerMsg::Ok(Reply::Help {
                lines: vec!["LIST - users".into(), "QUIT - bye".into()],
            }),
            ServerMsg::Ok(Reply::Help { lines: vec![] }),
            ServerMsg::Ok(Reply::List {
                users: vec![listed("alice", 1), listed("bob", 2)],
                total: 2,
            }),
            ServerMsg::Ok(Reply::List {
                users: vec![],
                total: 0,
            }),
            ServerMsg::Ok(Reply::List {
                users: vec![listed("zed", 77)],
                total: 1001,
            }),
            ServerMsg::Ok(Reply::Whois {
                id: 3,
                user: "bob".into(),
                key: Some([9; 32]),
                online: false,
            }),
            ServerMsg::Ok(Reply::Whois {
                id: 4,
                user: "carol".into(),
                key: None,
                online: true,
            }),
            ServerMsg::Ok(Reply::Sent {
                id: 12,
                delivered: true,
            }),
            ServerMsg::Ok(Reply::Sent {
                id: 13,
                delivered: false,
            }),
            ServerMsg::Event(Event::Mailbox { count: 3 }),
            ServerMsg::Event(Event::Held { count: 2 }),
            ServerMsg::Event(Event::DialFailed {
                transfer: true,
                id: 9,
            }),
            ServerMsg::Ok(Reply::DialFailed {
                transfer: false,
                id: 8,
            }),
            ServerMsg::Event(Event::Offer {
                from: "alice".into(),
                offer: 4,
                size: 99,
                name: "a  b.txt".into(),
            }),
            ServerMsg::Event(Event::OfferAnswer {
                from: "bob".into(),
                offer: 4,
                accept: false,
            }),
            ServerMsg::Ok(Reply::Offered {
                offer: 4,
                delivered: false,
            }),
            ServerMsg::Ok(Reply::OfferAnswered { offer: 4 }),
            ServerMsg::Event(Event::Message {
                id: 12,
                from: "alice".into(),
                at_ms: 1_764_650_000_000,
                key: Some([5; 32]),
                sealed: vec![1, 2, 3, 255],
            }),
            ServerMsg::Ok(Reply::Token {
                token: SessionToken::generate().unwrap(),
                secs: 604800,
            }),
            ServerMsg::Ok(Reply::Pong),
            ServerMsg::Ok(Reply::Bye),
            ServerMsg::Event(Event::Online {
                users: vec!["bob".into()],
            }),
            ServerMsg::Event(Event::Online {
                users: vec!["bob".into(), "carol".into()],
            }),
            ServerMsg::Event(Event::Offline {
                users: vec!["bob".into()],
            }),
            ServerMsg::Event(Event::Presence { came: 523, went: 7 }),
            ServerMsg::Event(Event::Shutdown {
                message: "the server is shutting down".into(),
            }),
            ServerMsg::Event(Event::Unknown {
                kind: "FUTURE".into(),
                rest: "a b c".into(),
            }),
        ] {
            round_trip(msg);
        }
        for &code in ErrorCode::ALL {
            round_trip(ServerMsg::err(code, "some text here"));
        }
    }

    #[test]
    fn exact_wire_forms_match_protocol_md() {
        let addr: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        assert_eq!(
            ServerMsg::Ok(Reply::Info {
                user: "bob".into(),
                addr,
                key: None,
            })
            .to_wire(),
            "OK INFO bob 127.0.0.1:40002 -\n"
        );
        assert_eq!(
            ServerMsg::Ok(Reply::List {
                users: vec![listed("alice", 1), listed("bob", 2)],
                total: 2,
            })
            .to_wire(),
            "OK LIST 2 2\nUSER alice 1\nUSER bob 2\n"
        );
        assert_eq!(
            ServerMsg::err(ErrorCode::NotOnline, "carol is not online").to_wire(),
            "ERR 404 NOT_ONLINE carol is not online\n"
        );
    }

    #[test]
    fn only_list_replies_have_bodies() {
        for (line, n) in [
            ("OK HELP 3", 3),
            ("OK LIST 2 5", 2),
            ("OK FILES 4 90", 4),
            ("OK SEARCH 1 1", 1),
            ("OK SHARE 2", 0),
            ("OK SESSION_END 12", 0),
            ("OK TRANSFER_END 12", 0),
            ("OK SESSION_OPEN 12", 0),
            (
                "OK SESSION 12 bob 127.0.0.1:1 6f1c0d3e9a2b4c5d8e7f60718293a4b5 -",
                0,
            ),
            ("ERR 400 BAD_REQUEST 5 lines", 0),
            ("EVENT FUTURE 3", 0),
        ] {
            assert_eq!(ServerMsg::body_len(line).unwrap(), n, "{line}");
        }
        let help = ServerMsg::Ok(Reply::Help {
            lines: vec!["a".into()],
        });
        assert_eq!(help.to_wire(), "OK HELP 1\nTEXT a\n");
        let files = ServerMsg::Ok(Reply::Files {
            files: vec![FileEntry {
                user: "bob".into(),
                size: 6,
                name: "two  spaces ".into(),
            }],
            total: 7,
        });
        assert_eq!(files.to_wire(), "OK FILES 1 7\nFILE bob 6 two  spaces \n");
        for word in BODY_WORDS {
            assert!(!["HELLO", "ASK", "OK", "ERR", "EVENT"].contains(word));
        }
    }

    #[test]
    fn files_takes_an_optional_user_and_offset() {
        let parse = |line: &str| Command::parse(line).unwrap().unwrap();
        assert_eq!(
            parse("FILES 1000"),
            Command::Files {
                user: None,
                offset: 1000
            }
        );
        assert_eq!(
            parse("files bob 2000"),
            Command::Files {
                user: Some("bob".into()),
                offset: 2000
            }
        );
        assert_eq!(
            Command::parse("FILES bob x").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Command::parse("SHARE 20001").unwrap_err().code,
            ErrorCode::TooManyFiles
        );
        assert!(Command::refusal_closes("share 20001"));
        assert!(!Command::refusal_closes("FILES"));
        assert!(SharedFile::parse("1 ..").is_err());
        assert!(SharedFile::parse("1 a/b").is_err());
        assert!(SharedFile::parse("1 C:evil").is_err());
        assert_eq!(
            SharedFile::parse("1  two  spaces").unwrap().name,
            " two  spaces"
        );
    }

    #[test]
    fn text_with_newlines_cannot_break_framing() {
        let msg = ServerMsg::err(ErrorCode::BadRequest, "evil\nOK BYE\r");
        assert_eq!(
            msg.to_wire(),
            "ERR 400 BAD_REQUEST evil\u{FFFD}OK BYE\u{FFFD}\n"
        );
    }

    #[test]
    fn malformed_server_lines_are_rejected() {
        for line in [
            "",
            "HI",
            "HELLO other 1",
            "HELLO peerchat x",
            "ASK WHAT x",
            "ERR 400",
            "ERR 400 NOT_ONLINE x",
            "ERR abc BAD_REQUEST x",
            "OK",
            "OK WELCOME alice",
            "OK WELCOME alice notanaddr",
            "OK INFO a b c",
            "OK PONG extra",
            "OK NOPE",
            "EVENT",
            "EVENT ONLINE",
            "EVENT ONLINE a  b",
            "EVENT PRESENCE 1",
            "EVENT PRESENCE x 2",
            "OK LIST 0",
            "OK TOKEN abc 5",
        ] {
            assert!(ServerMsg::parse(line, &[]).is_err(), "accepted {line:?}");
        }
        assert!(ServerMsg::parse("OK LIST 2 2", &["USER a".into()]).is_err());
        assert!(ServerMsg::parse("OK LIST 1 1", &["NOTUSER a".into()]).is_err());
        assert!(ServerMsg::body_len("OK LIST x").is_err());
        assert!(ServerMsg::body_len("OK LIST 99999999999").is_err());
        assert_eq!(ServerMsg::body_len("EVENT ONLINE a").unwrap(), 0);
    }

    #[test]
    fn commands_parse_with_aliases_and_any_case_and_format_back() {
        let cases = [
            ("HELP", Command::Help),
            ("list", Command::List { offset: 0 }),
            ("GET_CLIENT_LIST", Command::List { offset: 0 }),
            ("LIST 1000", Command::List { offset: 1000 }),
            ("token", Command::Token),
            (
                "KEY 0101010101010101010101010101010101010101010101010101010101010101",
                Command::Key { key: [1; 32] },
            ),
            (
                "whois 12",
                Command::Whois {
                    user: crate::protocol::mail_msg::UserRef::Id(12),
                },
            ),
            (
                "SEND bob 00ff",
                Command::Send {
                    to: crate::protocol::mail_msg::UserRef::Name("bob".into()),
                    sealed: vec![0, 255],
                },
            ),
            ("info bob", Command::Info { user: "bob".into() }),
            ("GET_CLIENT_INFO  bob", Command::Info { user: "bob".into() }),
            ("Ping", Command::Ping),
            ("quit", Command::Quit),
            ("DISCONNECT_CLIENT", Command::Quit),
            ("connect bob", Command::Connect { user: "bob".into() }),
            ("SESSION_OPEN 12", Command::SessionOpen { id: 12 }),
            (
                "session_end 12 PEER_LOST",
                Command::SessionEnd {
                    id: 12,
                    reason: EndReason::PeerLost,
                },
            ),
        ];
        for (line, want) in cases {
            let got = Command::parse(line).unwrap().unwrap();
            assert_eq!(got, want, "{line}");
            assert_eq!(Command::parse(&got.to_string()).unwrap(), Some(got));
        }
        assert_eq!(Command::parse("").unwrap(), None);
        assert_eq!(Command::parse("   ").unwrap(), None);
    }

    #[test]
    fn command_rejections_have_stable_codes() {
        let code = |line: &str| Command::parse(line).unwrap_err().code;
        assert_eq!(code("FROB"), ErrorCode::UnknownCommand);
        assert_eq!(code("\u{0}\u{1}"), ErrorCode::UnknownCommand);
        assert_eq!(code("INFO"), ErrorCode::BadRequest);
        assert_eq!(code("INFO a b"), ErrorCode::BadRequest);
        assert_eq!(code("LIST everyone"), ErrorCode::BadRequest);
        assert_eq!(code("QUIT now"), ErrorCode::BadRequest);
        assert_eq!(code("CONNECT"), ErrorCode::BadRequest);
        assert_eq!(code("SESSION_OPEN x"), ErrorCode::BadRequest);
        assert_eq!(code("SESSION_OPEN -1"), ErrorCode::BadRequest);
        assert_eq!(code("SESSION_END 1 exploded"), ErrorCode::BadRequest);
        assert_eq!(code("SESSION_END 1"), ErrorCode::BadRequest);
        assert_eq!(code("KEY"), ErrorCode::BadRequest);
        assert_eq!(code("SEND bob"), ErrorCode::BadRequest);
        assert_eq!(code("SEND bob xyz"), ErrorCode::BadRequest);
        assert_eq!(
            code(&format!("SEND bob {}", "00".repeat(5000))),
            ErrorCode::MessageTooLarge
        );
        assert_eq!(code("KEY xyz"), ErrorCode::BadRequest);
        assert_eq!(
            code(&format!("KEY {}", "g".repeat(64))),
            ErrorCode::BadRequest
        );
        assert!(
            Command::parse("KEY xyz")
                .unwrap_err()
                .message
                .contains("usage: KEY")
        );
        let long = "X".repeat(1000);
        assert!(Command::parse(&long).unwrap_err().message.len() < 100);
    }

    #[test]
    fn end_reasons_round_trip() {
        for &reason in EndReason::ALL {
            assert_eq!(EndReason::from_word(reason.word()), Some(reason));
        }
        assert_eq!(EndReason::from_word("nope"), None);
    }

    #[test]
    fn help_lines_come_from_the_command_table() {
        let lines: Vec<String> = COMMANDS.iter().map(CommandSpec::help_line).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("INFO <username> (also GET_CLIENT_INFO)"))
        );
        assert_eq!(lines.len(), COMMANDS.len());
    }

    #[test]
    fn login_answers() {
        for yes in ["y", "Y", "yes", " YES "] {
            assert_eq!(NewAnswer::parse(yes).unwrap(), NewAnswer::Yes);
        }
        for no in ["n", "NO"] {
            assert_eq!(NewAnswer::parse(no).unwrap(), NewAnswer::No);
        }
        assert_eq!(NewAnswer::parse("quit").unwrap(), NewAnswer::Quit);
        assert_eq!(
            NewAnswer::parse("maybe").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            NewAnswer::parse("LIST").unwrap_err().code,
            ErrorCode::LoginRequired
        );
        assert_eq!(
            NewAnswer::parse("info bob").unwrap_err().code,
            ErrorCode::LoginRequired
        );
    }

    #[test]
    fn username_rules() {
        for good in ["abc", "Alice", "a_b-c", "z23456789012345678901234567890AB"] {
            assert!(Username::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1abc",
            "_abc",
            "a b",
            "al:ce",
            "ålice",
            "a\u{0}bc",
            "z234567890123456789012345678901AB",
        ] {
            assert_eq!(
                Username::parse(bad).unwrap_err().code,
                ErrorCode::BadUsername,
                "{bad}"
            );
        }
        assert_eq!(Username::parse("AlIce").unwrap().key(), "alice");
    }

    #[test]
    fn password_rules_and_hidden_debug() {
        assert!(Password::parse("four").is_ok());
        assert!(Password::parse("with spaces ok").is_ok());
        assert!(Password::parse(&"x".repeat(72)).is_ok());
        for bad in ["abc", "tab\there", "nul\u{0}x"] {
            assert_eq!(
                Password::parse(bad).unwrap_err().code,
                ErrorCode::BadPassword
            );
        }
        assert_eq!(
            Password::parse(&"x".repeat(73)).unwrap_err().code,
            ErrorCode::BadPassword
        );
        let secret = Password::parse("hunter22").unwrap();
        assert!(!format!("{secret:?}").contains("hunter22"));
        assert_eq!(secret.expose(), "hunter22");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("40001").unwrap(), 40001);
        assert_eq!(parse_port(" 1 ").unwrap(), 1);
        for bad in ["0", "65536", "-1", "x", ""] {
            assert_eq!(parse_port(bad).unwrap_err().code, ErrorCode::BadPort);
        }
    }
}
