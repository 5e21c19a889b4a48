//! File offers through the server (protocol.md §4d, Queued file offers): `OFFER` to a
//! user who may be offline, and `OFFER_ANSWER` back to the offerer, each passed on at
//! once when its recipient is online or held until that user's next login.
//!
//! The server carries no file bytes: once an offer is accepted and both are online, the
//! offerer pushes the file over its own peer connection exactly as for an offer made in
//! a chat session. `OFFER <user> - ...` asks the server to number the offer with a
//! transfer id of its own, which the accepted offer's `TRANSFER <user> <offer>` then
//! keeps (so an offer to an offline user needs no ticket while it waits). Every offer is
//! recorded until answered (`store::held_offers`), so an answer to an offer that does not
//! wait is refused (`456 NO_SUCH_OFFER`). It must not read or write sockets itself
//! (outboxes do), and holds no lock across the store.

use super::Shared;
use super::login::LoggedIn;
use super::registry::Reach;
use super::store::MailboxFull;
use super::store::{Answered, OfferKey, Opened};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{
    MAILBOX_EXPIRY, OFFERS_PER_USER, OFFERS_TOTAL, OPEN_OFFERS_PER_PAIR, OPEN_OFFERS_PER_USER,
};
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
        // (Held events have no per-sender cap: the open offers' pair cap bounds them.)
        Ok(Err(_)) => Err(ServerMsg::err(
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

/// OFFER <id-or-name> <offer>|- <size> <name>
///
/// `-`: the server numbers the offer with a new transfer id (recorded in the transfer
/// log, requester the offerer).
pub fn offer(
    shared: &Shared,
    me: &LoggedIn,
    to: &UserRef,
    offer: Option<u64>,
    size: u64,
    name: &str,
) -> ServerMsg {
    let (uid, user) = match recipient(shared, me, to) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let numbered = offer.is_none();
    let offer = match offer {
        Some(offer) => offer,
        None => match shared.store.create_transfer(&me.name, &user) {
            Ok(id) => id,
            Err(e) => return internal("numbering an offer", &e),
        },
    };
    let key = OfferKey {
        offerer: &me.name,
        recipient: &user,
        offer,
    };
    let caps = (OPEN_OFFERS_PER_USER, OPEN_OFFERS_PER_PAIR);
    match shared.store.open_offer(key, numbered, MAILBOX_EXPIRY, caps) {
        Ok(Opened::Yes) => {}
        Ok(Opened::OffererFull) => {
            return ServerMsg::err(
                ErrorCode::OffersFull,
                format!("you have {OPEN_OFFERS_PER_USER} offers waiting for answers; try later"),
            );
        }
        // One account may not fill what the server holds for one user (32 offers).
        Ok(Opened::PairFull) => {
            return ServerMsg::err(
                ErrorCode::TooManyWaiting,
                format!(
                    "you have {OPEN_OFFERS_PER_PAIR} offers to {user} waiting for answers already; try later"
                ),
            );
        }
        Err(e) => return internal("recording an offer", &e),
    }
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
        Err(refusal) => {
            if let Err(e) = shared.store.close_offer(key) {
                log::error!("closing a refused offer: {e}");
            }
            refusal
        }
    }
}

/// OFFER_ANSWER <user> <offer> ok|no
///
/// Only for an offer `user` made to us that waits for an answer (`456` otherwise).
/// Passed on to `user`, whose client also acts on it only for an offer it made to us.
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
    let key = OfferKey {
        offerer: &user,
        recipient: &me.name,
        offer,
    };
    match shared.store.answer_offer(key, accept) {
        Ok(Answered::Taken) => {}
        Ok(Answered::NotWaiting) => {
            return ServerMsg::err(
                ErrorCode::NoSuchOffer,
                format!(
                    "no offer {offer} from {user} waits for your answer (unknown, expired or answered)"
                ),
            );
        }
        Err(e) => return internal("answering an offer", &e),
    }
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

/// TRANSFER <user> <offer>: the check before its grant: `offer` is a server-numbered
/// offer of ours that `user` accepted and that has not started.
// The refusal is the reply itself; grant replies (key, hints) make `ServerMsg` large.
#[allow(clippy::result_large_err)]
pub fn accepted(shared: &Shared, me: &LoggedIn, user: &str, offer: u64) -> Result<(), ServerMsg> {
    let key = OfferKey {
        offerer: &me.name,
        recipient: user,
        offer,
    };
    match shared.store.accepted_offer(key) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let shown: String = user.chars().take(32).collect();
            Err(ServerMsg::err(
                ErrorCode::NoSuchOffer,
                format!("{shown} has accepted no offer {offer} of yours that waits to start"),
            ))
        }
        Err(e) => Err(internal("finding an accepted offer", &e)),
    }
}

/// The transfer of accepted offer `offer` was granted: it is no longer open.
pub fn started(shared: &Shared, me: &LoggedIn, user: &str, offer: u64) {
    let key = OfferKey {
        offerer: &me.name,
        recipient: user,
        offer,
    };
    if let Err(e) = shared.store.close_offer(key) {
        log::error!("closing a started offer: {e}");
    }
}

/// After `name` (account `uid`) came online: the offers and answers held for it, after
/// `EVENT HELD <n>` (so its client can say they waited while it was away).
pub fn deliver_held(shared: &Shared, name: &str, uid: u64) {
    let Some((_, _, outbox)) = shared
        .registry
        .lookup_with_outbox(&name.to_ascii_lowercase())
    else {
        return;
    };
    match shared.store.take_held(uid) {
        Ok(lines) if !lines.is_empty() => {
            let mut text = ServerMsg::Event(Event::Held { count: lines.len() }).to_string();
            text.push('\n');
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
