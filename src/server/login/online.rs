//! The last step of a login (protocol.md §3): `ASK PORT`, whose answer may carry the
//! client's identity key, then online.
//!
//! Owns the order that makes a new key safe: the key given with the port is stored
//! before the user is marked online and welcomed, so from the first moment anyone can
//! find the user, `INFO`, `WHOIS` and the grants name the key this device holds, never
//! the one of a device used before (a `KEY` line after the welcome left a window for
//! that). It must not ask anything else or run commands (that is `conn`'s loop).

use std::net::SocketAddr;

use super::{LoggedIn, PORT_PROMPT, ask, internal};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::{AskField, PortAnswer, Reply, ServerMsg};
use crate::server::Shared;
use crate::server::conn::{Conn, End};

/// Asks for the port (storing an identity key given with it), then puts `me` online:
/// registered, welcomed, announced to the cluster, handed what waited for it.
pub(super) fn port_then_online(conn: &mut Conn, shared: &Shared, me: &LoggedIn) -> Result<(), End> {
    let port = loop {
        let line = ask(conn, AskField::Port, PORT_PROMPT)?;
        let answer = match PortAnswer::parse(&line) {
            Ok(answer) => answer,
            Err(e) => {
                conn.send_err(e.code, e.message);
                continue;
            }
        };
        if let Some(key) = &answer.key
            && let Err(e) = shared.store.set_identity_key(&me.name, key)
        {
            // Asked again: the client may answer without the key and send `KEY` later.
            internal(conn, "storing an identity key", &e);
            continue;
        }
        break answer.port;
    };
    let addr = SocketAddr::new(conn.peer.ip(), port);
    conn.logged_in();
    // No longer a connection waiting to log in: it stops counting against its address.
    shared.prelogin.release(conn.id);
    // The account's id, shown in `LIST` (0 if the store failed: only the id is missing).
    // Read before the welcome: a client told it is online must be found online by the
    // next request of anyone it tells (the read is a round trip on PostgreSQL).
    let uid = match shared.store.find_user(&UserRef::Name(me.name.clone())) {
        Ok(found) => found.map_or(0, |(id, _)| id),
        Err(e) => {
            log::error!("reading {}'s id: {e}", me.name);
            0
        }
    };
    let welcome = ServerMsg::Ok(Reply::Welcome {
        user: me.name.clone(),
        addr,
    });
    // Online and welcomed in one step (see `Registry::set_online`). The others learn it
    // from the next presence announcement (`server::presence`).
    if !shared
        .registry
        .set_online(&me.key, conn.id, addr, uid, welcome.to_wire())
    {
        conn.send(welcome);
    }
    if let Some(cluster) = &shared.cluster {
        cluster.online(&me.key, &me.name, conn.id, addr, uid);
    }
    // Messages that waited for this user (sealed; the server cannot read them).
    crate::server::mailbox::deliver_waiting(shared, &me.name, uid);
    // File offers made to it, and answers to its offers, that waited.
    crate::server::offers::deliver_held(shared, &me.name, uid);
    log::info!(
        "{} {}: online; peers reach it at {addr}",
        conn.peer,
        me.name
    );
    Ok(())
}
