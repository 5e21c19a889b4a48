//! The login conversation of protocol.md §3: new or returning, username, password, port.
//!
//! Owns the questions and the rules between them: registration, authentication, one
//! live login per account, and applying the limits around them (attempts reserved in
//! `login_limits` before bcrypt runs, username checks in a token bucket, the bcrypt
//! queue of `hash_gate`). It runs bcrypt with no lock held and must not run once the
//! user is online (that is `conn`'s command loop).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Shared;
use super::cluster::Claim;
use super::conn::{Conn, End};
use super::hash_gate::GateRefusal;
use super::login_limits::Refused;
use super::rate_limit::{secs, source_key};
use super::registry::{AlreadyOnline, ConnId};
use super::store::Created;
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{MAX_LOGIN_FAILURES, TOKEN_LIFETIME};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::{
    AskField, NewAnswer, Password, Reply, ServerMsg, Username, parse_port, parse_resume,
};
use crate::protocol::session_token::SessionToken;

/// The key under which attempts with a name that breaks the username rules are counted
/// (no account can have it: usernames start with a letter). Keeps arbitrary text out of
/// the limit tables.
const INVALID_NAME_KEY: &str = "-invalid-";

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
            Some(Ok((name, token))) => match resume(conn, shared, &name, &token)? {
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
            Ok(NewAnswer::Yes) => break register(conn, shared, deadline)?,
            Ok(NewAnswer::No) => break authenticate(conn, shared, deadline)?,
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
    super::mailbox::deliver_waiting(shared, &me.name, uid);
    // File offers made to it, and answers to its offers, that waited.
    super::offers::deliver_held(shared, &me.name, uid);
    log::info!(
        "{} {}: online; peers reach it at {addr}",
        conn.peer,
        me.name
    );
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

/// bcrypt's cost as written in a hash (`$2b$12$...`).
fn hash_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// New client: a free username, a password, an account.
fn register(conn: &mut Conn, shared: &Shared, deadline: Instant) -> Result<LoggedIn, End> {
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

/// When other servers share the database (PostgreSQL), reads the failures and block
/// they stored for (`key`, `address`) into the in-memory limits before an attempt is
/// reserved, so three failures anywhere block everywhere. One indexed read per login
/// attempt (never per command); a server alone (SQLite) has everything in memory.
/// Checks still under way on another server are not seen here: with N servers at most
/// N times the per-pair limit can race before the block is written. The per-name delay
/// (`NAME_ATTEMPT_BURST`) stays per server.
fn merge_stored_failures(conn: &Conn, shared: &Shared, key: &str, address: IpAddr) {
    // A cluster may share one SQLite file too: read back what another server wrote.
    if !shared.store.is_shared() && shared.cluster.is_none() {
        return;
    }
    match shared.store.login_failure(key, &address.to_string()) {
        Ok(Some((failures, blocked_for))) => {
            shared
                .login_limits
                .merge_stored(key, address, failures, blocked_for);
        }
        Ok(None) => {}
        Err(e) => log::error!("{}: reading stored login failures: {e}", conn.peer),
    }
}

/// Refuses an attempt the limits did not let through; every refusal closes the login.
fn attempt_refused(conn: &Conn, refused: Refused, shown: &str) -> End {
    log::warn!("{}: login refused: {refused:?}", conn.peer);
    match refused {
        Refused::Blocked(left) => conn.refuse(
            ErrorCode::Blocked,
            format!(
                "too many failed logins: {shown} is blocked from your address for {} more s",
                secs(left)
            ),
        ),
        Refused::Checking => conn.refuse(
            ErrorCode::Blocked,
            format!(
                "too many failed logins: {shown} has no attempts left from your address while \
                 others are being checked; try again later"
            ),
        ),
        Refused::NameThrottled(wait) => conn.refuse(
            ErrorCode::RateLimited,
            format!(
                "too many login attempts for {shown} from everywhere; try again in {} s",
                secs(wait)
            ),
        ),
        Refused::Full => conn.refuse(
            ErrorCode::Busy,
            "busy, retry: too many logins are being tracked; try again in a moment",
        ),
    }
}

/// Returning client: username and password. Each check is reserved before bcrypt runs
/// and counted per (username, address), per username, and per connection.
fn authenticate(conn: &mut Conn, shared: &Shared, deadline: Instant) -> Result<LoggedIn, End> {
    let address = source_key(conn.peer.ip());
    let address_text = address.to_string();
    let mut failures_here = 0u32;
    loop {
        let typed = ask(conn, AskField::Username, "Username")?
            .trim()
            .to_string();
        let password = ask(conn, AskField::Password, "Password")?;
        // Only a name that follows the rules is echoed back, logged or used as a key:
        // people type passwords into the username prompt.
        let valid = Username::parse(&typed).ok();
        let key = valid
            .as_ref()
            .map_or_else(|| INVALID_NAME_KEY.to_string(), Username::key);
        let shown = valid
            .as_ref()
            .map_or("this name", Username::as_str)
            .to_string();
        merge_stored_failures(conn, shared, &key, address);
        let attempt = match shared.login_limits.reserve(&key, address) {
            Ok(attempt) => attempt,
            Err(refused) => return Err(attempt_refused(conn, refused, &shown)),
        };
        let account = match valid {
            Some(_) => match shared.store.account(&key) {
                Ok(account) => account,
                Err(e) => {
                    // The attempt is dropped unchecked, so it does not count.
                    internal(conn, "reading an account", &e);
                    continue;
                }
            },
            None => None,
        };
        // An unknown name is checked against a dummy hash of the current cost, and stored
        // hashes are brought to that cost below, so the time taken does not tell which
        // names exist.
        let hash = account
            .as_ref()
            .map_or(shared.dummy_hash.as_str(), |a| a.pw_hash.as_str());
        let peer = conn.peer;
        // The hashing thread gets its own copies (`run` waits for it to finish).
        let (secret, stored, logged) = (password.clone(), hash.to_string(), shown.clone());
        let checked = shared.hash_gate.run(address, deadline, move || {
            // Tests count these lines: one per password actually checked.
            log::debug!("{peer}: bcrypt verify for {logged}");
            bcrypt::verify(&secret, &stored).unwrap_or(false)
        });
        let verified = match checked {
            Ok(verified) => verified,
            Err(refusal) => return Err(gate_refused(conn, refusal)),
        };
        if let (true, Some(account)) = (verified, account.as_ref()) {
            attempt.succeed();
            if let Err(e) = shared.store.clear_failures(&key, &address_text) {
                log::error!("{}: clearing failures: {e}", conn.peer);
            }
            if claim(shared, &key, &account.username, conn.id).is_err() {
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
            rehash_if_needed(
                conn,
                shared,
                address,
                deadline,
                &account.username,
                &password,
                hash,
            );
            return Ok(LoggedIn::new(key, account.username.clone()));
        }
        failures_here += 1;
        match &account {
            Some(account) => log::warn!("{}: failed login for {}", conn.peer, account.username),
            None => log::warn!("{}: failed login for an unknown name", conn.peer),
        }
        let failed = attempt.fail(shared.config.block());
        if let Err(e) =
            shared
                .store
                .save_login_failures(&key, &address_text, failed.failures, failed.blocked)
        {
            log::error!("{}: recording a failure: {e}", conn.peer);
        }
        if let Some(block) = failed.blocked {
            log::warn!("{}: {shown} blocked from {address}", conn.peer);
            return Err(conn.refuse(
                ErrorCode::Blocked,
                format!(
                    "too many failed logins: {shown} is blocked from your address for {} s",
                    block.as_secs()
                ),
            ));
        }
        // What the server will really allow next: this connection's attempts and this
        // (name, address)'s, with checks still under way counted as used.
        let left = MAX_LOGIN_FAILURES
            .saturating_sub(failures_here)
            .min(failed.left);
        if left == 0 {
            return Err(conn.refuse(
                ErrorCode::AuthFailed,
                "invalid username or password; too many failures, closing",
            ));
        }
        conn.send_err(
            ErrorCode::AuthFailed,
            format!(
                "invalid username or password ({left} attempt{} left)",
                if left == 1 { "" } else { "s" }
            ),
        );
    }
}

/// `RESUME <username> <token>`: a login without bcrypt. The attempt is reserved and
/// counted like a password check (a wrong token is a failure towards the block, and a
/// block holds), but checking costs one digest and one indexed read. A valid token takes
/// the account over from a connection still holding it (the client's old connection
/// may be half open after a network change). `Ok(None)`: refused, ask `NEW` again.
fn resume(
    conn: &mut Conn,
    shared: &Shared,
    typed: &str,
    token: &SessionToken,
) -> Result<Option<LoggedIn>, End> {
    let address = source_key(conn.peer.ip());
    let bad_token = |conn: &Conn| {
        conn.send_err(
            ErrorCode::BadToken,
            "the token is unknown, expired or revoked; log in with your password",
        )
    };
    let Ok(valid) = Username::parse(typed) else {
        bad_token(conn);
        return Ok(None);
    };
    let (key, shown) = (valid.key(), valid.as_str().to_string());
    merge_stored_failures(conn, shared, &key, address);
    let attempt = match shared.login_limits.reserve(&key, address) {
        Ok(attempt) => attempt,
        Err(refused) => return Err(attempt_refused(conn, refused, &shown)),
    };
    let digest = token.digest();
    let username = match shared.store.use_token(&key, &digest, TOKEN_LIFETIME) {
        Ok(Some(username)) => username,
        Ok(None) => {
            log::warn!("{}: refused token for {shown}", conn.peer);
            let failed = attempt.fail(shared.config.block());
            let saved = shared.store.save_login_failures(
                &key,
                &address.to_string(),
                failed.failures,
                failed.blocked,
            );
            if let Err(e) = saved {
                log::error!("{}: recording a failure: {e}", conn.peer);
            }
            if let Some(block) = failed.blocked {
                return Err(conn.refuse(
                    ErrorCode::Blocked,
                    format!(
                        "too many failed logins: {shown} is blocked from your address for {} s",
                        block.as_secs()
                    ),
                ));
            }
            bad_token(conn);
            return Ok(None);
        }
        Err(e) => {
            internal(conn, "reading a token", &e);
            return Ok(None);
        }
    };
    attempt.succeed();
    if let Err(e) = shared.store.clear_failures(&key, &address.to_string()) {
        log::error!("{}: clearing failures: {e}", conn.peer);
    }
    if let Some(old) = shared.registry.take_over(&key, &username, conn.id) {
        log::info!(
            "{}: {username} resumed; closing its older connection",
            conn.peer
        );
        old.kill();
    }
    if let Some(cluster) = &shared.cluster {
        cluster.take_over(&key, &username, conn.id);
    }
    log::info!("{}: logged in {username} with a token", conn.peer);
    conn.send(ServerMsg::Ok(Reply::LoggedIn {
        user: username.clone(),
    }));
    let me = LoggedIn::new(key, username);
    me.note_token(digest);
    Ok(Some(me))
}

/// After a successful login: if the stored hash has another cost than the server's,
/// hash the password again at the current cost, so every stored hash (and the dummy
/// one for unknown names) costs the same. Skipped when the bcrypt queue is busy.
fn rehash_if_needed(
    conn: &Conn,
    shared: &Shared,
    address: IpAddr,
    deadline: Instant,
    username: &str,
    password: &str,
    stored: &str,
) {
    let cost = shared.config.bcrypt_cost;
    if hash_cost(stored) == Some(cost) {
        return;
    }
    let secret = password.to_string();
    match shared
        .hash_gate
        .run(address, deadline, move || bcrypt::hash(secret, cost))
    {
        Ok(Ok(new)) => match shared.store.set_password_hash(username, &new) {
            Ok(()) => log::info!("{}: {username}'s hash renewed at cost {cost}", conn.peer),
            Err(e) => log::error!("{}: storing a renewed hash: {e}", conn.peer),
        },
        Ok(Err(e)) => log::error!("{}: renewing a hash: {e}", conn.peer),
        Err(refusal) => log::info!("{}: hash not renewed now ({refusal:?})", conn.peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_read_from_a_hash() {
        assert_eq!(hash_cost("$2b$12$abcdefghijklmnopqrstuv"), Some(12));
        assert_eq!(hash_cost("$2y$04$x"), Some(4));
        assert_eq!(hash_cost("garbage"), None);
    }
}
