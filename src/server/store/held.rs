//! Events held for offline users (part of `Store`): file offers made through the server
//! and the answers to them (protocol.md §4d, Queued file offers).
//!
//! Owns the `held_events` table (migration 9): each row is one complete `EVENT` line for
//! one account, kept until that account logs in (then taken, once) or it expires. The
//! caps are checked and the row written in one immediate transaction. It must not
//! decide what is held (that is `server::offers`'s) or parse the lines.

use super::sql::params;
use super::{MailboxFull, Store, now_ms};
use crate::error::Result;

impl Store {
    /// Holds `line` for account `recipient` for `lifetime`, unless it has `per_user`
    /// lines held or all accounts together `total`; expired lines are dropped first.
    pub fn hold_event(
        &self,
        recipient: u64,
        line: &str,
        lifetime: std::time::Duration,
        per_user: usize,
        total: usize,
    ) -> Result<std::result::Result<(), MailboxFull>> {
        let now = now_ms();
        let expires = now.saturating_add(lifetime.as_millis() as i64);
        self.with_conn(|c| {
            c.writing("held_events", |tx| {
                tx.execute(
                    "DELETE FROM held_events WHERE expires_at_ms <= ?1",
                    params![now],
                )?;
                let mine = tx
                    .query_one(
                        "SELECT COUNT(*) FROM held_events WHERE recipient_id = ?1",
                        params![recipient],
                    )?
                    .int(0)?;
                if mine as usize >= per_user {
                    return Ok(Err(MailboxFull::Recipient));
                }
                let all = tx
                    .query_one("SELECT COUNT(*) FROM held_events", params![])?
                    .int(0)?;
                if all as usize >= total {
                    return Ok(Err(MailboxFull::Total));
                }
                tx.execute(
                    "INSERT INTO held_events (recipient_id, line, held_at_ms, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![recipient, line, now, expires],
                )?;
                Ok(Ok(()))
            })
        })
    }

    /// Removes and returns the live lines held for account `recipient`, oldest first.
    pub fn take_held(&self, recipient: u64) -> Result<Vec<String>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.writing("held_events", |tx| {
                let lines = tx
                    .query(
                        "SELECT line FROM held_events WHERE recipient_id = ?1
                         AND expires_at_ms > ?2 ORDER BY id",
                        params![recipient, now],
                    )?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<Vec<String>>>()?;
                tx.execute(
                    "DELETE FROM held_events WHERE recipient_id = ?1",
                    params![recipient],
                )?;
                Ok(lines)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn held_lines_respect_caps_and_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            store.hold_event(1, "EVENT A", minute, 2, 3).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.hold_event(1, "EVENT B", minute, 2, 3).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.hold_event(1, "EVENT C", minute, 2, 3).unwrap(),
            Err(MailboxFull::Recipient)
        );
        assert_eq!(
            store.hold_event(2, "EVENT D", minute, 2, 3).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.hold_event(3, "EVENT E", minute, 2, 3).unwrap(),
            Err(MailboxFull::Total)
        );
        assert_eq!(store.take_held(1).unwrap(), vec!["EVENT A", "EVENT B"]);
        assert!(store.take_held(1).unwrap().is_empty());
        store
            .hold_event(4, "EVENT late", Duration::ZERO, 2, 3)
            .unwrap()
            .unwrap();
        assert!(store.take_held(4).unwrap().is_empty());
    }
}
