//! The PostgreSQL backend (`--db postgres://...`): opening a connection, running the
//! store's statements on it (rewritten by `sql::postgres_dialect`), and the schema
//! version in the table `peerchat_schema`.
//!
//! Uses the synchronous `postgres` crate. It runs a private current-thread tokio runtime
//! inside each connection, driven only while one of our calls blocks on it: no thread or
//! async code of its own appears in peerchat, which stays synchronous. Several servers
//! may share one database: migrations run under an advisory lock, and the unique indexes
//! decide races (two registrations of one name on two servers: one wins). This module
//! must not hold any lock (the pool in `store` hands connections out) and must never log
//! the URL unredacted (`DbLocation`'s Display hides the password).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::MIGRATIONS;
use super::sql::{Conn, Row, Value, postgres_dialect};
use crate::error::{Error, Result};

/// How long connecting may take before the store gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection (the store has a few dozen).
const STATEMENT_CACHE: usize = 128;

/// The advisory lock taken while migrating, so servers starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7065_6572_6368_6174; // "peerchat"

/// The case-insensitive collation `COLLATE NOCASE` names (ICU, level 2: case ignored).
const NOCASE: &str = "CREATE COLLATION IF NOT EXISTS nocase
    (provider = icu, locale = 'und-u-ks-level2', deterministic = false)";

/// One PostgreSQL connection with its prepared statements.
pub struct PgConn {
    client: Client,
    /// Prepared statements by their text in SQLite's dialect.
    statements: HashMap<String, Statement>,
}

/// Connects to `url` (a `postgres://` URL, or key=value settings).
pub fn connect(url: &str) -> Result<PgConn> {
    let mut config = postgres::Config::from_str(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("peerchat-server");
    }
    let client = config.connect(NoTls)?;
    Ok(PgConn {
        client,
        statements: HashMap::new(),
    })
}

/// True if `e` is PostgreSQL refusing a duplicate in a unique index.
pub fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Postgres(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION))
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&postgres_dialect(sql))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// Converts the store's values to the types PostgreSQL inferred for the parameters (a
/// literal compared with `?N` may make it INT4, a column makes it BIGINT).
fn bind(statement: &Statement, params: &[Value]) -> Result<Vec<Box<dyn ToSql + Sync>>> {
    let types = statement.params();
    if types.len() != params.len() {
        return Err(Error::Store(format!(
            "a statement takes {} parameters, {} given",
            types.len(),
            params.len()
        )));
    }
    let out_of_range = |i: usize| Error::Store(format!("parameter {} out of range", i + 1));
    let mut bound: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(params.len());
    for (i, (value, ty)) in params.iter().zip(types).enumerate() {
        bound.push(match (value, ty) {
            (Value::Int(v), &Type::INT8) => Box::new(*v),
            (Value::Int(v), &Type::INT4) => {
                Box::new(i32::try_from(*v).map_err(|_| out_of_range(i))?)
            }
            (Value::Int(v), &Type::INT2) => {
                Box::new(i16::try_from(*v).map_err(|_| out_of_range(i))?)
            }
            (Value::Int(v), &Type::BOOL) => Box::new(*v != 0),
            (Value::Int(v), _) => Box::new(v.to_string()),
            (Value::Text(v), _) => Box::new(v.clone()),
            (Value::Blob(v), _) => Box::new(v.clone()),
            (Value::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
            (Value::Null, &Type::INT8) => Box::new(None::<i64>),
            (Value::Null, &Type::INT4) => Box::new(None::<i32>),
            (Value::Null, &Type::INT2) => Box::new(None::<i16>),
            (Value::Null, &Type::BOOL) => Box::new(None::<bool>),
            (Value::Null, _) => Box::new(None::<String>),
        });
    }
    Ok(bound)
}

fn row_values(row: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl Conn for PgConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let bound = bind(&statement, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b).collect();
        Ok(self.client.execute(&statement, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        let bound = bind(&statement, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b).collect();
        self.client
            .query(&statement, &refs)?
            .iter()
            .map(row_values)
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.client.batch_execute(sql)?)
    }

    fn begin_writing(&mut self, table: &str) -> Result<()> {
        // Table names come from the store's own code, never from a client.
        Ok(self
            .client
            .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE"))?)
    }

    fn healthy(&self) -> bool {
        !self.client.is_closed()
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.client.close()?)
    }
}

/// Brings the schema up to date in one transaction, under an advisory lock so that
/// servers starting at the same time migrate once: creates the `nocase` collation and
/// the version table, then runs each missing migration in PostgreSQL's dialect.
pub fn migrate(conn: &mut PgConn) -> Result<()> {
    let mut tx = conn.client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // "already exists, skipping" on every start is no news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute(NOCASE)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS peerchat_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM peerchat_schema", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO peerchat_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::Config(format!(
            "the database has schema version {version}, newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(&postgres_dialect(sql))?;
        let next = (index + 1) as i64;
        tx.execute("UPDATE peerchat_schema SET version = $1", &[&next])?;
        log::info!("database schema migrated to version {next}");
    }
    tx.commit()?;
    Ok(())
}
