//! File offers through the server that are not settled yet (part of `Store`;
//! protocol.md §4d, Queued file offers).
//!
//! Owns the `open_offers` table (migration 10): one row per offer made with `OFFER`,
//! until its recipient answers it (a refusal, or an offer the sender numbered itself,
//! is then gone; an accepted offer the server numbered waits for the offerer's
//! `TRANSFER <user> <offer>`) or it expires. It lets the server refuse an answer to an
//! offer that is not waiting, and keeps a server-numbered offer's number for its
//! transfer. It must not decide what is refused (that is `server::offers`'s) or hold
//! the event lines (`held`).

use super::sql::params;
use super::{Store, now_ms};
use crate::error::Result;

/// One offer, named by who made it, to whom, and its number.
#[derive(Debug, Clone, Copy)]
pub struct OfferKey<'a> {
    /// Who offered (any case).
    pub offerer: &'a str,
    /// To whom (any case).
    pub recipient: &'a str,
    /// The offer number.
    pub offer: u64,
}

/// What became of a new offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Recorded.
    Yes,
    /// The offerer has its `per_offerer` offers open already.
    OffererFull,
    /// The offerer has `per_pair` offers open to this recipient already.
    PairFull,
}

/// What became of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// No such offer waits for an answer.
    NotWaiting,
    /// Recorded.
    Taken,
}

impl Store {
    /// Records an open offer, unless `offerer` has `caps.0` open already, or `caps.1`
    /// to this recipient. Expired rows are dropped first; an older row with the same key
    /// is replaced.
    pub fn open_offer(
        &self,
        key: OfferKey<'_>,
        numbered: bool,
        lifetime: std::time::Duration,
        (per_offerer, per_pair): (usize, usize),
    ) -> Result<Opened> {
        let now = now_ms();
        let expires = now.saturating_add(lifetime.as_millis() as i64);
        let (from, to) = (key.offerer.to_lowercase(), key.recipient.to_lowercase());
        self.with_conn(|c| {
            c.writing("open_offers", |tx| {
                tx.execute(
                    "DELETE FROM open_offers WHERE expires_at_ms <= ?1",
                    params![now],
                )?;
                tx.execute(
                    "DELETE FROM open_offers WHERE offerer = ?1 AND recipient = ?2 AND offer = ?3",
                    params![from.as_str(), to.as_str(), key.offer],
                )?;
                let mine = tx
                    .query_one(
                        "SELECT COUNT(*) FROM open_offers WHERE offerer = ?1",
                        params![from.as_str()],
                    )?
                    .int(0)?;
                if mine as usize >= per_offerer {
                    return Ok(Opened::OffererFull);
                }
                let to_them = tx
                    .query_one(
                        "SELECT COUNT(*) FROM open_offers WHERE offerer = ?1 AND recipient = ?2",
                        params![from.as_str(), to.as_str()],
                    )?
                    .int(0)?;
                if to_them as usize >= per_pair {
                    return Ok(Opened::PairFull);
                }
                tx.execute(
                    "INSERT INTO open_offers (offerer, recipient, offer, numbered, accepted, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    params![from.as_str(), to.as_str(), key.offer, numbered, expires],
                )?;
                Ok(Opened::Yes)
            })
        })
    }

    /// The recipient's answer to an open offer: a refusal (or any answer to an offer the
    /// offerer numbered itself) closes it; an accepted server-numbered offer stays, now
    /// waiting for the offerer's `TRANSFER`.
    pub fn answer_offer(&self, key: OfferKey<'_>, accept: bool) -> Result<Answered> {
        let now = now_ms();
        let (from, to) = (key.offerer.to_lowercase(), key.recipient.to_lowercase());
        self.with_conn(|c| {
            c.writing("open_offers", |tx| {
                let row = tx.query_opt(
                    "SELECT id, numbered FROM open_offers WHERE offerer = ?1 AND recipient = ?2
                     AND offer = ?3 AND accepted = 0 AND expires_at_ms > ?4",
                    params![from.as_str(), to.as_str(), key.offer, now],
                )?;
                let Some(row) = row else {
                    return Ok(Answered::NotWaiting);
                };
                let (id, numbered) = (row.int(0)?, row.int(1)? != 0);
                if accept && numbered {
                    tx.execute(
                        "UPDATE open_offers SET accepted = 1 WHERE id = ?1",
                        params![id],
                    )?;
                } else {
                    tx.execute("DELETE FROM open_offers WHERE id = ?1", params![id])?;
                }
                Ok(Answered::Taken)
            })
        })
    }

    /// Whether the server-numbered offer `key` was accepted and still waits for its
    /// transfer.
    pub fn accepted_offer(&self, key: OfferKey<'_>) -> Result<bool> {
        let (from, to) = (key.offerer.to_lowercase(), key.recipient.to_lowercase());
        self.with_conn(|c| {
            Ok(c.query_opt(
                "SELECT id FROM open_offers WHERE offerer = ?1 AND recipient = ?2 AND offer = ?3
                 AND numbered = 1 AND accepted = 1 AND expires_at_ms > ?4",
                params![from.as_str(), to.as_str(), key.offer, now_ms()],
            )?
            .is_some())
        })
    }

    /// Closes offer `key` (its transfer was granted). True if it was open.
    pub fn close_offer(&self, key: OfferKey<'_>) -> Result<bool> {
        let (from, to) = (key.offerer.to_lowercase(), key.recipient.to_lowercase());
        self.with_conn(|c| {
            Ok(c.execute(
                "DELETE FROM open_offers WHERE offerer = ?1 AND recipient = ?2 AND offer = ?3",
                params![from.as_str(), to.as_str(), key.offer],
            )? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn offers_are_answered_once_and_accepted_numbered_ones_wait_for_their_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("o.db")).unwrap();
        let minute = Duration::from_secs(60);
        let key = |offer| OfferKey {
            offerer: "Alice",
            recipient: "bob",
            offer,
        };
        let caps = (2, 2);
        assert_eq!(
            store.open_offer(key(1), true, minute, caps).unwrap(),
            Opened::Yes
        );
        assert_eq!(
            store.open_offer(key(2), false, minute, caps).unwrap(),
            Opened::Yes
        );
        assert_eq!(
            store.open_offer(key(3), true, minute, caps).unwrap(),
            Opened::OffererFull
        );
        assert_eq!(
            store.open_offer(key(3), true, minute, (9, 2)).unwrap(),
            Opened::PairFull
        );
        let to_carol = OfferKey {
            recipient: "carol",
            ..key(3)
        };
        assert_eq!(
            store.open_offer(to_carol, true, minute, (9, 2)).unwrap(),
            Opened::Yes
        );
        store.close_offer(to_carol).unwrap();
        // Unknown, or from the wrong side.
        assert_eq!(
            store.answer_offer(key(9), true).unwrap(),
            Answered::NotWaiting
        );
        let reversed = OfferKey {
            offerer: "bob",
            recipient: "alice",
            offer: 1,
        };
        assert_eq!(
            store.answer_offer(reversed, true).unwrap(),
            Answered::NotWaiting
        );
        assert!(!store.accepted_offer(key(1)).unwrap());
        assert_eq!(store.answer_offer(key(1), true).unwrap(), Answered::Taken);
        assert_eq!(
            store.answer_offer(key(1), true).unwrap(),
            Answered::NotWaiting,
            "answered twice"
        );
        assert!(store.accepted_offer(key(1)).unwrap());
        assert!(store.close_offer(key(1)).unwrap());
        assert!(!store.accepted_offer(key(1)).unwrap());
        // An offer the sender numbered closes with its answer.
        assert_eq!(store.answer_offer(key(2), true).unwrap(), Answered::Taken);
        assert!(!store.accepted_offer(key(2)).unwrap());
        // Expired.
        assert_eq!(
            store
                .open_offer(key(4), true, Duration::ZERO, caps)
                .unwrap(),
            Opened::Yes
        );
        assert_eq!(
            store.answer_offer(key(4), false).unwrap(),
            Answered::NotWaiting
        );
    }
}
