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

mod held;
mod identity;
mod logs;
mod mailbox;
mod tokens;
pub use logs::{SessionRecord, TransferLogRow, TransferRecord, TransferReport};
pub use mailbox::{MailboxFull, NewMessage, Queued};

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
    // 5: resumable-login tokens (issue 14), stored as digests only.
    "CREATE TABLE login_tokens (
        digest TEXT PRIMARY KEY,
        username_key TEXT NOT NULL COLLATE NOCASE,
        expires_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX login_tokens_user ON login_tokens (username_key, created_at_ms);",
    // 6: the path each session and transfer took (issue 13): NULL is direct, or
    // 'reverse', 'relay'.
    "ALTER TABLE sessions ADD COLUMN path TEXT;
    ALTER TABLE transfers ADD COLUMN path TEXT;",
    // 7: each account's long-term X25519 identity public key (issue 12), 64 lower-case
    // hex digits, NULL until the client sends `KEY`; a later `KEY` replaces it.
    "ALTER TABLE users ADD COLUMN identity_key TEXT;",
    // 8: messages waiting for offline recipients (issue 13): sealed to the recipient's
    // identity key, so the server stores only ciphertext.
    // AUTOINCREMENT: a message id is never reused, even after the row was delivered.
    "CREATE TABLE mailbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT,
        sent_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        sealed BLOB NOT NULL
    );
    CREATE INDEX mailbox_recipient ON mailbox (recipient_id, id);
    CREATE INDEX mailbox_expiry ON mailbox (expires_at_ms);",
    // 9: events held for offline users (issue 13): file offers made through the server
    // and answers to them, each a complete EVENT line, delivered at the next login.
    "CREATE TABLE held_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_id INTEGER NOT NULL,
        line TEXT NOT NULL,
        held_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX held_events_recipient ON held_events (recipient_id, id);",
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
