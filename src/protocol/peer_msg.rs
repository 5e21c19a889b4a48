//! Peer↔peer messages: every line of protocol.md's peer protocol as a typed value that
//! both parses and formats itself.
//!
//! Owns the text of the peer protocol; it must not touch sockets or decide what a
//! message does (see `client::peer_link` and `client::sessions`).

use std::fmt;

use super::ParseError;
use super::codes::ErrorCode;
use super::server_msg::one_line;
use super::ticket::Ticket;

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
    /// `ACCEPT`: the person accepted; chat may start.
    Accept,
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
}

impl PeerMsg {
    /// The wire form: one line ending in `\n`.
    pub fn to_wire(&self) -> String {
        let mut out = self.to_string();
        out.push('\n');
        out
    }

    /// Parses one line.
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
            "ACCEPT" => bare(PeerMsg::Accept),
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
                let mut parts = rest.splitn(3, ' ');
                let number = parts.next().and_then(|n| n.parse::<u16>().ok());
                let name = parts.next().unwrap_or("");
                let code = number
                    .and_then(|n| ErrorCode::from_wire(n, name))
                    .ok_or_else(|| ParseError::bad("unknown error code"))?;
                Ok(PeerMsg::Err {
                    code,
                    message: parts.next().unwrap_or("").to_string(),
                })
            }
            _ => Err(ParseError {
                code: ErrorCode::UnknownCommand,
                message: "unknown peer message".into(),
            }),
        }
    }
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
            PeerMsg::Accept => write!(f, "ACCEPT"),
            PeerMsg::Decline { reason } => write!(f, "DECLINE {}", one_line(reason)),
            PeerMsg::Msg { at_ms, text } => write!(f, "MSG {at_ms} {}", one_line(text)),
            PeerMsg::Ping => write!(f, "PING"),
            PeerMsg::Pong => write!(f, "PONG"),
            PeerMsg::Close { reason } => write!(f, "CLOSE {}", one_line(reason)),
            PeerMsg::Err { code, message } => {
                write!(
                    f,
                    "ERR {} {} {}",
                    code.number(),
                    code.name(),
                    one_line(message)
                )
            }
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
            PeerMsg::Accept,
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
        assert_eq!(msg.to_wire(), "MSG 1 hi CLOSE bye\n");
    }
}
