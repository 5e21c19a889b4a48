//! The server's side of every command after login.
//!
//! Owns what each command does. Argument counts are checked once, by the command table
//! in `protocol::server_msg`, and login is checked structurally (commands are only parsed
//! after login), so handlers hold no precondition checks. It must not read or write
//! sockets: it returns the reply for `conn` to queue.

use super::Shared;
use super::login::LoggedIn;
use super::registry::Reach;
use super::store::TransferRecord;
use crate::protocol::codes::ErrorCode;
use std::net::IpAddr;
use std::time::Duration;

use super::file_index::CapExceeded;
use crate::protocol::ParseError;
use crate::protocol::limits::{MAX_FILES_PAGE, MAX_LIST_PAGE, MAX_SEARCH_RESULTS, TOKEN_LIFETIME};
use crate::protocol::server_msg::SharedFile;
use crate::protocol::server_msg::{
    COMMANDS, Command, CommandSpec, EndReason, Event, Reply, ServerMsg, TransferRole,
};
use crate::protocol::session_token::SessionToken;
use crate::protocol::ticket::Ticket;
use crate::sanitize::Untrusted;

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
        Command::List { offset } => list(shared, *offset),
        Command::Token => token(shared, me),
        Command::Key { key } => set_key(shared, me, key),
        Command::Whois { user } => super::mailbox::whois(shared, user),
        Command::Send { to, sealed } => super::mailbox::send(shared, me, to, sealed),
        Command::Offer {
            to,
            offer,
            size,
            name,
        } => super::offers::offer(shared, me, to, *offer, *size, name),
        Command::OfferAnswer { to, offer, accept } => {
            super::offers::offer_answer(shared, me, to, *offer, *accept)
        }
        Command::Info { user } => info(shared, user),
        Command::Ping => ServerMsg::Ok(Reply::Pong),
        Command::Quit => {
            // Logging out ends resumability: the tokens this connection used or got.
            if let Err(e) = shared.store.revoke_tokens(&me.token_digests()) {
                log::error!("revoking {}'s tokens: {e}", me.name);
            }
            return (ServerMsg::Ok(Reply::Bye), Flow::Close);
        }
        Command::Connect { user } => grant(shared, me, user, Grant::Session, None),
        Command::SessionOpen { id } => session_open(shared, me, *id),
        Command::Relay { transfer, id } => relay(shared, me, *transfer, *id),
        Command::Hints { ips } => super::ladder::hints(shared, me, ips),
        Command::Reverse { transfer, id } => super::ladder::reverse(shared, me, *transfer, *id),
        Command::DialFailed { transfer, id } => {
            super::ladder::dial_failed(shared, me, *transfer, *id)
        }
        Command::SessionEnd { id, reason } => session_end(shared, me, *id, *reason),
        Command::Transfer { user } => grant(shared, me, user, Grant::Transfer, None),
        Command::TransferOffer { user, offer } => {
            match super::offers::accepted(shared, me, user, *offer) {
                Err(refusal) => refusal,
                Ok(()) => {
                    let reply = grant(shared, me, user, Grant::Transfer, Some(*offer));
                    if matches!(reply, ServerMsg::Ok(_)) {
                        super::offers::started(shared, me, user, *offer);
                    }
                    reply
                }
            }
        }
        Command::TransferEnd {
            id,
            result,
            size,
            ms,
            hash,
            role,
            moved,
            resumed_from,
            name,
        } => transfer_end(
            shared,
            me,
            *id,
            &TransferRecord {
                result: result.word().to_string(),
                name: name.clone(),
                size: *size,
                hash: hash.clone(),
                duration_ms: *ms,
                role: role.map(|r| r.word().to_string()),
                moved: *moved,
                resumed_from: *resumed_from,
            },
        ),
        // The body of SHARE is read by `conn`, which calls `share` itself.
        Command::Share { .. } => ServerMsg::err(ErrorCode::BadRequest, "SHARE needs its lines"),
        Command::Files { user, offset } => files(shared, user.as_deref(), *offset),
        Command::Search { text } => search(shared, text),
    };
    (reply, Flow::Continue)
}

/// HELP
fn help() -> ServerMsg {
    ServerMsg::Ok(Reply::Help {
        lines: COMMANDS.iter().map(CommandSpec::help_line).collect(),
    })
}

/// LIST [offset]
fn list(shared: &Shared, offset: usize) -> ServerMsg {
    let (users, total) = shared.registry.online_page(offset, MAX_LIST_PAGE);
    ServerMsg::Ok(Reply::List { users, total })
}

/// TOKEN
///
/// A fresh resumable-login token; only its digest is stored, and it is never logged.
fn token(shared: &Shared, me: &LoggedIn) -> ServerMsg {
    let token = match SessionToken::generate() {
        Ok(token) => token,
        Err(e) => return internal("generating a token", &e),
    };
    let digest = token.digest();
    if let Err(e) = shared.store.add_token(&me.key, &digest, TOKEN_LIFETIME) {
        return internal("storing a token", &e);
    }
    me.note_token(digest);
    log::info!("{}: resumable-login token issued", me.name);
    ServerMsg::Ok(Reply::Token {
        token,
        secs: TOKEN_LIFETIME.as_secs(),
    })
}

/// KEY <64 hex>
///
/// Stores (or replaces: a new device) the caller's identity public key. Peers' pins
/// catch a change; the server only passes the key on.
fn set_key(shared: &Shared, me: &LoggedIn, key: &[u8; 32]) -> ServerMsg {
    match shared.store.set_identity_key(&me.name, key) {
        Ok(_) => {
            log::info!("{}: identity key registered", me.name);
            ServerMsg::Ok(Reply::KeySet)
        }
        Err(e) => internal("storing an identity key", &e),
    }
}

/// The identity key `user` registered, `None` if none (or the store failed: a grant
/// still works without it, and the peers' handshake then has no key to check).
fn key_of(shared: &Shared, user: &str) -> crate::protocol::identity_key::KeyField {
    shared.store.identity_key(user).unwrap_or_else(|e| {
        log::error!("reading {user}'s identity key: {e}");
        None
    })
}

/// INFO <username>
fn info(shared: &Shared, user: &str) -> ServerMsg {
    match shared.registry.lookup(&user.to_ascii_lowercase()) {
        Some((name, addr)) => {
            let key = key_of(shared, &name);
            ServerMsg::Ok(Reply::Info {
                user: name,
                addr,
                key,
            })
        }
        None => {
            let shown: String = user.chars().take(32).collect();
            ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"))
        }
    }
}

/// Queues `event` for user `key`: on its connection here, or through its server in a
/// cluster (the line is formatted here and queued there as it is). False if it could
/// not be handed over (the user's server is gone, or Redis is down).
pub(super) fn deliver(shared: &Shared, reach: &Reach, key: &str, event: &ServerMsg) -> bool {
    match (reach, &shared.cluster) {
        (Reach::Local(outbox), _) => {
            outbox.send(event);
            true
        }
        (Reach::Remote(server), Some(cluster)) => cluster.deliver(server, key, event.to_wire()),
        (Reach::Remote(_), None) => false,
    }
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> ServerMsg {
    log::error!("{what}: {e}");
    ServerMsg::err(ErrorCode::Internal, "the server failed; try again")
}

/// The session `id` if `me` takes part in it, else the refusal (boxed: grant replies
/// with a key and address hints make `ServerMsg` large).
fn my_session(
    shared: &Shared,
    me: &LoggedIn,
    id: u64,
) -> Result<super::store::SessionRecord, Box<ServerMsg>> {
    match shared.store.session(id) {
        Ok(Some(record)) if record.has_participant(&me.name) => Ok(record),
        Ok(_) => Err(Box::new(ServerMsg::err(
            ErrorCode::NoSession,
            format!("session {id} is not one of yours"),
        ))),
        Err(e) => Err(Box::new(internal("reading a session", &e))),
    }
}

/// The target of session or transfer `id` if `me` asked for it (`RELAY`, `REVERSE`);
/// otherwise the reply (boxed: `ServerMsg` is large): `432` for an id that is not `me`'s request, `500` if the
/// database failed.
pub(super) fn requested_target(
    shared: &Shared,
    me: &LoggedIn,
    transfer: bool,
    id: u64,
) -> Result<String, Box<ServerMsg>> {
    let participants = if transfer {
        shared.store.transfer_participants(id)
    } else {
        shared
            .store
            .session(id)
            .map(|r| r.map(|r| (r.requester, r.target)))
    };
    match participants {
        Ok(Some((requester, target))) if requester.eq_ignore_ascii_case(&me.name) => Ok(target),
        Ok(_) => Err(Box::new(ServerMsg::err(
            ErrorCode::NoSession,
            format!("{id} is not a session or transfer you asked for"),
        ))),
        Err(e) => Err(Box::new(internal("reading a session", &e))),
    }
}

/// RELAY SESSION|TRANSFER <id>
///
/// The requester of `id` could not reach its target: issue the two tokens of a relayed
/// circuit, tell the target (its event is queued before our reply, as for tickets) and
/// give the requester its own. Only the requester may ask, only while the target is
/// online, and it counts against the same request bucket as `CONNECT`/`TRANSFER`.
fn relay(shared: &Shared, me: &LoggedIn, transfer: bool, id: u64) -> ServerMsg {
    let target = match requested_target(shared, me, transfer, id) {
        Ok(target) => target,
        Err(refusal) => return *refusal,
    };
    let Some((addr, secret)) = shared.config.relay.issuing.clone() else {
        return ServerMsg::err(ErrorCode::RelayFull, "this server has no relay");
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
    let target_key = target.to_ascii_lowercase();
    let Some((target, _, reach)) = shared.registry.lookup_reach(&target_key) else {
        return ServerMsg::err(ErrorCode::NotOnline, format!("{target} is not online"));
    };
    let valid = Duration::from_secs(shared.config.relay.relay_token_secs);
    let (mine, theirs) = match secret.issue_pair(&me.name, &target, valid) {
        Ok(pair) => pair,
        Err(e) => return internal("issuing relay tokens", &e),
    };
    let what = if transfer { "transfer" } else { "session" };
    let recorded = if transfer {
        shared.store.set_transfer_path(id, "relay")
    } else {
        shared.store.set_session_path(id, "relay")
    };
    if let Err(e) = recorded {
        return internal("recording a path", &e);
    }
    let event = ServerMsg::Event(Event::Relay {
        id,
        addr,
        token: theirs,
    });
    if !deliver(shared, &reach, &target_key, &event) {
        return ServerMsg::err(ErrorCode::NotOnline, format!("{target} is not online"));
    }
    log::info!(
        "{what} {id}: {} meets {target} at the relay {addr}",
        me.name
    );
    ServerMsg::Ok(Reply::Relay {
        transfer,
        id,
        addr,
        token: mine,
    })
}

/// SESSION_OPEN <id>
fn session_open(shared: &Shared, me: &LoggedIn, id: u64) -> ServerMsg {
    let record = match my_session(shared, me, id) {
        Ok(record) => record,
        Err(reply) => return *reply,
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
        return *reply;
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

/// What a ticket is for: a chat session or a file transfer.
#[derive(Clone, Copy)]
enum Grant {
    Session,
    Transfer,
}

/// CONNECT <username> and TRANSFER <username> [offer]
///
/// Records the session or transfer (or takes `existing`, the transfer id an accepted
/// offer through the server already has), makes a one-time ticket, tells the target who
/// will connect with it, and gives the requester the target's address and the same ticket.
/// The target's event is queued before the requester's reply, so the target knows the
/// ticket before it can be presented. Nobody else ever sees it, and it is never logged.
fn grant(
    shared: &Shared,
    me: &LoggedIn,
    user: &str,
    kind: Grant,
    existing: Option<u64>,
) -> ServerMsg {
    let key = user.to_ascii_lowercase();
    if key == me.key {
        return ServerMsg::err(ErrorCode::BadRequest, "that is you");
    }
    // Per-user token bucket (server::rate_limit): tickets are cheap to ask for.
    if let Err(wait) = shared.requests.take(&me.key) {
        return ServerMsg::err(
            ErrorCode::RateLimited,
            format!(
                "too many CONNECT and TRANSFER requests; try again in {} s",
                super::rate_limit::secs(wait)
            ),
        );
    }
    let Some((target, addr, reach)) = shared.registry.lookup_reach(&key) else {
        let shown: String = user.chars().take(32).collect();
        return ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"));
    };
    let ticket = match Ticket::generate() {
        Ok(ticket) => ticket,
        Err(e) => return internal("generating a ticket", &e),
    };
    let recorded = match (kind, existing) {
        (_, Some(id)) => Ok(id),
        (Grant::Session, None) => shared.store.create_session(&me.name, &target),
        (Grant::Transfer, None) => shared.store.create_transfer(&me.name, &target),
    };
    let id = match recorded {
        Ok(id) => id,
        Err(e) => return internal("recording a ticket", &e),
    };
    let from = me.name.clone();
    // Each side is given the other's key, for its Noise handshake to check.
    let my_key = key_of(shared, &me.name);
    let target_key = key_of(shared, &target);
    let hints = Box::new(super::ladder::hints_for(shared, &key));
    let (event, reply, what) = match kind {
        Grant::Session => (
            Event::SessionRequest {
                id,
                from,
                ticket: ticket.clone(),
                key: my_key,
            },
            Reply::Session {
                id,
                user: target.clone(),
                addr,
                ticket,
                key: target_key,
                hints,
            },
            "session",
        ),
        Grant::Transfer => (
            Event::TransferRequest {
                id,
                from,
                ticket: ticket.clone(),
                key: my_key,
            },
            Reply::Transfer {
                id,
                user: target.clone(),
                addr,
                ticket,
                key: target_key,
                hints,
            },
            "transfer",
        ),
    };
    if !deliver(shared, &reach, &key, &ServerMsg::Event(event)) {
        log::info!("{what} {id}: {target}'s server did not take the request");
        return ServerMsg::err(ErrorCode::NotOnline, format!("{target} is not online"));
    }
    log::info!("{what} {id}: {} asked for {target}", me.name);
    ServerMsg::Ok(reply)
}

/// TRANSFER_END <id> <result> <size> <ms> <hash> <role> <moved> <resumed> <name>
///
/// Each participant's first report is kept. The log's summary is the receiver's report
/// (it verified the bytes on its disk); a sender's report fills it only until the
/// receiver's arrives. A role that does not fit the reporter's side (the requester
/// sends or fetches, the target receives or serves) is refused, so a sender cannot pass
/// itself off as the receiver.
fn transfer_end(shared: &Shared, me: &LoggedIn, id: u64, record: &TransferRecord) -> ServerMsg {
    let requester = match shared.store.transfer_participants(id) {
        Ok(Some((a, _))) if a.eq_ignore_ascii_case(&me.name) => true,
        Ok(Some((_, b))) if b.eq_ignore_ascii_case(&me.name) => false,
        Ok(_) => {
            return ServerMsg::err(
                ErrorCode::NoSession,
                format!("transfer {id} is not one of yours"),
            );
        }
        Err(e) => return internal("reading a transfer", &e),
    };
    let role = record.role.as_deref().and_then(TransferRole::from_word);
    if role.is_some_and(|r| r.requests() != requester) {
        return ServerMsg::err(
            ErrorCode::BadRequest,
            format!("that role is not yours in transfer {id}"),
        );
    }
    let receiver = role.is_some_and(TransferRole::receives);
    match shared.store.report_transfer(
        id,
        requester,
        receiver,
        role.map(TransferRole::direction),
        record,
    ) {
        Ok(true) => log::info!(
            "transfer {id}: {} {} ({} of {} bytes moved, {} ms), reported by {}",
            record.result,
            Untrusted(&record.name),
            record.moved,
            record.size,
            record.duration_ms,
            me.name
        ),
        Ok(false) => {}
        Err(e) => return internal("ending a transfer", &e),
    }
    ServerMsg::Ok(Reply::TransferEnded { id })
}

/// SHARE <n> and its n lines (already read by `conn`), from a user logged in from `ip`.
///
/// A refused list leaves the user's previous list in place.
pub fn share(
    shared: &Shared,
    me: &LoggedIn,
    ip: IpAddr,
    files: Result<Vec<SharedFile>, ParseError>,
) -> ServerMsg {
    let files = match files {
        Ok(files) => files,
        Err(e) => return ServerMsg::err(e.code, e.message),
    };
    let count = files.len();
    match shared.files.set(&me.key, &me.name, ip, files) {
        Ok(()) => {
            if let Some(cluster) = &shared.cluster {
                let (mine, _) = shared.files.list(Some(&me.key), 0, usize::MAX);
                cluster.share_files(&me.key, &mine);
            }
            ServerMsg::Ok(Reply::Shared { count })
        }
        Err(CapExceeded::PerAddress(cap)) => ServerMsg::err(
            ErrorCode::TooManyFiles,
            format!("accounts from your address may share at most {cap} files in all"),
        ),
        Err(CapExceeded::Total(cap)) => ServerMsg::err(
            ErrorCode::TooManyFiles,
            format!("the server's file index is full ({cap} files); share fewer files"),
        ),
    }
}

/// FILES [username] [offset]: one page of at most `MAX_FILES_PAGE` lines.
fn files(shared: &Shared, user: Option<&str>, offset: usize) -> ServerMsg {
    let key = user.map(str::to_ascii_lowercase);
    if let Some(key) = &key {
        let Some((name, _, reach)) = shared.registry.lookup_reach(key) else {
            let shown: String = key.chars().take(32).collect();
            return ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"));
        };
        // A user of another server: their list is kept in the cluster.
        if let (Reach::Remote(_), Some(cluster)) = (reach, &shared.cluster) {
            let all = cluster.remote_files(key, &name);
            let total = all.len();
            let files = all.into_iter().skip(offset).take(MAX_FILES_PAGE).collect();
            return ServerMsg::Ok(Reply::Files { files, total });
        }
    }
    let (files, total) = shared.files.list(key.as_deref(), offset, MAX_FILES_PAGE);
    ServerMsg::Ok(Reply::Files { files, total })
}

/// SEARCH <text>
fn search(shared: &Shared, text: &str) -> ServerMsg {
    // In a cluster, the other servers' users' files too (their lists are in Redis).
    let (files, total) = match &shared.cluster {
        Some(cluster) => super::cluster::search::search(shared, cluster, text, MAX_SEARCH_RESULTS),
        None => shared.files.search(text, MAX_SEARCH_RESULTS),
    };
    ServerMsg::Ok(Reply::Search { files, total })
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
