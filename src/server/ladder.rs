//! The server's side of the ladder's first two rungs (protocol.md §13): the address
//! hints a client reports (`HINTS`) and asking a target to dial its requester back
//! (`REVERSE`). The relay rung is `commands::relay` and `server::relay`.
//!
//! Owns which hints are kept and to whom they are given: a requester gets its target's
//! in the grant line (`commands::grant`), a target asked to dial back gets its
//! requester's in `EVENT DIAL`. It must not read or write sockets: like `commands`, it
//! returns the reply for `conn` to queue.

use super::Shared;
use super::login::LoggedIn;
use crate::protocol::codes::ErrorCode;
use crate::protocol::hints::Hints;
use crate::protocol::server_msg::{Event, Reply, ServerMsg};
use std::net::IpAddr;

/// HINTS <ip>[,<ip>]...|-
///
/// Replaces the local addresses `me` reported (checked by the parser: at most
/// `MAX_HINTS`, each dialable). They are given to requesters with `me`'s announced port.
pub fn hints(shared: &Shared, me: &LoggedIn, ips: &[IpAddr]) -> ServerMsg {
    let count = ips.len();
    if !shared.registry.set_hints(&me.key, ips.to_vec()) {
        return ServerMsg::err(ErrorCode::Internal, "you are not online");
    }
    log::debug!("{}: {count} address hints", me.name);
    ServerMsg::Ok(Reply::Hints { count })
}

/// The hints the server gives for the online user `key`, besides its address.
pub fn hints_for(shared: &Shared, key: &str) -> Hints {
    Hints(shared.registry.hints(key))
}

/// DIAL_FAILED SESSION|TRANSFER <id>
///
/// The target of `id` could not dial its requester back after `EVENT DIAL`: the
/// requester is told (`EVENT DIAL_FAILED`), so it asks for the relay at once instead of
/// waiting out `REVERSE_WAIT`. Only the target of `id` may say so (`432` otherwise).
pub fn dial_failed(shared: &Shared, me: &LoggedIn, transfer: bool, id: u64) -> ServerMsg {
    let participants = if transfer {
        shared.store.transfer_participants(id)
    } else {
        shared
            .store
            .session(id)
            .map(|r| r.map(|r| (r.requester, r.target)))
    };
    let requester = match participants {
        Ok(Some((requester, target))) if target.eq_ignore_ascii_case(&me.name) => requester,
        Ok(_) => {
            return ServerMsg::err(
                ErrorCode::NoSession,
                format!("{id} is not a session or transfer asked of you"),
            );
        }
        Err(e) => {
            log::error!("reading a session: {e}");
            return ServerMsg::err(ErrorCode::Internal, "the server failed; try again");
        }
    };
    if let Some((_, _, outbox)) = shared
        .registry
        .lookup_with_outbox(&requester.to_ascii_lowercase())
    {
        outbox.send(&ServerMsg::Event(Event::DialFailed { transfer, id }));
    }
    let what = if transfer { "transfer" } else { "session" };
    log::info!("{what} {id}: {} could not dial {requester} back", me.name);
    ServerMsg::Ok(Reply::DialFailed { transfer, id })
}

/// REVERSE SESSION|TRANSFER <id>
///
/// The requester of `id` could not reach its target: tell the target to dial the
/// requester (`EVENT DIAL` with the requester's address and hints; queued before our
/// reply) and record `reverse` as the path. Only the requester may ask, only while the
/// target is online, and it counts against the same request bucket as `CONNECT`, so a
/// client cannot make others dial addresses of its choosing at will.
pub fn reverse(shared: &Shared, me: &LoggedIn, transfer: bool, id: u64) -> ServerMsg {
    let target = match super::commands::requested_target(shared, me, transfer, id) {
        Ok(target) => target,
        Err(refusal) => return *refusal,
    };
    if let Err(wait) = shared.requests.take(&me.key) {
        return ServerMsg::err(
            ErrorCode::RateLimited,
            format!(
                "too many requests; try again in {} s",
                super::rate_limit::secs(wait)
            ),
        );
    }
    let Some((_, mine)) = shared.registry.lookup(&me.key) else {
        return ServerMsg::err(ErrorCode::Internal, "you are not online");
    };
    // The target may be a user of another server of the cluster: the event goes there.
    let target_key = target.to_ascii_lowercase();
    let Some((target, _, reach)) = shared.registry.lookup_reach(&target_key) else {
        return ServerMsg::err(ErrorCode::NotOnline, format!("{target} is not online"));
    };
    let recorded = if transfer {
        shared.store.set_transfer_path(id, "reverse")
    } else {
        shared.store.set_session_path(id, "reverse")
    };
    if let Err(e) = recorded {
        log::error!("recording a path: {e}");
        return ServerMsg::err(ErrorCode::Internal, "the server failed; try again");
    }
    let mut hints = vec![mine];
    hints.extend(shared.registry.hints(&me.key));
    let event = ServerMsg::Event(Event::Dial {
        transfer,
        id,
        hints: Hints(hints),
    });
    if !super::commands::deliver(shared, &reach, &target_key, &event) {
        return ServerMsg::err(ErrorCode::NotOnline, format!("{target} is not online"));
    }
    let what = if transfer { "transfer" } else { "session" };
    log::info!("{what} {id}: {target} asked to dial {} back", me.name);
    ServerMsg::Ok(Reply::Reverse { transfer, id })
}
