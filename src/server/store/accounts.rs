//! Accounts and failed logins: registering a name, reading and replacing a password
//! hash, and the per-(name, address) failure counts and blocks that survive a restart.
//!
//! Owns these queries; it must not hash passwords (callers run bcrypt before or after,
//! never inside a store call) or decide when a login is blocked (`server::login_limits`).

use std::time::Duration;

use super::sql::params;
use super::{Store, is_unique_violation, now_ms};
use crate::error::Result;

/// What happened to a registration.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The account was written.
    Yes,
    /// Another account has that name (in any case).
    Taken,
}

/// A stored account, for checking a password.
pub struct Account {
    /// The name as registered.
    pub username: String,
    /// The bcrypt hash.
    pub pw_hash: String,
}

impl Store {
    /// True if an account has this name (in any case).
    pub fn user_exists(&self, username: &str) -> Result<bool> {
        self.with_conn(|c| {
            Ok(
                c.query_opt("SELECT 1 FROM users WHERE username = ?1", params![username])?
                    .is_some(),
            )
        })
    }

    /// Writes a new account; the unique index decides races between two registrations,
    /// on this server or (PostgreSQL) on any server sharing the database.
    pub fn create_user(&self, username: &str, pw_hash: &str) -> Result<Created> {
        let inserted = self.with_conn(|c| {
            c.execute(
                "INSERT INTO users (username, pw_hash, created_at) VALUES (?1, ?2, ?3)",
                params![username, pw_hash, now_ms() / 1000],
            )
        });
        match inserted {
            Ok(_) => Ok(Created::Yes),
            Err(e) if is_unique_violation(&e) => Ok(Created::Taken),
            Err(e) => Err(e),
        }
    }

    /// The stored account with this name (in any case), if any.
    pub fn account(&self, username: &str) -> Result<Option<Account>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT username, pw_hash FROM users WHERE username = ?1",
                params![username],
            )?
            .map(|r| {
                Ok(Account {
                    username: r.text(0)?,
                    pw_hash: r.text(1)?,
                })
            })
            .transpose()
        })
    }

    /// Replaces the stored password hash of `username` (any case), e.g. to rehash it at
    /// the current cost.
    pub fn set_password_hash(&self, username: &str, pw_hash: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE users SET pw_hash = ?2 WHERE username = ?1",
                params![username, pw_hash],
            )
        })?;
        Ok(())
    }

    /// Writes the failure count of `username_key` from `ip`, and the block it started if
    /// any. A block only ever grows, so writes that cross cannot shorten one.
    pub fn save_login_failures(
        &self,
        username_key: &str,
        ip: &str,
        failures: u32,
        blocked_for: Option<Duration>,
    ) -> Result<()> {
        let until = blocked_for.map_or(0, |block| now_ms() + block.as_millis() as i64);
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO login_failures (username_key, ip, failures, blocked_until_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (username_key, ip) DO UPDATE SET
                   failures = excluded.failures,
                   blocked_until_ms = CASE
                     WHEN excluded.blocked_until_ms > login_failures.blocked_until_ms
                     THEN excluded.blocked_until_ms ELSE login_failures.blocked_until_ms END",
                params![username_key, ip, failures, until],
            )
        })?;
        Ok(())
    }

    /// The failure count and block of `username_key` from `ip` as stored now (perhaps by
    /// another server): `(failures, time left blocked)`, or `None` if nothing counts.
    pub fn login_failure(&self, username_key: &str, ip: &str) -> Result<Option<(u32, Duration)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.query_opt(
                "SELECT failures, blocked_until_ms FROM login_failures
                 WHERE username_key = ?1 AND ip = ?2",
                params![username_key, ip],
            )?
            .map(|r| Ok(failure_row(r.int(0)?, r.int(1)?, now)))
            .transpose()
        })
    }

    /// The failure counts and blocks still in force, for the in-memory limits at start-up:
    /// (username key, ip, failures, time left blocked). Rows that no longer count are
    /// deleted.
    pub fn login_failures(&self) -> Result<Vec<(String, String, u32, Duration)>> {
        let now = now_ms();
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE failures <= 0 AND blocked_until_ms <= ?1",
                params![now],
            )?;
            c.query(
                "SELECT username_key, ip, failures, blocked_until_ms FROM login_failures",
                params![],
            )?
            .into_iter()
            .map(|r| {
                let (failures, left) = failure_row(r.int(2)?, r.int(3)?, now);
                Ok((r.text(0)?, r.text(1)?, failures, left))
            })
            .collect()
        })
    }

    /// Forgets the failures of `username_key` from `ip` after a successful login.
    pub fn clear_failures(&self, username_key: &str, ip: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE username_key = ?1 AND ip = ?2",
                params![username_key, ip],
            )
        })?;
        Ok(())
    }
}

/// A stored (failures, blocked until) as (failures, time left blocked) at `now`.
fn failure_row(failures: i64, blocked_until_ms: i64, now: i64) -> (u32, Duration) {
    (
        u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
        Duration::from_millis(blocked_until_ms.saturating_sub(now).max(0) as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/server.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn accounts_are_unique_regardless_of_case() {
        let (_dir, store) = temp_store();
        assert_eq!(
            store.create_user("Alice", "$2b$hash").unwrap(),
            Created::Yes
        );
        assert_eq!(
            store.create_user("alice", "$2b$other").unwrap(),
            Created::Taken
        );
        assert!(store.user_exists("ALICE").unwrap());
        let account = store.account("aLiCe").unwrap().unwrap();
        assert_eq!(account.username, "Alice");
        assert!(store.account("bob").unwrap().is_none());
    }

    #[test]
    fn login_failures_and_blocks_are_stored_and_blocks_never_shrink() {
        let (_dir, store) = temp_store();
        let block = Duration::from_secs(60);
        store.save_login_failures("al", "1.2.3.4", 2, None).unwrap();
        store
            .save_login_failures("al", "5.6.7.8", 0, Some(block))
            .unwrap();
        // A count written after the block (writes that crossed) keeps the block.
        store.save_login_failures("al", "5.6.7.8", 1, None).unwrap();
        store.save_login_failures("bo", "1.2.3.4", 1, None).unwrap();
        store.clear_failures("bo", "1.2.3.4").unwrap();
        let mut rows = store.login_failures().unwrap();
        rows.sort();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("al", "1.2.3.4"));
        assert_eq!((rows[0].2, rows[0].3), (2, Duration::ZERO));
        assert_eq!(rows[1].1, "5.6.7.8");
        assert!(rows[1].3 > Duration::from_secs(50) && rows[1].3 <= block);
    }

    #[test]
    fn a_password_hash_can_be_replaced() {
        let (_dir, store) = temp_store();
        store.create_user("Alice", "$2b$04$old").unwrap();
        store.set_password_hash("alice", "$2b$12$new").unwrap();
        assert_eq!(
            store.account("ALICE").unwrap().unwrap().pw_hash,
            "$2b$12$new"
        );
    }
}
