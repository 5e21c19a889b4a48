//! The session log and the transfer log: their records and queries (part of `Store`).
//!
//! Owns what the server remembers about sessions (requested, accepted, ended, or unknown
//! since a server run stopped) and transfers (each side's report and the summary the
//! receiver's report wins). The schema lives with the other migrations in `store`. It
//! must not hash, log or decide policy (who may report what is `commands`' job); names
//! are stored sanitised.

use super::sql::{Conn, Row, params};
use super::{Store, now_ms};
use crate::error::Result;

/// One row of the session log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id, as given to the clients.
    pub id: u64,
    /// Who asked for the session.
    pub requester: String,
    /// Who was asked.
    pub target: String,
    /// When it was requested (Unix ms).
    pub started_at_ms: i64,
    /// When the target accepted (Unix ms), if it did.
    pub accepted_at_ms: Option<i64>,
    /// When it ended (Unix ms), if it has.
    pub ended_at_ms: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Set when a server run stopped while the session was open: from then on nobody
    /// knew, until a participant reports the end.
    pub unknown_since_ms: Option<i64>,
    /// How the peers reached each other when it was not directly (`relay`).
    pub path: Option<String>,
}

impl SessionRecord {
    /// True if `user` (any case) takes part in this session.
    pub fn has_participant(&self, user: &str) -> bool {
        self.requester.eq_ignore_ascii_case(user) || self.target.eq_ignore_ascii_case(user)
    }
}

/// How a transfer ended, as the clients report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// ok, failed, cancelled, corrupt or refused.
    pub result: String,
    /// The file's name.
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The peerchat file hash, when verified.
    pub hash: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// The reporter's role (`send`, `receive`, `fetch`, `serve`), if it said.
    pub role: Option<String>,
    /// Bytes that crossed the link in this attempt.
    pub moved: u64,
    /// Bytes kept from an earlier attempt (0: not resumed).
    pub resumed_from: u64,
}

/// One participant's report of how a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// `requester` or `target`.
    pub side: String,
    /// What it reported.
    pub record: TransferRecord,
}

/// One row of the transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLogRow {
    /// Transfer id, as given to the clients.
    pub id: u64,
    /// Who asked for the ticket (the sender of a push, the fetcher of a fetch).
    pub requester: String,
    /// The other side.
    pub target: String,
    /// When the ticket was issued (Unix ms).
    pub started_at_ms: i64,
    /// `push` or `fetch`, once a report said.
    pub direction: Option<String>,
    /// How it ended, once reported: the receiver's report if it came, else the sender's.
    pub end: Option<TransferRecord>,
    /// True when `end` is the receiver's report.
    pub from_receiver: bool,
    /// Every participant's report, requester first.
    pub reports: Vec<TransferReport>,
    /// The last ladder rung the requester asked for (`reverse`, `relay`); `None`: direct.
    pub path: Option<String>,
}

const SESSION_COLUMNS: &str = "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason, unknown_since_ms, path FROM sessions";

fn session_row(r: &Row) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.int(0)? as u64,
        requester: r.text(1)?,
        target: r.text(2)?,
        started_at_ms: r.int(3)?,
        accepted_at_ms: r.opt_int(4)?,
        ended_at_ms: r.opt_int(5)?,
        end_reason: r.opt_text(6)?,
        unknown_since_ms: r.opt_int(7)?,
        path: r.opt_text(8)?,
    })
}

/// A `TransferRecord` from nine columns starting at `at`: result, name, size, hash,
/// duration, role, moved, resumed_from (rows from before migration 4 have NULLs).
fn record_at(r: &Row, at: usize) -> Result<TransferRecord> {
    let number = |i: usize| -> Result<u64> { Ok(r.opt_int(at + i)?.unwrap_or(0).max(0) as u64) };
    Ok(TransferRecord {
        result: r.opt_text(at)?.unwrap_or_default(),
        name: r.opt_text(at + 1)?.unwrap_or_default(),
        size: number(2)?,
        hash: r.opt_text(at + 3)?,
        duration_ms: number(4)?,
        role: r.opt_text(at + 5)?,
        moved: number(6)?,
        resumed_from: number(7)?,
    })
}

/// Inserts a session or transfer row and returns its id.
fn insert_returning_id(
    c: &mut dyn Conn,
    table: &str,
    requester: &str,
    target: &str,
) -> Result<u64> {
    let sql = match table {
        "sessions" => {
            "INSERT INTO sessions (requester, target, started_at_ms) VALUES (?1, ?2, ?3) RETURNING id"
        }
        _ => {
            "INSERT INTO transfers (requester, target, started_at_ms) VALUES (?1, ?2, ?3) RETURNING id"
        }
    };
    Ok(c.query_one(sql, params![requester, target, now_ms()])?
        .int(0)? as u64)
}

impl Store {
    /// Records a requested session and returns its id.
    pub fn create_session(&self, requester: &str, target: &str) -> Result<u64> {
        let id = self.with_conn(|c| insert_returning_id(c, "sessions", requester, target))?;
        self.own_sessions().insert(id);
        Ok(id)
    }

    /// The participants of session `id` and whether it is still open.
    pub fn session(&self, id: u64) -> Result<Option<SessionRecord>> {
        self.with_conn(|c| {
            c.query_opt(&format!("{SESSION_COLUMNS} WHERE id = ?1"), params![id])?
                .map(|r| session_row(&r))
                .transpose()
        })
    }

    /// Notes that the target accepted session `id`.
    pub fn mark_accepted(&self, id: u64) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET accepted_at_ms = ?2
                 WHERE id = ?1 AND accepted_at_ms IS NULL AND ended_at_ms IS NULL",
                params![id, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records the path session `id` took (`reverse` or `relay`; direct is the default).
    pub fn set_session_path(&self, id: u64, path: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET path = ?2 WHERE id = ?1",
                params![id, path],
            )
        })?;
        Ok(())
    }

    /// Records the path transfer `id` took (`reverse` or `relay`).
    pub fn set_transfer_path(&self, id: u64, path: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE transfers SET path = ?2 WHERE id = ?1",
                params![id, path],
            )
        })?;
        Ok(())
    }

    /// The path recorded for session `id` (`direct` when none was).
    pub fn session_path(&self, id: u64) -> Result<String> {
        self.with_conn(|c| {
            c.query_one(
                "SELECT COALESCE(path, 'direct') FROM sessions WHERE id = ?1",
                params![id],
            )?
            .text(0)
        })
    }

    /// Ends session `id` with `reason` if it is open; true if this call ended it.
    pub fn end_session(&self, id: u64, reason: &str) -> Result<bool> {
        let changed = self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET ended_at_ms = ?2, end_reason = ?3
                 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![id, now_ms(), reason],
            )
        })?;
        self.own_sessions().remove(&id);
        Ok(changed == 1)
    }

    /// The open sessions `user` takes part in, with the other participant of each; not
    /// those unknown since a server stop (only a client's report ends them).
    pub fn open_sessions_of(&self, user: &str) -> Result<Vec<(u64, String)>> {
        self.with_conn(|c| {
            c.query(
                "SELECT id, CASE WHEN requester = ?1 COLLATE NOCASE THEN target ELSE requester END
                 FROM sessions
                 WHERE ended_at_ms IS NULL AND unknown_since_ms IS NULL AND (requester = ?1 COLLATE NOCASE OR target = ?1 COLLATE NOCASE)",
                params![user],
            )?
            .iter()
            .map(|r| Ok((r.int(0)? as u64, r.text(1)?)))
            .collect()
        })
    }

    /// Marks every open session "unknown since now" (a server run ended or was found to
    /// have ended while they were open) without ending them; returns how many were newly
    /// marked. A session already unknown keeps its first mark. When the database is
    /// shared (PostgreSQL), only the sessions this process created: the others belong to
    /// servers that still serve them (so a shared database marks nothing at start-up).
    pub fn mark_open_sessions_unknown(&self) -> Result<usize> {
        const OPEN: &str = "UPDATE sessions SET unknown_since_ms = ?1
                 WHERE ended_at_ms IS NULL AND unknown_since_ms IS NULL";
        if !self.is_shared() {
            return self.with_conn(|c| Ok(c.execute(OPEN, params![now_ms()])? as usize));
        }
        let ids: Vec<u64> = self.own_sessions().drain().collect();
        let mut marked = 0;
        for chunk in ids.chunks(500) {
            // Numbers only: nothing from a client reaches this text.
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let sql = format!("{OPEN} AND id IN ({})", list.join(","));
            marked += self.with_conn(|c| c.execute(&sql, params![now_ms()]))? as usize;
        }
        Ok(marked)
    }

    fn own_sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.own_sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recent `limit` sessions, newest first.
    pub fn session_log(&self, limit: usize) -> Result<Vec<SessionRecord>> {
        self.with_conn(|c| {
            c.query(
                &format!("{SESSION_COLUMNS} ORDER BY id DESC LIMIT ?1"),
                params![limit as i64],
            )?
            .iter()
            .map(session_row)
            .collect()
        })
    }

    /// Records a requested transfer and returns its id.
    pub fn create_transfer(&self, requester: &str, target: &str) -> Result<u64> {
        self.with_conn(|c| insert_returning_id(c, "transfers", requester, target))
    }

    /// The participants of transfer `id`, if it exists.
    pub fn transfer_participants(&self, id: u64) -> Result<Option<(String, String)>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT requester, target FROM transfers WHERE id = ?1",
                params![id],
            )?
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .transpose()
        })
    }

    /// Keeps one side's report of how transfer `id` ended (the first from each side; the
    /// name is stored sanitised) and updates the summary: the receiver's report replaces
    /// a sender's, a sender's only fills an empty one. True if this report was new.
    pub fn report_transfer(
        &self,
        id: u64,
        requester: bool,
        receiver: bool,
        direction: Option<&str>,
        end: &TransferRecord,
    ) -> Result<bool> {
        let name = crate::sanitize::clean(&end.name).into_owned();
        let side = if requester { "requester" } else { "target" };
        self.with_conn(|c| {
            c.transaction(|tx| {
                let now = now_ms();
                let inserted = tx.execute(
                    "INSERT INTO transfer_reports (transfer_id, side, role, result, name, size,
                         moved, resumed_from, hash, duration_ms, reported_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT DO NOTHING",
                    params![
                        id,
                        side,
                        &end.role,
                        end.result.as_str(),
                        name.as_str(),
                        end.size,
                        end.moved,
                        end.resumed_from,
                        &end.hash,
                        end.duration_ms,
                        now
                    ],
                )?;
                if inserted == 1 {
                    tx.execute(
                        "UPDATE transfers SET ended_at_ms = ?2, result = ?3, name = ?4, size = ?5,
                             hash = ?6, duration_ms = ?7, role = ?8, moved = ?9, resumed_from = ?10,
                             from_receiver = ?11
                         WHERE id = ?1 AND (ended_at_ms IS NULL OR (?11 = 1 AND from_receiver = 0))",
                        params![
                            id,
                            now,
                            end.result.as_str(),
                            name.as_str(),
                            end.size,
                            &end.hash,
                            end.duration_ms,
                            &end.role,
                            end.moved,
                            end.resumed_from,
                            receiver
                        ],
                    )?;
                    if let Some(direction) = direction {
                        tx.execute(
                            "UPDATE transfers SET direction = ?2 WHERE id = ?1 AND direction IS NULL",
                            params![id, direction],
                        )?;
                    }
                }
                Ok(inserted == 1)
            })
        })
    }

    /// The most recent `limit` transfers, newest first, each with its side reports.
    pub fn transfer_log(&self, limit: usize) -> Result<Vec<TransferLogRow>> {
        self.with_conn(|c| {
            let mut rows = c
                .query(
                    "SELECT id, requester, target, started_at_ms, ended_at_ms, result, name, size,
                            hash, duration_ms, role, moved, resumed_from, direction, from_receiver,
                            path
                     FROM transfers ORDER BY id DESC LIMIT ?1",
                    params![limit as i64],
                )?
                .iter()
                .map(|r| {
                    let end = match r.opt_int(4)? {
                        Some(_) => Some(record_at(r, 5)?),
                        None => None,
                    };
                    Ok(TransferLogRow {
                        id: r.int(0)? as u64,
                        requester: r.text(1)?,
                        target: r.text(2)?,
                        started_at_ms: r.int(3)?,
                        direction: r.opt_text(13)?,
                        end,
                        from_receiver: r.int(14)? != 0,
                        reports: Vec::new(),
                        path: r.opt_text(15)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            for row in &mut rows {
                row.reports = c
                    .query(
                        "SELECT side, result, name, size, hash, duration_ms, role, moved,
                                resumed_from
                         FROM transfer_reports WHERE transfer_id = ?1 ORDER BY side",
                        params![row.id],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(TransferReport {
                            side: r.text(0)?,
                            record: record_at(r, 1)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
            }
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::MIGRATIONS;
    use super::*;
    use rusqlite::Connection;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("server.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn sessions_are_logged_from_request_to_end() {
        let (_dir, store) = temp_store();
        let id = store.create_session("alice", "bob").unwrap();
        let other = store.create_session("carol", "dave").unwrap();
        assert_eq!(
            store.open_sessions_of("BOB").unwrap(),
            vec![(id, "alice".to_string())]
        );
        store.mark_accepted(id).unwrap();
        assert!(store.end_session(id, "closed").unwrap());
        assert!(
            !store.end_session(id, "timeout").unwrap(),
            "a session ends once"
        );
        let record = store.session(id).unwrap().unwrap();
        assert!(record.accepted_at_ms.is_some() && record.ended_at_ms.is_some());
        assert_eq!(record.end_reason.as_deref(), Some("closed"));
        assert!(record.has_participant("Alice") && !record.has_participant("carol"));
        assert_eq!(store.mark_open_sessions_unknown().unwrap(), 1);
        assert_eq!(store.mark_open_sessions_unknown().unwrap(), 0);
        let log = store.session_log(10).unwrap();
        assert_eq!(
            log.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![other, id]
        );
        assert!(log[0].unknown_since_ms.is_some() && log[0].ended_at_ms.is_none());
        assert!(log[1].unknown_since_ms.is_none());
        // A report after the restart records the real end.
        assert!(store.end_session(other, "closed").unwrap());
        let record = store.session(other).unwrap().unwrap();
        assert_eq!(record.end_reason.as_deref(), Some("closed"));
    }

    fn report(result: &str, role: &str, moved: u64) -> TransferRecord {
        TransferRecord {
            result: result.into(),
            name: "f\u{1b}[2J.bin".into(),
            size: 100,
            hash: None,
            duration_ms: 5,
            role: Some(role.into()),
            moved,
            resumed_from: 0,
        }
    }

    #[test]
    fn the_receivers_transfer_report_wins_and_each_side_reports_once() {
        let (_dir, store) = temp_store();
        let id = store.create_transfer("alice", "bob").unwrap();
        let push = Some("push");
        assert!(
            store
                .report_transfer(id, true, false, push, &report("ok", "send", 100))
                .unwrap()
        );
        assert!(
            !store
                .report_transfer(id, true, false, push, &report("failed", "send", 1))
                .unwrap()
        );
        let row = &store.transfer_log(10).unwrap()[0];
        assert_eq!(row.end.as_ref().unwrap().result, "ok");
        assert!(!row.from_receiver);
        assert!(
            store
                .report_transfer(id, false, true, push, &report("corrupt", "receive", 100))
                .unwrap()
        );
        let row = &store.transfer_log(10).unwrap()[0];
        let end = row.end.as_ref().unwrap();
        assert_eq!((end.result.as_str(), row.from_receiver), ("corrupt", true));
        assert_eq!(end.name, "f\u{FFFD}[2J.bin");
        assert_eq!(row.direction.as_deref(), Some("push"));
        let sides: Vec<_> = row
            .reports
            .iter()
            .map(|r| (r.side.as_str(), r.record.result.as_str()))
            .collect();
        assert_eq!(sides, [("requester", "ok"), ("target", "corrupt")]);
    }

    #[test]
    fn a_version_3_database_is_migrated_and_invented_ends_are_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO sessions (requester, target, started_at_ms, ended_at_ms, end_reason)
                     VALUES ('a', 'b', 1, 50, 'server_restart'), ('c', 'd', 1, 60, 'closed');
                 INSERT INTO transfers (requester, target, started_at_ms, ended_at_ms, result, name, size)
                     VALUES ('a', 'b', 1, 2, 'ok', 'x.bin', 9);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let log = store.session_log(10).unwrap();
        assert_eq!(
            (log[1].ended_at_ms, log[1].unknown_since_ms),
            (None, Some(50))
        );
        assert_eq!(log[0].end_reason.as_deref(), Some("closed"));
        let transfers = store.transfer_log(10).unwrap();
        assert_eq!(transfers[0].end.as_ref().unwrap().name, "x.bin");
        assert_eq!(transfers[0].direction, None);
    }
}
