//! The login conversation of protocol.md §3: new or returning, username, password, port.
//!
//! Owns the questions and the rules between them: registration, authentication, failure
//! counting and blocks, one live login per account. It runs bcrypt with no lock held and
//! must not run once the user is online (that is `conn`'s command loop).

use std::net::SocketAddr;
use std::sync::{Condvar, Mutex};

use super::Shared;
use super::conn::{Conn, End};
use super::store::{Created, Failure};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::MAX_LOGIN_FAILURES;
use crate::protocol::server_msg::{
    AskField, Event, NewAnswer, Password, Reply, ServerMsg, Username, parse_port,
};

/// A counting semaphore around bcrypt: at most `permits` hashes run at once, the rest
/// wait their turn. Its lock is held only to count, never while hashing.
pub struct HashGate {
    /// Hashes that may still start.
    free: Mutex<usize>,
    /// Signalled when one finishes.
    freed: Condvar,
}

impl HashGate {
    /// One permit per core but one (at least one), leaving a core for everything else.
    pub fn for_this_machine() -> HashGate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashGate::new(cores.saturating_sub(1).max(1))
    }

    /// A gate that lets `permits` hashes run at once.
    pub fn new(permits: usize) -> HashGate {
        HashGate {
            free: Mutex::new(permits.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Runs `hash` when a permit is free.
    pub fn run<T>(&self, hash: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            while *free == 0 {
                free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
            }
            *free -= 1;
        }
        // Released on drop, so even a panic inside `hash` gives the permit back.
        let _permit = Permit(self);
        hash()
    }
}

struct Permit<'a>(&'a HashGate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

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
        let hashed = shared
            .hash_gate
            .run(|| bcrypt::hash(password.expose(), shared.config.bcrypt_cost));
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
        let verified = shared
            .hash_gate
            .run(|| bcrypt::verify(&password, hash))
            .unwrap_or(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_hash_gate_never_lets_more_than_its_permits_run() {
        let gate = Arc::new(HashGate::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(gate.run(|| 7), 7, "every permit came back");
    }
}
