//! Client↔server messages: every line of protocol.md §2–§5 as a typed value that both
//! parses and formats itself.
//!
//! This module owns the message as a whole: the `ServerMsg` enum, its first-word
//! dispatch for parsing and formatting, framing of list bodies (`body_len`), `HELLO` and
//! `ASK`. The words after `OK` live in `reply`, after `EVENT` in `event`, list body lines
//! in `body`, transfer outcome words in `transfer_end`, small field parsers in `fields`.
//! The commands a client sends are in `protocol::command` and its login answers in
//! `protocol::login_msg` (both re-exported here, so callers name one module). It must not
//! touch sockets (see `line`) or decide what a message does (see `server::commands`).

mod body;
mod event;
mod fields;
mod reply;
mod transfer_end;

use std::fmt;

use super::codes::ErrorCode;
use super::limits::MAX_LIST_LINES;
use super::{ParseError, parse_err, write_err};

pub use body::{FileEntry, ListedUser, SharedFile};
pub use event::Event;
pub(super) use fields::{parse_id, shorten, split_word};
pub use reply::Reply;
pub use transfer_end::{TransferResult, TransferRole};

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
            "EVENT" => event::parse_event(rest).map(ServerMsg::Event),
            "OK" => reply::parse_reply(rest, body).map(ServerMsg::Ok),
            _ => Err(ParseError::bad(
                "a server line starts with HELLO, ASK, OK, ERR or EVENT",
            )),
        }
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
            ServerMsg::Event(event) => event::write_event(f, event),
            ServerMsg::Ok(reply) => reply::write_reply(f, reply),
        }
    }
}

pub use super::command::{COMMANDS, Command, CommandSpec, EndReason};
pub use super::login_msg::{
    NewAnswer, Password, PortAnswer, Username, format_resume, parse_port, parse_resume,
};

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::session_token::SessionToken;
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
}
