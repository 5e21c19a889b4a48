//! The client's local record of chat lines, per peer, in its own SQLite file.
//!
//! Owns `<data-dir>/<user>/history.db`: schema, writing each line sent or received,
//! keeping at most `HISTORY_LINES_PER_PEER` lines per peer (older ones are deleted in
//! batches), and reading the last lines with a peer. One file per user, so two clients
//! on one machine never share one. Writes happen on a writer thread of their own, many
//! lines per transaction, so a busy chat never waits for the disk; reads go through the
//! same queue, so they see every line recorded before them. The writer does not wake for
//! each line: after the first line of a batch it waits up to `LINGER` (or until a read
//! or the end asks for it) and then stores everything queued in one transaction, so a
//! chat costs one transaction per `LINGER`, not one per line. It must not print or talk
//! to the network.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rusqlite::{Connection, params};

use crate::error::{Error, Result};
use crate::protocol::limits::HISTORY_LINES_PER_PEER;
use crate::sanitize::clean;

/// Lines written per peer between two prunes. A prune keeps the newest
/// `HISTORY_LINES_PER_PEER - PRUNE_BATCH`, so the count never passes the cap, and the
/// cost of a prune is spread over a batch of lines.
const PRUNE_BATCH: usize = 500;

/// Lines that may wait for the writer. Past the flood limit's burst (5,000 lines) with
/// room to spare; if the disk stalls longer than that, further lines are not stored
/// (and a warning is logged) rather than stalling the chat.
const QUEUE: usize = 16_384;

/// Most queued lines the writer puts in one transaction.
const BATCH: usize = 512;

/// How long the writer lets lines gather after the first one of a batch before it
/// stores them: a chat line then costs no wake-up of this thread and no transaction of
/// its own. Lines said in the last `LINGER` before a crash are lost; a normal exit (the
/// handle dropped) stores them.
const LINGER: Duration = Duration::from_millis(200);

/// How long a read waits for the writer before giving up.
const READ_WAIT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[&str] = &["CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        peer TEXT NOT NULL COLLATE NOCASE,
        sender TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX messages_by_peer ON messages (peer, id);"];

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    /// Who wrote it (us or the peer).
    pub sender: String,
    /// When the sender sent it (Unix ms, sender's clock).
    pub at_ms: u64,
    /// What was said.
    pub text: String,
}

/// One line to store.
struct Write {
    peer: String,
    line: Line,
}

/// What the writer thread is asked to do, in order.
enum Job {
    Write(Write),
    Last {
        peer: String,
        n: usize,
        reply: Sender<Result<Vec<Line>>>,
    },
    Count {
        peer: String,
        reply: Sender<Result<usize>>,
    },
}

/// An open history file: a handle on its writer thread. Dropping it waits until the
/// writer has stored what is queued, so lines said just before quitting are kept.
pub struct History {
    /// The writer's queue; `None` only while dropping.
    jobs: Option<Sender<Job>>,
    /// Cuts the writer's `LINGER` short: a read is waiting (or, closed, the end).
    hurry: Option<Sender<()>>,
    /// The writer thread, joined on drop.
    writer: Option<thread::JoinHandle<()>>,
    /// Lines not stored because the queue was full, for one warning per burst.
    dropped: u64,
}

/// Where a user's history lives under `data_dir`.
pub fn path_for(data_dir: &Path, user: &str) -> PathBuf {
    data_dir.join(user.to_ascii_lowercase()).join("history.db")
}

fn stopped() -> Error {
    Error::Io(io::Error::other("the history writer stopped"))
}

impl History {
    /// Opens (creating if needed) the history file at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<History> {
        History::open_with_cap(path, HISTORY_LINES_PER_PEER)
    }

    /// Like `open`, keeping at most `cap` lines per peer.
    fn open_with_cap(path: &Path, cap: usize) -> Result<History> {
        let store = Store::open(path, cap)?;
        let (jobs, rx) = bounded(QUEUE);
        let (hurry, hurried) = bounded(1);
        let writer = thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || store.run(&rx, &hurried))?;
        Ok(History {
            jobs: Some(jobs),
            hurry: Some(hurry),
            writer: Some(writer),
            dropped: 0,
        })
    }

    fn queue(&self) -> Result<&Sender<Job>> {
        self.jobs.as_ref().ok_or_else(stopped)
    }

    /// Queues one line of the conversation with `peer`; never waits for the disk.
    pub fn record(&mut self, peer: &str, sender: &str, at_ms: u64, text: &str) -> Result<()> {
        // Sanitised: the database never holds a control or bidi character from a peer
        // (whoever reads it later).
        let job = Job::Write(Write {
            peer: clean(peer).into_owned(),
            line: Line {
                sender: clean(sender).into_owned(),
                at_ms,
                text: clean(text).into_owned(),
            },
        });
        match self.queue()?.try_send(job) {
            Ok(()) => {
                if self.dropped > 0 {
                    log::warn!("history: {} lines were not stored", self.dropped);
                    self.dropped = 0;
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// The last `n` lines with `peer`, oldest first (after every line recorded so far).
    pub fn last(&self, peer: &str, n: usize) -> Result<Vec<Line>> {
        let (reply, answer) = bounded(1);
        self.ask(Job::Last {
            peer: peer.to_string(),
            n,
            reply,
        })?;
        answer.recv_timeout(READ_WAIT).map_err(|_| stopped())?
    }

    /// Lines stored with `peer` (after every line recorded so far).
    pub fn count(&self, peer: &str) -> Result<usize> {
        let (reply, answer) = bounded(1);
        self.ask(Job::Count {
            peer: peer.to_string(),
            reply,
        })?;
        answer.recv_timeout(READ_WAIT).map_err(|_| stopped())?
    }

    fn ask(&self, job: Job) -> Result<()> {
        self.queue()?
            .send_timeout(job, READ_WAIT)
            .map_err(|_| stopped())?;
        // The writer may be letting lines gather: the read should not wait for that.
        if let Some(hurry) = &self.hurry {
            let _ = hurry.try_send(());
        }
        Ok(())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has stored everything queued;
        // closing `hurry` ends its wait for more lines at once.
        self.jobs = None;
        self.hurry = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread's side: the connection and the prune counters.
struct Store {
    conn: Connection,
    /// Lines written per peer (lower case) since its last prune; a peer's first line in
    /// this run prunes at once, so a file that grew under an older version shrinks.
    since_prune: HashMap<String, usize>,
    /// Most lines kept per peer.
    cap: usize,
}

impl Store {
    fn open(path: &Path, cap: usize) -> Result<Store> {
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
        Ok(Store {
            conn,
            since_prune: HashMap::new(),
            cap,
        })
    }

    /// Serves jobs until every `History` handle is gone.
    fn run(mut self, jobs: &Receiver<Job>, hurry: &Receiver<()>) {
        let mut next = jobs.recv().ok();
        while let Some(job) = next.take() {
            match job {
                Job::Write(first) => {
                    // Let more lines gather without waking this thread for each: only
                    // a read or the end (`hurry`) cuts the wait short.
                    if jobs.len() < BATCH {
                        let _ = hurry.recv_timeout(LINGER);
                    }
                    // Take what is queued behind it into the same transaction, up to
                    // the first read (which must see these lines).
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match jobs.try_recv() {
                            Ok(Job::Write(w)) => batch.push(w),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.write(&batch) {
                        log::warn!("writing history: {e}");
                    }
                }
                Job::Last { peer, n, reply } => {
                    let _ = reply.send(self.last(&peer, n));
                }
                Job::Count { peer, reply } => {
                    let _ = reply.send(self.count(&peer));
                }
            }
            if next.is_none() {
                next = jobs.recv().ok();
            }
        }
    }

    fn write(&mut self, batch: &[Write]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mut prune = Vec::new();
        {
            // Cached: a busy chat must not parse the same statement for every line.
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (peer, sender, at_ms, text) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let every = PRUNE_BATCH.min(self.cap / 2).max(1);
            for w in batch {
                let l = &w.line;
                insert.execute(params![w.peer, l.sender, l.at_ms as i64, l.text])?;
                let written = self
                    .since_prune
                    .entry(w.peer.to_ascii_lowercase())
                    .or_insert(every - 1);
                *written += 1;
                if *written >= every {
                    *written = 0;
                    prune.push((w.peer.clone(), self.cap - every));
                }
            }
        }
        for (peer, keep) in prune {
            // Deletes all but the newest `keep` lines with `peer`.
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM messages WHERE peer = ?1 AND id <=
                   (SELECT id FROM messages WHERE peer = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![peer, keep as i64])?;
            if deleted > 0 {
                log::debug!("history: pruned {deleted} old lines");
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&self, peer: &str) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE peer = ?1",
            params![peer],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as usize)
    }

    fn last(&self, peer: &str, n: usize) -> Result<Vec<Line>> {
        let mut stmt = self.conn.prepare_cached(
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
        // The writer stores what was queued before it ends; a new one sees it all.
        let reopened = History::open(&path).unwrap();
        assert_eq!(reopened.last("carol", 5).unwrap().len(), 1);
    }

    #[test]
    fn lines_queued_before_the_handle_is_dropped_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let mut history = History::open(&path).unwrap();
        for i in 0..2000 {
            history.record("bob", "bob", i, "queued").unwrap();
        }
        drop(history);
        assert_eq!(History::open(&path).unwrap().count("bob").unwrap(), 2000);
    }

    #[test]
    fn each_peer_keeps_at_most_the_cap_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open_with_cap(&dir.path().join("h.db"), 50).unwrap();
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
