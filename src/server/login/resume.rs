//! A login with a resumable-login token (protocol.md §3, "Resuming a login"):
//! `RESUME <username> <token>` instead of `Y` or `N`.
//!
//! Owns the token check (counted like a password check, but one digest and one indexed
//! read, no bcrypt) and taking the account over from an older connection. It must not
//! issue tokens (that is the `TOKEN` command).

use super::attempts::{attempt_refused, merge_stored_failures};
use super::{LoggedIn, internal};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::TOKEN_LIFETIME;
use crate::protocol::server_msg::{Reply, ServerMsg, Username};
use crate::protocol::session_token::SessionToken;
use crate::server::Shared;
use crate::server::conn::{Conn, End};
use crate::server::rate_limit::source_key;

/// `RESUME <username> <token>`: a login without bcrypt. The attempt is reserved and
/// counted like a password check (a wrong token is a failure towards the block, and a
/// block holds), but checking costs one digest and one indexed read. A valid token takes
/// the account over from a connection still holding it (the client's old connection
/// may be half open after a network change). `Ok(None)`: refused, ask `NEW` again.
pub(super) fn resume(
    conn: &mut Conn,
    shared: &Shared,
    typed: &str,
    token: &SessionToken,
) -> Result<Option<LoggedIn>, End> {
    let address = source_key(conn.peer.ip());
    let bad_token = |conn: &Conn| {
        conn.send_err(
            ErrorCode::BadToken,
            "the token is unknown, expired or revoked; log in with your password",
        )
    };
    let Ok(valid) = Username::parse(typed) else {
        bad_token(conn);
        return Ok(None);
    };
    let (key, shown) = (valid.key(), valid.as_str().to_string());
    merge_stored_failures(conn, shared, &key, address);
    let attempt = match shared.login_limits.reserve(&key, address) {
        Ok(attempt) => attempt,
        Err(refused) => return Err(attempt_refused(conn, refused, &shown)),
    };
    let digest = token.digest();
    let username = match shared.store.use_token(&key, &digest, TOKEN_LIFETIME) {
        Ok(Some(username)) => username,
        Ok(None) => {
            log::warn!("{}: refused token for {shown}", conn.peer);
            let failed = attempt.fail(shared.config.block());
            let saved = shared.store.save_login_failures(
                &key,
                &address.to_string(),
                failed.failures,
                failed.blocked,
            );
            if let Err(e) = saved {
                log::error!("{}: recording a failure: {e}", conn.peer);
            }
            if let Some(block) = failed.blocked {
                return Err(conn.refuse(
                    ErrorCode::Blocked,
                    format!(
                        "too many failed logins: {shown} is blocked from your address for {} s",
                        block.as_secs()
                    ),
                ));
            }
            bad_token(conn);
            return Ok(None);
        }
        Err(e) => {
            internal(conn, "reading a token", &e);
            return Ok(None);
        }
    };
    attempt.succeed();
    if let Err(e) = shared.store.clear_failures(&key, &address.to_string()) {
        log::error!("{}: clearing failures: {e}", conn.peer);
    }
    if let Some(old) = shared.registry.take_over(&key, &username, conn.id) {
        log::info!(
            "{}: {username} resumed; closing its older connection",
            conn.peer
        );
        old.kill();
    }
    if let Some(cluster) = &shared.cluster {
        cluster.take_over(&key, &username, conn.id);
    }
    log::info!("{}: logged in {username} with a token", conn.peer);
    conn.send(ServerMsg::Ok(Reply::LoggedIn {
        user: username.clone(),
    }));
    let me = LoggedIn::new(key, username);
    me.note_token(digest);
    Ok(Some(me))
}
