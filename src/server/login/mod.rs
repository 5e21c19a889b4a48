//! The login conversation of protocol.md §3: new or returning, username, password, port.
//!
//! Owns the order of the questions and what every step shares (asking, the claim of an
//! account, refusals). Each step lives in its own module: `register` (a new account),
//! `password` (a returning one, bcrypt and the attempt limits), `resume` (a token),
//! `attempts` (the limits both of those apply), `online` (the port and identity key,
//! then online). It runs bcrypt with no lock held and must not run once the user is
//! online (that is `conn`'s command loop).

mod attempts;
mod online;
mod password;
mod register;
mod resume;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Shared;
use super::cluster::Claim;
use super::conn::{Conn, End};
use super::hash_gate::GateRefusal;
use super::registry::{AlreadyOnline, ConnId};
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::{AskField, NewAnswer, Reply, ServerMsg, parse_resume};

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
    /// Digests of the resumable-login tokens this connection logged in with or was
    /// given: `QUIT` revokes them.
    pub tokens: Arc<Mutex<Vec<String>>>,
}

impl LoggedIn {
    fn new(key: String, name: String) -> LoggedIn {
        LoggedIn {
            key,
            name,
            tokens: Arc::default(),
        }
    }

    /// Remembers a token digest to revoke at logout.
    pub fn note_token(&self, digest: String) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(digest);
    }

    /// The token digests to revoke at logout.
    pub fn token_digests(&self) -> Vec<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs the whole login; on success the user is online and announced.
pub fn run(conn: &mut Conn, shared: &Shared) -> Result<LoggedIn, End> {
    // The connection's own deadline started a moment earlier; waits for bcrypt end by
    // this one, so they never outlast the login.
    let deadline = Instant::now() + shared.config.login_timeout();
    let me = loop {
        let line = ask(conn, AskField::New, NEW_PROMPT)?;
        match parse_resume(&line) {
            Some(Ok((name, token))) => match resume::resume(conn, shared, &name, &token)? {
                Some(me) => break me,
                None => continue,
            },
            Some(Err(e)) => {
                conn.send_err(e.code, e.message);
                continue;
            }
            None => {}
        }
        match NewAnswer::parse(&line) {
            Ok(NewAnswer::Yes) => break register::register(conn, shared, deadline)?,
            Ok(NewAnswer::No) => break password::authenticate(conn, shared, deadline)?,
            Ok(NewAnswer::Quit) => {
                conn.send(ServerMsg::Ok(Reply::Bye));
                return Err(End::Quit);
            }
            Err(e) => conn.send_err(e.code, e.message),
        }
    };
    online::port_then_online(conn, shared, &me)?;
    Ok(me)
}

/// Reserves the login of `key` for connection `id`: here, and in a cluster on every
/// server (the same rule as for two logins on one server: the second is refused).
fn claim(shared: &Shared, key: &str, name: &str, id: ConnId) -> Result<(), AlreadyOnline> {
    shared.registry.claim(key, name, id)?;
    if let Some(cluster) = &shared.cluster
        && cluster.claim(key, name, id) == Claim::Elsewhere
    {
        shared.registry.unclaim(key, id);
        return Err(AlreadyOnline);
    }
    Ok(())
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

/// Closes the login after the bcrypt queue refused it.
fn gate_refused(conn: &Conn, refusal: GateRefusal) -> End {
    log::warn!(
        "{}: login refused by the bcrypt queue: {refusal:?}",
        conn.peer
    );
    match refusal {
        GateRefusal::Busy => conn.refuse(
            ErrorCode::Busy,
            "busy, retry: too many logins are waiting for password checks; try again in a moment",
        ),
        GateRefusal::AddressBusy => conn.refuse(
            ErrorCode::Busy,
            "busy, retry: too many logins from your address are being checked; try again in a moment",
        ),
        GateRefusal::TimedOut => conn.refuse(ErrorCode::Timeout, "login not finished in time"),
    }
}
