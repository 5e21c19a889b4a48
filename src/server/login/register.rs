//! A new account (protocol.md §3, `ASK NEW` answered `Y`): a free username, a password,
//! the account written and claimed.
//!
//! Owns the rules of registering: each "is this name free?" answer spends one of the
//! address's username checks (given back when it ends in an account), the password is
//! hashed in the bcrypt queue with no lock held, and the name is checked again when the
//! account is written. It must not log anyone into an existing account (`password`).

use std::time::Instant;

use super::{LoggedIn, ask, claim, gate_refused, internal};
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::{AskField, Password, Reply, ServerMsg, Username};
use crate::server::Shared;
use crate::server::conn::{Conn, End};
use crate::server::rate_limit::{secs, source_key};
use crate::server::store::Created;

/// New client: a free username, a password, an account.
pub(super) fn register(
    conn: &mut Conn,
    shared: &Shared,
    deadline: Instant,
) -> Result<LoggedIn, End> {
    let address = source_key(conn.peer.ip());
    loop {
        let line = ask(conn, AskField::Username, "Choose a username")?;
        let name = match Username::parse(line.trim()) {
            Ok(name) => name,
            Err(e) => {
                conn.send_err(e.code, e.message);
                continue;
            }
        };
        // Each "is this name free?" answer tells which names exist, so an address may
        // only ask so often. A check that ends in a new account is given back below.
        if let Err(wait) = shared.name_checks.take(&address) {
            log::warn!("{}: username checks rate-limited", conn.peer);
            return Err(conn.refuse(
                ErrorCode::RateLimited,
                format!(
                    "too many username checks from your address; try again in {} s",
                    secs(wait)
                ),
            ));
        }
        let taken = |conn: &Conn| {
            conn.send_err(
                ErrorCode::NameTaken,
                format!("the username {} is taken; choose another", name.as_str()),
            )
        };
        match shared.store.user_exists(name.as_str()) {
            Ok(false) => {}
            Ok(true) => {
                taken(conn);
                continue;
            }
            Err(e) => {
                shared.name_checks.refund(&address);
                internal(conn, "checking a username", &e);
                continue;
            }
        }
        let password = loop {
            let line = ask(conn, AskField::Password, "Choose a password")?;
            match Password::parse(&line) {
                Ok(password) => break password,
                Err(e) => conn.send_err(e.code, e.message),
            }
        };
        let cost = shared.config.bcrypt_cost;
        // The hashing thread needs its own copy (it outlives no caller: `run` waits).
        let secret = password.expose().to_string();
        let hashed = match shared
            .hash_gate
            .run(address, deadline, move || bcrypt::hash(secret, cost))
        {
            Ok(hashed) => hashed,
            Err(refusal) => return Err(gate_refused(conn, refusal)),
        };
        let hash = match hashed {
            Ok(hash) => hash,
            Err(e) => {
                internal(conn, "hashing a password", &e.into());
                continue;
            }
        };
        match shared.store.create_user(name.as_str(), &hash) {
            Ok(Created::Yes) => {}
            Ok(Created::Taken) => {
                taken(conn);
                continue;
            }
            Err(e) => {
                internal(conn, "creating an account", &e);
                continue;
            }
        }
        shared.name_checks.refund(&address);
        shared.login_limits.note_known(&name.key(), address);
        log::info!("{}: registered {}", conn.peer, name.as_str());
        if claim(shared, &name.key(), name.as_str(), conn.id).is_err() {
            // Only possible if someone logged in with the new password in between.
            conn.send_err(
                ErrorCode::AlreadyOnline,
                "this account is logged in elsewhere",
            );
            continue;
        }
        conn.send(ServerMsg::Ok(Reply::Registered {
            user: name.as_str().to_string(),
        }));
        return Ok(LoggedIn::new(name.key(), name.as_str().to_string()));
    }
}
