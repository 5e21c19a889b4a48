//! The server's storage interface: one `Store` with two backends, SQLite (a file, the
//! embedded default) and PostgreSQL (`--db postgres://...`, shareable by several
//! servers); the schema, its migrations and the account and login-failure queries.
//!
//! Owns persistence of accounts and login failures/blocks (the session and transfer logs
//! are in `logs`, login tokens in `tokens`). Every statement and migration is written
//! once, in SQLite's dialect, and runs on both backends (`sql` translates for
//! PostgreSQL in one place), so callers never know which backend they use. It must not
//! hash passwords (callers run bcrypt before or after, never inside a store call) and
//! must never be called while the registry lock is held.
//!
//! Concurrency: instead of one connection behind a mutex held across disk or network
//! waits, the store keeps a small pool of idle connections. The pool's lock is held only
//! to pop or push a connection, never while the database works. SQLite: WAL mode lets
//! readers run beside the one writer, and the busy timeout queues writers inside SQLite.
//! PostgreSQL: at most `MAX_PG_CONNECTIONS` per server, so several servers stay within
//! the database's connection limit; a caller waits (bounded) for a free one. (A crate
//! such as r2d2 would add two dependencies for these few lines.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

mod held;
mod held_offers;
mod identity;
mod location;
mod logs;
mod mailbox;
mod postgres;
pub(crate) mod sql;
mod sqlite;
mod tokens;
pub use held_offers::{Answered, OfferKey};
pub use location::DbLocation;
pub use logs::{SessionRecord, TransferLogRow, TransferRecord, TransferReport};
pub use mailbox::{MailboxFull, NewMessage, Queued};
use sql::{Conn, params};

/// Schema migrations; entry `i` takes the database from version i to i+1 (SQLite keeps
/// the version in `PRAGMA user_version`, PostgreSQL in the table `peerchat_schema`).
/// Written once in SQLite's dialect; `sql::postgres_dialect` rewrites them for
/// PostgreSQL (write types in capitals; `COLLATE NOCASE` for names; see there what else
/// it rewrites), and both backends run them.
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
    // 10: file offers made through the server and not yet settled (issue 13), so an
    // answer to an offer that does not wait (unknown, expired, answered) is refused, and
    // an accepted offer the server numbered keeps its number for the later TRANSFER.
    // Names in lower case; `numbered` 1 when the server gave the number (a transfer id);
    // `accepted` 1 once its recipient said ok (then it waits for the offerer's TRANSFER).
    "CREATE TABLE open_offers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        offerer TEXT NOT NULL,
        recipient TEXT NOT NULL,
        offer INTEGER NOT NULL,
        numbered INTEGER NOT NULL,
        accepted INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX open_offers_pair ON open_offers (offerer, recipient, offer);",
];

/// Idle connections kept for reuse; more are opened under load and closed afterwards.
const MAX_IDLE: usize = 8;

/// Most PostgreSQL connections one server opens at once (its default `max_connections`
/// of 100 then serves several servers).
const MAX_PG_CONNECTIONS: usize = 16;

/// PostgreSQL connections opened at start-up: connecting costs a server process and a
/// few round trips, so the first logins and commands do not each pay for one.
const PG_WARM: usize = 4;

/// How long a caller waits for a free PostgreSQL connection before giving up.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Which database, to open more pooled connections.
enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

/// The pool: idle connections and how many are open (idle or in use).
struct Pool {
    idle: Vec<Box<dyn Conn>>,
    open: usize,
}

/// The server's database.
pub struct Store {
    backend: Backend,
    /// Connections not in use right now; its lock is held only to pop or push.
    pool: Mutex<Pool>,
    /// Signalled when a connection comes back or closes.
    freed: Condvar,
    /// The sessions this process created and has not seen end: when the database is
    /// shared, a stopping server marks only these unknown (the others belong to other
    /// servers, which still serve them).
    own_sessions: Mutex<HashSet<u64>>,
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

/// True if `e` is the database refusing a duplicate in a unique index.
fn is_unique_violation(e: &Error) -> bool {
    match e {
        Error::Db(rusqlite::Error::SqliteFailure(e, _)) => {
            e.code == rusqlite::ErrorCode::ConstraintViolation
        }
        e => postgres::is_unique_violation(e),
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up
    /// to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_at(&DbLocation::File(path.to_path_buf()))
    }

    /// Opens the database at `location` (a SQLite file, created with its folder if
    /// missing, or a PostgreSQL URL) and brings its schema up to date.
    pub fn open_at(location: &DbLocation) -> Result<Store> {
        let backend = match location {
            DbLocation::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Backend::Sqlite(path.clone())
            }
            DbLocation::Postgres(url) => Backend::Postgres(url.clone()),
        };
        let store = Store {
            backend,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 1,
            }),
            freed: Condvar::new(),
            own_sessions: Mutex::new(HashSet::new()),
        };
        let conn: Box<dyn Conn> = match &store.backend {
            Backend::Sqlite(path) => {
                let mut conn = sqlite::connect(path)?;
                sqlite::migrate(&mut conn)?;
                Box::new(conn)
            }
            Backend::Postgres(url) => {
                let mut conn = postgres::connect(url)?;
                postgres::migrate(&mut conn)?;
                Box::new(conn)
            }
        };
        store.put_back(conn);
        if store.is_shared() {
            for _ in 1..PG_WARM {
                let conn = store.connect()?;
                store.lock_pool().open += 1;
                store.put_back(conn);
            }
        }
        Ok(store)
    }

    /// True when other servers may share this database (PostgreSQL): then what another
    /// server wrote (a block, say) must be read back rather than remembered.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn max_open(&self) -> usize {
        match self.backend {
            Backend::Sqlite(_) => usize::MAX,
            Backend::Postgres(_) => MAX_PG_CONNECTIONS,
        }
    }

    fn connect(&self) -> Result<Box<dyn Conn>> {
        Ok(match &self.backend {
            Backend::Sqlite(path) => Box::new(sqlite::connect(path)?),
            Backend::Postgres(url) => Box::new(postgres::connect(url)?),
        })
    }

    /// Takes an idle connection, or opens one while under the cap, or waits (bounded)
    /// for one to come back. The pool lock is released before connecting.
    fn take(&self) -> Result<Box<dyn Conn>> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut pool = self.lock_pool();
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < self.max_open() {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| self.forget_one());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Store(format!(
                    "no database connection free within {} s",
                    POOL_WAIT.as_secs()
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn forget_one(&self) {
        self.lock_pool().open -= 1;
        self.freed.notify_one();
    }

    fn put_back(&self, conn: Box<dyn Conn>) {
        let mut pool = self.lock_pool();
        if conn.healthy() && pool.idle.len() < MAX_IDLE {
            pool.idle.push(conn);
            drop(pool);
        } else {
            pool.open -= 1;
            drop(pool);
            // Closed outside the lock: dropping a connection may wait on the network.
            drop(conn);
        }
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled connection; the pool lock is not held while `f` runs.
    fn with_conn<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut conn = self.take()?;
        let result = f(conn.as_mut());
        self.put_back(conn);
        result
    }

    /// True if an account has this name (in any case).
    pub fn user_exists(&self, username: &str) -> Result<bool> {
        self.with_conn(|c| {
            Ok(
                c.query_opt("SELECT 1 FROM users WHERE username = ?1", params![username])?
                    .is_some(),
            )
        })
    }

    /// Writes a new account; the unique index decides races between two registrations,
    /// on this server or (PostgreSQL) on any server sharing the database.
    pub fn create_user(&self, username: &str, pw_hash: &str) -> Result<Created> {
        let inserted = self.with_conn(|c| {
            c.execute(
                "INSERT INTO users (username, pw_hash, created_at) VALUES (?1, ?2, ?3)",
                params![username, pw_hash, now_ms() / 1000],
            )
        });
        match inserted {
            Ok(_) => Ok(Created::Yes),
            Err(e) if is_unique_violation(&e) => Ok(Created::Taken),
            Err(e) => Err(e),
        }
    }

    /// The stored account with this name (in any case), if any.
    pub fn account(&self, username: &str) -> Result<Option<Account>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT username, pw_hash FROM users WHERE username = ?1",
                params![username],
            )?
            .map(|r| {
                Ok(Account {
                    username: r.text(0)?,
                    pw_hash: r.text(1)?,
                })
            })
            .transpose()
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
                   blocked_until_ms = CASE
                     WHEN excluded.blocked_until_ms > login_failures.blocked_until_ms
                     THEN excluded.blocked_until_ms ELSE login_failures.blocked_until_ms END",
                params![username_key, ip, failures, until],
            )
        })?;
        Ok(())
    }

    /// The failure count and block of `username_key` from `ip` as stored now (perhaps by
    /// another server): `(failures, time left blocked)`, or `None` if nothing counts.
    pub fn login_failure(&self, username_key: &str, ip: &str) -> Result<Option<(u32, Duration)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.query_opt(
                "SELECT failures, blocked_until_ms FROM login_failures
                 WHERE username_key = ?1 AND ip = ?2",
                params![username_key, ip],
            )?
            .map(|r| Ok(failure_row(r.int(0)?, r.int(1)?, now)))
            .transpose()
        })
    }

    /// The failure counts and blocks still in force, for the in-memory limits at start-up:
    /// (username key, ip, failures, time left blocked). Rows that no longer count are
    /// deleted.
    pub fn login_failures(&self) -> Result<Vec<(String, String, u32, Duration)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE failures <= 0 AND blocked_until_ms <= ?1",
                params![now],
            )?;
            c.query(
                "SELECT username_key, ip, failures, blocked_until_ms FROM login_failures",
                params![],
            )?
            .into_iter()
            .map(|r| {
                let (failures, left) = failure_row(r.int(2)?, r.int(3)?, now);
                Ok((r.text(0)?, r.text(1)?, failures, left))
            })
            .collect()
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

    /// Closes every idle connection (SQLite checkpoints the WAL into the main file).
    pub fn close(&self) -> Result<()> {
        let conns = {
            let mut pool = self.lock_pool();
            let conns = std::mem::take(&mut pool.idle);
            pool.open -= conns.len();
            conns
        };
        for conn in conns {
            conn.close()?;
        }
        Ok(())
    }
}

/// A stored (failures, blocked until) as (failures, time left blocked) at `now`.
fn failure_row(failures: i64, blocked_until_ms: i64, now: i64) -> (u32, Duration) {
    (
        u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
        Duration::from_millis(blocked_until_ms.saturating_sub(now).max(0) as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

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
