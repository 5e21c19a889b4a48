//! File offers through the server (protocol.md §4d, Queued file offers): `OFFER` to a
//! user who may be offline, and `OFFER_ANSWER` back to the offerer, each passed on at
//! once when its recipient is online or held until that user's next login.
//!
//! The server carries no file bytes: once an offer is accepted and both are online, the
//! offerer pushes the file over its own peer connection exactly as for an offer made in
//! a chat session. It must not read or write sockets itself (outboxes do), and holds no
//! lock across the store.

use super::Shared;
use super::login::LoggedIn;
use super::registry::Reach;
use super::store::MailboxFull;
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{MAILBOX_EXPIRY, OFFERS_PER_USER, OFFERS_TOTAL};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::{Event, Reply, ServerMsg};

fn internal(what: &str, e: &dyn std::fmt::Display) -> ServerMsg {
    log::error!("{what}: {e}");
    ServerMsg::err(ErrorCode::Internal, "the server failed; try again")
}

/// Passes `event` to `user` (account `uid`) now if online, else holds it. True when
/// delivered now; a refusal when it cannot be held.
// The refusal is the reply itself; grant replies (key, hints) make `ServerMsg` large.
#[allow(clippy::result_large_err)]
fn pass_on(shared: &Shared, user: &str, uid: u64, event: Event) -> Result<bool, ServerMsg> {
    let line = ServerMsg::Event(event);
    let key = user.to_ascii_lowercase();
    match shared.registry.lookup_reach(&key) {
        Some((_, _, Reach::Local(outbox))) => {
            outbox.send(&line);
            return Ok(true);
        }
        // Online on another server of the cluster: through its channel. Held here when
        // no server heard it (that server is gone, or Redis is down).
        Some((_, _, Reach::Remote(server)))
            if shared
                .cluster
                .as_ref()
                .is_some_and(|c| c.deliver(&server, &key, line.to_wire())) =>
        {
            return Ok(true);
        }
        _ => {}
    }
    match shared.store.hold_event(
        uid,
        &line.to_string(),
        MAILBOX_EXPIRY,
        OFFERS_PER_USER,
        OFFERS_TOTAL,
    ) {
        Ok(Ok(())) => Ok(false),
        Ok(Err(MailboxFull::Recipient)) => Err(ServerMsg::err(
            ErrorCode::OffersFull,
            format!("{user} has {OFFERS_PER_USER} file offers waiting already; try later"),
        )),
        Ok(Err(MailboxFull::Total)) => Err(ServerMsg::err(
            ErrorCode::OffersFull,
            format!("the server holds {OFFERS_TOTAL} waiting file offers; try later"),
        )),
        Err(e) => Err(internal("holding an event", &e)),
    }
}

/// The account `user` names, and the checks every offer line shares: it exists, it is
/// not the caller, and the caller is within its `SEND` rate.
// The refusal is the reply itself; grant replies (key, hints) make `ServerMsg` large.
#[allow(clippy::result_large_err)]
fn recipient(shared: &Shared, me: &LoggedIn, user: &UserRef) -> Result<(u64, String), ServerMsg> {
    let (uid, name) = match shared.store.find_user(user) {
        Ok(Some(found)) => found,
        Ok(None) => {
            let shown: String = user.to_string().chars().take(32).collect();
            return Err(ServerMsg::err(
                ErrorCode::NoSuchUser,
                format!("no user has the name or id {shown}"),
            ));
        }
        Err(e) => return Err(internal("finding a user", &e)),
    };
    if name.eq_ignore_ascii_case(&me.name) {
        return Err(ServerMsg::err(ErrorCode::BadRequest, "that is you"));
    }
    if let Err(wait) = shared.messages.take(&me.key) {
        return Err(ServerMsg::err(
            ErrorCode::TooManyMessages,
            format!(
                "too many messages; try again in {} s",
                super::rate_limit::secs(wait)
            ),
        ));
    }
    Ok((uid, name))
}

/// OFFER <id-or-name> <offer> <size> <name>
pub fn offer(
    shared: &Shared,
    me: &LoggedIn,
    to: &UserRef,
    offer: u64,
    size: u64,
    name: &str,
) -> ServerMsg {
    let (uid, user) = match recipient(shared, me, to) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let event = Event::Offer {
        from: me.name.clone(),
        offer,
        size,
        name: name.to_string(),
    };
    match pass_on(shared, &user, uid, event) {
        Ok(delivered) => {
            log::info!(
                "file offer {offer}: {} -> {user} ({size} bytes), {}",
                me.name,
                if delivered { "delivered" } else { "held" }
            );
            ServerMsg::Ok(Reply::Offered { offer, delivered })
        }
        Err(refusal) => refusal,
    }
}

/// OFFER_ANSWER <user> <offer> ok|no
///
/// Passed on to `user`, whose client acts on it only for an offer it made to us (its
/// offers are kept per peer), so a made-up answer changes nothing.
pub fn offer_answer(
    shared: &Shared,
    me: &LoggedIn,
    to: &str,
    offer: u64,
    accept: bool,
) -> ServerMsg {
    let (uid, user) = match recipient(shared, me, &UserRef::Name(to.to_string())) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let event = Event::OfferAnswer {
        from: me.name.clone(),
        offer,
        accept,
    };
    match pass_on(shared, &user, uid, event) {
        Ok(_) => ServerMsg::Ok(Reply::OfferAnswered { offer }),
        Err(refusal) => refusal,
    }
}

/// After `name` (account `uid`) came online: the offers and answers held for it.
pub fn deliver_held(shared: &Shared, name: &str, uid: u64) {
    let Some((_, _, outbox)) = shared
        .registry
        .lookup_with_outbox(&name.to_ascii_lowercase())
    else {
        return;
    };
    match shared.store.take_held(uid) {
        Ok(lines) if !lines.is_empty() => {
            let mut text = String::new();
            for line in &lines {
                text.push_str(line);
                text.push('\n');
            }
            log::info!("{name}: {} held offers and answers delivered", lines.len());
            outbox.send_wire(text);
        }
        Ok(_) => {}
        Err(e) => log::error!("reading {name}'s held events: {e}"),
    }
}
