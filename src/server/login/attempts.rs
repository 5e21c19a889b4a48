//! The limits around one login attempt that password and token logins share: failures
//! other servers stored, and the refusal of an attempt the limits did not let through.
//!
//! Owns only how those limits meet the conversation; the counting itself is
//! `login_limits`'. It must not check a password or a token.

use std::net::IpAddr;

use crate::protocol::codes::ErrorCode;
use crate::server::Shared;
use crate::server::conn::{Conn, End};
use crate::server::login_limits::Refused;
use crate::server::rate_limit::secs;

/// When other servers share the database (PostgreSQL), reads the failures and block
/// they stored for (`key`, `address`) into the in-memory limits before an attempt is
/// reserved, so three failures anywhere block everywhere. One indexed read per login
/// attempt (never per command); a server alone (SQLite) has everything in memory.
/// Checks still under way on another server are not seen here: with N servers at most
/// N times the per-pair limit can race before the block is written. The per-name delay
/// (`NAME_ATTEMPT_BURST`) stays per server.
pub(super) fn merge_stored_failures(conn: &Conn, shared: &Shared, key: &str, address: IpAddr) {
    // A cluster may share one SQLite file too: read back what another server wrote.
    if !shared.store.is_shared() && shared.cluster.is_none() {
        return;
    }
    match shared.store.login_failure(key, &address.to_string()) {
        Ok(Some((failures, blocked_for))) => {
            shared
                .login_limits
                .merge_stored(key, address, failures, blocked_for);
        }
        Ok(None) => {}
        Err(e) => log::error!("{}: reading stored login failures: {e}", conn.peer),
    }
}

/// Refuses an attempt the limits did not let through; every refusal closes the login.
pub(super) fn attempt_refused(conn: &Conn, refused: Refused, shown: &str) -> End {
    log::warn!("{}: login refused: {refused:?}", conn.peer);
    match refused {
        Refused::Blocked(left) => conn.refuse(
            ErrorCode::Blocked,
            format!(
                "too many failed logins: {shown} is blocked from your address for {} more s",
                secs(left)
            ),
        ),
        Refused::Checking => conn.refuse(
            ErrorCode::Blocked,
            format!(
                "too many failed logins: {shown} has no attempts left from your address while \
                 others are being checked; try again later"
            ),
        ),
        Refused::NameThrottled(wait) => conn.refuse(
            ErrorCode::RateLimited,
            format!(
                "too many login attempts for {shown} from everywhere; try again in {} s",
                secs(wait)
            ),
        ),
        Refused::Full => conn.refuse(
            ErrorCode::Busy,
            "busy, retry: too many logins are being tracked; try again in a moment",
        ),
    }
}
