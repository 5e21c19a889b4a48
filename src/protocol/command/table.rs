//! The command table (`COMMANDS`): every command's names, arguments and meaning, from
//! which the server's HELP text and the argument-count checks both come.
//!
//! Owns the grammar of each command line (how many words, which take the rest of the
//! line); it must not build `Command` values (see `command::Command::parse`) or touch
//! sockets.

use crate::protocol::server_msg::split_word;

/// Every command with its usage and meaning; the server's HELP text and the argument
/// checks both come from here so they cannot disagree.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        names: &["HELP"],
        args: &[],
        meaning: "this list",
    },
    CommandSpec {
        names: &["LIST", "GET_CLIENT_LIST"],
        args: &["[offset]"],
        meaning: "the users online now, 1000 at a time from <offset>",
    },
    CommandSpec {
        names: &["INFO", "GET_CLIENT_INFO"],
        args: &["<username>"],
        meaning: "where an online user listens for peers",
    },
    CommandSpec {
        names: &["CONNECT"],
        args: &["<username>"],
        meaning: "start a chat session: get the user's address and a one-time ticket",
    },
    CommandSpec {
        names: &["RELAY"],
        args: &["SESSION|TRANSFER", "<id>"],
        meaning: "the peer of your session or transfer <id> cannot be reached: meet it at the relay",
    },
    CommandSpec {
        names: &["HINTS"],
        args: &["<ip>[,<ip>]...|-"],
        meaning: "your local addresses, given to peers that ask for you as address hints",
    },
    CommandSpec {
        names: &["REVERSE"],
        args: &["SESSION|TRANSFER", "<id>"],
        meaning: "the peer of your session or transfer <id> cannot be reached: ask it to dial you",
    },
    CommandSpec {
        names: &["DIAL_FAILED"],
        args: &["SESSION|TRANSFER", "<id>"],
        meaning: "you could not dial back the requester of <id>: it is told to go to the relay",
    },
    CommandSpec {
        names: &["SESSION_OPEN"],
        args: &["<id>"],
        meaning: "report that you accepted session <id>",
    },
    CommandSpec {
        names: &["SESSION_END"],
        args: &["<id>", "<reason>"],
        meaning: "report that session <id> ended (closed, declined, timeout, peer_lost, refused, unreachable)",
    },
    CommandSpec {
        names: &["TRANSFER"],
        args: &["<username>", "[offer]"],
        meaning: "start a file transfer: get the user's address and a one-time ticket (for an accepted offer made through the server: its number)",
    },
    CommandSpec {
        names: &["TRANSFER_END"],
        args: &[
            "<id>",
            "<result>",
            "<size>",
            "<ms>",
            "<hash>",
            "<role>",
            "<moved>",
            "<resumed>",
            "<name...>",
        ],
        meaning: "log how transfer <id> ended as you saw it (ok, failed, cancelled, corrupt, refused; role send, receive, fetch, serve or -)",
    },
    CommandSpec {
        names: &["SHARE"],
        args: &["<n>"],
        meaning: "replace your shared files with the n lines '<size> <name>' that follow",
    },
    CommandSpec {
        names: &["FILES", "GET_AF", "GET_UF"],
        args: &["[username]", "[offset]"],
        meaning: "the files online users share (or one user's), 1000 at a time from <offset>",
    },
    CommandSpec {
        names: &["SEARCH"],
        args: &["<text...>"],
        meaning: "shared files whose names contain <text>, any case",
    },
    CommandSpec {
        names: &["KEY"],
        args: &["<key>"],
        meaning: "register your identity public key (64 hex digits); peers get it with tickets and INFO",
    },
    CommandSpec {
        names: &["WHOIS"],
        args: &["<id|username>"],
        meaning: "any user's id, name, identity key and whether online (to seal a message)",
    },
    CommandSpec {
        names: &["SEND"],
        args: &["<id|username>", "<sealed>"],
        meaning: "pass a message sealed to the user's key (hex) on, or keep it until they log in",
    },
    CommandSpec {
        names: &["OFFER"],
        args: &["<id|username>", "<offer|->", "<size>", "<name...>"],
        meaning: "offer a file through the server; it waits if the user is offline",
    },
    CommandSpec {
        names: &["OFFER_ANSWER"],
        args: &["<username>", "<offer>", "ok|no"],
        meaning: "accept or decline a file offer that came through the server",
    },
    CommandSpec {
        names: &["TOKEN"],
        args: &[],
        meaning: "a token to log in again without the password (RESUME); QUIT revokes it",
    },
    CommandSpec {
        names: &["PING"],
        args: &[],
        meaning: "keep the connection alive; answers OK PONG",
    },
    CommandSpec {
        names: &["QUIT", "DISCONNECT_CLIENT"],
        args: &[],
        meaning: "log out and close the connection",
    },
];

/// The grammar of one command: its names and arguments.
#[derive(Debug)]
pub struct CommandSpec {
    /// The canonical name first, then aliases.
    pub names: &'static [&'static str],
    /// One placeholder per required argument.
    pub args: &'static [&'static str],
    /// What it does, for HELP.
    pub meaning: &'static str,
}

impl CommandSpec {
    /// `INFO <username>`
    pub fn usage(&self) -> String {
        std::iter::once(self.names[0])
            .chain(self.args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One line of HELP text.
    pub fn help_line(&self) -> String {
        let aliases = if self.names.len() > 1 {
            format!(" (also {})", self.names[1..].join(", "))
        } else {
            String::new()
        };
        format!("{}{} - {}", self.usage(), aliases, self.meaning)
    }

    /// Splits `rest` into this command's arguments: `<x>` is required, `[x]` optional,
    /// and a last `<x...>` takes the rest of the line, spaces included. `None` if the
    /// count is wrong.
    pub(super) fn split_args<'a>(&self, rest: &'a str) -> Option<Vec<&'a str>> {
        let required = self.args.iter().filter(|a| a.starts_with('<')).count();
        let mut out = Vec::new();
        let mut remaining = rest.trim_start_matches(' ');
        for (i, placeholder) in self.args.iter().enumerate() {
            if remaining.is_empty() {
                break;
            }
            if i + 1 == self.args.len() && placeholder.ends_with("...>") {
                out.push(remaining);
                remaining = "";
                break;
            }
            let (word, after) = split_word(remaining);
            out.push(word);
            remaining = after;
        }
        (remaining.is_empty() && out.len() >= required).then_some(out)
    }

    pub(super) fn find(word: &str) -> Option<&'static CommandSpec> {
        COMMANDS
            .iter()
            .find(|spec| spec.names.iter().any(|n| n.eq_ignore_ascii_case(word)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
