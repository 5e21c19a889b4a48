//! The printed form of the session log (`peerchat-server sessions`).
//!
//! Owns turning session records into a table for people. It must not query the
//! database (the caller passes the records).

use chrono::{Local, TimeZone};

use super::store::{SessionRecord, TransferLogRow};

fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// A table with one row per session, newest first, and a header.
pub fn render(records: &[SessionRecord]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<16} {:<19}  {:<19}  {:<19}  {}\n",
        "id", "requester", "target", "started", "accepted", "ended", "reason"
    );
    for r in records {
        let reason = match (&r.end_reason, r.ended_at_ms) {
            (Some(reason), _) => reason.clone(),
            (None, None) => "(open)".to_string(),
            (None, Some(_)) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<16} {:<19}  {:<19}  {:<19}  {}\n",
            r.id,
            r.requester,
            r.target,
            when(Some(r.started_at_ms)),
            when(r.accepted_at_ms),
            when(r.ended_at_ms),
            reason
        ));
    }
    out
}

/// A table with one row per file transfer, newest first, and a header.
pub fn render_transfers(rows: &[TransferLogRow]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<16} {:<19}  {:<9} {:>12} {:>8}  {:<16} {}\n",
        "id", "requester", "target", "started", "result", "bytes", "ms", "hash", "name"
    );
    for row in rows {
        let (result, size, ms, hash, name) = match &row.end {
            Some(end) => (
                end.result.clone(),
                end.size.to_string(),
                end.duration_ms.to_string(),
                end.hash
                    .as_deref()
                    .map_or("-".to_string(), |h| h.chars().take(16).collect()),
                end.name.clone(),
            ),
            None => (
                "(open)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<16} {:<19}  {:<9} {:>12} {:>8}  {:<16} {}\n",
            row.id,
            row.requester,
            row.target,
            when(Some(row.started_at_ms)),
            result,
            size,
            ms,
            hash,
            name
        ));
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
            },
            SessionRecord {
                id: 1,
                requester: "carol".into(),
                target: "dave".into(),
                started_at_ms: 1_700_000_000_000,
                accepted_at_ms: Some(1_700_000_001_000),
                ended_at_ms: Some(1_700_000_002_000),
                end_reason: Some("closed".into()),
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("alice") && lines[1].ends_with("(open)"));
        assert!(lines[2].contains("carol") && lines[2].ends_with("closed"));
    }
}
