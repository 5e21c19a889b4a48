//! What the user types: the terminal's commands (`\list`, `/info bob`, ...), their
//! table, parsing and the `\help` text.
//!
//! Owns turning a typed line into a `UserCommand`; it must not run a command, render an
//! event or write to the terminal.

use crate::sanitize::Untrusted;

/// One thing the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// `\help`
    Help,
    /// `\list [offset]`
    List { offset: usize },
    /// `\info <user>`
    Info { user: String },
    /// `\quit`
    Quit,
    /// `\connect <user>`
    Connect { user: String },
    /// `\accept [user]`
    Accept { user: Option<String> },
    /// `\decline [user]`
    Decline { user: Option<String> },
    /// `\sessions`
    Sessions,
    /// `\switch <user>`
    Switch { user: String },
    /// `\close [user]`
    Close { user: Option<String> },
    /// `\history <user> [n]`
    History { user: String, n: usize },
    /// `\reconnect`
    Reconnect,
    /// `\trust <user>`: accept the user's changed identity key.
    Trust { user: String },
    /// `\verify <user>`: show the safety number with that user.
    Verify { user: String },
    /// `\\accept <id>`: accept a file offer.
    AcceptFile { id: u64 },
    /// `\\decline <id>`: decline a file offer.
    DeclineFile { id: u64 },
    /// `\\SEND_FILE <path>`
    SendFile { path: String },
    /// `\\files [user]`
    Files { user: Option<String> },
    /// `\\search <text>`
    Search { text: String },
    /// `\\fetch <user> <name>`
    Fetch { user: String, name: String },
    /// `\\transfers`
    Transfers,
    /// `\\cancel <id>`
    Cancel { id: u64 },
    /// `\\rescan`
    Rescan,
    /// `\me <action>`: an action, shown as `* alice waves`.
    Action { text: String },
    /// `\menu`: the numbered menu.
    Menu,
    /// `@user text`: to that session without switching.
    SendTo { user: String, text: String },
    /// `\msg <id|user> <text>`: through the server, sealed; waits if they are offline.
    Msg { to: String, text: String },
    /// `\offer <user> <path>`: offer a file without a session (through the server; it
    /// waits if they are offline).
    OfferTo { user: String, path: String },
    /// A line that is not a command: chat text for the active session.
    Text(String),
    /// An empty line.
    Empty,
}

/// A command the user can type: its names (first is canonical), arguments and meaning.
struct Spec {
    names: &'static [&'static str],
    args: &'static str,
    meaning: &'static str,
}

/// Every user command; parsing and `\help` both read this table.
const USER_COMMANDS: &[Spec] = &[
    Spec {
        names: &["help", "h"],
        args: "",
        meaning: "show this help",
    },
    Spec {
        names: &["GET_CLIENT_LIST", "list", "l"],
        args: "[offset]",
        meaning: "list the users online (1000 at a time; \\list 1000 shows the next)",
    },
    Spec {
        names: &["GET_CLIENT_INFO", "info"],
        args: "<user>",
        meaning: "show where an online user listens for peers",
    },
    Spec {
        names: &["connect", "c"],
        args: "<user>",
        meaning: "open a direct chat session with an online user",
    },
    Spec {
        names: &["accept"],
        args: "[user|id]",
        meaning: "accept a chat request, or file offer <id>",
    },
    Spec {
        names: &["decline"],
        args: "[user|id]",
        meaning: "decline a chat request, or file offer <id>",
    },
    Spec {
        names: &["sessions"],
        args: "",
        meaning: "list your sessions; the active one gets what you type",
    },
    Spec {
        names: &["switch", "s"],
        args: "<user>",
        meaning: "make the session with <user> the active one",
    },
    Spec {
        names: &["CLOSE_SESSION", "close"],
        args: "[user]",
        meaning: "end the active session (or the one with <user>)",
    },
    Spec {
        names: &["history"],
        args: "<user> [n]",
        meaning: "show the last n lines (default 50) said with <user>",
    },
    Spec {
        names: &["verify"],
        args: "<user>",
        meaning: "show the safety number of your key and <user>'s, to compare by voice",
    },
    Spec {
        names: &["trust"],
        args: "<user>",
        meaning: "accept <user>'s changed key (only after comparing \\verify by voice)",
    },
    Spec {
        names: &["msg", "m"],
        args: "<id|user> <text...>",
        meaning: "send a message through the server, end-to-end encrypted (no session; waits if they are offline)",
    },
    Spec {
        names: &["offer"],
        args: "<user> <path...>",
        meaning: "offer a file to <user> without a session: through the server, waiting if they are offline; it goes once they accept",
    },
    Spec {
        names: &["SEND_FILE", "send", "send_file"],
        args: "<path...>",
        meaning: "offer a file (any type, any size) to the active session's peer",
    },
    Spec {
        names: &["files", "GET_AF", "GET_UF"],
        args: "[user]",
        meaning: "the files online users share (or one user's)",
    },
    Spec {
        names: &["search"],
        args: "<text...>",
        meaning: "shared files whose names contain <text>, any case",
    },
    Spec {
        names: &["fetch"],
        args: "<user> <name...>",
        meaning: "download a file from <user>'s shared folder (no session needed)",
    },
    Spec {
        names: &["transfers"],
        args: "",
        meaning: "active and recent file transfers",
    },
    Spec {
        names: &["cancel"],
        args: "<id>",
        meaning: "stop transfer <id> on both sides (or withdraw an offer)",
    },
    Spec {
        names: &["rescan"],
        args: "",
        meaning: "tell the server again what your shared folder holds",
    },
    Spec {
        names: &["me"],
        args: "<action...>",
        meaning: "say what you do: \\me waves shows * alice waves",
    },
    Spec {
        names: &["menu"],
        args: "",
        meaning: "numbered choices: users, files, chat, fetch",
    },
    Spec {
        names: &["reconnect"],
        args: "",
        meaning: "log in to the server again after it went away",
    },
    Spec {
        names: &["DISCONNECT_CLIENT", "quit", "q", "exit"],
        args: "",
        meaning: "log out and leave (Ctrl+C and end of input do the same)",
    },
];

/// Parses one typed line. Commands start with `\` or `/` and are case-insensitive.
pub fn parse_input(line: &str) -> Result<UserCommand, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(UserCommand::Empty);
    }
    let Some(body) = trimmed
        .strip_prefix('\\')
        .or_else(|| trimmed.strip_prefix('/'))
    else {
        if let Some(rest) = trimmed.strip_prefix('@') {
            return match rest.split_once(' ') {
                Some((user, text)) if !user.is_empty() && !text.trim().is_empty() => {
                    Ok(UserCommand::SendTo {
                        user: user.to_string(),
                        text: text.trim_start().to_string(),
                    })
                }
                _ => Err("usage: @<user> <text>".into()),
            };
        }
        return Ok(UserCommand::Text(line.to_string()));
    };
    if trimmed.starts_with("//") {
        // `//text` is chat that starts with a slash: the first slash escapes the second.
        let start = line.len() - line.trim_start().len() + 1;
        return Ok(UserCommand::Text(line[start..].to_string()));
    }
    let (word, rest) = body
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((body.trim(), ""));
    let spec = USER_COMMANDS
        .iter()
        .find(|s| s.names.iter().any(|n| n.eq_ignore_ascii_case(word)))
        .ok_or_else(|| format!("unknown command \\{}; type \\help", Untrusted(word)))?;
    let usage = || {
        format!("usage: \\{} {}", spec.names[0], spec.args)
            .trim_end()
            .to_string()
    };
    let args = split_args(spec.args, rest).ok_or_else(usage)?;
    let first = args.first().map(|u| u.to_string());
    let arg = |i: usize| args.get(i).map(|a| a.to_string()).unwrap_or_default();
    let number = |text: &str| text.parse::<u64>().map_err(|_| usage());
    let is_number = |text: &Option<String>| {
        text.as_deref()
            .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
    };
    Ok(match spec.names[0] {
        "help" => UserCommand::Help,
        "GET_CLIENT_LIST" => UserCommand::List {
            offset: match first {
                Some(n) => n.parse().map_err(|_| usage())?,
                None => 0,
            },
        },
        "GET_CLIENT_INFO" => UserCommand::Info { user: arg(0) },
        "DISCONNECT_CLIENT" => UserCommand::Quit,
        "connect" => UserCommand::Connect { user: arg(0) },
        "offer" => UserCommand::OfferTo {
            user: arg(0),
            path: arg(1),
        },
        "msg" => UserCommand::Msg {
            to: arg(0),
            text: arg(1),
        },
        "accept" if is_number(&first) => UserCommand::AcceptFile {
            id: number(&arg(0))?,
        },
        "accept" => UserCommand::Accept { user: first },
        "decline" if is_number(&first) => UserCommand::DeclineFile {
            id: number(&arg(0))?,
        },
        "decline" => UserCommand::Decline { user: first },
        "sessions" => UserCommand::Sessions,
        "switch" => UserCommand::Switch { user: arg(0) },
        "CLOSE_SESSION" => UserCommand::Close { user: first },
        "history" => {
            let n = match args.get(1) {
                None => DEFAULT_HISTORY,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY).contains(n))
                    .ok_or_else(|| format!("n must be a number from 1 to {MAX_HISTORY}"))?,
            };
            UserCommand::History { user: arg(0), n }
        }
        "reconnect" => UserCommand::Reconnect,
        "trust" => UserCommand::Trust { user: arg(0) },
        "verify" => UserCommand::Verify { user: arg(0) },
        "SEND_FILE" => UserCommand::SendFile { path: arg(0) },
        "files" => UserCommand::Files { user: first },
        "search" => UserCommand::Search { text: arg(0) },
        "fetch" => UserCommand::Fetch {
            user: arg(0),
            name: arg(1),
        },
        "transfers" => UserCommand::Transfers,
        "cancel" => UserCommand::Cancel {
            id: number(&arg(0))?,
        },
        "rescan" => UserCommand::Rescan,
        "me" => UserCommand::Action { text: arg(0) },
        "menu" => UserCommand::Menu,
        _ => return Err("unexpected command; type \\help".into()),
    })
}

/// Parses one typed line as [`parse_input`] does, and with no active session also takes
/// seed 001's menu letters: `h` (help), `l` (list), `c <user>` (connect).
pub fn parse_typed(line: &str, no_session: bool) -> Result<UserCommand, String> {
    if no_session {
        let trimmed = line.trim();
        match trimmed.split_once(char::is_whitespace) {
            None if trimmed.eq_ignore_ascii_case("h") => return Ok(UserCommand::Help),
            None if trimmed.eq_ignore_ascii_case("l") => {
                return Ok(UserCommand::List { offset: 0 });
            }
            Some((c, user)) if c.eq_ignore_ascii_case("c") && !user.trim().contains(' ') => {
                return Ok(UserCommand::Connect {
                    user: user.trim().to_string(),
                });
            }
            _ => {}
        }
    }
    parse_input(line)
}

/// The text sent for `\me <action>`: an ordinary chat message that starts with `/me `
/// (protocol.md §5), so any client shows something sensible.
pub fn action_text(action: &str) -> String {
    format!("/me {action}")
}

/// Splits `rest` by the placeholders in `spec`: `<x>` required, `[x]` optional, a last
/// `<x...>` takes the rest of the line with its spaces. `None` if the count is wrong.
fn split_args<'a>(spec: &str, rest: &'a str) -> Option<Vec<&'a str>> {
    let placeholders: Vec<&str> = spec.split_whitespace().collect();
    let required = placeholders.iter().filter(|p| p.starts_with('<')).count();
    let mut out = Vec::new();
    let mut remaining = rest.trim();
    for (i, placeholder) in placeholders.iter().enumerate() {
        if remaining.is_empty() {
            break;
        }
        if i + 1 == placeholders.len() && placeholder.ends_with("...>") {
            out.push(remaining);
            remaining = "";
            break;
        }
        let (word, after) = remaining
            .split_once(char::is_whitespace)
            .unwrap_or((remaining, ""));
        out.push(word);
        remaining = after.trim_start();
    }
    (remaining.is_empty() && out.len() >= required).then_some(out)
}

/// Lines `\history` shows unless told otherwise.
pub const DEFAULT_HISTORY: usize = 50;
/// Most lines `\history` shows at once.
pub const MAX_HISTORY: usize = 10_000;

/// The text of `\help`.
pub fn help_text() -> String {
    let mut text = String::from("Commands (start with \\ or /, any case):");
    for spec in USER_COMMANDS {
        let aliases: Vec<String> = spec.names[1..].iter().map(|n| format!("\\{n}")).collect();
        let usage = format!("\\{} {}", spec.names[0], spec.args);
        text.push_str(&format!(
            "\n  {:<28} {}{}",
            usage.trim_end(),
            spec.meaning,
            if aliases.is_empty() {
                String::new()
            } else {
                format!(" (also {})", aliases.join(", "))
            }
        ));
    }
    text
}

/// Every command name Tab completes, without the backslash.
pub fn command_names() -> Vec<&'static str> {
    USER_COMMANDS
        .iter()
        .flat_map(|s| s.names.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_either_prefix_any_case_and_aliases() {
        for (line, want) in [
            ("\\help", UserCommand::Help),
            ("/H", UserCommand::Help),
            ("\\GET_CLIENT_LIST", UserCommand::List { offset: 0 }),
            ("\\list", UserCommand::List { offset: 0 }),
            ("/L", UserCommand::List { offset: 0 }),
            ("\\list 1000", UserCommand::List { offset: 1000 }),
            (
                "\\GET_CLIENT_INFO bob",
                UserCommand::Info { user: "bob".into() },
            ),
            ("  \\info   bob ", UserCommand::Info { user: "bob".into() }),
            ("\\DISCONNECT_CLIENT", UserCommand::Quit),
            ("\\q", UserCommand::Quit),
            ("/quit", UserCommand::Quit),
            ("hello there", UserCommand::Text("hello there".into())),
            ("//etc/x y", UserCommand::Text("/etc/x y".into())),
            (
                "\\me waves",
                UserCommand::Action {
                    text: "waves".into(),
                },
            ),
            ("\\menu", UserCommand::Menu),
            ("\\c bob", UserCommand::Connect { user: "bob".into() }),
            ("\\accept", UserCommand::Accept { user: None }),
            (
                "\\ACCEPT bob",
                UserCommand::Accept {
                    user: Some("bob".into()),
                },
            ),
            (
                "\\decline bob",
                UserCommand::Decline {
                    user: Some("bob".into()),
                },
            ),
            ("\\sessions", UserCommand::Sessions),
            ("\\switch bob", UserCommand::Switch { user: "bob".into() }),
            ("\\CLOSE_SESSION", UserCommand::Close { user: None }),
            (
                "\\close bob",
                UserCommand::Close {
                    user: Some("bob".into()),
                },
            ),
            (
                "\\history bob",
                UserCommand::History {
                    user: "bob".into(),
                    n: DEFAULT_HISTORY,
                },
            ),
            (
                "\\history bob 5",
                UserCommand::History {
                    user: "bob".into(),
                    n: 5,
                },
            ),
            ("\\reconnect", UserCommand::Reconnect),
            (
                "\\send my file.txt",
                UserCommand::SendFile {
                    path: "my file.txt".into(),
                },
            ),
            (
                "\\SEND_FILE /tmp/a",
                UserCommand::SendFile {
                    path: "/tmp/a".into(),
                },
            ),
            ("\\accept 3", UserCommand::AcceptFile { id: 3 }),
            ("\\decline 3", UserCommand::DeclineFile { id: 3 }),
            ("\\files", UserCommand::Files { user: None }),
            (
                "\\GET_UF bob",
                UserCommand::Files {
                    user: Some("bob".into()),
                },
            ),
            (
                "\\search  annual report",
                UserCommand::Search {
                    text: "annual report".into(),
                },
            ),
            (
                "\\fetch bob my  file.txt",
                UserCommand::Fetch {
                    user: "bob".into(),
                    name: "my  file.txt".into(),
                },
            ),
            ("\\transfers", UserCommand::Transfers),
            ("\\cancel 4", UserCommand::Cancel { id: 4 }),
            ("\\rescan", UserCommand::Rescan),
            (
                "@bob  hi there",
                UserCommand::SendTo {
                    user: "bob".into(),
                    text: "hi there".into(),
                },
            ),
            ("   ", UserCommand::Empty),
        ] {
            assert_eq!(parse_input(line).unwrap(), want, "{line}");
        }
    }

    #[test]
    fn bad_commands_explain_themselves() {
        assert_eq!(
            parse_input("\\connect").unwrap_err(),
            "usage: \\connect <user>"
        );
        assert_eq!(
            parse_input("\\accept a b").unwrap_err(),
            "usage: \\accept [user|id]"
        );
        assert!(parse_input("\\history bob x").is_err());
        assert!(parse_input("\\history bob 0").is_err());
        assert_eq!(parse_input("@bob").unwrap_err(), "usage: @<user> <text>");
        assert_eq!(parse_input("@ hi").unwrap_err(), "usage: @<user> <text>");
        assert_eq!(
            parse_input("\\frob").unwrap_err(),
            "unknown command \\frob; type \\help"
        );
        assert_eq!(
            parse_input("\\info").unwrap_err(),
            "usage: \\GET_CLIENT_INFO <user>"
        );
        assert_eq!(
            parse_input("\\list all").unwrap_err(),
            "usage: \\GET_CLIENT_LIST [offset]"
        );
        assert!(
            parse_input("\\\u{1b}[2J")
                .unwrap_err()
                .starts_with("unknown command")
        );
        assert!(!parse_input("\\\u{1b}[2J").unwrap_err().contains('\u{1b}'));
    }

    #[test]
    fn help_lists_every_command_and_alias() {
        let help = help_text();
        for spec in USER_COMMANDS {
            for name in spec.names {
                assert!(
                    help.contains(&format!("\\{name}")),
                    "{name} missing from help"
                );
            }
        }
    }
}
