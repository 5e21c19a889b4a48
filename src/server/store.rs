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
    /// How it ended, once reported.
    pub end: Option<TransferRecord>,
}

const SESSION_COLUMNS: &str = "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason FROM sessions";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get::<_, i64>(0)? as u64,
        requester: r.get(1)?,
        target: r.get(2)?,
        started_at_ms: r.get(3)?,
        accepted_at_ms: r.get(4)?,
        ended_at_ms: r.get(5)?,
        end_reason: r.get(6)?,
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

    /// Replaces the stored password hash of `username` (any case), e.g. to rehash it at
    /// the current cost.
    pub fn set_password_hash(&self, username: &str, pw_hash: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE users SET pw_hash = ?2 WHERE username = ?1",
                params![username, pw_hash],
            )
        })?;
        Ok(())
    }

    /// Writes the failure count of `username_key` from `ip`, and the block it started if
    /// any. A block only ever grows, so writes that cross cannot shorten one.
    pub fn save_login_failures(
        &self,
        username_key: &str,
        ip: &str,
        failures: u32,
        blocked_for: Option<Duration>,
    ) -> Result<()> {
        let until = blocked_for.map_or(0, |block| now_ms() + block.as_millis() as i64);
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO login_failures (username_key, ip, failures, blocked_until_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (username_key, ip) DO UPDATE SET
                   failures = excluded.failures,
                   blocked_until_ms = MAX(blocked_until_ms, excluded.blocked_until_ms)",
                params![username_key, ip, failures, until],
            )
        })?;
        Ok(())
    }

    /// The failure counts and blocks still in force, for the in-memory limits at start-up:
    /// (username key, ip, failures, time left blocked). Rows that no longer count are
    /// deleted.
    pub fn login_failures(&self) -> Result<Vec<(String, String, u32, Duration)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE failures <= 0 AND blocked_until_ms <= ?1",
                [now],
            )?;
            let mut stmt = c.prepare(
                "SELECT username_key, ip, failures, blocked_until_ms FROM login_failures",
            )?;
            let rows = stmt.query_map([], |r| {
                let until: i64 = r.get(3)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    u32::try_from(r.get::<_, i64>(2)?.max(0)).unwrap_or(u32::MAX),
                    Duration::from_millis(until.saturating_sub(now).max(0) as u64),
                ))
            })?;
            rows.collect()
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

    /// The open sessions `user` takes part in, with the other participant of each.
    pub fn open_sessions_of(&self, user: &str) -> Result<Vec<(u64, String)>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, CASE WHEN requester = ?1 COLLATE NOCASE THEN target ELSE requester END
                 FROM sessions
                 WHERE ended_at_ms IS NULL AND (requester = ?1 COLLATE NOCASE OR target = ?1 COLLATE NOCASE)",
            )?;
            let rows = stmt.query_map([user], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Ends every open session with `reason`; returns how many there were.
    pub fn end_all_open_sessions(&self, reason: &str) -> Result<usize> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE sessions SET ended_at_ms = ?1, end_reason = ?2 WHERE ended_at_ms IS NULL",
                params![now_ms(), reason],
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

    /// Records how transfer `id` ended, unless it was recorded already; true if this
    /// call recorded it.
    pub fn end_transfer(&self, id: u64, end: &TransferRecord) -> Result<bool> {
        let changed = self.with_conn(|c| {
            c.execute(
                "UPDATE transfers SET ended_at_ms = ?2, result = ?3, name = ?4, size = ?5, hash = ?6,
                 duration_ms = ?7 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![
                    id as i64,
                    now_ms(),
                    end.result,
                    end.name,
                    end.size as i64,
                    end.hash,
                    end.duration_ms as i64
                ],
            )
        })?;
        Ok(changed == 1)
    }

    /// The most recent `limit` transfers, newest first.
    pub fn transfer_log(&self, limit: usize) -> Result<Vec<TransferLogRow>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, requester, target, started_at_ms, ended_at_ms, result, name, size, hash,
                        duration_ms
                 FROM transfers ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                let ended: Option<i64> = r.get(4)?;
                let end = match ended {
                    Some(_) => Some(TransferRecord {
                        result: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        name: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        size: r.get::<_, Option<i64>>(7)?.unwrap_or(0) as u64,
                        hash: r.get(8)?,
                        duration_ms: r.get::<_, Option<i64>>(9)?.unwrap_or(0) as u64,
                    }),
                    None => None,
                };
                Ok(TransferLogRow {
                    id: r.get::<_, i64>(0)? as u64,
                    requester: r.get(1)?,
                    target: r.get(2)?,
                    started_at_ms: r.get(3)?,
                    end,
                })
            })?;
            rows.collect()
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
    fn login_failures_and_blocks_are_stored_and_blocks_never_shrink() {
        let (_dir, store) = temp_store();
        let block = Duration::from_secs(60);
        store.save_login_failures("al", "1.2.3.4", 2, None).unwrap();
        store
            .save_login_failures("al", "5.6.7.8", 0, Some(block))
            .unwrap();
        // A count written after the block (writes that crossed) keeps the block.
        store.save_login_failures("al", "5.6.7.8", 1, None).unwrap();
        store.save_login_failures("bo", "1.2.3.4", 1, None).unwrap();
        store.clear_failures("bo", "1.2.3.4").unwrap();
        let mut rows = store.login_failures().unwrap();
        rows.sort();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("al", "1.2.3.4"));
        assert_eq!((rows[0].2, rows[0].3), (2, Duration::ZERO));
        assert_eq!(rows[1].1, "5.6.7.8");
        assert!(rows[1].3 > Duration::from_secs(50) && rows[1].3 <= block);
    }

    #[test]
    fn a_password_hash_can_be_replaced() {
        let (_dir, store) = temp_store();
        store.create_user("Alice", "$2b$04$old").unwrap();
        store.set_password_hash("alice", "$2b$12$new").unwrap();
        assert_eq!(
            store.account("ALICE").unwrap().unwrap().pw_hash,
            "$2b$12$new"
        );
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
        assert_eq!(store.end_all_open_sessions("server_restart").unwrap(), 1);
        let log = store.session_log(10).unwrap();
        assert_eq!(
            log.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![other, id]
        );
        assert_eq!(log[0].end_reason.as_deref(), Some("server_restart"));
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
