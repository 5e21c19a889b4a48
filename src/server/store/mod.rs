//! The server's storage interface: one `Store` with two backends, SQLite (a file, the
//! embedded default) and PostgreSQL (`--db postgres://...`, shareable by several
//! servers), opening it (migrations from `schema` applied) and its connection pool.
//!
//! Owns the pool and which backend serves (the account and login-failure queries are
//! in `accounts`, the session and transfer logs in `logs`, login tokens in `tokens`). Every statement and migration is written
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

mod accounts;
mod held;
mod held_offers;
mod identity;
mod location;
mod logs;
mod mailbox;
mod postgres;
mod schema;
pub(crate) mod sql;
mod sqlite;
mod tokens;
pub use accounts::{Account, Created};
pub use held_offers::{Answered, OfferKey, Opened};
pub use location::DbLocation;
pub use logs::{SessionRecord, TransferLogRow, TransferRecord, TransferReport};
pub use mailbox::{MailboxFull, NewMessage, Queued, SenderCaps};
use schema::MIGRATIONS;
use sql::Conn;

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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

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
