//! The printed form of the session log (`peerchat-server sessions`).
//!
//! Owns turning session records into a table for people. It must not query the
//! database (the caller passes the records). Every stored string is printed through
//! `sanitize::Untrusted`, whatever an older server version stored.

use chrono::{Local, TimeZone};

use super::store::{SessionRecord, TransferLogRow, TransferRecord};
use crate::sanitize::Untrusted;

fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// A table with one row per session, newest first, and a header. A session that was
/// open when a server run stopped, and that no client has reported ended since, shows
/// as unknown from that moment: the server does not know when (or whether) it ended.
pub fn render(records: &[SessionRecord]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<16} {:<19}  {:<19}  {:<19}  {}\n",
        "id", "requester", "target", "started", "accepted", "ended", "reason"
    );
    for r in records {
        let reason = match (&r.end_reason, r.ended_at_ms, r.unknown_since_ms) {
            (Some(reason), _, _) => Untrusted(reason).to_string(),
            (None, None, Some(since)) => {
                format!("(unknown since server restart at {})", when(Some(since)))
            }
            (None, None, None) => "(open)".to_string(),
            (None, Some(_), _) => "-".to_string(),
        };
        // Relayed sessions say so; direct ones are unmarked.
        let reason = match r.path.as_deref() {
            Some(path) => format!("{reason} (via {})", Untrusted(path)),
            None => reason,
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<16} {:<19}  {:<19}  {:<19}  {}\n",
            r.id,
            Untrusted(&r.requester).to_string(),
            Untrusted(&r.target).to_string(),
            when(Some(r.started_at_ms)),
            when(r.accepted_at_ms),
            when(r.ended_at_ms),
            reason
        ));
    }
    out
}

/// `1000/2000` bytes moved, or the plain count when the size is unknown.
fn moved_text(record: &TransferRecord) -> String {
    if record.size > 0 {
        format!("{}/{}", record.moved, record.size)
    } else {
        record.moved.to_string()
    }
}

/// `-` for a fresh start, else the offset a resumed transfer started from.
fn resumed_text(record: &TransferRecord) -> String {
    if record.resumed_from > 0 {
        record.resumed_from.to_string()
    } else {
        "-".to_string()
    }
}

/// A table with one row per file transfer, newest first, and a header. Columns: the
/// direction (push or fetch), the result (cancelled and failed kept apart), the bytes
/// that actually moved of the file's size, where a resumed transfer started, and the
/// hash. The row shows the receiver's report when it came (it verified the bytes); when
/// both sides reported, each report follows on its own indented line.
pub fn render_transfers(rows: &[TransferLogRow]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<16} {:<19}  {:<5} {:<7} {:<9} {:>23} {:>12} {:>8}  {:<16} {}\n",
        "id",
        "requester",
        "target",
        "started",
        "dir",
        "path",
        "result",
        "moved/size",
        "resumed",
        "ms",
        "hash",
        "name"
    );
    for row in rows {
        let (result, moved, resumed, ms, hash, name) = match &row.end {
            Some(end) => (
                Untrusted(&end.result).to_string(),
                moved_text(end),
                resumed_text(end),
                end.duration_ms.to_string(),
                end.hash.as_deref().map_or("-".to_string(), |h| {
                    Untrusted(h).to_string().chars().take(16).collect()
                }),
                Untrusted(&end.name).to_string(),
            ),
            None => (
                "(open)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<16} {:<19}  {:<5} {:<7} {:<9} {:>23} {:>12} {:>8}  {:<16} {}\n",
            row.id,
            Untrusted(&row.requester).to_string(),
            Untrusted(&row.target).to_string(),
            when(Some(row.started_at_ms)),
            Untrusted(row.direction.as_deref().unwrap_or("-")).to_string(),
            Untrusted(row.path.as_deref().unwrap_or("direct")).to_string(),
            result,
            moved,
            resumed,
            ms,
            hash,
            name
        ));
        if row.reports.len() > 1 {
            for report in &row.reports {
                let r = &report.record;
                let who = if report.side == "requester" {
                    &row.requester
                } else {
                    &row.target
                };
                out.push_str(&format!(
                    "{:>6}  {} {} ({}) reported {}: {} bytes moved, {}{}\n",
                    "",
                    Untrusted(&report.side),
                    Untrusted(who),
                    Untrusted(r.role.as_deref().unwrap_or("-")),
                    Untrusted(&r.result),
                    moved_text(r),
                    match r.resumed_from {
                        0 => "not resumed".to_string(),
                        at => format!("resumed at {at}"),
                    },
                    r.hash
                        .as_deref()
                        .map_or(String::new(), |h| format!(", hash {}", Untrusted(h))),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_participants_and_reason() {
        let text = render(&[
            SessionRecord {
                id: 2,
                requester: "alice".into(),
                target: "bob".into(),
                started_at_ms: 1_700_000_000_000,
                accepted_at_ms: None,
                ended_at_ms: None,
                end_reason: None,
                unknown_since_ms: None,
                path: None,
            },
            SessionRecord {
                id: 1,
                requester: "carol".into(),
                target: "dave".into(),
                started_at_ms: 1_700_000_000_000,
                accepted_at_ms: Some(1_700_000_001_000),
                ended_at_ms: Some(1_700_000_002_000),
                end_reason: Some("closed".into()),
                unknown_since_ms: None,
                path: None,
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("alice") && lines[1].ends_with("(open)"));
        assert!(lines[2].contains("carol") && lines[2].ends_with("closed"));
    }
}
