//! The words after `OK`: every successful reply of protocol.md §2–§5 (and the list
//! bodies that follow `OK HELP`/`LIST`/`FILES`/`SEARCH`), parsed and formatted.
//!
//! Owns `Reply` only; the `OK` dispatch and framing are in `server_msg`'s `mod.rs`. It
//! must not touch sockets or decide what a reply does.

use std::fmt;
use std::net::SocketAddr;

use super::super::hints::Hints;
use super::super::identity_key::{KeyField, ShowKey, parse_key_field};
use super::super::session_token::SessionToken;
use super::super::ticket::Ticket;
use super::ParseError;
use super::body::{FileEntry, ListedUser};
use super::fields::{
    parse_addr, parse_id, parse_relay_token, parse_ticket, single_name, split_word,
};
use super::one_line;

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

pub(super) fn parse_reply(rest: &str, body: &[String]) -> Result<Reply, ParseError> {
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
            let (files, total) = file_page("FILES", body, total)?;
            Reply::Files { files, total }
        }
        ("SEARCH", [count, total]) if count.parse::<usize>().ok() == Some(body.len()) => {
            let (files, total) = file_page("SEARCH", body, total)?;
            Reply::Search { files, total }
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

/// The body lines and `<total>` of `OK FILES` or `OK SEARCH` (`what`): one page of files.
fn file_page(
    what: &str,
    body: &[String],
    total: &str,
) -> Result<(Vec<FileEntry>, usize), ParseError> {
    let files = body
        .iter()
        .map(|l| FileEntry::parse(l))
        .collect::<Result<_, _>>()?;
    let total = total
        .parse()
        .map_err(|_| ParseError::bad(format!("malformed OK {what}")))?;
    Ok((files, total))
}

/// Writes a reply's lines: `OK ...` and its body (the `Display` of `ServerMsg::Ok`).
pub(super) fn write_reply(f: &mut fmt::Formatter<'_>, reply: &Reply) -> fmt::Result {
    match reply {
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
        // The same six fields after a different word.
        Reply::Session {
            id,
            user,
            addr,
            ticket,
            key,
            hints,
        }
        | Reply::Transfer {
            id,
            user,
            addr,
            ticket,
            key,
            hints,
        } => {
            let what = if matches!(reply, Reply::Transfer { .. }) {
                "TRANSFER"
            } else {
                "SESSION"
            };
            write!(
                f,
                "OK {what} {id} {user} {addr} {ticket} {} {hints}",
                ShowKey(key)
            )
        }
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
        Reply::Files { files, total } | Reply::Search { files, total } => {
            let what = if matches!(reply, Reply::Files { .. }) {
                "FILES"
            } else {
                "SEARCH"
            };
            write!(f, "OK {what} {} {total}", files.len())?;
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
    }
}
