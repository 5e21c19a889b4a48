//! Peer↔peer messages: every line of protocol.md's peer protocol as a typed value that
//! both parses and formats itself.
//!
//! Owns the text of the peer protocol; it must not touch sockets or decide what a
//! message does (see `client::peer_link` and `client::sessions`).

use std::fmt;

use super::codes::ErrorCode;
use super::server_msg::one_line;
use super::ticket::Ticket;
use super::{ParseError, parse_err, write_err};

/// Peer protocol version sent in `HELLO`.
pub const PEER_VERSION: u32 = 1;

/// One line between two peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// `HELLO peerchat <version> <from> <session> <ticket>`: the first line of the
    /// connecting side.
    Hello {
        /// Protocol version.
        version: u32,
        /// The connecting user, as the server named them.
        from: String,
        /// The server's session id.
        session: u64,
        /// The one-time ticket the server issued for this session.
        ticket: Ticket,
    },
    /// `ACCEPT <mac>`: the person accepted; chat may start. `<mac>` (64 hex digits) is
    /// `Ticket::accept_mac`: it proves the answer comes from the ticket's holder.
    Accept { mac: String },
    /// `DECLINE <reason>`: the person declined, or did not answer in time.
    Decline { reason: String },
    /// `MSG <unix-ms> <text>`: one chat line, stamped by the sender.
    Msg { at_ms: u64, text: String },
    /// `PING`: keep-alive; answered with `PONG`.
    Ping,
    /// `PONG`
    Pong,
    /// `CLOSE <reason>`: the session ends; the sender closes the connection next.
    Close { reason: String },
    /// `ERR <code> <NAME> <message>`: the last line before the sender closes.
    Err { code: ErrorCode, message: String },
    /// `OFFER <id> <size> <name>` (chat link): I would like to send you this file.
    Offer { id: u64, size: u64, name: String },
    /// `OFFER_FOLDER <id> <files> <size> <name>` (chat link): I would like to send you
    /// folder `name`, `files` files and `size` bytes in all; once accepted, its files
    /// follow as `OFFER_IN`.
    OfferFolder {
        id: u64,
        files: u64,
        size: u64,
        name: String,
    },
    /// `OFFER_IN <folder> <id> <size> <path>` (chat link): one file of accepted folder
    /// offer `folder`, at `path` inside it (`/` between safe names); answered like `OFFER`.
    OfferIn {
        folder: u64,
        id: u64,
        size: u64,
        path: String,
    },
    /// `OFFER_OK <id>` (chat link): send it.
    OfferOk { id: u64 },
    /// `OFFER_NO <id> <reason>` (chat link): do not.
    OfferNo { id: u64, reason: String },
    /// `CANCEL <id>` (chat link): stop transfer `id` (the offer id of a push).
    Cancel { id: u64 },
    /// `PUSH peerchat <version> <from> <transfer> <ticket> <offer>`: first line of a data
    /// connection that delivers offer `offer`.
    Push {
        /// Protocol version.
        version: u32,
        /// The sending user.
        from: String,
        /// The server's transfer id.
        transfer: u64,
        /// The ticket the server issued for it.
        ticket: Ticket,
        /// The offer (accepted over the chat link) this connection delivers.
        offer: u64,
    },
    /// `FETCH peerchat <version> <from> <transfer> <ticket> <name>`: first line of a data
    /// connection that asks for a file of the listener's shared folder.
    Fetch {
        /// Protocol version.
        version: u32,
        /// The fetching user.
        from: String,
        /// The server's transfer id.
        transfer: u64,
        /// The ticket the server issued for it.
        ticket: Ticket,
        /// The shared file's name.
        name: String,
    },
}

impl PeerMsg {
    /// The wire form: one line ending in `\n`.
    pub fn to_wire(&self) -> String {
        let mut out = self.to_string();
        out.push('\n');
        out
    }

    /// Parses the first line of an incoming peer connection (protocol.md §10): it must
    /// be `HELLO`, `PUSH` or `FETCH` of this version. Any other first line (an empty one,
    /// another message, an unknown or lower-case word) is `433 OUT_OF_ORDER`; a wrong
    /// shape or another version `400 BAD_REQUEST`; a malformed ticket `421 BAD_TICKET`.
    pub fn parse_first(line: &str) -> Result<PeerMsg, ParseError> {
        let word = line.split(' ').next().unwrap_or("");
        if !matches!(word, "HELLO" | "PUSH" | "FETCH") {
            return Err(ParseError {
                code: ErrorCode::OutOfOrder,
                message: "the first line must be HELLO, PUSH or FETCH".into(),
            });
        }
        let msg = PeerMsg::parse(line)?;
        match &msg {
            PeerMsg::Hello { version, .. }
            | PeerMsg::Push { version, .. }
            | PeerMsg::Fetch { version, .. }
                if *version != PEER_VERSION =>
            {
                Err(ParseError::bad("unsupported peer protocol version"))
            }
            _ => Ok(msg),
        }
    }

    /// Parses one line. Words are case-sensitive (peers are programs); an empty line or
    /// an unknown word is `405 UNKNOWN_COMMAND`, a known word with bad arguments `400`.
    pub fn parse(line: &str) -> Result<PeerMsg, ParseError> {
        let (word, rest) = match line.split_once(' ') {
            Some((word, rest)) => (word, rest),
            None => (line, ""),
        };
        let bare = |msg: PeerMsg| {
            if rest.is_empty() {
                Ok(msg)
            } else {
                Err(ParseError::bad(format!("{word} takes no arguments")))
            }
        };
        match word {
            "HELLO" => parse_hello(rest),
            "PUSH" => parse_push(rest),
            "FETCH" => parse_fetch(rest),
            "OFFER" => {
                let mut parts = rest.splitn(3, ' ');
                let usage = || ParseError::bad("usage: OFFER <id> <size> <name>");
                let id = parts
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(usage)?;
                let size = parts
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(usage)?;
                let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(usage)?;
                Ok(PeerMsg::Offer {
                    id,
                    size,
                    name: name.to_string(),
                })
            }
            "OFFER_FOLDER" => {
                let usage = || ParseError::bad("usage: OFFER_FOLDER <id> <files> <size> <name>");
                let (nums, name) = split_numbers::<3>(rest).ok_or_else(usage)?;
                Ok(PeerMsg::OfferFolder {
                    id: nums[0],
                    files: nums[1],
                    size: nums[2],
                    name: name.to_string(),
                })
            }
            "OFFER_IN" => {
                let usage = || ParseError::bad("usage: OFFER_IN <folder> <id> <size> <path>");
                let (nums, path) = split_numbers::<3>(rest).ok_or_else(usage)?;
                Ok(PeerMsg::OfferIn {
                    folder: nums[0],
                    id: nums[1],
                    size: nums[2],
                    path: path.to_string(),
                })
            }
            "OFFER_OK" => Ok(PeerMsg::OfferOk {
                id: parse_num(rest, "OFFER_OK <id>")?,
            }),
            "CANCEL" => Ok(PeerMsg::Cancel {
                id: parse_num(rest, "CANCEL <id>")?,
            }),
            "OFFER_NO" => {
                let (id, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                Ok(PeerMsg::OfferNo {
                    id: parse_num(id, "OFFER_NO <id> <reason>")?,
                    reason: reason.to_string(),
                })
            }
            "ACCEPT" if rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(PeerMsg::Accept {
                    mac: rest.to_ascii_lowercase(),
                })
            }
            "ACCEPT" => Err(ParseError::bad("usage: ACCEPT <mac>")),
            "PING" => bare(PeerMsg::Ping),
            "PONG" => bare(PeerMsg::Pong),
            "DECLINE" => Ok(PeerMsg::Decline {
                reason: rest.to_string(),
            }),
            "CLOSE" => Ok(PeerMsg::Close {
                reason: rest.to_string(),
            }),
            "MSG" => {
                let (stamp, text) = rest
                    .split_once(' ')
                    .ok_or_else(|| ParseError::bad("usage: MSG <unix-ms> <text>"))?;
                let at_ms = stamp
                    .parse::<u64>()
                    .map_err(|_| ParseError::bad("usage: MSG <unix-ms> <text>"))?;
                if text.is_empty() {
                    return Err(ParseError::bad("empty MSG"));
                }
                Ok(PeerMsg::Msg {
                    at_ms,
                    text: text.to_string(),
                })
            }
            "ERR" => {
                let (code, message) = parse_err(rest)?;
                Ok(PeerMsg::Err { code, message })
            }
            _ => Err(ParseError {
                code: ErrorCode::UnknownCommand,
                message: "unknown peer message".into(),
            }),
        }
    }
}

/// `N` numbers then the rest of the line (non-empty, spaces kept), as in
/// `OFFER_FOLDER <id> <files> <size> <name>`.
fn split_numbers<const N: usize>(rest: &str) -> Option<([u64; N], &str)> {
    let mut nums = [0u64; N];
    let mut left = rest;
    for num in &mut nums {
        let (word, after) = left.split_once(' ')?;
        *num = word.parse().ok()?;
        left = after;
    }
    (!left.is_empty()).then_some((nums, left))
}

fn parse_num(text: &str, usage: &str) -> Result<u64, ParseError> {
    text.parse()
        .map_err(|_| ParseError::bad(format!("usage: {usage}")))
}

fn bad_ticket() -> ParseError {
    ParseError {
        code: ErrorCode::BadTicket,
        message: "malformed ticket".into(),
    }
}

fn parse_push(rest: &str) -> Result<PeerMsg, ParseError> {
    let usage =
        || ParseError::bad("usage: PUSH peerchat <version> <from> <transfer> <ticket> <offer>");
    let words: Vec<&str> = rest.split(' ').collect();
    let ["peerchat", version, from, transfer, ticket, offer] = words.as_slice() else {
        return Err(usage());
    };
    Ok(PeerMsg::Push {
        version: version.parse().map_err(|_| usage())?,
        from: from.to_string(),
        transfer: transfer.parse().map_err(|_| usage())?,
        ticket: Ticket::parse(ticket).ok_or_else(bad_ticket)?,
        offer: offer.parse().map_err(|_| usage())?,
    })
}

fn parse_fetch(rest: &str) -> Result<PeerMsg, ParseError> {
    let usage =
        || ParseError::bad("usage: FETCH peerchat <version> <from> <transfer> <ticket> <name>");
    let words: Vec<&str> = rest.splitn(6, ' ').collect();
    let ["peerchat", version, from, transfer, ticket, name] = words.as_slice() else {
        return Err(usage());
    };
    if name.is_empty() {
        return Err(usage());
    }
    Ok(PeerMsg::Fetch {
        version: version.parse().map_err(|_| usage())?,
        from: from.to_string(),
        transfer: transfer.parse().map_err(|_| usage())?,
        ticket: Ticket::parse(ticket).ok_or_else(bad_ticket)?,
        name: name.to_string(),
    })
}

fn parse_hello(rest: &str) -> Result<PeerMsg, ParseError> {
    let usage = || ParseError::bad("usage: HELLO peerchat <version> <from> <session> <ticket>");
    let words: Vec<&str> = rest.split(' ').collect();
    let ["peerchat", version, from, session, ticket] = words.as_slice() else {
        return Err(usage());
    };
    Ok(PeerMsg::Hello {
        version: version.parse().map_err(|_| usage())?,
        from: from.to_string(),
        session: session.parse().map_err(|_| usage())?,
        ticket: Ticket::parse(ticket).ok_or_else(|| ParseError {
            code: ErrorCode::BadTicket,
            message: "malformed ticket".into(),
        })?,
    })
}

impl fmt::Display for PeerMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMsg::Hello {
                version,
                from,
                session,
                ticket,
            } => write!(f, "HELLO peerchat {version} {from} {session} {ticket}"),
            PeerMsg::Accept { mac } => write!(f, "ACCEPT {mac}"),
            PeerMsg::Decline { reason } => write!(f, "DECLINE {}", one_line(reason)),
            PeerMsg::Msg { at_ms, text } => write!(f, "MSG {at_ms} {}", one_line(text)),
            PeerMsg::Ping => write!(f, "PING"),
            PeerMsg::Pong => write!(f, "PONG"),
            PeerMsg::Close { reason } => write!(f, "CLOSE {}", one_line(reason)),
            PeerMsg::Err { code, message } => write_err(f, *code, message),
            PeerMsg::Offer { id, size, name } => write!(f, "OFFER {id} {size} {}", one_line(name)),
            PeerMsg::OfferFolder {
                id,
                files,
                size,
                name,
            } => write!(f, "OFFER_FOLDER {id} {files} {size} {}", one_line(name)),
            PeerMsg::OfferIn {
                folder,
                id,
                size,
                path,
            } => write!(f, "OFFER_IN {folder} {id} {size} {}", one_line(path)),
            PeerMsg::OfferOk { id } => write!(f, "OFFER_OK {id}"),
            PeerMsg::OfferNo { id, reason } => write!(f, "OFFER_NO {id} {}", one_line(reason)),
            PeerMsg::Cancel { id } => write!(f, "CANCEL {id}"),
            PeerMsg::Push {
                version,
                from,
                transfer,
                ticket,
                offer,
            } => write!(
                f,
                "PUSH peerchat {version} {from} {transfer} {ticket} {offer}"
            ),
            PeerMsg::Fetch {
                version,
                from,
                transfer,
                ticket,
                name,
            } => write!(
                f,
                "FETCH peerchat {version} {from} {transfer} {ticket} {}",
                one_line(name)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_message_round_trips() {
        let ticket = Ticket::generate().unwrap();
        for msg in [
            PeerMsg::Hello {
                version: PEER_VERSION,
                from: "alice".into(),
                session: 42,
                ticket,
            },
            PeerMsg::Accept {
                mac: "ab".repeat(32),
            },
            PeerMsg::Decline {
                reason: "declined".into(),
            },
            PeerMsg::Msg {
                at_ms: 1_700_000_000_000,
                text: "hello  there, ünïcode ✓".into(),
            },
            PeerMsg::Ping,
            PeerMsg::Pong,
            PeerMsg::Close {
                reason: "closed".into(),
            },
            PeerMsg::Err {
                code: ErrorCode::BadTicket,
                message: "no such ticket".into(),
            },
        ] {
            let wire = msg.to_wire();
            assert_eq!(wire.matches('\n').count(), 1);
            assert_eq!(
                PeerMsg::parse(wire.trim_end_matches('\n')).unwrap(),
                msg,
                "{wire}"
            );
        }
    }

    #[test]
    fn malformed_peer_lines_are_rejected() {
        for line in [
            "",
            "hello",
            "HELLO",
            "HELLO peerchat 1 alice 5",
            "HELLO other 1 alice 5 00000000000000000000000000000000",
            "HELLO peerchat x alice 5 00000000000000000000000000000000",
            "HELLO peerchat 1 alice -5 00000000000000000000000000000000",
            "ACCEPT now",
            "ACCEPT",
            "PING x",
            "MSG",
            "MSG 12",
            "MSG 12 ",
            "MSG abc hi",
            "ERR 999 NOPE x",
            "FROB",
        ] {
            assert!(PeerMsg::parse(line).is_err(), "accepted {line:?}");
        }
        let bad_ticket = PeerMsg::parse("HELLO peerchat 1 alice 5 zz").unwrap_err();
        assert_eq!(bad_ticket.code, ErrorCode::BadTicket);
    }

    #[test]
    fn chat_text_cannot_inject_lines() {
        let msg = PeerMsg::Msg {
            at_ms: 1,
            text: "hi\nCLOSE bye".into(),
        };
        assert_eq!(msg.to_wire(), "MSG 1 hi\u{FFFD}CLOSE bye\n");
    }

    #[test]
    fn transfer_messages_round_trip_and_reject_garbage() {
        for msg in [
            PeerMsg::Offer {
                id: 3,
                size: 0,
                name: "a file with spaces ü.txt".into(),
            },
            PeerMsg::OfferOk { id: 3 },
            PeerMsg::OfferFolder {
                id: 4,
                files: 3,
                size: 12,
                name: "my photos".into(),
            },
            PeerMsg::OfferIn {
                folder: 4,
                id: 5,
                size: 6,
                path: "2024/a b.jpg".into(),
            },
            PeerMsg::OfferNo {
                id: 3,
                reason: "declined".into(),
            },
            PeerMsg::Cancel { id: 3 },
            PeerMsg::Push {
                version: 1,
                from: "bob".into(),
                transfer: 9,
                ticket: Ticket::generate().unwrap(),
                offer: 3,
            },
            PeerMsg::Fetch {
                version: 1,
                from: "bob".into(),
                transfer: 9,
                ticket: Ticket::generate().unwrap(),
                name: "my file.bin".into(),
            },
        ] {
            let wire = msg.to_wire();
            assert_eq!(
                PeerMsg::parse(wire.trim_end_matches('\n')).unwrap(),
                msg,
                "{wire}"
            );
        }
        for line in [
            "OFFER",
            "OFFER 1 2",
            "OFFER x 2 n",
            "OFFER 1 -2 n",
            "OFFER_OK",
            "OFFER_OK x",
            "OFFER_FOLDER 1 2 3",
            "OFFER_FOLDER 1 x 3 n",
            "OFFER_IN 1 2 3",
            "OFFER_IN 1 2 -3 a/b",
            "CANCEL",
            "OFFER_NO x y",
            "PUSH peerchat 1 a 1 00000000000000000000000000000000",
            "FETCH peerchat 1 a 1 00000000000000000000000000000000",
            "FETCH peerchat 1 a 1 00000000000000000000000000000000 ",
        ] {
            assert!(PeerMsg::parse(line).is_err(), "accepted {line:?}");
        }
    }

    #[test]
    fn first_lines_have_one_rule() {
        let code = |line: &str| PeerMsg::parse_first(line).unwrap_err().code;
        for line in [
            "",
            " ",
            "ACCEPT",
            "MSG 1 hi",
            "hello peerchat 1 a 1 x",
            "FROB",
            "PING",
        ] {
            assert_eq!(code(line), ErrorCode::OutOfOrder, "{line:?}");
        }
        assert_eq!(code("HELLO peerchat 1 alice 12"), ErrorCode::BadRequest);
        assert_eq!(
            code("HELLO peerchat 2 alice 12 6f1c0d3e9a2b4c5d8e7f60718293a4b5"),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("HELLO peerchat 1 alice 12 nothex"),
            ErrorCode::BadTicket
        );
        assert!(
            PeerMsg::parse_first("HELLO peerchat 1 alice 12 6f1c0d3e9a2b4c5d8e7f60718293a4b5")
                .is_ok()
        );
        // After the handshake: case-sensitive, and empty lines are unknown.
        assert_eq!(
            PeerMsg::parse("").unwrap_err().code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            PeerMsg::parse("ping").unwrap_err().code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            PeerMsg::parse("PING x").unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn the_longest_chat_text_fills_exactly_one_line() {
        use crate::protocol::limits::{MAX_CHAT_TEXT, MAX_LINE};
        let msg = PeerMsg::Msg {
            at_ms: u64::MAX,
            text: "x".repeat(MAX_CHAT_TEXT),
        };
        assert_eq!(msg.to_string().len(), MAX_LINE);
        assert_eq!(PeerMsg::parse(&msg.to_string()).unwrap(), msg);
    }
}
