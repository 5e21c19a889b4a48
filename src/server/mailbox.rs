//! Messages through the server (protocol.md §4d): `WHOIS` to learn a recipient's id and
//! identity key, `SEND` to pass a sealed message on or keep it, and delivering what
//! waited when a user logs in.
//!
//! Every message is written to the store first and then taken out for delivery, by
//! whoever gets there first: the `SEND` (when the recipient is online) or the
//! recipient's login. So a message sent while its recipient is logging in is delivered
//! exactly once, never stranded. The server only ever holds ciphertext sealed to the
//! recipient's key. It must not read or write sockets itself (outboxes do), and it holds
//! no lock across the store.

use super::Shared;
use super::login::LoggedIn;
use super::registry::Reach;
use super::store::{MailboxFull, NewMessage, SenderCaps};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{MAILBOX_EXPIRY, MAILBOX_PER_SENDER, MAILBOX_PER_SENDER_TO_ONE};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::{Event, Reply, ServerMsg};

fn internal(what: &str, e: &dyn std::fmt::Display) -> ServerMsg {
    log::error!("{what}: {e}");
    ServerMsg::err(ErrorCode::Internal, "the server failed; try again")
}

fn no_such_user(user: &UserRef) -> ServerMsg {
    let shown: String = user.to_string().chars().take(32).collect();
    ServerMsg::err(
        ErrorCode::NoSuchUser,
        format!("no user has the name or id {shown}"),
    )
}

/// WHOIS <id-or-name>
///
/// Any account, online or not: its id, name, identity key and presence.
pub fn whois(shared: &Shared, user: &UserRef) -> ServerMsg {
    let (id, name) = match shared.store.find_user(user) {
        Ok(Some(found)) => found,
        Ok(None) => return no_such_user(user),
        Err(e) => return internal("finding a user", &e),
    };
    let key = match shared.store.identity_key(&name) {
        Ok(key) => key,
        Err(e) => return internal("reading an identity key", &e),
    };
    let online = shared.registry.lookup(&name.to_ascii_lowercase()).is_some();
    ServerMsg::Ok(Reply::Whois {
        id,
        user: name,
        key,
        online,
    })
}

/// SEND <id-or-name> <sealed>
///
/// Stores the message (within the mailbox caps), then hands it to the recipient's
/// connection if the recipient is online: `OK SENT <msgid> delivered|queued`.
pub fn send(shared: &Shared, me: &LoggedIn, to: &UserRef, sealed: &[u8]) -> ServerMsg {
    let (recipient, name) = match shared.store.find_user(to) {
        Ok(Some(found)) => found,
        Ok(None) => return no_such_user(to),
        Err(e) => return internal("finding a user", &e),
    };
    if name.eq_ignore_ascii_case(&me.name) {
        return ServerMsg::err(ErrorCode::BadRequest, "that is you");
    }
    if let Err(wait) = shared.messages.take(&me.key) {
        return ServerMsg::err(
            ErrorCode::TooManyMessages,
            format!(
                "too many messages; try again in {} s",
                super::rate_limit::secs(wait)
            ),
        );
    }
    let sender_key = match shared.store.identity_key(&me.name) {
        Ok(key) => key,
        Err(e) => return internal("reading an identity key", &e),
    };
    // The caps bound what waits: a message for someone online now passes them (its row
    // lives only until the take below). One sender may fill only a share of a mailbox,
    // and of all of them, so no account can shut others out (protocol.md §4d).
    let online = shared.registry.lookup(&name.to_ascii_lowercase()).is_some();
    let (per_user, total) = (shared.config.mailbox_per_user, shared.config.mailbox_total);
    let (caps, sender_caps) = if online {
        let none = SenderCaps {
            to_one: usize::MAX,
            in_all: usize::MAX,
        };
        ((usize::MAX, usize::MAX), none)
    } else {
        let sender = SenderCaps {
            to_one: MAILBOX_PER_SENDER_TO_ONE,
            in_all: MAILBOX_PER_SENDER,
        };
        ((per_user, total), sender)
    };
    let message = NewMessage {
        recipient,
        sender: &me.name,
        sender_key: &sender_key,
        sealed,
        lifetime: MAILBOX_EXPIRY,
        sender_caps,
    };
    let id = match shared.store.queue_message(&message, caps.0, caps.1) {
        Ok(Ok(id)) => id,
        Ok(Err(MailboxFull::Recipient)) => {
            return ServerMsg::err(
                ErrorCode::MailboxFull,
                format!("{name} has {per_user} messages waiting already; try later"),
            );
        }
        Ok(Err(MailboxFull::Total)) => {
            return ServerMsg::err(
                ErrorCode::MailboxesFull,
                format!("the server holds {total} waiting messages; try later"),
            );
        }
        Ok(Err(MailboxFull::SenderToOne)) => {
            return ServerMsg::err(
                ErrorCode::TooManyWaiting,
                format!(
                    "you have {MAILBOX_PER_SENDER_TO_ONE} messages waiting for {name} already; try once they have read them"
                ),
            );
        }
        Ok(Err(MailboxFull::SenderInAll)) => {
            return ServerMsg::err(
                ErrorCode::TooManyWaiting,
                format!(
                    "you have {MAILBOX_PER_SENDER} messages waiting for offline users already; try later"
                ),
            );
        }
        Err(e) => return internal("queueing a message", &e),
    };
    // Checked after the write: a recipient who came online meanwhile either sees the
    // row at its login or is seen here (see the module doc).
    let event = || {
        ServerMsg::Event(Event::Message {
            id,
            from: me.name.clone(),
            at_ms: now_ms(),
            key: sender_key,
            sealed: sealed.to_vec(),
        })
    };
    let key = name.to_ascii_lowercase();
    let delivered = match shared.registry.lookup_reach(&key) {
        // Online on another server: that server takes the row out and delivers.
        Some((_, _, Reach::Remote(server))) => shared
            .cluster
            .as_ref()
            .is_some_and(|c| c.deliver_mail(&server, &key, id, event().to_wire())),
        Some((_, _, Reach::Local(outbox))) => match shared.store.take_message(id) {
            Ok(true) => {
                outbox.send(&event());
                true
            }
            // The recipient's login took it: delivered too.
            Ok(false) => true,
            Err(e) => {
                log::error!("taking message {id}: {e}");
                false
            }
        },
        None => false,
    };
    log::info!(
        "message {id}: {} -> {name}, {} bytes sealed, {}",
        me.name,
        sealed.len(),
        if delivered { "delivered" } else { "queued" }
    );
    ServerMsg::Ok(Reply::Sent { id, delivered })
}

/// Message `id` (its `EVENT MESSAGE` line in `lines`), sent on another server to user
/// `key` of this one: delivered if `key` is still connected here and the row is still
/// there to take; otherwise it waits for that user's next login (or was taken by it).
/// Runs on the cluster's subscriber thread.
pub fn deliver_from_cluster(shared: &Shared, key: &str, id: u64, lines: String) {
    let Some(outbox) = shared.registry.local_outbox(key) else {
        log::info!("message {id}: {key} left before it arrived; it waits for their login");
        return;
    };
    match shared.store.take_message(id) {
        Ok(true) => {
            log::info!("message {id}: delivered to {key} from another server");
            outbox.send_wire(lines);
        }
        Ok(false) => log::debug!("message {id}: {key}'s login took it already"),
        Err(e) => log::error!("taking message {id}: {e}"),
    }
}

/// After `name` (account `uid`) came online: delivers what waited for it, announced by
/// `EVENT MAILBOX <n>` so the client can say "while you were away".
pub fn deliver_waiting(shared: &Shared, name: &str, uid: u64) {
    let Some((_, _, outbox)) = shared
        .registry
        .lookup_with_outbox(&name.to_ascii_lowercase())
    else {
        return;
    };
    let waiting = match shared.store.take_mailbox(uid) {
        Ok(waiting) => waiting,
        Err(e) => {
            log::error!("reading {name}'s waiting messages: {e}");
            return;
        }
    };
    if waiting.is_empty() {
        return;
    }
    let mut text = ServerMsg::Event(Event::Mailbox {
        count: waiting.len(),
    })
    .to_wire();
    for queued in &waiting {
        text.push_str(
            &ServerMsg::Event(Event::Message {
                id: queued.id,
                from: queued.sender.clone(),
                at_ms: queued.at_ms,
                key: queued.sender_key,
                sealed: queued.sealed.clone(),
            })
            .to_wire(),
        );
    }
    log::info!("{name}: {} waiting messages delivered", waiting.len());
    outbox.send_wire(text);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
