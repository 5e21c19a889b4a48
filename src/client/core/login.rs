//! The client's side of the login conversation: answer the server's questions.
//!
//! Owns the order of the exchange, picking the listening port (bound here, before the
//! server is told, so the port is known to be free), giving the identity key with the
//! port (loaded or made here once the server has said who we are, so the server knows
//! it before anyone can find us online), and replaying the same answers to
//! log in again after the server went away (with the server's resumable-login token when
//! it gave one, so a reconnect skips bcrypt; protocol.md §3). The name in `OK WELCOME` must follow the
//! registration rules and be the name we gave, since it becomes part of local paths: a
//! malicious server cannot make the client write outside `--data-dir`. It asks the
//! person through the [`Prompter`]
//! trait and must not print or read the terminal itself, so another front end can drive
//! the same login.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::server_link::{LinkEvent, ServerLink};
use crate::crypto::identity::{Identity, KEY_FILE};
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::{
    AskField, Command, PortAnswer, Reply, ServerMsg, Username, VERSION, format_resume,
};
use crate::protocol::session_token::SessionToken;

/// Why a replayed login failed when the server refused the saved password: retrying it
/// would only count failures towards a block.
pub const SAVED_LOGIN_FAILED: &str = "the saved login no longer works";

/// How long to wait for the server's next line during login.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the login talks to the person.
pub trait Prompter {
    /// Shows `prompt` and returns the answer; `None` when the person is gone (end of
    /// input). Answers to `AskField::Password` must not be echoed.
    fn ask(&mut self, field: AskField, prompt: &str) -> Option<String>;
    /// Shows one line of information.
    fn show(&mut self, text: &str);
    /// After login, asks which folder to share when no `--share` was given; `None` (the
    /// default) shares nothing.
    fn ask_share(&mut self) -> Option<String> {
        None
    }
    /// After a login that ended without success, true when the person asked to start
    /// over (say, to register after answering `N` by mistake): the core connects again
    /// and the conversation starts from the first question.
    fn start_over(&mut self) -> bool {
        false
    }
    /// Asks whether to trust (and pin) a server's certificate seen for the first time;
    /// the default (nobody to ask) says no.
    fn ask_trust(&mut self, _server: &str, _fingerprint: &str) -> bool {
        false
    }
}

/// The username and password that worked, and the server's resumable-login token,
/// kept in memory only, to log in again after the server went away. `Debug` hides the
/// password (and `SessionToken`'s own `Debug` hides the token).
#[derive(Clone)]
pub struct Credentials {
    /// The username as typed.
    pub username: String,
    password: String,
    /// From `OK TOKEN`: tried first when logging in again (`RESUME`), which skips bcrypt.
    pub token: Option<SessionToken>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials({}, <hidden>, {:?})",
            self.username, self.token
        )
    }
}

/// The line that asks the server for a resumable-login token, sent after each login.
pub fn token_request() -> String {
    Command::Token.to_string()
}

/// The line that registers our identity public key (`KEY <hex>`): sent right after
/// `OK WELCOME` only when the server did not take the key with the port (an older
/// server), so the server always has the key this device holds.
pub fn key_announcement(identity: &Identity) -> String {
    Command::Key {
        key: identity.public,
    }
    .to_string()
}

/// A finished login.
pub struct Login {
    /// The name as registered.
    pub name: String,
    /// What the server tells peers about us.
    pub addr: SocketAddr,
    /// The listener bound during this login; `None` when an existing port was reused.
    pub listener: Option<TcpListener>,
    /// What to answer next time.
    pub credentials: Credentials,
    /// Our long-term identity key (the server has it).
    pub identity: Arc<Identity>,
}

/// Where the identity key given with the port comes from.
pub enum KeySource<'a> {
    /// A first login: the key in `<dir>/<user>/`, made there if there is none (the
    /// user is known once the server said `OK REGISTERED` or `OK LOGGED_IN`).
    DataDir(&'a Path),
    /// Logging in again: the key this client holds already.
    Known(&'a Arc<Identity>),
}

impl KeySource<'_> {
    /// The key of `user` (`None`: the server has not said who we are yet).
    fn load(&self, user: Option<&str>) -> Result<Arc<Identity>, String> {
        let dir = match self {
            KeySource::Known(identity) => return Ok(Arc::clone(identity)),
            KeySource::DataDir(dir) => dir,
        };
        let user = user.ok_or("the server asked for our port before logging us in")?;
        let user_dir = dir.join(user.to_ascii_lowercase());
        Identity::load_or_create(&user_dir).map(Arc::new).map_err(|e| {
            format!(
                "cannot use the identity key in {}: {e} (move the file {KEY_FILE} away to make a new key; peers who pinned the old one will be warned)",
                user_dir.display()
            )
        })
    }
}

/// Where peers connect.
pub enum PortChoice {
    /// Bind a new listener on `ip`; `Some(port)` from `--port` (0 = any free), `None`
    /// asks the person.
    Bind { ip: IpAddr, port: Option<u16> },
    /// Already listening on this port (logging in again).
    Existing(u16),
}

/// A prompter that logs in again with known credentials and never asks the person.
pub struct Replay<'a, P: Prompter> {
    /// What to answer.
    pub credentials: &'a Credentials,
    /// Where to show messages.
    pub out: &'a mut P,
}

impl<P: Prompter> Prompter for Replay<'_, P> {
    fn ask(&mut self, field: AskField, _prompt: &str) -> Option<String> {
        Some(match field {
            AskField::New => "N".to_string(),
            AskField::Username => self.credentials.username.clone(),
            AskField::Password => self.credentials.password.clone(),
            // Replaying a failed login would only add failures towards a block.
            AskField::Port => return None,
        })
    }
    fn show(&mut self, text: &str) {
        self.out.show(text)
    }
}

/// Answers questions until the server says `OK WELCOME`. With `resume` (a name and its
/// token), the first `ASK NEW` is answered `RESUME <name> <token>`; if the server refuses
/// the token it asks again and the prompter answers as usual. The port is answered with
/// the identity key from `key` (`<port> <key>`); a server that refuses that form and
/// asks again gets the port alone, and `KEY` right after its welcome.
pub fn run(
    link: &ServerLink,
    prompter: &mut dyn Prompter,
    choice: &PortChoice,
    resume: Option<(&str, &SessionToken)>,
    key: &KeySource,
) -> Result<Login, String> {
    let mut listener: Option<TcpListener> = None;
    let mut username = String::new();
    let mut password = String::new();
    let mut asked_password = false;
    let mut resume = resume;
    // The name the server says we logged in as (checked like the welcome's).
    let mut confirmed: Option<String> = None;
    let mut identity: Option<Arc<Identity>> = None;
    // Whether the last port answer carried the key, and whether to give it that way.
    let (mut key_sent, mut key_with_port) = (false, true);
    loop {
        let msg = match link.events.recv_timeout(STEP_TIMEOUT) {
            Ok(LinkEvent::Msg(msg)) => msg,
            Ok(LinkEvent::Closed(why)) => return Err(why),
            Err(_) => return Err("the server stopped answering".into()),
        };
        match msg {
            ServerMsg::Hello { version } if version != VERSION => {
                log::warn!("server speaks protocol version {version}, this client {VERSION}");
            }
            ServerMsg::Ask {
                field: AskField::Port,
                prompt,
            } => {
                let port = match (choice, &listener) {
                    (PortChoice::Existing(port), _) => *port,
                    // Asked again (the answer was refused): the same listener.
                    (PortChoice::Bind { .. }, Some(bound)) => {
                        bound.local_addr().map_err(|e| e.to_string())?.port()
                    }
                    (PortChoice::Bind { ip, port }, None) => {
                        let bound = listen(prompter, &prompt, *ip, *port)?;
                        let port = bound.local_addr().map_err(|e| e.to_string())?.port();
                        listener = Some(bound);
                        port
                    }
                };
                let mine = match &identity {
                    Some(mine) => Arc::clone(mine),
                    None => key.load(confirmed.as_deref())?,
                };
                // A refused answer with the key (an older server): the port alone now,
                // the key after the welcome.
                key_with_port &= !key_sent;
                key_sent = key_with_port;
                let answer = PortAnswer {
                    port,
                    key: key_with_port.then_some(mine.public),
                };
                identity = Some(mine);
                link.send_line(&answer.to_string());
            }
            ServerMsg::Ask {
                field: AskField::New,
                ..
            } if resume.is_some() => {
                if let Some((name, token)) = resume.take() {
                    username = name.to_string();
                    link.send_line(&format_resume(name, token));
                }
            }
            ServerMsg::Ask { field, prompt } => {
                // A second password question means the first answer failed: a replay
                // must not keep trying.
                if field == AskField::Password
                    && asked_password
                    && matches!(choice, PortChoice::Existing(_))
                {
                    return Err(SAVED_LOGIN_FAILED.into());
                }
                let answer = prompter
                    .ask(field, &prompt)
                    .ok_or("input ended before login finished")?;
                match field {
                    AskField::Username => username = answer.trim().to_string(),
                    AskField::Password => {
                        password = answer.clone();
                        asked_password = true;
                    }
                    _ => {}
                }
                link.send_line(&answer);
            }
            ServerMsg::Err {
                code: ErrorCode::BadToken,
                ..
            } => prompter.show("* the saved login token was refused; using the password"),
            ServerMsg::Err { message, .. } => prompter.show(&format!("error: {message}")),
            ServerMsg::Ok(Reply::Registered { user }) => {
                prompter.show(&format!("Registered as {user}."));
                // Our key's folder is named after it: the same checks as the welcome's.
                check_welcome_name(&user, &username)?;
                confirmed = Some(user);
            }
            ServerMsg::Ok(Reply::LoggedIn { user }) => {
                prompter.show(&format!("Logged in as {user}."));
                check_welcome_name(&user, &username)?;
                confirmed = Some(user);
            }
            ServerMsg::Ok(Reply::Welcome { user, addr }) => {
                check_welcome_name(&user, &username)?;
                let identity = match identity {
                    Some(identity) => identity,
                    None => return Err("the server welcomed us before asking our port".into()),
                };
                if !key_sent {
                    link.send_line(&key_announcement(&identity));
                }
                return Ok(Login {
                    name: user,
                    addr,
                    listener,
                    credentials: Credentials {
                        username,
                        password,
                        token: None,
                    },
                    identity,
                });
            }
            other => log::debug!("ignored during login: {other:?}"),
        }
    }
}

/// The name in `OK WELCOME` becomes part of paths (`<data-dir>/<name>/`): it must follow
/// the registration rules (no `/`, `.`, `..` or control characters can pass them) and be
/// the name we logged in with, whatever the server says.
fn check_welcome_name(user: &str, typed: &str) -> Result<(), String> {
    let shown = user.escape_default();
    if Username::parse(user).is_err() {
        return Err(format!(
            "the server welcomed us with an invalid username \"{shown}\"; refusing it"
        ));
    }
    if !typed.is_empty() && !user.eq_ignore_ascii_case(typed) {
        return Err(format!(
            "the server welcomed us as \"{shown}\", not as {}; refusing it",
            typed.escape_default()
        ));
    }
    Ok(())
}

/// Binds the listener on the chosen port, asking the person until a port is free.
fn listen(
    prompter: &mut dyn Prompter,
    prompt: &str,
    ip: IpAddr,
    port: Option<u16>,
) -> Result<TcpListener, String> {
    if let Some(port) = port {
        return TcpListener::bind((ip, port))
            .map_err(|e| format!("cannot listen on port {port}: {e}"));
    }
    loop {
        let answer = prompter
            .ask(
                AskField::Port,
                &format!("{prompt} (Enter for any free port)"),
            )
            .ok_or("input ended before login finished")?;
        let port = match answer.trim() {
            "" => 0,
            text => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    prompter.show("error: a port is a number from 1 to 65535");
                    continue;
                }
            },
        };
        match TcpListener::bind((ip, port)) {
            Ok(listener) => return Ok(listener),
            Err(e) => prompter.show(&format!(
                "error: port {port} is not free ({e}); choose another"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_names_that_could_leave_the_data_dir_are_refused() {
        assert!(check_welcome_name("alice", "Alice").is_ok());
        for bad in ["../../evil", "..", "a/b", "al\u{1b}[2J", "", "x"] {
            assert!(check_welcome_name(bad, "").is_err(), "{bad:?}");
        }
        assert!(check_welcome_name("mallory", "alice").is_err());
    }
}
