//! What servers of one cluster tell each other over Redis: the keys and channels they
//! use, the value of an `online:<user>` key, and the pub/sub messages (docs/cluster.md).
//!
//! Owns the text of every key, value and message, both ways, with no I/O. Messages are
//! short text: a first line naming the kind, then the kind's lines. Servers trust each
//! other (they share the database), but a message that does not parse is dropped with a
//! log line, never half applied. It must not touch Redis or the registry.

use std::net::SocketAddr;

/// Prefix of every key and channel, so a Redis shared with other programs stays tidy.
const PREFIX: &str = "peerchat";

/// The key saying where user `key` (lower-case name) is logged in.
pub fn online_key(key: &str) -> String {
    format!("{PREFIX}:online:{key}")
}

/// The key holding the list of files user `key` shares (`<size> <name>` lines, as in
/// `SHARE`), for `FILES` asked on another server.
pub fn files_key(key: &str) -> String {
    format!("{PREFIX}:files:{key}")
}

/// The pattern matching every [`online_key`], for the periodic scan.
pub fn online_pattern() -> String {
    format!("{PREFIX}:online:*")
}

/// The channel on which server `id` hears what must reach its users.
pub fn server_channel(id: &str) -> String {
    format!("{PREFIX}:server:{id}")
}

/// The channel every server hears: presence changes.
pub fn presence_channel() -> String {
    format!("{PREFIX}:presence")
}

/// The value of an `online:<user>` key: which server and connection hold the login, the
/// name as registered, where peers reach the user (`None` until the port is given), and
/// the account's id (shown in `LIST` on every server; 0 until the port is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding server's id.
    pub server: String,
    /// The connection on that server.
    pub conn: u64,
    /// The name as registered.
    pub name: String,
    /// The user's peer address, once declared.
    pub addr: Option<SocketAddr>,
    /// The account's id (the database is shared, so it is the same on every server).
    pub uid: u64,
}

impl Holder {
    /// The key's value: `<server> <conn> <name> <ip:port or -> <account id>`.
    pub fn to_value(&self) -> String {
        let addr = self.addr.map_or_else(|| "-".to_string(), |a| a.to_string());
        format!(
            "{} {} {} {addr} {}",
            self.server, self.conn, self.name, self.uid
        )
    }

    /// Reads a key's value; `None` if it is not one.
    pub fn parse(value: &str) -> Option<Holder> {
        let mut words = value.split(' ');
        let server = words.next()?.to_string();
        let conn = words.next()?.parse().ok()?;
        let name = words.next()?.to_string();
        let addr = match words.next()? {
            "-" => None,
            text => Some(text.parse().ok()?),
        };
        // A value written before ids were carried has none: the id shows as 0.
        let uid = match words.next() {
            Some(word) => word.parse().ok()?,
            None => 0,
        };
        if words.next().is_some() || server.is_empty() || name.is_empty() {
            return None;
        }
        Some(Holder {
            server,
            conn,
            name,
            addr,
            uid,
        })
    }
}

/// One user's presence change as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNote {
    /// Lower-case name.
    pub key: String,
    /// Name as registered.
    pub name: String,
    /// Where peers reach the user when they came online; `None` when they left.
    pub addr: Option<SocketAddr>,
    /// The account's id when they came online (0 when they left).
    pub uid: u64,
}

/// A message between servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Queue `lines` (complete wire lines, formatted by the sending server) for the
    /// local user `key`, if still connected here.
    Deliver {
        /// Lower-case name of the recipient.
        key: String,
        /// The lines, each ending in `\n`.
        lines: String,
    },
    /// Like `Deliver`, for a message through the server (`SEND`) kept in the database
    /// as `id`: the receiving server delivers `lines` only if it takes row `id` out
    /// (else the recipient's login took it already), and leaves the row for the next
    /// login when the recipient is no longer connected there. So a message is
    /// delivered exactly once even when its recipient moves between servers.
    Mail {
        /// Lower-case name of the recipient.
        key: String,
        /// The message's id in the shared database.
        id: u64,
        /// The `EVENT MESSAGE` line, ending in `\n`.
        lines: String,
    },
    /// User `key` resumed their login on another server: cut the connection here.
    Kick {
        /// Lower-case name.
        key: String,
    },
    /// Who came and went on server `from` in its last presence interval.
    Presence {
        /// The sending server's id (a server ignores its own).
        from: String,
        /// The changes.
        notes: Vec<PresenceNote>,
    },
}

impl Message {
    /// The text published.
    pub fn to_text(&self) -> String {
        match self {
            Message::Deliver { key, lines } => format!("DELIVER {key}\n{lines}"),
            Message::Mail { key, id, lines } => format!("MAIL {key} {id}\n{lines}"),
            Message::Kick { key } => format!("KICK {key}\n"),
            Message::Presence { from, notes } => {
                let mut text = format!("PRESENCE {from}\n");
                for note in notes {
                    match note.addr {
                        Some(addr) => text.push_str(&format!(
                            "+ {} {} {addr} {}\n",
                            note.key, note.name, note.uid
                        )),
                        None => text.push_str(&format!("- {} {}\n", note.key, note.name)),
                    }
                }
                text
            }
        }
    }

    /// Reads a published text; `None` if it is not a message of ours.
    pub fn parse(text: &str) -> Option<Message> {
        let (first, rest) = text.split_once('\n')?;
        let (kind, arg) = first.split_once(' ')?;
        if kind == "MAIL" {
            let (key, id) = arg.split_once(' ')?;
            if key.is_empty() || rest.is_empty() || !rest.ends_with('\n') {
                return None;
            }
            return Some(Message::Mail {
                key: key.to_string(),
                id: id.parse().ok()?,
                lines: rest.to_string(),
            });
        }
        if arg.is_empty() || arg.contains(' ') {
            return None;
        }
        match kind {
            "DELIVER" if !rest.is_empty() && rest.ends_with('\n') => Some(Message::Deliver {
                key: arg.to_string(),
                lines: rest.to_string(),
            }),
            "KICK" if rest.is_empty() => Some(Message::Kick {
                key: arg.to_string(),
            }),
            "PRESENCE" => {
                let notes = rest
                    .lines()
                    .map(parse_note)
                    .collect::<Option<Vec<PresenceNote>>>()?;
                Some(Message::Presence {
                    from: arg.to_string(),
                    notes,
                })
            }
            _ => None,
        }
    }
}

fn parse_note(line: &str) -> Option<PresenceNote> {
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["+", key, name, addr, uid] => Some(PresenceNote {
            key: key.to_string(),
            name: name.to_string(),
            addr: Some(addr.parse().ok()?),
            uid: uid.parse().ok()?,
        }),
        ["-", key, name] => Some(PresenceNote {
            key: key.to_string(),
            name: name.to_string(),
            addr: None,
            uid: 0,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_round_trip() {
        let online = Holder {
            server: "ab12".into(),
            conn: 7,
            name: "Alice".into(),
            addr: Some("127.0.0.1:4000".parse().unwrap()),
            uid: 42,
        };
        assert_eq!(online.to_value(), "ab12 7 Alice 127.0.0.1:4000 42");
        assert_eq!(Holder::parse(&online.to_value()), Some(online.clone()));
        let claimed = Holder {
            addr: None,
            uid: 0,
            ..online
        };
        assert_eq!(Holder::parse(&claimed.to_value()), Some(claimed.clone()));
        // A value without the id (an older server's) reads with id 0.
        assert_eq!(Holder::parse("ab12 7 Alice -"), Some(claimed));
        for bad in [
            "",
            "ab12",
            "ab12 x Alice -",
            "ab12 7 Alice nowhere",
            "ab12 7 Alice - x",
            "ab12 7 Alice - 1 2",
        ] {
            assert_eq!(Holder::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let all = [
            Message::Deliver {
                key: "bob".into(),
                lines: "EVENT SESSION_REQUEST 4 alice t0k3n\n".into(),
            },
            Message::Mail {
                key: "bob".into(),
                id: 17,
                lines: "EVENT MESSAGE 17 alice 1 k s\n".into(),
            },
            Message::Kick { key: "bob".into() },
            Message::Presence {
                from: "ab12".into(),
                notes: vec![
                    PresenceNote {
                        key: "alice".into(),
                        name: "Alice".into(),
                        addr: Some("[::1]:5000".parse().unwrap()),
                        uid: 3,
                    },
                    PresenceNote {
                        key: "carol".into(),
                        name: "carol".into(),
                        addr: None,
                        uid: 0,
                    },
                ],
            },
        ];
        for message in all {
            assert_eq!(Message::parse(&message.to_text()), Some(message));
        }
    }

    #[test]
    fn foreign_text_is_not_a_message() {
        for bad in [
            "",
            "hello",
            "DELIVER bob\n",
            "DELIVER bob\nno newline",
            "KICK a b\n",
            "KICK bob\nextra\n",
            "PRESENCE ab\n* alice Alice\n",
            "PRESENCE ab\n+ alice Alice nowhere\n",
            "PRESENCE ab\n+ alice Alice [::1]:5000 x\n",
            "MAIL bob\nEVENT MESSAGE\n",
            "MAIL bob x\nEVENT MESSAGE\n",
            "MAIL bob 1\nno newline",
        ] {
            assert_eq!(Message::parse(bad), None, "{bad:?}");
        }
    }
}
