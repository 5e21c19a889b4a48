//! How file transfers are shown: offers, progress (the status line and `\transfers`),
//! and how each transfer ended.
//!
//! Owns turning transfer notices and rows into sentences; it must not change a
//! transfer, hold its state or write to the terminal.

use crate::client::core::event::{Role, Row, Stage, XferNotice, human_size, role_word};
use crate::protocol::server_msg::TransferResult;
use crate::sanitize::Untrusted;

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
            // The sender's core says "delivered and verified": after "done, verified"
            // that would say "verified" twice (issue 11: no repeated words).
            let detail = match outcome.detail.as_str() {
                "delivered and verified" => "delivered",
                other => other,
            };
            format!("done, verified ({}{resumed})", Untrusted(detail))
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
