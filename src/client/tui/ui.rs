//! The terminal front end: what the user types, and how events are shown.
//!
//! Owns parsing user commands (`\list`, `/info bob`, ...), the help text, and turning
//! core events into sentences. It must not open sockets, hold protocol state or write
//! to the terminal (`terminal` does): the loop in `tui` feeds it.

use chrono::{Local, TimeZone};

use crate::client::core::event::{Closer, Line, Notice, Role, Row, Stage, State, XferNotice};
use crate::client::core::event::{Event as CoreEvent, FileRow, human_size, role_word};
use crate::client::core::mail::MailNotice;
use crate::protocol::server_msg::{EndReason, TransferResult};
use crate::sanitize::Untrusted;

pub use super::terminal::Terminal;

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

/// What to show for an event from the core once logged in as `me`; `None` for events
/// the terminal shows otherwise (the active peer sets the prompt; interactive progress
/// goes to the status line) or not at all.
pub fn render(event: &CoreEvent, me: &str) -> Option<String> {
    Some(match event {
        CoreEvent::Welcome { name, addr } => format!(
            "Welcome, {}. Peers reach you at {addr}. Type \\help for commands.",
            Untrusted(name)
        ),
        CoreEvent::Session(notice) => render_notice(notice),
        CoreEvent::Transfer(XferNotice::Progress { rows }) if rows.is_empty() => return None,
        CoreEvent::Transfer(notice) => render_xfer(notice),
        CoreEvent::Mail(notice) => render_mail(notice),
        CoreEvent::Active { .. } => return None,
        CoreEvent::Users { users, ids, total } => {
            let mut text = format!("Online users ({}):", users.len());
            if *total > users.len() {
                // LIST is paged by the server (protocol.md §4): say so rather than let
                // the list look complete.
                text = format!(
                    "Online users ({} of {total}; \\list <offset> shows the others):",
                    users.len()
                );
            }
            for (i, user) in users.iter().enumerate() {
                let you = if user.eq_ignore_ascii_case(me) {
                    " (you)"
                } else {
                    ""
                };
                // The id is what `\msg <id>` takes.
                let id = ids.get(i).map_or(String::new(), |id| format!("#{id} "));
                text.push_str(&format!("\n  {id}{}{you}", Untrusted(user)));
            }
            text
        }
        CoreEvent::UserInfo { user, addr, key } => {
            let user = Untrusted(user);
            let key = match key {
                Some(key) => format!(
                    "identity key {}",
                    crate::crypto::identity::key_fingerprint(key)
                ),
                None => "no identity key registered".to_string(),
            };
            format!("{user} is online at {addr} ({key}); type \\connect {user} to chat")
        }
        CoreEvent::ServerHelp { lines } => {
            let mut text = String::from("Server commands:");
            for line in lines {
                text.push_str(&format!("\n  {}", Untrusted(line)));
            }
            text
        }
        CoreEvent::Files { files, total } => {
            if files.is_empty() {
                return Some("No shared files.".into());
            }
            let mut text = format!("Shared files ({}):", files.len());
            if *total > files.len() {
                // FILES is paged by the server (protocol.md §4b); say so rather than
                // let the list look complete.
                text = format!(
                    "Shared files (the first {} of {total}; use \\search to narrow):",
                    files.len()
                );
            }
            for file in files {
                text.push_str(&file_row(file));
            }
            text
        }
        CoreEvent::Search { files, total } => {
            let mut text = format!("Search: {total} match(es)");
            if *total > files.len() {
                text.push_str(&format!(", first {} shown", files.len()));
            }
            text.push(':');
            for file in files {
                text.push_str(&file_row(file));
            }
            text
        }
        CoreEvent::ServerError { message, .. } => format!("error: {}", Untrusted(message)),
        CoreEvent::Online { users } => {
            format!("* {} {} online", names(users), is_are(users.len()))
        }
        CoreEvent::Offline { users } => format!("* {} went offline", names(users)),
        CoreEvent::Presence { came, went } => {
            format!("* {came} user(s) came online and {went} went offline; \\list shows who")
        }
        CoreEvent::ServerNotice { message } => format!("* server: {}", Untrusted(message)),
        CoreEvent::ServerLost => "* lost the connection to the server; open sessions go on. Type \\reconnect to log in again.".into(),
        CoreEvent::Reconnected => "* reconnected to the server".into(),
        CoreEvent::NotConnected => "error: not connected to the server; \\reconnect first".into(),
        CoreEvent::Note { text } => text.clone(),
        CoreEvent::Error { text } => format!("error: {text}"),
        CoreEvent::Bye => "Bye.".into(),
    })
}

fn file_row(file: &FileRow) -> String {
    format!(
        "\n  {:<16} {:>10}  {}",
        Untrusted(&file.user),
        human_size(file.size),
        Untrusted(&file.name)
    )
}

/// `2 min`, or `45 s` under a minute.
fn minutes(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s < 60 => format!("{s} s"),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

/// `[####------]  42%  42.0 MiB / 100.0 MiB  850.0 MiB/s  0:01 left`, or `... stalled`
/// when no bytes came for a while.
fn progress_text(row: &Row) -> String {
    let total = row.size.unwrap_or(0);
    let fraction = if total == 0 {
        1.0
    } else {
        row.done as f64 / total as f64
    };
    let filled = (fraction * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3}%  {} / {}  {}",
        "#".repeat(filled.min(20)),
        "-".repeat(20 - filled.min(20)),
        (fraction * 100.0) as u32,
        human_size(row.done),
        human_size(total),
        rate_and_left(row)
    )
}

/// `850.0 MiB/s  0:01 left`, or `stalled` when no bytes came for a while.
fn rate_and_left(row: &Row) -> String {
    if row.stalled {
        return "stalled".into();
    }
    let total = row.size.unwrap_or(0);
    let left = if row.rate > 0.0 && total > row.done {
        let secs = ((total - row.done) as f64 / row.rate) as u64;
        format!("{}:{:02} left", secs / 60, secs % 60)
    } else {
        "-:-- left".to_string()
    };
    format!("{}/s  {left}", human_size(row.rate as u64))
}

/// `[3] send photo.bin to alice`
fn row_head(row: &Row) -> String {
    let direction = match row.role {
        Role::Send | Role::Serve => "to",
        Role::Receive | Role::Fetch => "from",
    };
    format!(
        "[{}] {} {} {direction} {}",
        row.id,
        role_word(row.role),
        Untrusted(&row.name),
        Untrusted(&row.peer)
    )
}

/// One transfer in words. `show_direct`: the `\transfers` list names every path
/// (`direct`, `reverse`, `relay`); the one-line notices name only the unusual ones, so
/// the common `done` line stays short.
fn row_line(row: &Row, show_direct: bool) -> String {
    let state = match &row.stage {
        // Through the server: it waits there while the peer is offline.
        Stage::Offered if row.via_server => format!(
            "offered through the server, waiting for {}'s answer (held while they are offline)",
            Untrusted(&row.peer)
        ),
        Stage::Offered => "offered, waiting for an answer".to_string(),
        Stage::Connecting if row.via_server => {
            "accepted; it starts when you are both online".to_string()
        }
        Stage::Asked => format!("offered to you: \\accept {0} or \\decline {0}", row.id),
        Stage::Connecting => "connecting".to_string(),
        Stage::Active => progress_text(row),
        Stage::Finished(outcome) if outcome.result == TransferResult::Ok => {
            let resumed = if outcome.resumed_from > 0 {
                format!(", resumed at {}", human_size(outcome.resumed_from))
            } else {
                String::new()
            };
            format!("done, verified ({}{resumed})", Untrusted(&outcome.detail))
        }
        Stage::Finished(outcome) => outcome_words(row, outcome),
        Stage::Dropped(why) => Untrusted(why).to_string(),
    };
    // The path the data takes (direct, reverse or relay), once a connection carries it.
    let route = match row.stage {
        Stage::Active | Stage::Finished(_)
            if !row.route.is_empty() && (show_direct || row.route != "direct") =>
        {
            format!(" ({})", row.route)
        }
        _ => String::new(),
    };
    format!("{}{route}: {state}", row_head(row))
}

/// How a transfer that did not succeed ended, in plain words: `cancelled by alice`, not
/// `cancelled: cancelled by the peer`; `failed: alice went away; send again to resume`,
/// not `Broken pipe (os error 32)`. The first word is always the result's.
fn outcome_words(row: &Row, outcome: &crate::client::core::transfer::Outcome) -> String {
    let word = outcome.result.word();
    let peer = Untrusted(&row.peer);
    let detail = outcome.detail.as_str();
    match outcome.result {
        TransferResult::Cancelled if detail == "cancelled by the peer" => {
            format!("{word} by {peer}")
        }
        TransferResult::Failed if is_connection_loss(detail) => {
            let again = match row.role {
                Role::Send => "; send again to resume",
                Role::Fetch => "; fetch again to resume",
                Role::Receive => "; what arrived is kept and resumes if it is sent again",
                Role::Serve => "",
            };
            format!("{word}: {peer} went away{again}")
        }
        _ if detail == word || detail.is_empty() => word.to_string(),
        _ => format!("{word}: {}", Untrusted(detail)),
    }
}

/// True for the texts the system gives when the other side of a connection vanished.
fn is_connection_loss(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "connection lost",
        "broken pipe",
        "connection reset",
        "failed to fill whole buffer",
        "unexpected end of file",
        "early eof",
    ]
    .iter()
    .any(|t| lower.contains(t))
}

/// The status line for a terminal, one part per active transfer, e.g.
/// `[2] photo.bin 61.0 MiB / 100.0 MiB 850.0 MiB/s 0:01 left`; empty when nothing moves.
pub fn progress_status(rows: &[Row]) -> String {
    rows.iter()
        .map(|row| {
            let name: String = row.name.chars().take(24).collect();
            format!(
                "[{}] {} {} / {}  {}",
                row.id,
                Untrusted(&name),
                human_size(row.done),
                human_size(row.size.unwrap_or(0)),
                rate_and_left(row)
            )
        })
        .collect::<Vec<_>>()
        .join("  |  ")
}

/// What to show for a transfer notice. Progress lines are plain text, one per active
/// transfer, so they read the same in a terminal and in a log.
pub fn render_xfer(notice: &XferNotice) -> String {
    match notice {
        XferNotice::Offered {
            id,
            peer,
            name,
            size,
            ..
        } => format!(
            "* [{id}] offered {} ({}) to {}; waiting for an answer",
            Untrusted(name),
            human_size(*size),
            Untrusted(peer)
        ),
        XferNotice::OfferIn {
            id,
            from,
            name,
            size,
            open_for,
            resumes_at,
            via_server,
        } => {
            let mut text = format!(
                "* [{id}] {from} offers {} ({}): \\accept {id} or \\decline {id}\n  the offer stays open for {}",
                Untrusted(name),
                human_size(*size),
                minutes(*open_for),
                from = Untrusted(from)
            );
            if *via_server {
                text.push_str("; it came through the server, and your answer goes back that way");
            }
            if *resumes_at > 0 {
                text.push_str(&format!(
                    "; {} of it is already here: it resumes at {}",
                    human_size(*resumes_at),
                    human_size(*resumes_at)
                ));
            }
            text
        }
        XferNotice::FolderIn {
            id,
            from,
            name,
            files,
            size,
            open_for,
        } => format!(
            "* [{id}] {from} offers the folder {}/ ({files} files, {}): \\accept {id} or \\decline {id}\n  accepted once, its files keep their places inside it; the offer stays open for {}",
            Untrusted(name),
            human_size(*size),
            minutes(*open_for),
            from = Untrusted(from)
        ),
        XferNotice::Started { row } => format!("* {}: started", row_head(row)),
        XferNotice::Progress { rows } => rows
            .iter()
            .map(|row| {
                format!(
                    "  [{}] {} {}",
                    row.id,
                    Untrusted(&row.name),
                    progress_text(row)
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        XferNotice::Finished { row } | XferNotice::Dropped { row } => {
            format!("* {}", row_line(row, false))
        }
        XferNotice::List { rows } => {
            if rows.is_empty() {
                return "No transfers.".into();
            }
            let mut text = format!("Transfers ({}):", rows.len());
            for row in rows {
                text.push_str("\n  ");
                text.push_str(&row_line(row, true));
            }
            text
        }
        XferNotice::Shared { count, dir } => {
            format!("* sharing {count} file(s) from {}", dir.display())
        }
        XferNotice::Error(text) => format!("error: {text}", text = Untrusted(text)),
    }
}

/// `[12:03:04] bob: hello`, in local time.
fn chat_line(line: &Line) -> String {
    chat_line_dated(line, false)
}

/// A line of history: `[2026-11-30 12:03:04] bob: hello` when it is not from today.
fn history_line(line: &Line) -> String {
    chat_line_dated(line, true)
}

/// `[12:03:04] bob: hello`; with `dated`, lines from another day carry their date.
fn chat_line_dated(line: &Line, dated: bool) -> String {
    let when = Local
        .timestamp_millis_opt(line.at_ms as i64)
        .single()
        .map_or_else(
            || "--:--:--".to_string(),
            |t| {
                // A line from another day (history) says which day.
                if !dated || t.date_naive() == Local::now().date_naive() {
                    t.format("%H:%M:%S").to_string()
                } else {
                    t.format("%Y-%m-%d %H:%M:%S").to_string()
                }
            },
        );
    if let Some(action) = line.text.strip_prefix("/me ") {
        return format!(
            "[{when}] * {} {}",
            Untrusted(&line.sender),
            Untrusted(action)
        );
    }
    format!(
        "[{when}] {}: {}",
        Untrusted(&line.sender),
        Untrusted(&line.text)
    )
}

/// What to show for a notice from the session core.
/// Messages through the server: `[12:03:04] (via server) alice: hi` and what became of
/// ours.
pub fn render_mail(notice: &MailNotice) -> String {
    match notice {
        MailNotice::Received { line, .. } => {
            // The clock first, as on every chat line, then where it came from.
            let shown = chat_line(line);
            match shown.split_once("] ") {
                Some((clock, rest)) => format!("{clock}] (via server) {rest}"),
                None => format!("(via server) {shown}"),
            }
        }
        MailNotice::Away { count } => {
            let s = if *count == 1 { "" } else { "s" };
            format!("* while you were away ({count} message{s} through the server):")
        }
        MailNotice::Sent {
            to,
            delivered: true,
            ..
        } => format!("* message to {} delivered", Untrusted(to)),
        MailNotice::Sent {
            to, expiry_secs, ..
        } => format!(
            "* message to {to} queued: {to} is offline; the server keeps it (sealed) until they log in, at most {} days",
            expiry_secs / 86_400,
            to = Untrusted(to)
        ),
        MailNotice::NotSent { to, why } => format!(
            "error: message to {} not sent: {}",
            Untrusted(to),
            Untrusted(why)
        ),
        MailNotice::Rejected { from, why } => format!(
            "warning: a message through the server said to be from {} was refused: {}",
            Untrusted(from),
            Untrusted(why)
        ),
    }
}

pub fn render_notice(notice: &Notice) -> String {
    match notice {
        Notice::Chat { peer, line, active } | Notice::Said { peer, line, active } => {
            if *active {
                chat_line(line)
            } else {
                format!("({}) {}", Untrusted(peer), chat_line(line))
            }
        }
        Notice::Request { from, within } => format!(
            "* {from} wants to chat: \\accept {from} or \\decline {from} (within {} s)",
            within.as_secs(),
            from = Untrusted(from)
        ),
        Notice::RequestExpired { from } => {
            format!("* chat request from {from} expired", from = Untrusted(from))
        }
        Notice::RequestWithdrawn { from } => {
            format!("* {from} withdrew the chat request", from = Untrusted(from))
        }
        Notice::Declined { from } => format!("* declined {from}", from = Untrusted(from)),
        Notice::Asking { peer } => format!("* asking {} to chat...", Untrusted(peer)),
        Notice::Reversing { peer } => format!(
            "* cannot reach {} directly; asking it to connect to us...",
            Untrusted(peer)
        ),
        Notice::Relaying { peer } => format!(
            "* cannot reach {} directly; meeting through the server's relay...",
            Untrusted(peer)
        ),
        Notice::Opened { peer, history, .. } => {
            let mut text = String::new();
            if !history.is_empty() {
                text.push_str(&format!(
                    "--- last {} lines with {peer} ---\n",
                    history.len(),
                    peer = Untrusted(peer)
                ));
                for line in history {
                    text.push_str(&history_line(line));
                    text.push('\n');
                }
                text.push_str("---\n");
            }
            text.push_str(&format!(
                "* session with {peer} open; what you type goes to {peer}",
                peer = Untrusted(peer)
            ));
            text
        }
        Notice::NotOpened {
            peer,
            reason,
            detail,
        } => match reason {
            EndReason::Declined => format!("* {peer} declined", peer = Untrusted(peer)),
            EndReason::Timeout => format!("* {peer} did not answer", peer = Untrusted(peer)),
            EndReason::Unreachable => format!(
                "* could not reach {peer}: {}",
                Untrusted(detail),
                peer = Untrusted(peer)
            ),
            _ => format!(
                "* no session with {peer}: {}",
                Untrusted(detail),
                peer = Untrusted(peer)
            ),
        },
        Notice::Closed { peer, by, why } => match by {
            Closer::Me => format!("* session with {peer} closed", peer = Untrusted(peer)),
            Closer::Peer => format!(
                "* {peer} closed the session ({})",
                Untrusted(why),
                peer = Untrusted(peer)
            ),
            Closer::Lost => format!(
                "* lost the connection to {peer}: {}",
                Untrusted(why),
                peer = Untrusted(peer)
            ),
        },
        Notice::Sessions { list, paths } => {
            if list.is_empty() {
                return "No sessions. \\connect <user> to start one.".to_string();
            }
            let mut text = format!("Sessions ({}):", list.len());
            for (i, (peer, state)) in list.iter().enumerate() {
                let state = match state {
                    State::Active => "active",
                    State::Open => "open",
                    State::Asking => "waiting for an answer",
                    State::Asked => "wants to chat: \\accept or \\decline",
                };
                // The path of an open session: direct, reverse or relay.
                let path = match paths.get(i).map(String::as_str) {
                    Some(path) if !path.is_empty() => format!(", {path}"),
                    _ => String::new(),
                };
                text.push_str(&format!(
                    "\n  {peer} ({state}{path})",
                    peer = Untrusted(peer)
                ));
            }
            text
        }
        Notice::Switched { peer } => format!("* now talking to {peer}", peer = Untrusted(peer)),
        Notice::History { peer, lines } => {
            let mut text = format!(
                "--- {} lines with {peer} ---",
                lines.len(),
                peer = Untrusted(peer)
            );
            for line in lines {
                text.push('\n');
                text.push_str(&history_line(line));
            }
            text
        }
        Notice::Refused {
            count,
            from,
            why,
            secs,
        } => format!(
            "* refused {count} peer connection{} from {from} in the last {secs} s ({why})",
            if *count == 1 { "" } else { "s" },
            why = Untrusted(why)
        ),
        Notice::Error(text) => format!("error: {text}", text = Untrusted(text)),
    }
}

/// Every command name Tab completes, without the backslash.
pub fn command_names() -> Vec<&'static str> {
    USER_COMMANDS
        .iter()
        .flat_map(|s| s.names.iter().copied())
        .collect()
}

/// Names from the server for one line of text, cleaned, separated by commas.
fn names(users: &[String]) -> String {
    users
        .iter()
        .map(|u| Untrusted(u).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_are(n: usize) -> &'static str {
    if n == 1 { "is" } else { "are" }
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

    #[test]
    fn rendering_marks_the_user_and_strips_escapes() {
        let list = CoreEvent::Users {
            users: vec!["alice".into(), "bob".into()],
            ids: vec![1, 7],
            total: 2,
        };
        assert_eq!(
            render(&list, "Alice").unwrap(),
            "Online users (2):\n  #1 alice (you)\n  #7 bob"
        );
        let evil = CoreEvent::Online {
            users: vec!["x\u{1b}[2Jy".into()],
        };
        assert_eq!(render(&evil, "me").unwrap(), "* x\u{FFFD}[2Jy is online");
        let two = CoreEvent::Offline {
            users: vec!["bob".into(), "carol".into()],
        };
        assert_eq!(render(&two, "me").unwrap(), "* bob, carol went offline");
        let page = CoreEvent::Users {
            users: vec!["alice".into()],
            ids: vec![1],
            total: 3,
        };
        assert!(render(&page, "me").unwrap().contains("(1 of 3;"));
        let files = CoreEvent::Files {
            files: vec![FileRow {
                user: "bob".into(),
                size: 1,
                name: "report\u{202E}fdp.exe".into(),
            }],
            total: 1,
        };
        let shown = render(&files, "me").unwrap();
        assert!(
            shown.ends_with("  bob                     1 B  report\u{FFFD}fdp.exe"),
            "{shown:?}"
        );
        let notice = Notice::Request {
            from: "ev\u{1b}[2Jil".into(),
            within: std::time::Duration::from_secs(5),
        };
        assert!(!render_notice(&notice).contains('\u{1b}'));
        assert_eq!(render(&CoreEvent::Active { peer: None }, "me"), None);
    }
}
