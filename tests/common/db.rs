//! Reading a stopped (or running) server's database from a test: the integrity check,
//! the stored accounts and hashes, the sessions table.
//!
//! Owns these reads, on SQLite or PostgreSQL (`postgres::pg_url_of`); it must not write.

use super::*;

/// `PRAGMA integrity_check` of the database (the server must have exited).
pub fn integrity_check(db: &Path) -> String {
    if let Some(url) = pg_url_of(db) {
        // PostgreSQL has no such check; that it answers is what can be checked.
        let one = pg_rows(&url, "SELECT 1");
        return if one.len() == 1 { "ok" } else { "no answer" }.to_string();
    }
    let conn = rusqlite::Connection::open(db).expect("open database");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

/// `(username, pw_hash)` of every user, sorted by username.
pub fn db_users(db: &Path) -> Vec<(String, String)> {
    if let Some(url) = pg_url_of(db) {
        return pg_rows(
            &url,
            "SELECT username, pw_hash FROM users ORDER BY username",
        )
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    }
    let conn = rusqlite::Connection::open(db).expect("open database");
    let mut stmt = conn
        .prepare("SELECT username, pw_hash FROM users ORDER BY username")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query users")
        .map(|r| r.expect("row"))
        .collect()
}

/// Asserts that `name` is stored with a bcrypt hash and not with its password.
pub fn assert_stored_hash(users: &[(String, String)], name: &str, password: &str) {
    let (_, hash) = users
        .iter()
        .find(|(u, _)| u == name)
        .unwrap_or_else(|| panic!("user {name} not in the database: {users:?}"));
    assert!(
        hash.starts_with("$2"),
        "pw_hash of {name} is not a bcrypt hash: {hash:?}"
    );
    assert_ne!(hash, password, "pw_hash of {name} is the password itself");
    assert!(
        !hash.contains(password),
        "pw_hash of {name} contains the password"
    );
}

/// One row of the server's `sessions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub requester: String,
    pub target: String,
    pub started_at_ms: i64,
    pub accepted_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

/// Every row of the `sessions` table, by id (the server may be running: WAL mode).
pub fn db_sessions(db: &Path) -> Vec<SessionRow> {
    if let Some(url) = pg_url_of(db) {
        let int = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<i64>().ok());
        return pg_rows(
            &url,
            "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason
             FROM sessions ORDER BY id",
        )
        .into_iter()
        .map(|r| SessionRow {
            id: int(&r[0]).unwrap_or_default(),
            requester: r[1].clone().unwrap_or_default(),
            target: r[2].clone().unwrap_or_default(),
            started_at_ms: int(&r[3]).unwrap_or_default(),
            accepted_at_ms: int(&r[4]),
            ended_at_ms: int(&r[5]),
            end_reason: r[6].clone(),
        })
        .collect();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason
             FROM sessions ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(SessionRow {
            id: r.get(0)?,
            requester: r.get(1)?,
            target: r.get(2)?,
            started_at_ms: r.get(3)?,
            accepted_at_ms: r.get(4)?,
            ended_at_ms: r.get(5)?,
            end_reason: r.get(6)?,
        })
    })
    .expect("query sessions")
    .map(|r| r.expect("row"))
    .collect()
}

/// Polls the `sessions` table (for up to `POLL`) until the row with `id` satisfies
/// `ok`; returns it. Panics with the table if it never does.
pub fn wait_session_row(
    db: &Path,
    id: i64,
    what: &str,
    ok: impl Fn(&SessionRow) -> bool,
) -> SessionRow {
    let deadline = Instant::now() + POLL;
    loop {
        let rows = db_sessions(db);
        if let Some(row) = rows.iter().find(|r| r.id == id && ok(r)) {
            return row.clone();
        }
        if Instant::now() >= deadline {
            panic!("session {id}: {what}, not seen within {POLL:?}; table:\n{rows:#?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}
