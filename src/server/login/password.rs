//! A returning account (protocol.md §3, `ASK NEW` answered `N`): username and password.
//!
//! Owns the password check: each one is reserved in the limits before bcrypt runs (per
//! username and address, per username, per connection), runs in the bcrypt queue with
//! no lock held, and an unknown name costs what a known one costs (a dummy hash, and
//! stored hashes renewed at the server's cost). It must not create accounts.

use std::net::IpAddr;
use std::time::Instant;

use super::attempts::{attempt_refused, merge_stored_failures};
use super::{LoggedIn, ask, claim, gate_refused, internal};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::MAX_LOGIN_FAILURES;
use crate::protocol::server_msg::{AskField, Reply, ServerMsg, Username};
use crate::server::Shared;
use crate::server::conn::{Conn, End};
use crate::server::rate_limit::source_key;

/// The key under which attempts with a name that breaks the username rules are counted
/// (no account can have it: usernames start with a letter). Keeps arbitrary text out of
/// the limit tables.
const INVALID_NAME_KEY: &str = "-invalid-";

/// bcrypt's cost as written in a hash (`$2b$12$...`).
fn hash_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// Returning client: username and password. Each check is reserved before bcrypt runs
/// and counted per (username, address), per username, and per connection.
pub(super) fn authenticate(
    conn: &mut Conn,
    shared: &Shared,
    deadline: Instant,
) -> Result<LoggedIn, End> {
    let address = source_key(conn.peer.ip());
    let address_text = address.to_string();
    let mut failures_here = 0u32;
    loop {
        let typed = ask(conn, AskField::Username, "Username")?
            .trim()
            .to_string();
        let password = ask(conn, AskField::Password, "Password")?;
        // Only a name that follows the rules is echoed back, logged or used as a key:
        // people type passwords into the username prompt.
        let valid = Username::parse(&typed).ok();
        let key = valid
            .as_ref()
            .map_or_else(|| INVALID_NAME_KEY.to_string(), Username::key);
        let shown = valid
            .as_ref()
            .map_or("this name", Username::as_str)
            .to_string();
        merge_stored_failures(conn, shared, &key, address);
        let attempt = match shared.login_limits.reserve(&key, address) {
            Ok(attempt) => attempt,
            Err(refused) => return Err(attempt_refused(conn, refused, &shown)),
        };
        let account = match valid {
            Some(_) => match shared.store.account(&key) {
                Ok(account) => account,
                Err(e) => {
                    // The attempt is dropped unchecked, so it does not count.
                    internal(conn, "reading an account", &e);
                    continue;
                }
            },
            None => None,
        };
        // An unknown name is checked against a dummy hash of the current cost, and stored
        // hashes are brought to that cost below, so the time taken does not tell which
        // names exist.
        let hash = account
            .as_ref()
            .map_or(shared.dummy_hash.as_str(), |a| a.pw_hash.as_str());
        let peer = conn.peer;
        // The hashing thread gets its own copies (`run` waits for it to finish).
        let (secret, stored, logged) = (password.clone(), hash.to_string(), shown.clone());
        let checked = shared.hash_gate.run(address, deadline, move || {
            // Tests count these lines: one per password actually checked.
            log::debug!("{peer}: bcrypt verify for {logged}");
            bcrypt::verify(&secret, &stored).unwrap_or(false)
        });
        let verified = match checked {
            Ok(verified) => verified,
            Err(refusal) => return Err(gate_refused(conn, refusal)),
        };
        if let (true, Some(account)) = (verified, account.as_ref()) {
            attempt.succeed();
            if let Err(e) = shared.store.clear_failures(&key, &address_text) {
                log::error!("{}: clearing failures: {e}", conn.peer);
            }
            if claim(shared, &key, &account.username, conn.id).is_err() {
                log::info!("{}: {} is already online", conn.peer, account.username);
                conn.send_err(
                    ErrorCode::AlreadyOnline,
                    format!("{} is already logged in elsewhere", account.username),
                );
                continue;
            }
            log::info!("{}: logged in {}", conn.peer, account.username);
            conn.send(ServerMsg::Ok(Reply::LoggedIn {
                user: account.username.clone(),
            }));
            rehash_if_needed(
                conn,
                shared,
                address,
                deadline,
                &account.username,
                &password,
                hash,
            );
            return Ok(LoggedIn::new(key, account.username.clone()));
        }
        failures_here += 1;
        match &account {
            Some(account) => log::warn!("{}: failed login for {}", conn.peer, account.username),
            None => log::warn!("{}: failed login for an unknown name", conn.peer),
        }
        let failed = attempt.fail(shared.config.block());
        if let Err(e) =
            shared
                .store
                .save_login_failures(&key, &address_text, failed.failures, failed.blocked)
        {
            log::error!("{}: recording a failure: {e}", conn.peer);
        }
        if let Some(block) = failed.blocked {
            log::warn!("{}: {shown} blocked from {address}", conn.peer);
            return Err(conn.refuse(
                ErrorCode::Blocked,
                format!(
                    "too many failed logins: {shown} is blocked from your address for {} s",
                    block.as_secs()
                ),
            ));
        }
        // What the server will really allow next: this connection's attempts and this
        // (name, address)'s, with checks still under way counted as used.
        let left = MAX_LOGIN_FAILURES
            .saturating_sub(failures_here)
            .min(failed.left);
        if left == 0 {
            return Err(conn.refuse(
                ErrorCode::AuthFailed,
                "invalid username or password; too many failures, closing",
            ));
        }
        conn.send_err(
            ErrorCode::AuthFailed,
            format!(
                "invalid username or password ({left} attempt{} left)",
                if left == 1 { "" } else { "s" }
            ),
        );
    }
}

/// After a successful login: if the stored hash has another cost than the server's,
/// hash the password again at the current cost, so every stored hash (and the dummy
/// one for unknown names) costs the same. Skipped when the bcrypt queue is busy.
fn rehash_if_needed(
    conn: &Conn,
    shared: &Shared,
    address: IpAddr,
    deadline: Instant,
    username: &str,
    password: &str,
    stored: &str,
) {
    let cost = shared.config.bcrypt_cost;
    if hash_cost(stored) == Some(cost) {
        return;
    }
    let secret = password.to_string();
    match shared
        .hash_gate
        .run(address, deadline, move || bcrypt::hash(secret, cost))
    {
        Ok(Ok(new)) => match shared.store.set_password_hash(username, &new) {
            Ok(()) => log::info!("{}: {username}'s hash renewed at cost {cost}", conn.peer),
            Err(e) => log::error!("{}: storing a renewed hash: {e}", conn.peer),
        },
        Ok(Err(e)) => log::error!("{}: renewing a hash: {e}", conn.peer),
        Err(refusal) => log::info!("{}: hash not renewed now ({refusal:?})", conn.peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_read_from_a_hash() {
        assert_eq!(hash_cost("$2b$12$abcdefghijklmnopqrstuv"), Some(12));
        assert_eq!(hash_cost("$2y$04$x"), Some(4));
        assert_eq!(hash_cost("garbage"), None);
    }
}
