//! Client→server commands after login (protocol.md §4): every command as a typed value
//! that both parses and formats itself. The command table (`COMMANDS`) that checks
//! argument counts in one place is in `table`, the session-end reasons in `end_reason`.
//!
//! Owns the text of the commands; it must not touch sockets or decide what a command
//! does (see `server::commands`). Replies and events are in `server_msg`.

mod end_reason;
mod table;

use std::fmt;

use crate::protocol::ParseError;
use crate::protocol::codes::ErrorCode;
use crate::protocol::file_name::safe_file_name;
use crate::protocol::limits::MAX_SHARED_FILES;
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::*;

pub use end_reason::EndReason;
pub use table::{COMMANDS, CommandSpec};

/// A command a logged-in client sends (protocol.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELP`
    Help,
    /// `LIST [offset]` (alias `GET_CLIENT_LIST`): one page of the users online.
    List { offset: usize },
    /// `TOKEN`: a token to log in again later without the password.
    Token,
    /// `KEY <64 hex>`: register (or replace) my long-term X25519 identity public key.
    Key { key: [u8; 32] },
    /// `WHOIS <id-or-name>`: any account's id, name, identity key and presence.
    Whois { user: UserRef },
    /// `SEND <id-or-name> <sealed>`: pass a message sealed to the recipient's identity
    /// key on (or keep it until the recipient logs in).
    Send { to: UserRef, sealed: Vec<u8> },
    /// `OFFER <id-or-name> <offer>|- <size> <name>`: offer a file through the server (the
    /// recipient may be offline); `offer` is the sender's own offer number, or `-` (None)
    /// for the server to number it with a transfer id of its own.
    Offer {
        /// The recipient.
        to: UserRef,
        /// The sender's offer number (as in the peer `OFFER`); None: the server numbers it.
        offer: Option<u64>,
        /// Bytes of the file.
        size: u64,
        /// Its name (the file name rule).
        name: String,
    },
    /// `OFFER_ANSWER <user> <offer> ok|no`: answer `user`'s offer through the server.
    OfferAnswer {
        /// Who offered.
        to: String,
        /// Their offer number.
        offer: u64,
        /// Accepted (`ok`) or declined (`no`).
        accept: bool,
    },
    /// `INFO <username>` (alias `GET_CLIENT_INFO`)
    Info { user: String },
    /// `PING`
    Ping,
    /// `QUIT` (alias `DISCONNECT_CLIENT`)
    Quit,
    /// `CONNECT <username>`: ask for a chat session with an online user.
    Connect { user: String },
    /// `RELAY SESSION|TRANSFER <id>`: the requester could not reach the target of its
    /// session or transfer `id` directly; ask for a relayed circuit (protocol.md §13).
    Relay { transfer: bool, id: u64 },
    /// `HINTS <ip>[,<ip>]...|-`: this client's local interface addresses, which the
    /// server gives requesters (with the announced port) as address hints (protocol.md §13).
    Hints { ips: Vec<std::net::IpAddr> },
    /// `REVERSE SESSION|TRANSFER <id>`: the requester could not reach the target of `id`;
    /// ask the target to dial back (protocol.md §13).
    Reverse { transfer: bool, id: u64 },
    /// `DIAL_FAILED SESSION|TRANSFER <id>`: the target of `id` could not dial its
    /// requester back (`EVENT DIAL`); the requester is told, to go to the relay at once.
    DialFailed { transfer: bool, id: u64 },
    /// `SESSION_OPEN <id>`: the target reports that it accepted session `id`.
    SessionOpen { id: u64 },
    /// `SESSION_END <id> <reason>`: a participant reports that session `id` ended.
    SessionEnd { id: u64, reason: EndReason },
    /// `TRANSFER <username>`: ask for a ticket to connect to a user for a file transfer.
    Transfer { user: String },
    /// `TRANSFER <username> <offer>`: the ticket for the server-numbered offer `offer`
    /// that `username` accepted (protocol.md §4d); the transfer keeps that number.
    TransferOffer { user: String, offer: u64 },
    /// `TRANSFER_END <id> <result> <size> <ms> <hash|-> <role|-> <moved> <resumed> <name>`:
    /// log a transfer's end as this side saw it.
    TransferEnd {
        /// The server's transfer id.
        id: u64,
        /// How it ended.
        result: TransferResult,
        /// Bytes of the file.
        size: u64,
        /// How long it took, in milliseconds.
        ms: u64,
        /// The peerchat file hash (hex), if verified.
        hash: Option<String>,
        /// This side's role, which also says push or fetch; `None` when a connection
        /// was refused before its purpose was known.
        role: Option<TransferRole>,
        /// Bytes that actually crossed the link in this attempt.
        moved: u64,
        /// Bytes kept from an earlier attempt (0: not resumed).
        resumed_from: u64,
        /// The file's name.
        name: String,
    },
    /// `SHARE <n>` followed by `n` lines `<size> <name>`: replace my shared files.
    Share { count: usize },
    /// `FILES [username] [offset]`: one page of everyone's shared files, or one user's,
    /// starting at `offset`.
    Files { user: Option<String>, offset: usize },
    /// `SEARCH <text>`: shared files whose name contains `text`, any case.
    Search { text: String },
}

impl Command {
    /// Parses a command line; an empty line is `Ok(None)`.
    pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
        let (word, rest) = split_word(line.trim_start_matches(' '));
        if word.is_empty() {
            return Ok(None);
        }
        let spec = CommandSpec::find(word).ok_or_else(|| ParseError {
            code: ErrorCode::UnknownCommand,
            message: format!("unknown command {}; try HELP", shorten(word)),
        })?;
        let usage = || ParseError::bad(format!("usage: {}", spec.usage()));
        let args = spec.split_args(rest).ok_or_else(usage)?;
        let number = |text: &str| text.parse::<u64>().map_err(|_| usage());
        let command = match (spec.names[0], args.as_slice()) {
            ("HELP", []) => Command::Help,
            ("LIST", []) => Command::List { offset: 0 },
            ("LIST", [offset]) => Command::List {
                offset: offset.parse().map_err(|_| usage())?,
            },
            ("TOKEN", []) => Command::Token,
            ("WHOIS", [user]) => Command::Whois {
                user: UserRef::parse(user),
            },
            ("SEND", [to, sealed]) => Command::Send {
                to: UserRef::parse(to),
                sealed: crate::protocol::mail_msg::parse_sealed(sealed)?,
            },
            ("OFFER", [to, offer, size, name]) => Command::Offer {
                to: UserRef::parse(to),
                offer: match *offer {
                    "-" => None,
                    n => Some(number(n)?),
                },
                size: number(size)?,
                name: safe_file_name(name).map_err(ParseError::bad)?.to_string(),
            },
            ("OFFER_ANSWER", [to, offer, answer @ ("ok" | "no")]) => Command::OfferAnswer {
                to: to.to_string(),
                offer: number(offer)?,
                accept: *answer == "ok",
            },
            ("KEY", [key]) => Command::Key {
                key: crate::protocol::identity_key::parse_key_hex(key).ok_or_else(|| {
                    ParseError::bad(format!("usage: {} (64 hex digits)", spec.usage()))
                })?,
            },
            ("INFO", [user]) => Command::Info {
                user: user.to_string(),
            },
            ("PING", []) => Command::Ping,
            ("QUIT", []) => Command::Quit,
            ("CONNECT", [user]) => Command::Connect {
                user: user.to_string(),
            },
            ("SESSION_OPEN", [id]) => Command::SessionOpen { id: parse_id(id)? },
            ("RELAY", [what @ ("SESSION" | "TRANSFER"), id]) => Command::Relay {
                transfer: *what == "TRANSFER",
                id: parse_id(id)?,
            },
            ("HINTS", [ips]) => Command::Hints {
                ips: crate::protocol::hints::parse_ips(ips)?,
            },
            ("REVERSE", [what @ ("SESSION" | "TRANSFER"), id]) => Command::Reverse {
                transfer: *what == "TRANSFER",
                id: parse_id(id)?,
            },
            ("DIAL_FAILED", [what @ ("SESSION" | "TRANSFER"), id]) => Command::DialFailed {
                transfer: *what == "TRANSFER",
                id: parse_id(id)?,
            },
            ("SESSION_END", [id, reason]) => Command::SessionEnd {
                id: parse_id(id)?,
                reason: EndReason::from_word(reason).ok_or_else(|| {
                    ParseError::bad(format!("unknown reason {}", shorten(reason)))
                })?,
            },
            ("TRANSFER", [user]) => Command::Transfer {
                user: user.to_string(),
            },
            ("TRANSFER", [user, offer]) => Command::TransferOffer {
                user: user.to_string(),
                offer: parse_id(offer)?,
            },
            ("TRANSFER_END", [id, result, size, ms, hash, role, moved, resumed, name]) => {
                Command::TransferEnd {
                    id: parse_id(id)?,
                    result: TransferResult::from_word(result).ok_or_else(|| {
                        ParseError::bad(format!("unknown result {}", shorten(result)))
                    })?,
                    size: number(size)?,
                    ms: number(ms)?,
                    hash: match *hash {
                        "-" => None,
                        hex if blake3::Hash::from_hex(hex).is_ok() => {
                            Some(hex.to_ascii_lowercase())
                        }
                        _ => return Err(ParseError::bad("the hash is - or 64 hex digits")),
                    },
                    role: match *role {
                        "-" => None,
                        word => Some(TransferRole::from_word(word).ok_or_else(|| {
                            ParseError::bad(format!("unknown role {}", shorten(word)))
                        })?),
                    },
                    moved: number(moved)?,
                    resumed_from: number(resumed)?,
                    name: name.to_string(),
                }
            }
            ("SHARE", [count]) => {
                let count = number(count)?;
                if count > MAX_SHARED_FILES as u64 {
                    return Err(ParseError {
                        code: ErrorCode::TooManyFiles,
                        message: format!(
                            "at most {MAX_SHARED_FILES} shared files; closing (the lines that follow are not read)"
                        ),
                    });
                }
                Command::Share {
                    count: count as usize,
                }
            }
            ("FILES", []) => Command::Files {
                user: None,
                offset: 0,
            },
            // A username starts with a letter, so a lone number is an offset.
            ("FILES", [first]) => match first.parse::<usize>() {
                Ok(offset) => Command::Files { user: None, offset },
                Err(_) => Command::Files {
                    user: Some(first.to_string()),
                    offset: 0,
                },
            },
            ("FILES", [user, offset]) => Command::Files {
                user: Some(user.to_string()),
                offset: offset.parse().map_err(|_| usage())?,
            },
            ("SEARCH", [text]) => Command::Search {
                text: text.to_string(),
            },
            _ => return Err(usage()),
        };
        Ok(Some(command))
    }

    /// True if a refusal of `line` must close the connection: a `SHARE` whose count is
    /// refused, since the server cannot know where the lines that follow it end.
    pub fn refusal_closes(line: &str) -> bool {
        line.split(' ')
            .find(|w| !w.is_empty())
            .is_some_and(|w| w.eq_ignore_ascii_case("SHARE"))
    }

    /// True if `line` starts with a command name: used to answer `LOGIN_REQUIRED`.
    pub fn looks_like_command(line: &str) -> bool {
        line.split(' ')
            .find(|w| !w.is_empty())
            .is_some_and(|w| CommandSpec::find(w).is_some())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Help => write!(f, "HELP"),
            Command::List { offset: 0 } => write!(f, "LIST"),
            Command::List { offset } => write!(f, "LIST {offset}"),
            Command::Token => write!(f, "TOKEN"),
            Command::Key { key } => {
                write!(f, "KEY {}", crate::protocol::identity_key::key_hex(key))
            }
            Command::Whois { user } => write!(f, "WHOIS {user}"),
            Command::Offer {
                to,
                offer,
                size,
                name,
            } => match offer {
                Some(offer) => write!(f, "OFFER {to} {offer} {size} {}", one_line(name)),
                None => write!(f, "OFFER {to} - {size} {}", one_line(name)),
            },
            Command::OfferAnswer { to, offer, accept } => {
                let answer = if *accept { "ok" } else { "no" };
                write!(f, "OFFER_ANSWER {to} {offer} {answer}")
            }
            Command::Send { to, sealed } => {
                write!(
                    f,
                    "SEND {to} {}",
                    crate::protocol::mail_msg::sealed_hex(sealed)
                )
            }
            Command::Info { user } => write!(f, "INFO {user}"),
            Command::Ping => write!(f, "PING"),
            Command::Quit => write!(f, "QUIT"),
            Command::Connect { user } => write!(f, "CONNECT {user}"),
            Command::SessionOpen { id } => write!(f, "SESSION_OPEN {id}"),
            Command::Relay { transfer, id } => {
                let what = if *transfer { "TRANSFER" } else { "SESSION" };
                write!(f, "RELAY {what} {id}")
            }
            Command::Hints { ips } => write!(f, "HINTS {}", crate::protocol::hints::ips_text(ips)),
            Command::DialFailed { transfer, id } => {
                let what = if *transfer { "TRANSFER" } else { "SESSION" };
                write!(f, "DIAL_FAILED {what} {id}")
            }
            Command::Reverse { transfer, id } => {
                let what = if *transfer { "TRANSFER" } else { "SESSION" };
                write!(f, "REVERSE {what} {id}")
            }
            Command::SessionEnd { id, reason } => write!(f, "SESSION_END {id} {}", reason.word()),
            Command::Transfer { user } => write!(f, "TRANSFER {user}"),
            Command::TransferOffer { user, offer } => write!(f, "TRANSFER {user} {offer}"),
            Command::TransferEnd {
                id,
                result,
                size,
                ms,
                hash,
                role,
                moved,
                resumed_from,
                name,
            } => write!(
                f,
                "TRANSFER_END {id} {} {size} {ms} {} {} {moved} {resumed_from} {}",
                result.word(),
                hash.as_deref().unwrap_or("-"),
                role.map_or("-", TransferRole::word),
                one_line(name)
            ),
            Command::Share { count } => write!(f, "SHARE {count}"),
            Command::Files { user, offset } => {
                write!(f, "FILES")?;
                if let Some(user) = user {
                    write!(f, " {user}")?;
                }
                if *offset > 0 {
                    write!(f, " {offset}")?;
                }
                Ok(())
            }
            Command::Search { text } => write!(f, "SEARCH {}", one_line(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
