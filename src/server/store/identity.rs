//! Users' identity keys (part of `Store`): the X25519 public key each account registered
//! with `KEY`, shown to others in `INFO` and the session and transfer grants.
//!
//! Owns the `users.identity_key` column (migration 7). It must not judge keys (pins and
//! trust are the clients'); it stores what the account's own connection sent.

use super::Store;
use super::sql::params;
use crate::error::Result;
use crate::protocol::identity_key::{KeyField, key_hex, parse_key_hex};

impl Store {
    /// Stores (or replaces) `username`'s identity key. False if no such account.
    pub fn set_identity_key(&self, username: &str, key: &[u8; 32]) -> Result<bool> {
        let hex = key_hex(key);
        self.with_conn(|c| {
            c.execute(
                "UPDATE users SET identity_key = ?2 WHERE username = ?1",
                params![username, hex],
            )
            .map(|n| n > 0)
        })
    }

    /// `username`'s identity key; `None` when the account has none (or does not exist).
    pub fn identity_key(&self, username: &str) -> Result<KeyField> {
        let hex: Option<Option<String>> = self.with_conn(|c| {
            c.query_opt(
                "SELECT identity_key FROM users WHERE username = ?1",
                params![username],
            )?
            .map(|r| r.opt_text(0))
            .transpose()
        })?;
        // A value that is not a key (hand-edited database) counts as none.
        Ok(hex.flatten().as_deref().and_then(parse_key_hex))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;

    #[test]
    fn keys_are_stored_replaced_and_absent_until_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.db")).unwrap();
        store.create_user("Alice", "hash").unwrap();
        assert_eq!(store.identity_key("alice").unwrap(), None);
        assert!(store.set_identity_key("ALICE", &[1; 32]).unwrap());
        assert_eq!(store.identity_key("alice").unwrap(), Some([1; 32]));
        assert!(store.set_identity_key("alice", &[2; 32]).unwrap());
        assert_eq!(store.identity_key("Alice").unwrap(), Some([2; 32]));
        assert!(!store.set_identity_key("nobody", &[3; 32]).unwrap());
        assert_eq!(store.identity_key("nobody").unwrap(), None);
    }
}
