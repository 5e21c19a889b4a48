//! The SQL both storage backends speak: values, rows, the `Conn` trait every backend's
//! connection implements, transactions, and the one place where SQLite's dialect is
//! turned into PostgreSQL's.
//!
//! Every query and migration of the store is written once, in SQLite's dialect with `?N`
//! placeholders, and runs unchanged on SQLite; [`postgres_dialect`] rewrites it for
//! PostgreSQL. This module must not know any table or query, and must not log values.

use crate::error::{Error, Result};

/// One value passed to or read from a query: the store only uses integers and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (SQLite INTEGER, PostgreSQL BIGINT; smaller types are widened).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (SQLite BLOB, PostgreSQL BYTEA).
    Blob(Vec<u8>),
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        // Ids and sizes: the schema stores them as signed 64-bit, as SQLite does.
        Value::Int(v as i64)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        v.as_deref().map_or(Value::Null, Value::from)
    }
}

/// The parameters of one query, in `?1`, `?2`... order: `params![a, b]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        &[$($crate::server::store::sql::Value::from($v)),*][..]
    };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| Error::Store(format!("a row has no column {i}")))
    }

    /// Column `i` as an integer that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(Error::Store(format!("column {i} is not a number"))),
        }
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| Error::Store(format!("column {i} is NULL")))
    }

    /// Column `i` as text that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            _ => Err(Error::Store(format!("column {i} is not text"))),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(Error::Store(format!("column {i} is not bytes"))),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| Error::Store(format!("column {i} is NULL")))
    }
}

/// One connection of a backend. Statements are in SQLite's dialect (see the module doc).
pub trait Conn: Send {
    /// Runs one statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs one statement and returns every row it produced.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs statements without parameters (BEGIN, COMMIT, ROLLBACK).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Begins a transaction that writes `table` and excludes every other writer of it
    /// from its first statement on (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN and an
    /// exclusive table lock, which holds across servers), so counts read inside it
    /// still hold when it writes.
    fn begin_writing(&mut self, table: &str) -> Result<()>;
    /// False when the connection must not go back to the pool (closed, or left inside a
    /// transaction by a failed COMMIT).
    fn healthy(&self) -> bool;
    /// Closes the connection cleanly (SQLite checkpoints its WAL first).
    fn close(self: Box<Self>) -> Result<()>;
}

impl dyn Conn + '_ {
    /// The first row of a query, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query, which must exist.
    pub fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?
            .ok_or_else(|| Error::Store("a query that returns one row returned none".into()))
    }

    /// Runs `f` inside BEGIN/COMMIT; any error rolls back.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.batch("BEGIN")?;
        self.finish(f)
    }

    /// Runs `f` in a transaction that excludes other writers of `table` (see
    /// [`Conn::begin_writing`]); any error rolls back.
    pub fn writing<T>(
        &mut self,
        table: &str,
        f: impl FnOnce(&mut dyn Conn) -> Result<T>,
    ) -> Result<T> {
        if let Err(e) = self.begin_writing(table) {
            // The lock may have failed after BEGIN: never leave the transaction open.
            let _ = self.batch("ROLLBACK");
            return Err(e);
        }
        self.finish(f)
    }

    fn finish<T>(&mut self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        match f(self) {
            Ok(value) => {
                self.batch("COMMIT")?;
                Ok(value)
            }
            Err(e) => {
                // A failed rollback leaves the connection unhealthy; it is then dropped.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Rewrites a statement from SQLite's dialect into PostgreSQL's. The differences the
/// store's SQL meets, all handled here:
/// - `?N` placeholders become `$N`;
/// - `INTEGER PRIMARY KEY` (SQLite's rowid alias) becomes a BIGINT identity column, and
///   every other `INTEGER` a `BIGINT` (SQLite integers are 64-bit);
/// - every `CREATE TABLE` gets a `rowid` identity column, as SQLite tables have one, so
///   queries that order by insertion (`rowid`) mean the same on both;
/// - `BLOB` becomes `BYTEA`, and `AUTOINCREMENT` goes (identities never reuse ids);
/// - `COLLATE NOCASE` names the case-insensitive ICU collation `nocase` that the
///   PostgreSQL backend creates before the first migration (unquoted names fold to lower
///   case, so the text stays as it is).
///
/// Types are written in capitals in the store's SQL; text inside quotes is left alone.
pub fn postgres_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut words: Vec<String> = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            // A string literal ('' inside is an escaped quote): copied as it is.
            out.push(c);
            while let Some((_, c)) = chars.next() {
                out.push(c);
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        out.push('\'');
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
        } else if c == '-' && chars.peek().is_some_and(|(_, n)| *n == '-') {
            // A comment, to the end of the line: copied as it is.
            out.push(c);
            for (_, c) in chars.by_ref() {
                out.push(c);
                if c == '\n' {
                    break;
                }
            }
        } else if c == '?' {
            out.push('$');
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some((j, n)) = chars.peek().copied() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    end = j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &sql[i..end];
            let rest = &sql[end..];
            if word == "INTEGER" && rest.trim_start().starts_with("PRIMARY KEY") {
                out.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY");
            } else if word == "INTEGER" {
                out.push_str("BIGINT");
            } else if word == "BLOB" {
                out.push_str("BYTEA");
            } else if word == "AUTOINCREMENT" {
                // An identity never hands out an id twice anyway.
            } else {
                out.push_str(word);
            }
            words.push(word.to_string());
            // `CREATE TABLE name (`: the implicit rowid becomes explicit.
            let n = words.len();
            if n >= 3 && words[n - 3] == "CREATE" && words[n - 2] == "TABLE" {
                let trimmed = rest.trim_start();
                if let Some(after) = trimmed.strip_prefix('(') {
                    let skipped = rest.len() - after.len();
                    out.push_str(&rest[..skipped]);
                    out.push_str("\n        rowid BIGINT GENERATED ALWAYS AS IDENTITY,");
                    for _ in 0..rest[..skipped].chars().count() {
                        chars.next();
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_types_are_rewritten_and_literals_kept() {
        assert_eq!(
            postgres_dialect("SELECT a FROM t WHERE b = ?1 AND c = '?2 INTEGER'''"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2 INTEGER'''"
        );
        let created = postgres_dialect(
            "CREATE TABLE users (\n id INTEGER PRIMARY KEY,\n n INTEGER NOT NULL,\n name TEXT COLLATE NOCASE\n);",
        );
        assert_eq!(
            created,
            "CREATE TABLE users (\n        rowid BIGINT GENERATED ALWAYS AS IDENTITY,\n id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n n BIGINT NOT NULL,\n name TEXT COLLATE NOCASE\n);"
        );
        assert_eq!(
            postgres_dialect("ALTER TABLE s ADD COLUMN u INTEGER; -- it's INTEGER ?1\nINTEGER"),
            "ALTER TABLE s ADD COLUMN u BIGINT; -- it's INTEGER ?1\nBIGINT"
        );
    }

    #[test]
    fn rows_convert_and_say_what_is_wrong() {
        let row = Row(vec![Value::Int(3), Value::Null, Value::from("x")]);
        assert_eq!(row.int(0).unwrap(), 3);
        assert_eq!(row.opt_int(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap(), "x");
        assert!(row.int(1).is_err() && row.text(0).is_err() && row.int(9).is_err());
        assert_eq!(Value::from(Some(5u64)), Value::Int(5));
        assert_eq!(Value::from(None::<&str>), Value::Null);
    }
}
