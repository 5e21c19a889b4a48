//! The login conversation of protocol.md §3: new or returning, username, password, port.
//!
//! Owns the questions and the rules between them: registration, authentication, failure
//! counting and blocks, one live login per account. It runs bcrypt with no lock held and
//! must not run once the user is online (that is `conn`'s command loop).

use std::net::SocketAddr;

use super::Shared;
use super::conn::{Conn, End};
use super::store::{Created, Failure};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::MAX_LOGIN_FAILURES;
use crate::protocol::server_msg::{
    AskField, Event, NewAnswer, Password, Reply, ServerMsg, Username, parse_port,
};

/// The prompt of `ASK NEW`, as in the seeds.
pub const NEW_PROMPT: &str = "Are you a new client? (Y/N)";
/// The prompt of `ASK PORT`.
pub const PORT_PROMPT: &str = "Listening port for peer connections";

/// A user who finished logging in.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// Lower-case name: the registry key.
    pub key: String,
    /// The name as registered.
    pub name: String,
}

/// Runs the whole login; on success the user is online and announced.
pub fn run(conn: &mut Conn, shared: &Shared) -> Result<LoggedIn, End> {
    let me = loop {
        let line = ask(conn, AskField::New, NEW_PROMPT)?;
        match NewAnswer::parse(&line) {
            Ok(NewAnswer::Yes) => break register(conn, shared)?,
            Ok(NewAnswer::No) => break authenticate(conn, shared)?,
            Ok(NewAnswer::Quit) => {
                conn.send(ServerMsg::Ok(Reply::Bye));
                return Err(End::Quit);
            }
            Err(e) => conn.send_err(e.code, e.message),
        }
    };
    let port = loop {
        let line = ask(conn, AskField::Port, PORT_PROMPT)?;
        match parse_port(&line) {
            Ok(port) => break port,
            Err(e) => conn.send_err(e.code, e.message),
        }
    };
    let addr = SocketAddr::new(conn.peer.ip(), port);
    conn.logged_in();
    conn.send(ServerMsg::Ok(Reply::Welcome {
        user: me.name.clone(),
        addr,
    }));
    let others = shared.registry.set_online(&me.key, addr);
    log::info!(
        "{} {}: online; peers reach it at {addr}",
        conn.peer,
        me.name
    );
    let event = ServerMsg::Event(Event::Online {
        user: me.name.clone(),
    });
    for outbox in others {
        outbox.send(&event);
    }
    Ok(me)
}

/// Sends `ASK` and returns the answer, asking again after a line that was rejected.
fn ask(conn: &mut Conn, field: AskField, prompt: &str) -> Result<String, End> {
    loop {
        conn.send(ServerMsg::Ask {
            field,
            prompt: prompt.to_string(),
        });
        if let Some(line) = conn.next_line()? {
            return Ok(line);
        }
    }
}

fn internal(conn: &Conn, what: &str, e: &crate::Error) {
    log::error!("{}: {what}: {e}", conn.peer);
    conn.send_err(ErrorCode::Internal, "the server failed; try again");
}

/// New client: a free username, a password, an account.
fn register(conn: &mut Conn, shared: &Shared) -> Result<LoggedIn, End> {
    loop {
        let line = ask(conn, AskField::Username, "Choose a username")?;
        let name = match Username::parse(line.trim()) {
            Ok(name) => name,
            Err(e) => {
                conn.send_err(e.code, e.message);
                continue;
            }
        };
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
        let hash = match bcrypt::hash(password.expose(), shared.config.bcrypt_cost) {
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
        log::info!("{}: registered {}", conn.peer, name.as_str());
        if shared
            .registry
            .claim(&name.key(), name.as_str(), conn.id)
            .is_err()
        {
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
        return Ok(LoggedIn {
            key: name.key(),
            name: name.as_str().to_string(),
        });
    }
}

/// Returning client: username and password, with failure counting and blocks.
fn authenticate(conn: &mut Conn, shared: &Shared) -> Result<LoggedIn, End> {
    let ip = conn.peer.ip().to_string();
    let mut failures_here = 0u32;
    loop {
        let typed = ask(conn, AskField::Username, "Username")?
            .trim()
            .to_string();
        let password = ask(conn, AskField::Password, "Password")?;
        let key = typed.to_ascii_lowercase();
        // Only a name that follows the rules is echoed back or logged: people type
        // passwords into the username prompt.
        let shown = Username::parse(&typed)
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|_| "this name".to_string());
        match shared.store.blocked_for(&key, &ip) {
            Ok(None) => {}
            Ok(Some(left)) => {
                log::warn!("{}: login refused: blocked", conn.peer);
                return Err(conn.refuse(
                    ErrorCode::Blocked,
                    format!(
                        "too many failed logins: {shown} is blocked from your address for {} more s",
                        left.as_secs() + 1
                    ),
                ));
            }
            Err(e) => {
                internal(conn, "checking a block", &e);
                continue;
            }
        }
        let account = match Username::parse(&typed) {
            Ok(_) => match shared.store.account(&key) {
                Ok(account) => account,
                Err(e) => {
                    internal(conn, "reading an account", &e);
                    continue;
                }
            },
            Err(_) => None,
        };
        // An unknown name is checked against a dummy hash of the same cost, so the time
        // taken does not tell which names exist.
        let hash = account
            .as_ref()
            .map_or(shared.dummy_hash.as_str(), |a| a.pw_hash.as_str());
        let verified = bcrypt::verify(&password, hash).unwrap_or(false);
        if let (true, Some(account)) = (verified, account.as_ref()) {
            if let Err(e) = shared.store.clear_failures(&key, &ip) {
                log::error!("{}: clearing failures: {e}", conn.peer);
            }
            if shared
                .registry
                .claim(&key, &account.username, conn.id)
                .is_err()
            {
                log::info!("{}: {} is already online", conn.peer, account.username);
                conn.send_err(
                    ErrorCode::AlreadyOnline,
                    format!("{} is already logged in elsewhere", account.username),
                );
                continue;
            }
            log::info!("{}: logged in {}", conn.peer, account.username);
            conn.send(ServerMsg::Ok(Reply::LoggedIn {
                user: account.username.clone(),
            }));
            return Ok(LoggedIn {
                key,
                name: account.username.clone(),
            });
        }
        failures_here += 1;
        match &account {
            Some(account) => log::warn!("{}: failed login for {}", conn.peer, account.username),
            None => log::warn!("{}: failed login for an unknown name", conn.peer),
        }
        match shared
            .store
            .record_failure(&key, &ip, shared.config.block())
        {
            Ok(Failure::Blocked) => {
                log::warn!("{}: {shown} blocked from {ip}", conn.peer);
                return Err(conn.refuse(
                    ErrorCode::Blocked,
                    format!(
                        "too many failed logins: {shown} is blocked from your address for {} s",
                        shared.config.block().as_secs()
                    ),
                ));
            }
            Ok(Failure::Counted(_)) => {}
            Err(e) => log::error!("{}: recording a failure: {e}", conn.peer),
        }
        if failures_here >= MAX_LOGIN_FAILURES {
            return Err(conn.refuse(
                ErrorCode::AuthFailed,
                "invalid username or password; too many failures, closing",
            ));
        }
        let left = MAX_LOGIN_FAILURES - failures_here;
        conn.send_err(
            ErrorCode::AuthFailed,
            format!(
                "invalid username or password ({left} attempt{} left)",
                if left == 1 { "" } else { "s" }
            ),
        );
    }
}
