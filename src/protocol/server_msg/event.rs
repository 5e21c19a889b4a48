//! The words after `EVENT`: everything the server pushes unasked (protocol.md §5),
//! parsed and formatted.
//!
//! Owns `Event` only; the `EVENT` dispatch is in `server_msg`'s `mod.rs`. It must not
//! touch sockets or decide what an event does.

use std::fmt;
use std::net::SocketAddr;

use super::super::file_name::safe_file_name;
use super::super::hints::Hints;
use super::super::identity_key::{KeyField, ShowKey, parse_key_field};
use super::super::mail_msg::{parse_sealed, sealed_hex};
use super::super::ticket::Ticket;
use super::ParseError;
use super::fields::{
    names, parse_addr, parse_id, parse_relay_token, parse_ticket, single_name, split_word,
};
use super::one_line;

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

pub(super) fn parse_event(rest: &str) -> Result<Event, ParseError> {
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

/// Writes an event's line: `EVENT ...` (the `Display` of `ServerMsg::Event`).
pub(super) fn write_event(f: &mut fmt::Formatter<'_>, event: &Event) -> fmt::Result {
    match event {
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
    }
}
