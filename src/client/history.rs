//! The client's local record of chat lines, per peer, in its own SQLite file.
//!
//! Owns `<data-dir>/<user>/history.db`: schema, writing each line sent or received,
//! keeping at most `HISTORY_LINES_PER_PEER` lines per peer (older ones are deleted in
//! batches), and reading the last lines with a peer. One file per user, so two clients
//! on one machine never share one. It must not print or talk to the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::error::Result;
use crate::protocol::limits::HISTORY_LINES_PER_PEER;

/// Lines written per peer between two prunes. A prune keeps the newest
/// `HISTORY_LINES_PER_PEER - PRUNE_BATCH`, so the count never passes the cap, and the
/// cost of a prune is spread over a batch of lines.
const PRUNE_BATCH: usize = 500;

const MIGRATIONS: &[&str] = &["CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        peer TEXT NOT NULL COLLATE NOCASE,
        sender TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX messages_by_peer ON messages (peer, id);"];

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Who wrote it (us or the peer).
    pub sender: String,
    /// When the sender sent it (Unix ms, sender's clock).
    pub at_ms: u64,
    /// What was said.
    pub text: String,
}

/// An open history file.
pub struct History {
    conn: Connection,
    /// Lines written per peer (lower case) since its last prune; a peer's first line in
    /// this run prunes at once, so a file that grew under an older version shrinks.
    since_prune: HashMap<String, usize>,
    /// Most lines kept per peer.
    cap: usize,
}

/// Where a user's history lives under `data_dir`.
pub fn path_for(data_dir: &Path, user: &str) -> PathBuf {
    data_dir.join(user.to_ascii_lowercase()).join("history.db")
}

impl History {
    /// Opens (creating if needed) the history file at `path`.
    pub fn open(path: &Path) -> Result<History> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        Ok(History {
            conn,
            since_prune: HashMap::new(),
            cap: HISTORY_LINES_PER_PEER,
        })
    }

    /// Stores one line of the conversation with `peer`, deleting its oldest lines when
    /// it has more than the cap.
    pub fn record(&mut self, peer: &str, sender: &str, at_ms: u64, text: &str) -> Result<()> {
        // Cached: a busy chat must not parse the same statement for every line.
        self.conn
            .prepare_cached(
                "INSERT INTO messages (peer, sender, at_ms, text) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![peer, sender, at_ms as i64, text])?;
        let batch = PRUNE_BATCH.min(self.cap / 2).max(1);
        let written = self
            .since_prune
            .entry(peer.to_ascii_lowercase())
            .or_insert(batch - 1);
        *written += 1;
        if *written >= batch {
            *written = 0;
            self.prune(peer, self.cap - batch)?;
        }
        Ok(())
    }

    /// Deletes all but the newest `keep` lines with `peer`.
    fn prune(&self, peer: &str, keep: usize) -> Result<()> {
        let deleted = self
            .conn
            .prepare_cached(
                "DELETE FROM messages WHERE peer = ?1 AND id <=
                   (SELECT id FROM messages WHERE peer = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![peer, keep as i64])?;
        if deleted > 0 {
            log::debug!("history: pruned {deleted} old lines");
        }
        Ok(())
    }

    /// Lines stored with `peer`.
    pub fn count(&self, peer: &str) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE peer = ?1",
            params![peer],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as usize)
    }

    /// The last `n` lines with `peer`, oldest first.
    pub fn last(&self, peer: &str, n: usize) -> Result<Vec<Line>> {
        let mut stmt = self.conn.prepare(
            "SELECT sender, at_ms, text FROM
               (SELECT id, sender, at_ms, text FROM messages WHERE peer = ?1 ORDER BY id DESC LIMIT ?2)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![peer, n as i64], |r| {
            Ok(Line {
                sender: r.get(0)?,
                at_ms: r.get::<_, i64>(1)? as u64,
                text: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_per_peer_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "Alice");
        assert!(path.ends_with("alice/history.db"));
        let mut history = History::open(&path).unwrap();
        for i in 0..30 {
            history
                .record(
                    "bob",
                    if i % 2 == 0 { "alice" } else { "bob" },
                    i,
                    &format!("line {i}"),
                )
                .unwrap();
        }
        history.record("carol", "carol", 99, "other").unwrap();
        let last = history.last("BOB", 20).unwrap();
        assert_eq!(last.len(), 20);
        assert_eq!(last[0].text, "line 10");
        assert_eq!(last[19].text, "line 29");
        drop(history);
        let reopened = History::open(&path).unwrap();
        assert_eq!(reopened.last("carol", 5).unwrap().len(), 1);
    }

    #[test]
    fn each_peer_keeps_at_most_the_cap_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(&dir.path().join("h.db")).unwrap();
        history.cap = 50;
        for i in 0..333 {
            history
                .record("Mallory", "mallory", i, &format!("spam {i}"))
                .unwrap();
            assert!(history.count("mallory").unwrap() <= 50, "after line {i}");
        }
        history.record("bob", "bob", 1, "kept").unwrap();
        let last = history.last("mallory", 100).unwrap();
        assert!(last.len() >= 25, "{}", last.len());
        assert_eq!(last.last().unwrap().text, "spam 332");
        assert_eq!(history.count("bob").unwrap(), 1);
    }
}
