//! The terminal front end: what the user types, and how events are shown.
//!
//! Owns turning core events into sentences: `render` dispatches each event and itself
//! shows the server's answers and lists (users, files, search, presence); chat sessions
//! and their notices are in `notices`, transfers in `transfers`, and parsing user
//! commands (`\list`, `/info bob`, ...) with the help text in `commands`. It must not
//! open sockets, hold protocol state or write to the terminal (`terminal` does): the loop
//! in `tui` feeds it.

mod commands;
mod notices;
mod transfers;

use crate::client::core::event::{Event as CoreEvent, FileRow, XferNotice, human_size};
use crate::sanitize::Untrusted;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use super::terminal::Terminal;
pub use commands::{
    DEFAULT_HISTORY, MAX_HISTORY, UserCommand, action_text, command_names, help_text, parse_input,
    parse_typed,
};
pub use notices::{render_mail, render_notice};
pub use transfers::{progress_status, render_xfer};

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
            let from = LIST_FROM.load(Ordering::Relaxed);
            let mut text = users_heading(users.len(), *total, from);
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
            if user.0.eq_ignore_ascii_case(me) {
                // Nobody chats with themselves: no `\connect` suggestion.
                return Some(format!("{user} (you) is online at {addr} ({key})"));
            }
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
            if *total == 0 {
                // Not "Search: 0 match(es):" followed by nothing.
                return Some("Search: no matches.".into());
            }
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

/// Where the last `\list` asked to start (`\list 1000`): the reply does not say, and
/// the heading names the page shown. One terminal per process, so one number.
static LIST_FROM: AtomicUsize = AtomicUsize::new(0);

/// Notes the offset of a `\list` about to be sent.
pub fn asked_list_from(offset: usize) {
    LIST_FROM.store(offset, Ordering::Relaxed);
}

/// The heading of a `\list` reply: `n` users shown of `total` online, from position
/// `from` (0-based). LIST is paged by the server (protocol.md §4): a page says which one
/// it is and how to get the next, rather than look like the whole list.
fn users_heading(n: usize, total: usize, from: usize) -> String {
    if from == 0 && n >= total {
        return format!("Online users ({n}):");
    }
    if n == 0 {
        return format!(
            "Online users: none from number {} on ({total} online; \\list shows the first page)",
            from + 1
        );
    }
    let last = from + n;
    let next = if last < total {
        format!("; \\list {last} shows the next")
    } else {
        String::new()
    };
    format!("Online users {}-{last} of {total}{next}:", from + 1)
}

fn file_row(file: &FileRow) -> String {
    format!(
        "\n  {:<16} {:>10}  {}",
        Untrusted(&file.user),
        human_size(file.size),
        Untrusted(&file.name)
    )
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
    use crate::client::core::event::Notice;

    use super::*;

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
        assert!(
            render(&page, "me")
                .unwrap()
                .starts_with("Online users 1-1 of 3; \\list 1 shows the next:")
        );
        assert_eq!(
            users_heading(1000, 1500, 0),
            "Online users 1-1000 of 1500; \\list 1000 shows the next:"
        );
        assert_eq!(
            users_heading(500, 1500, 1000),
            "Online users 1001-1500 of 1500:"
        );
        assert_eq!(users_heading(3, 3, 0), "Online users (3):");
        assert!(
            users_heading(0, 3, 10).starts_with("Online users: none from number 11 on (3 online")
        );
        let none = CoreEvent::Search {
            files: vec![],
            total: 0,
        };
        assert_eq!(render(&none, "me").unwrap(), "Search: no matches.");
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
