//! Resumable-login tokens (part of `Store`): digests, owners and expiry.
//!
//! Owns the `login_tokens` table: a token is stored only as its digest, with the account
//! it logs in and when it expires; using one pushes its expiry on, and at most
//! `MAX_TOKENS_PER_USER` are kept per account. It must not see a token itself (callers
//! pass `SessionToken::digest`), log digests, or decide policy (login limits are `login`'s).

use std::time::Duration;

use super::sql::params;
use super::{Store, now_ms};
use crate::error::Result;
use crate::protocol::limits::MAX_TOKENS_PER_USER;

impl Store {
    /// Stores a new token digest for `username_key`, valid for `lifetime`; forgets that
    /// account's expired tokens and its oldest beyond the per-account cap.
    pub fn add_token(&self, username_key: &str, digest: &str, lifetime: Duration) -> Result<()> {
        let now = now_ms();
        let expires = now.saturating_add(lifetime.as_millis() as i64);
        self.with_conn(|c| {
            c.transaction(|tx| {
                tx.execute(
                    "DELETE FROM login_tokens WHERE username_key = ?1 AND expires_at_ms <= ?2",
                    params![username_key, now],
                )?;
                tx.execute(
                    "INSERT INTO login_tokens (digest, username_key, expires_at_ms, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![digest, username_key, expires, now],
                )?;
                tx.execute(
                    "DELETE FROM login_tokens WHERE username_key = ?1 AND digest NOT IN (
                        SELECT digest FROM login_tokens WHERE username_key = ?1
                        ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2)",
                    params![username_key, MAX_TOKENS_PER_USER as i64],
                )?;
                Ok(())
            })
        })
    }

    /// If `digest` is a live token of `username_key`, pushes its expiry to `lifetime` from
    /// now and returns the account's name as registered. Another account's token, an
    /// expired or unknown one, give `None`.
    pub fn use_token(
        &self,
        username_key: &str,
        digest: &str,
        lifetime: Duration,
    ) -> Result<Option<String>> {
        let now = now_ms();
        let expires = now.saturating_add(lifetime.as_millis() as i64);
        self.with_conn(|c| {
            let name = c
                .query_opt(
                    "SELECT u.username FROM login_tokens t JOIN users u
                        ON u.username = t.username_key
                     WHERE t.digest = ?1 AND t.username_key = ?2 AND t.expires_at_ms > ?3",
                    params![digest, username_key, now],
                )?
                .map(|r| r.text(0))
                .transpose()?;
            if name.is_some() {
                c.execute(
                    "UPDATE login_tokens SET expires_at_ms = ?2 WHERE digest = ?1",
                    params![digest, expires],
                )?;
            }
            Ok(name)
        })
    }

    /// Forgets these token digests (a logout revokes the tokens its connection used).
    pub fn revoke_tokens(&self, digests: &[String]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        self.with_conn(|c| {
            c.transaction(|tx| {
                for digest in digests {
                    tx.execute(
                        "DELETE FROM login_tokens WHERE digest = ?1",
                        params![digest],
                    )?;
                }
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_log_in_their_own_account_until_expired_or_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(
            store.create_user("Alice", "h").unwrap(),
            super::super::Created::Yes
        );
        store.create_user("bob", "h").unwrap();
        let week = Duration::from_secs(3600);
        store.add_token("alice", "d1", week).unwrap();
        assert_eq!(
            store.use_token("alice", "d1", week).unwrap().as_deref(),
            Some("Alice")
        );
        // Another account's name with it, or an unknown digest: nothing.
        assert_eq!(store.use_token("bob", "d1", week).unwrap(), None);
        assert_eq!(store.use_token("alice", "d2", week).unwrap(), None);
        // Expired.
        store.add_token("bob", "old", Duration::ZERO).unwrap();
        assert_eq!(store.use_token("bob", "old", week).unwrap(), None);
        // Revoked.
        store.revoke_tokens(&["d1".to_string()]).unwrap();
        assert_eq!(store.use_token("alice", "d1", week).unwrap(), None);
        // At most MAX_TOKENS_PER_USER per account: the oldest goes.
        for i in 0..=MAX_TOKENS_PER_USER {
            store.add_token("alice", &format!("n{i}"), week).unwrap();
        }
        assert_eq!(store.use_token("alice", "n0", week).unwrap(), None);
        assert!(store.use_token("alice", "n1", week).unwrap().is_some());
    }
}
