//! Messages waiting for their recipients (part of `Store`), and the accounts' ids that
//! `LIST`, `WHOIS` and `SEND` show and take (protocol.md §4d).
//!
//! Owns the `mailbox` table (migration 8): each row is one sealed message (ciphertext
//! the server cannot read) for one account, with its sender, the sender's key at the
//! time, and when it expires. The caps are checked and the row written in one immediate
//! transaction, so concurrent `SEND`s cannot pass them. It must not decide whether a
//! message is delivered now (that is `server::mailbox`'s, with the registry).

use super::sql::params;
use super::{Store, now_ms};
use crate::error::Result;
use crate::protocol::identity_key::{KeyField, key_hex, parse_key_hex};
use crate::protocol::mail_msg::UserRef;

/// A message taken out of the mailbox for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The message id (the row's id).
    pub id: u64,
    /// The sender's name as registered.
    pub sender: String,
    /// The sender's identity key when it sent the message.
    pub sender_key: KeyField,
    /// When the server took it (Unix ms).
    pub at_ms: u64,
    /// The sealed message.
    pub sealed: Vec<u8>,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxFull {
    /// The recipient has `per_user` messages waiting.
    Recipient,
    /// The server holds `total` messages for everyone.
    Total,
    /// The sender has `to_one` messages waiting for this recipient already.
    SenderToOne,
    /// The sender has `in_all` messages waiting, all recipients together.
    SenderInAll,
}

/// How many of the waiting messages one sender may account for, so that one account
/// cannot fill a recipient's mailbox (or everyone's) for others.
#[derive(Debug, Clone, Copy)]
pub struct SenderCaps {
    /// Messages from one sender waiting for one recipient.
    pub to_one: usize,
    /// Messages from one sender waiting, all recipients together.
    pub in_all: usize,
}

/// A message to queue.
pub struct NewMessage<'a> {
    /// The recipient's account id.
    pub recipient: u64,
    /// The sender's name as registered.
    pub sender: &'a str,
    /// The sender's identity key now.
    pub sender_key: &'a KeyField,
    /// The sealed message.
    pub sealed: &'a [u8],
    /// How long it may wait.
    pub lifetime: std::time::Duration,
    /// What this sender may have waiting.
    pub sender_caps: SenderCaps,
}

impl Store {
    /// The account an id or a name stands for: (id, name as registered).
    pub fn find_user(&self, user: &UserRef) -> Result<Option<(u64, String)>> {
        self.with_conn(|c| {
            let found = match user {
                UserRef::Id(id) => c.query_opt(
                    "SELECT id, username FROM users WHERE id = ?1",
                    params![i64::try_from(*id).unwrap_or(-1)],
                )?,
                UserRef::Name(name) => c.query_opt(
                    "SELECT id, username FROM users WHERE username = ?1",
                    params![name.as_str()],
                )?,
            };
            found
                .map(|r| Ok((r.int(0)? as u64, r.text(1)?)))
                .transpose()
        })
    }

    /// Stores a message for `msg.recipient` unless its mailbox (`per_user`) or all
    /// mailboxes together (`total`) are full; expired messages are dropped first.
    /// Returns the message id.
    pub fn queue_message(
        &self,
        msg: &NewMessage<'_>,
        per_user: usize,
        total: usize,
    ) -> Result<std::result::Result<u64, MailboxFull>> {
        let now = now_ms();
        let expires = now.saturating_add(msg.lifetime.as_millis() as i64);
        let key = msg.sender_key.as_ref().map(key_hex);
        self.with_conn(|c| {
            c.writing("mailbox", |tx| {
                tx.execute(
                    "DELETE FROM mailbox WHERE expires_at_ms <= ?1",
                    params![now],
                )?;
                let mine = tx
                    .query_one(
                        "SELECT COUNT(*) FROM mailbox WHERE recipient_id = ?1",
                        params![msg.recipient],
                    )?
                    .int(0)?;
                if mine as usize >= per_user {
                    return Ok(Err(MailboxFull::Recipient));
                }
                let all = tx
                    .query_one("SELECT COUNT(*) FROM mailbox", params![])?
                    .int(0)?;
                if all as usize >= total {
                    return Ok(Err(MailboxFull::Total));
                }
                let to_one = tx
                    .query_one(
                        "SELECT COUNT(*) FROM mailbox WHERE recipient_id = ?1 AND sender = ?2",
                        params![msg.recipient, msg.sender],
                    )?
                    .int(0)?;
                if to_one as usize >= msg.sender_caps.to_one {
                    return Ok(Err(MailboxFull::SenderToOne));
                }
                let in_all = tx
                    .query_one(
                        "SELECT COUNT(*) FROM mailbox WHERE sender = ?1",
                        params![msg.sender],
                    )?
                    .int(0)?;
                if in_all as usize >= msg.sender_caps.in_all {
                    return Ok(Err(MailboxFull::SenderInAll));
                }
                let id = tx
                    .query_one(
                        "INSERT INTO mailbox (recipient_id, sender, sender_key, sent_at_ms,
                            expires_at_ms, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         RETURNING id",
                        params![
                            msg.recipient,
                            msg.sender,
                            key.clone(),
                            now,
                            expires,
                            msg.sealed
                        ],
                    )?
                    .int(0)?;
                Ok(Ok(id as u64))
            })
        })
    }

    /// Removes message `id` for delivery; false if it is gone already (another
    /// delivery took it, or it expired).
    pub fn take_message(&self, id: u64) -> Result<bool> {
        self.with_conn(|c| {
            c.execute("DELETE FROM mailbox WHERE id = ?1", params![id])
                .map(|n| n > 0)
        })
    }

    /// Removes and returns every live message waiting for account `recipient`, oldest
    /// first.
    pub fn take_mailbox(&self, recipient: u64) -> Result<Vec<Queued>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.writing("mailbox", |tx| {
                let rows = tx
                    .query(
                        "SELECT id, sender, sender_key, sent_at_ms, sealed FROM mailbox
                         WHERE recipient_id = ?1 AND expires_at_ms > ?2 ORDER BY id",
                        params![recipient, now],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(Queued {
                            id: r.int(0)? as u64,
                            sender: r.text(1)?,
                            sender_key: r.opt_text(2)?.as_deref().and_then(parse_key_hex),
                            at_ms: r.int(3)? as u64,
                            sealed: r.blob(4)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                tx.execute(
                    "DELETE FROM mailbox WHERE recipient_id = ?1",
                    params![recipient],
                )?;
                Ok(rows)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn messages_queue_within_caps_and_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        store.create_user("Alice", "h").unwrap();
        store.create_user("bob", "h").unwrap();
        let (bob, name) = store
            .find_user(&UserRef::Name("BOB".into()))
            .unwrap()
            .unwrap();
        assert_eq!(name, "bob");
        assert_eq!(
            store.find_user(&UserRef::Id(bob)).unwrap(),
            Some((bob, "bob".to_string()))
        );
        assert_eq!(store.find_user(&UserRef::Id(99)).unwrap(), None);
        let msg = |sealed: &'static [u8]| NewMessage {
            recipient: bob,
            sender: "Alice",
            sender_key: &Some([1; 32]),
            sealed,
            lifetime: Duration::from_secs(60),
            sender_caps: SenderCaps {
                to_one: 100,
                in_all: 100,
            },
        };
        let first = store.queue_message(&msg(b"one"), 2, 10).unwrap().unwrap();
        store.queue_message(&msg(b"two"), 2, 10).unwrap().unwrap();
        assert_eq!(
            store.queue_message(&msg(b"three"), 2, 10).unwrap(),
            Err(MailboxFull::Recipient)
        );
        assert_eq!(
            store.queue_message(&msg(b"three"), 5, 2).unwrap(),
            Err(MailboxFull::Total)
        );
        assert!(store.take_message(first).unwrap());
        assert!(!store.take_message(first).unwrap());
        let taken = store.take_mailbox(bob).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].sealed, b"two");
        assert_eq!(taken[0].sender_key, Some([1; 32]));
        assert!(store.take_mailbox(bob).unwrap().is_empty());
        // Expired messages are never delivered.
        let gone = NewMessage {
            lifetime: Duration::ZERO,
            ..msg(b"late")
        };
        store.queue_message(&gone, 2, 10).unwrap().unwrap();
        assert!(store.take_mailbox(bob).unwrap().is_empty());
        // One sender's share of a mailbox, and of all of them.
        let capped = |to_one, in_all| NewMessage {
            sender_caps: SenderCaps { to_one, in_all },
            ..msg(b"capped")
        };
        store.queue_message(&capped(1, 5), 9, 99).unwrap().unwrap();
        assert_eq!(
            store.queue_message(&capped(1, 5), 9, 99).unwrap(),
            Err(MailboxFull::SenderToOne)
        );
        assert_eq!(
            store.queue_message(&capped(5, 1), 9, 99).unwrap(),
            Err(MailboxFull::SenderInAll)
        );
        let from_carol = NewMessage {
            sender: "carol",
            ..capped(1, 1)
        };
        store.queue_message(&from_carol, 9, 99).unwrap().unwrap();
    }
}
