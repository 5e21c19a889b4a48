//! The SQLite backend (the embedded default): opening a connection, running the store's
//! statements on it, and the schema version in `PRAGMA user_version`.
//!
//! Owns everything rusqlite-specific; the statements themselves live with the store's
//! methods. It must not hold any lock: the pool in `store` hands connections out.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::MIGRATIONS;
use super::sql::{Conn, Row, Value};
use crate::error::{Error, Result};

/// How long SQLite waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// One SQLite connection.
pub struct SqliteConn(Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::from(rusqlite::types::Null),
            Value::Int(v) => ToSqlOutput::from(*v),
            Value::Text(v) => ToSqlOutput::from(v.as_str()),
            Value::Blob(v) => ToSqlOutput::from(v.as_slice()),
        })
    }
}

/// Opens a connection to the database file in WAL mode with a busy timeout. A new file
/// is created readable by its owner only (it holds the bcrypt hashes; SQLite gives its
/// `-wal` and `-shm` files the same mode); an existing one readable by others is left as
/// the operator made it, with a warning.
pub fn connect(path: &Path) -> Result<SqliteConn> {
    create_private(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database journal mode is {mode}, not WAL");
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
    Ok(SqliteConn(conn))
}

/// Creates `path` empty with mode 0600 if it does not exist; warns if it exists and
/// others may read it. (An empty file is a valid new SQLite database.)
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.is_file()
                && meta.permissions().mode() & 0o077 != 0
            {
                log::warn!(
                    "{} can be read by other users of this machine, and it holds the password hashes: chmod 600 it",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(Error::Store(format!("creating {}: {e}", path.display()))),
    }
}

impl Conn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(Error::Store(format!("column {i} is a real number")));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn begin_writing(&mut self, _table: &str) -> Result<()> {
        Ok(self.0.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn healthy(&self) -> bool {
        self.0.is_autocommit()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.0.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        self.0.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

/// Brings the schema up to date, one transaction per migration, counting in
/// `PRAGMA user_version`.
pub fn migrate(conn: &mut SqliteConn) -> Result<()> {
    let conn = &mut conn.0;
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
