//! The server's side of every command after login.
//!
//! Owns what each command does. Argument counts are checked once, by the command table
//! in `protocol::server_msg`, and login is checked structurally (commands are only parsed
//! after login), so handlers hold no precondition checks. It must not read or write
//! sockets: it returns the reply for `conn` to queue.

use super::Shared;
use super::login::LoggedIn;
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::{
    COMMANDS, Command, CommandSpec, EndReason, Event, Reply, ServerMsg,
};
use crate::protocol::ticket::Ticket;

/// What the connection does after replying.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
}

/// Runs one command for `me` and returns its reply.
pub fn dispatch(command: &Command, me: &LoggedIn, shared: &Shared) -> (ServerMsg, Flow) {
    let reply = match command {
        Command::Help => help(),
        Command::List => list(shared),
        Command::Info { user } => info(shared, user),
        Command::Ping => ServerMsg::Ok(Reply::Pong),
        Command::Quit => return (ServerMsg::Ok(Reply::Bye), Flow::Close),
        Command::Connect { user } => connect(shared, me, user),
        Command::SessionOpen { id } => session_open(shared, me, *id),
        Command::SessionEnd { id, reason } => session_end(shared, me, *id, *reason),
    };
    (reply, Flow::Continue)
}

/// HELP
fn help() -> ServerMsg {
    ServerMsg::Ok(Reply::Help {
        lines: COMMANDS.iter().map(CommandSpec::help_line).collect(),
    })
}

/// LIST
fn list(shared: &Shared) -> ServerMsg {
    ServerMsg::Ok(Reply::List {
        users: shared.registry.online_names(),
    })
}

/// INFO <username>
fn info(shared: &Shared, user: &str) -> ServerMsg {
    match shared.registry.lookup(&user.to_ascii_lowercase()) {
        Some((name, addr)) => ServerMsg::Ok(Reply::Info { user: name, addr }),
        None => {
            let shown: String = user.chars().take(32).collect();
            ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"))
        }
    }
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> ServerMsg {
    log::error!("{what}: {e}");
    ServerMsg::err(ErrorCode::Internal, "the server failed; try again")
}

/// CONNECT <username>
///
/// Records the session, makes a one-time ticket, tells the target who will connect with
/// it, and gives the requester the target's address and the same ticket. Nobody else
/// ever sees the ticket, and it is never logged.
fn connect(shared: &Shared, me: &LoggedIn, user: &str) -> ServerMsg {
    let key = user.to_ascii_lowercase();
    if key == me.key {
        return ServerMsg::err(
            ErrorCode::BadRequest,
            "you cannot open a session with yourself",
        );
    }
    let Some((target, addr, outbox)) = shared.registry.lookup_with_outbox(&key) else {
        let shown: String = user.chars().take(32).collect();
        return ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"));
    };
    let ticket = match Ticket::generate() {
        Ok(ticket) => ticket,
        Err(e) => return internal("generating a ticket", &e),
    };
    let id = match shared.store.create_session(&me.name, &target) {
        Ok(id) => id,
        Err(e) => return internal("recording a session", &e),
    };
    // The target learns of the ticket before the requester can use it: its event is
    // queued before our reply is.
    outbox.send(&ServerMsg::Event(Event::SessionRequest {
        id,
        from: me.name.clone(),
        ticket: ticket.clone(),
    }));
    log::info!("session {id}: {} asked for {target}", me.name);
    ServerMsg::Ok(Reply::Session {
        id,
        user: target,
        addr,
        ticket,
    })
}

/// The session `id` if `me` takes part in it.
fn my_session(
    shared: &Shared,
    me: &LoggedIn,
    id: u64,
) -> Result<super::store::SessionRecord, ServerMsg> {
    match shared.store.session(id) {
        Ok(Some(record)) if record.has_participant(&me.name) => Ok(record),
        Ok(_) => Err(ServerMsg::err(
            ErrorCode::NoSession,
            format!("session {id} is not one of yours"),
        )),
        Err(e) => Err(internal("reading a session", &e)),
    }
}

/// SESSION_OPEN <id>
fn session_open(shared: &Shared, me: &LoggedIn, id: u64) -> ServerMsg {
    let record = match my_session(shared, me, id) {
        Ok(record) => record,
        Err(reply) => return reply,
    };
    if !record.target.eq_ignore_ascii_case(&me.name) {
        return ServerMsg::err(
            ErrorCode::NoSession,
            format!("only the target opens session {id}"),
        );
    }
    if let Err(e) = shared.store.mark_accepted(id) {
        return internal("marking a session accepted", &e);
    }
    log::info!("session {id}: {} accepted", me.name);
    ServerMsg::Ok(Reply::SessionOpened { id })
}

/// SESSION_END <id> <reason>
///
/// Idempotent: both participants report the end, and the first report is recorded.
fn session_end(shared: &Shared, me: &LoggedIn, id: u64, reason: EndReason) -> ServerMsg {
    if let Err(reply) = my_session(shared, me, id) {
        return reply;
    }
    match shared.store.end_session(id, reason.word()) {
        Ok(true) => log::info!(
            "session {id}: ended ({}), reported by {}",
            reason.word(),
            me.name
        ),
        Ok(false) => {}
        Err(e) => return internal("ending a session", &e),
    }
    ServerMsg::Ok(Reply::SessionEnded { id })
}

/// After `user` went offline: ends the sessions in which nobody is online any more.
pub fn close_abandoned_sessions(shared: &Shared, user: &str) {
    let open = match shared.store.open_sessions_of(user) {
        Ok(open) => open,
        Err(e) => {
            log::error!("listing the sessions of {user}: {e}");
            return;
        }
    };
    for (id, other) in open {
        if shared
            .registry
            .lookup(&other.to_ascii_lowercase())
            .is_some()
        {
            continue;
        }
        match shared.store.end_session(id, EndReason::Offline.word()) {
            Ok(true) => log::info!("session {id}: ended (offline)"),
            Ok(false) => {}
            Err(e) => log::error!("ending session {id}: {e}"),
        }
    }
}
