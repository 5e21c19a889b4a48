//! The server's SQLite database: schema, migrations and every query.
//!
//! Owns persistence of accounts and login failures/blocks. It must not hash passwords
//! (callers run bcrypt before or after, never inside a store call) and must never be
//! called while the registry lock is held.
//!
//! Concurrency: instead of one connection behind a mutex held across disk waits, the
//! store keeps a small pool of idle connections. The pool's lock is held only to pop or
//! push a connection, never while SQLite works; WAL mode lets readers run beside the one
//! writer, and the busy timeout queues writers inside SQLite. (A crate such as r2d2 would
//! add two dependencies for these twenty lines.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::protocol::limits::MAX_LOGIN_FAILURES;

/// Schema migrations; entry `i` takes the database from `user_version` i to i+1.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, and failed logins per (username, source address) with their block.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        pw_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE login_failures (
        username_key TEXT NOT NULL,
        ip TEXT NOT NULL,
        failures INTEGER NOT NULL,
        blocked_until_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (username_key, ip)
    );",
    // 2: the log of chat sessions (seeds 000 and 002).
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        requester TEXT NOT NULL,
        target TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        accepted_at_ms INTEGER,
        ended_at_ms INTEGER,
        end_reason TEXT
    );
    CREATE INDEX sessions_open ON sessions (ended_at_ms) WHERE ended_at_ms IS NULL;",
    // 3: the log of file transfers, reported by the clients.
    "CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        requester TEXT NOT NULL,
        target TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        result TEXT,
        name TEXT,
        size INTEGER,
        hash TEXT,
        duration_ms INTEGER
    );",
    // 4: the truth about restarts and both sides of a transfer (issue 9). A session open
    // when the server stopped is "unknown since" then, not ended: its clients may report
    // the real end after reconnecting. Ends the old code invented at startup are undone.
    // Each side's transfer report is kept; the summary row says push or fetch, the bytes
    // that moved, the resume offset, and whether the receiver's report is the one shown.
    "ALTER TABLE sessions ADD COLUMN unknown_since_ms INTEGER;
    UPDATE sessions SET unknown_since_ms = ended_at_ms, ended_at_ms = NULL, end_reason = NULL
        WHERE end_reason = 'server_restart';
    ALTER TABLE transfers ADD COLUMN direction TEXT;
    ALTER TABLE transfers ADD COLUMN role TEXT;
    ALTER TABLE transfers ADD COLUMN moved INTEGER;
    ALTER TABLE transfers ADD COLUMN resumed_from INTEGER;
    ALTER TABLE transfers ADD COLUMN from_receiver INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE transfer_reports (
        transfer_id INTEGER NOT NULL,
        side TEXT NOT NULL,
        role TEXT,
        result TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        moved INTEGER NOT NULL,
        resumed_from INTEGER NOT NULL,
        hash TEXT,
        duration_ms INTEGER NOT NULL,
        reported_at_ms INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, side)
    );",
];

/// How long SQLite waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept for reuse; more are opened under load and closed afterwards.
const MAX_IDLE: usize = 8;

/// The server's database.
pub struct Store {
    /// Where the database file is, to open more pooled connections.
    path: PathBuf,
    /// Connections not in use right now.
    idle: Mutex<Vec<Connection>>,
}

/// What happened to a registration.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The account was written.
    Yes,
    /// Another account has that name (in any case).
    Taken,
}

/// A stored account, for checking a password.
pub struct Account {
    /// The name as registered.
    pub username: String,
    /// The bcrypt hash.
    pub pw_hash: String,
}

/// The result of recording a failed login.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted; this many consecutive failures so far.
    Counted(u32),
    /// This failure reached the limit: the name is now blocked from that address.
    Blocked,
}

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
}

const SESSION_COLUMNS: &str = "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason, unknown_since_ms FROM sessions";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get::<_, i64>(0)? as u64,
        requester: r.get(1)?,
        target: r.get(2)?,
        started_at_ms: r.get(3)?,
        accepted_at_ms: r.get(4)?,
        ended_at_ms: r.get(5)?,
        end_reason: r.get(6)?,
        unknown_since_ms: r.get(7)?,
    })
}

/// A `TransferRecord` from nine columns starting at `at`: result, name, size, hash,
/// duration, role, moved, resumed_from (rows from before migration 4 have NULLs).
fn record_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<TransferRecord> {
    let number = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(at + i)?.unwrap_or(0).max(0) as u64)
    };
    Ok(TransferRecord {
        result: r.get::<_, Option<String>>(at)?.unwrap_or_default(),
        name: r.get::<_, Option<String>>(at + 1)?.unwrap_or_default(),
        size: number(2)?,
        hash: r.get(at + 3)?,
        duration_ms: number(4)?,
        role: r.get(at + 5)?,
        moved: number(6)?,
        resumed_from: number(7)?,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let store = Store {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        let mut conn = store.connect()?;
        migrate(&mut conn)?;
        store.put_back(conn);
        Ok(store)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("database journal mode is {mode}, not WAL");
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection; the pool lock is not held while `f` runs.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        self.put_back(conn);
        Ok(result?)
    }

    /// True if an account has this name (in any case).
    pub fn user_exists(&self, username: &str) -> Result<bool> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT 1 FROM users WHERE username = ?1",
                [username],
                |_| Ok(()),
            )
            .optional()
            .map(|row| row.is_some())
        })
    }

    /// Writes a new account; the unique index decides races between two registrations.
    pub fn create_user(&self, username: &str, pw_hash: &str) -> Result<Created> {
        let inserted = self.with_conn(|c| {
            c.execute(
                "INSERT INTO users (username, pw_hash, created_at) VALUES (?1, ?2, ?3)",
                params![username, pw_hash, now_ms() / 1000],
            )
        });
        match inserted {
            Ok(_) => Ok(Created::Yes),
            Err(Error::Db(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                Ok(Created::Taken)
            }
            Err(e) => Err(e),
        }
    }

    /// The stored account with this name (in any case), if any.
    pub fn account(&self, username: &str) -> Result<Option<Account>> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT username, pw_hash FROM users WHERE username = ?1",
                [username],
                |r| {
                    Ok(Account {
                        username: r.get(0)?,
                        pw_hash: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }

    /// How long `username_key` stays blocked from `ip`, if it is blocked now.
    pub fn blocked_for(&self, username_key: &str, ip: &str) -> Result<Option<Duration>> {
        let until: Option<i64> = self.with_conn(|c| {
            c.query_row(
                "SELECT blocked_until_ms FROM login_failures WHERE username_key = ?1 AND ip = ?2",
                params![username_key, ip],
                |r| r.get(0),
            )
            .optional()
        })?;
        let now = now_ms();
        Ok(until
            .filter(|&until| until > now)
            .map(|until| Duration::from_millis((until - now) as u64)))
    }

    /// Counts a failed login of `username_key` from `ip`; the limit-th consecutive one
    /// blocks the pair for `block` and starts the count again.
    pub fn record_failure(&self, username_key: &str, ip: &str, block: Duration) -> Result<Failure> {
        let limit = MAX_LOGIN_FAILURES as i64;
        let failures: i64 = self.with_conn(|c| {
            let tx = c.transaction()?;
            let failures: i64 = tx.query_row(
                "INSERT INTO login_failures (username_key, ip, failures) VALUES (?1, ?2, 1)
                 ON CONFLICT (username_key, ip) DO UPDATE SET failures = failures + 1
                 RETURNING failures",
                params![username_key, ip],
                |r| r.get(0),
            )?;
            if failures >= limit {
                tx.execute(
                    "UPDATE login_failures SET failures = 0, blocked_until_ms = ?3
                     WHERE username_key = ?1 AND ip = ?2",
                    params![username_key, ip, now_ms() + block.as_millis() as i64],
                )?;
            }
            tx.commit()?;
            Ok(failures)
        })?;
        Ok(if failures >= limit {
            Failure::Blocked
        } else {
            Failure::Counted(failures as u32)
        })
    }

    /// Forgets the failures of `username_key` from `ip` after a successful login.
    pub fn clear_failures(&self, username_key: &str, ip: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE username_key = ?1 AND ip = ?2",
                params![username_key, ip],
            )
        })?;
        Ok(())
    }

    /// Records a requested session and returns its id.
    pub fn create_session(&self, requester: &str, target: &str) -> Result<u64> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO sessions (requester, target, started_at_ms) VALUES (?1, ?2, ?3)",
                params![requester, target, now_ms()],
            )?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    /// The participants of session `id` and whether it is still open.
    pub fn session(&self, id: u64) -> Result<Option<SessionRecord>> {
        self.with_conn(|c| {
            c.query_row(
                &format!("{SESSION_COLUMNS} WHERE id = ?1"),
                [id as i64],
                session_row,
            )
            .optional()
        })
    }

    /// Notes that the target accepted session `id`.
    pub fn mark_accepted(&self, id: u64) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET accepted_at_ms = ?2
                 WHERE id = ?1 AND accepted_at_ms IS NULL AND ended_at_ms IS NULL",
                params![id as i64, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Ends session `id` with `reason` if it is open; true if this call ended it.
    pub fn end_session(&self, id: u64, reason: &str) -> Result<bool> {
        let changed = self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET ended_at_ms = ?2, end_reason = ?3
                 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![id as i64, now_ms(), reason],
            )
        })?;
        Ok(changed == 1)
    }

    /// The open sessions `user` takes part in, with the other participant of each; not
    /// those unknown since a server stop (only a client's report ends them).
    pub fn open_sessions_of(&self, user: &str) -> Result<Vec<(u64, String)>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, CASE WHEN requester = ?1 COLLATE NOCASE THEN target ELSE requester END
                 FROM sessions
                 WHERE ended_at_ms IS NULL AND unknown_since_ms IS NULL AND (requester = ?1 COLLATE NOCASE OR target = ?1 COLLATE NOCASE)",
            )?;
            let rows = stmt.query_map([user], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Marks every open session "unknown since now" (a server run ended or was found to
    /// have ended while they were open) without ending them; returns how many were newly
    /// marked. A session already unknown keeps its first mark.
    pub fn mark_open_sessions_unknown(&self) -> Result<usize> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET unknown_since_ms = ?1
                 WHERE ended_at_ms IS NULL AND unknown_since_ms IS NULL",
                [now_ms()],
            )
        })
    }

    /// The most recent `limit` sessions, newest first.
    pub fn session_log(&self, limit: usize) -> Result<Vec<SessionRecord>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("{SESSION_COLUMNS} ORDER BY id DESC LIMIT ?1"))?;
            let rows = stmt.query_map([limit as i64], session_row)?;
            rows.collect()
        })
    }

    /// Records a requested transfer and returns its id.
    pub fn create_transfer(&self, requester: &str, target: &str) -> Result<u64> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO transfers (requester, target, started_at_ms) VALUES (?1, ?2, ?3)",
                params![requester, target, now_ms()],
            )?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    /// The participants of transfer `id`, if it exists.
    pub fn transfer_participants(&self, id: u64) -> Result<Option<(String, String)>> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT requester, target FROM transfers WHERE id = ?1",
                [id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
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
            let tx = c.transaction()?;
            let now = now_ms();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO transfer_reports (transfer_id, side, role, result, name, size,
                     moved, resumed_from, hash, duration_ms, reported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id as i64,
                    side,
                    end.role,
                    end.result,
                    name,
                    end.size as i64,
                    end.moved as i64,
                    end.resumed_from as i64,
                    end.hash,
                    end.duration_ms as i64,
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
                        id as i64,
                        now,
                        end.result,
                        name,
                        end.size as i64,
                        end.hash,
                        end.duration_ms as i64,
                        end.role,
                        end.moved as i64,
                        end.resumed_from as i64,
                        receiver as i64
                    ],
                )?;
                if let Some(direction) = direction {
                    tx.execute(
                        "UPDATE transfers SET direction = ?2 WHERE id = ?1 AND direction IS NULL",
                        params![id as i64, direction],
                    )?;
                }
            }
            tx.commit()?;
            Ok(inserted == 1)
        })
    }

    /// The most recent `limit` transfers, newest first, each with its side reports.
    pub fn transfer_log(&self, limit: usize) -> Result<Vec<TransferLogRow>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, requester, target, started_at_ms, ended_at_ms, result, name, size, hash,
                        duration_ms, role, moved, resumed_from, direction, from_receiver
                 FROM transfers ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                let ended: Option<i64> = r.get(4)?;
                let end = match ended {
                    Some(_) => Some(record_at(r, 5)?),
                    None => None,
                };
                Ok(TransferLogRow {
                    id: r.get::<_, i64>(0)? as u64,
                    requester: r.get(1)?,
                    target: r.get(2)?,
                    started_at_ms: r.get(3)?,
                    direction: r.get(13)?,
                    end,
                    from_receiver: r.get::<_, i64>(14)? != 0,
                    reports: Vec::new(),
                })
            })?;
            let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare(
                "SELECT side, result, name, size, hash, duration_ms, role, moved, resumed_from
                 FROM transfer_reports WHERE transfer_id = ?1 ORDER BY side",
            )?;
            for row in &mut rows {
                let reports = stmt.query_map([row.id as i64], |r| {
                    Ok(TransferReport {
                        side: r.get(0)?,
                        record: record_at(r, 1)?,
                    })
                })?;
                row.reports = reports.collect::<rusqlite::Result<Vec<_>>>()?;
            }
            Ok(rows)
        })
    }

    /// Checkpoints the WAL into the main file and closes every idle connection.
    pub fn close(&self) -> Result<()> {
        let conns = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for conn in conns {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            conn.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::Config(format!(
            "the database has schema version {version}, newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        log::info!("database schema migrated to version {}", index + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/server.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn accounts_are_unique_regardless_of_case() {
        let (_dir, store) = temp_store();
        assert_eq!(
            store.create_user("Alice", "$2b$hash").unwrap(),
            Created::Yes
        );
        assert_eq!(
            store.create_user("alice", "$2b$other").unwrap(),
            Created::Taken
        );
        assert!(store.user_exists("ALICE").unwrap());
        let account = store.account("aLiCe").unwrap().unwrap();
        assert_eq!(account.username, "Alice");
        assert!(store.account("bob").unwrap().is_none());
    }

    #[test]
    fn third_failure_blocks_and_success_clears() {
        let (_dir, store) = temp_store();
        let block = Duration::from_secs(60);
        assert_eq!(
            store.record_failure("al", "1.2.3.4", block).unwrap(),
            Failure::Counted(1)
        );
        store.clear_failures("al", "1.2.3.4").unwrap();
        assert_eq!(
            store.record_failure("al", "1.2.3.4", block).unwrap(),
            Failure::Counted(1)
        );
        assert_eq!(
            store.record_failure("al", "1.2.3.4", block).unwrap(),
            Failure::Counted(2)
        );
        assert_eq!(
            store.record_failure("al", "5.6.7.8", block).unwrap(),
            Failure::Counted(1)
        );
        assert!(store.blocked_for("al", "1.2.3.4").unwrap().is_none());
        assert_eq!(
            store.record_failure("al", "1.2.3.4", block).unwrap(),
            Failure::Blocked
        );
        let left = store.blocked_for("al", "1.2.3.4").unwrap().unwrap();
        assert!(left > Duration::from_secs(50) && left <= block);
        assert!(store.blocked_for("al", "5.6.7.8").unwrap().is_none());
    }

    #[test]
    fn schema_version_is_recorded_and_reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        {
            let store = Store::open(&path).unwrap();
            store.create_user("carol", "$2b$x").unwrap();
            store.close().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.user_exists("carol").unwrap());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
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

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(Store::open(&path), Err(Error::Config(_))));
    }
}
