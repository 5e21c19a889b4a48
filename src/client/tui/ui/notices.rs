//! How chat is shown: session notices (requests, opens, ends, lines, history) and
//! sealed-mail notices.
//!
//! Owns turning those notices into sentences, with times and names cleaned; it must not
//! hold session state or write to the terminal.

use chrono::{Local, TimeZone};

use crate::client::core::event::{Closer, Line, Notice, State};
use crate::client::core::mail::MailNotice;
use crate::protocol::server_msg::EndReason;
use crate::sanitize::Untrusted;

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
            // The peer's reason is `closed` or `quit` (protocol.md §10): said in words,
            // never "closed the session (closed)".
            Closer::Peer => match why.as_str() {
                "closed" | "" => format!("* {} closed the session", Untrusted(peer)),
                "quit" => format!("* {} quit; the session is closed", Untrusted(peer)),
                _ => format!(
                    "* {peer} closed the session ({})",
                    Untrusted(why),
                    peer = Untrusted(peer)
                ),
            },
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
